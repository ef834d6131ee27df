"""Fixtures shared by every test folder: real `nabla serve` processes on loopback.

`start_server` (per test) and `serve_module` (per module: a context manager a module-scoped
fixture enters) both run `python -m service.cli serve` on a free port, with the caller's NABLA_*
variables and none of the environment's, a registry of its own unless the caller names one, and
wait until /livez answers.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

import engine

# Shared closed forms (tests/closed_forms.py) import as `closed_forms` from every folder, under any
# --import-mode.
if str(Path(__file__).parent) not in sys.path:
    sys.path.insert(0, str(Path(__file__).parent))

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def x64() -> Iterator[None]:
    """float64 as the engine's default float for the test (`jax_enable_x64`), restored after.
    Modules whose every test computes in float64 say `pytestmark = pytest.mark.usefixtures("x64")`."""
    previous = engine.config.jax_enable_x64
    engine.config.update("jax_enable_x64", True)
    yield
    engine.config.update("jax_enable_x64", previous)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Server:
    url: str
    process: subprocess.Popen
    log: Path

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


@contextlib.contextmanager
def nabla_server(folder: Path, env: dict[str, str]) -> Iterator[Server]:
    """A running server whose files (registry, log) live in `folder`; stopped on exit."""
    port = free_port()
    environ = {k: v for k, v in os.environ.items() if not k.startswith("NABLA_")}
    # a registry of its own unless the caller names one: never the checkout's ./data
    environ.update({"NABLA_LOG_LEVEL": "warning", "NABLA_DATA_DIR": str(folder / f"data-{port}"), **env})
    log = folder / f"server-{port}.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "service.cli", "serve", "--host", "127.0.0.1", "--port", str(port)],
            cwd=REPO, env=environ, stdout=out, stderr=subprocess.STDOUT)
    server = Server(f"http://127.0.0.1:{port}", process, log)
    try:
        deadline = time.monotonic() + 60
        while True:
            if process.poll() is not None:
                pytest.fail(f"nabla serve exited with {process.returncode}:\n{server.output()}")
            try:
                if httpx.get(server.url + "/livez", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"nabla serve did not answer /livez within 60 s:\n{server.output()}")
            time.sleep(0.05)
        yield server
    finally:
        server.stop()


@pytest.fixture
def start_server(tmp_path: Path) -> Iterator[Callable[..., Server]]:
    """Start a server with the given NABLA_* variables; every one is stopped at teardown."""
    with contextlib.ExitStack() as stack:
        yield lambda env: stack.enter_context(nabla_server(tmp_path, env))


@pytest.fixture(scope="session")
def serve_module() -> Callable[[Path, dict[str, str]], contextlib.AbstractContextManager[Server]]:
    """`nabla_server` for module-scoped fixtures: `with serve_module(folder, env) as server: ...`."""
    return nabla_server
