"""Fixtures of the hostile-input suite (issue 10: no request can hurt the server).

Each test module gets ONE real server (`server`, module scope): `nabla serve` on a free loopback
port, SQLite in a tmp dir, the settings of `_hostile.BASE_ENV` (5 s compute deadline, 2 compute
threads, smaller body/request/response limits) updated with the module's `SERVER_ENV`. After a
warm-up it is watched by a /livez probe (every 20 ms, from its own process) and an RSS sampler.
Every module ends with `test_server_stayed_healthy`, which calls `assert_healthy`: every /livez
poll over the whole module answered, each within 100 ms (`_hostile.LIVEZ_MAX_MS`), RSS (the server
and its compute workers) peak <= baseline + budget,
and RSS back within a margin of the baseline after the cases. The terminal summary lists the
figures.

RSS budgets (state what is realistic, override per module with RSS_PEAK_BUDGET / RSS_END_MARGIN):
- peak: NABLA_COMPUTE_THREADS x NABLA_MAX_REQUEST_BYTES (every admitted request within its
  predicted peak) + 2 x NABLA_MAX_BODY_BYTES (a body being received and its parsed form)
  + 64 MiB (framework, allocator slack);
- end (5 s after the last case): baseline + NABLA_PLAN_CACHE_BYTES (16 MiB here: compiled plans may
  stay cached) + 48 MiB (allocator arenas keep some memory after large requests; a worker that
  keeps more is replaced). Measured: modules of small hostile bodies end within 1-10 MiB of their
  baseline; the admission module's large JSON bodies (1e6 keys, 7.5e6 numbers, 30 MB strings)
  about 40 MiB above it (250-600 MiB before the pipeline, 74 MiB with compute in threads).

`NABLA_HOSTILE_SERVER_SOURCE=<dir>` runs the server from another source tree (e.g. an exported
older revision) with this suite.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

if str(Path(__file__).parent) not in sys.path:
    sys.path.insert(0, str(Path(__file__).parent))

from _hostile import BASE_ENV, Health, HostileServer, MiB, warm_up_cases  # noqa: E402

END_SLACK = 48 * MiB
_HEALTH: list[Health] = []
_NOTES: list[str] = []


@pytest.fixture(scope="module")
def server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[HostileServer]:
    module = request.module
    env = {**BASE_ENV, **getattr(module, "SERVER_ENV", {})}
    name = module.__name__.rpartition(".")[2]
    tmp = tmp_path_factory.mktemp(name)
    data = tmp / "data"
    data.mkdir()
    srv = HostileServer(env, data, tmp / "server.log", name)
    try:
        srv.start_watching(warm_up_cases())
        yield srv
    finally:
        srv.stop()


def peak_budget(server: HostileServer) -> int:
    return (server.setting("NABLA_COMPUTE_THREADS") * server.setting("NABLA_MAX_REQUEST_BYTES")
            + 2 * server.setting("NABLA_MAX_BODY_BYTES") + 64 * MiB)


@pytest.fixture(scope="module")
def assert_healthy(request: pytest.FixtureRequest) -> Callable[[HostileServer], Health]:
    """Assert /livez and RSS stayed within bounds for the whole module (call it last)."""

    def check(server: HostileServer) -> Health:
        budget = getattr(request.module, "RSS_PEAK_BUDGET", None) or peak_budget(server)
        margin = getattr(request.module, "RSS_END_MARGIN", None) or (
            server.setting("NABLA_PLAN_CACHE_BYTES") + END_SLACK)
        health, problems = server.health(budget, margin)
        _HEALTH.append(health)
        assert not problems, health.line() + "\n  " + "\n  ".join(problems)
        return health

    return check


@pytest.fixture(scope="session")
def note() -> Callable[[str], None]:
    """Add a line to the terminal summary (figures worth seeing even when the tests pass)."""
    return _NOTES.append


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if _HEALTH or _NOTES:
        terminalreporter.section("hostile servers: /livez latency and RSS")
        for health in _HEALTH:
            terminalreporter.write_line(health.line())
        for line in _NOTES:
            terminalreporter.write_line(line)
