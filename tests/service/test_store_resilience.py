"""The registry under failure: terminated PostgreSQL backends, an unreachable database, contended
SQLite writers, idempotent registration, the generation counter and version bounds.

PostgreSQL tests use a schema of their own (the `pg_schemas` fixture of conftest.py) and skip
when the server is unreachable; the unreachable-database test needs no server at all."""

from __future__ import annotations

import socket
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from service import store
from service.store import IdempotencyConflict, Registry, RegistryUnavailable, SqliteRegistry

FUNCTION = {"expr": "sum(x * w)", "params": ["x", "w"]}


def add(registry: Registry, name: str = "m", **kwargs: Any) -> int:
    return registry.add(name, FUNCTION, {}, "a model", ["x", "w"], 3, **kwargs)


def register(registry: Registry, name: str = "m", **kwargs: Any) -> store.Registration:
    return registry.register(name, FUNCTION, {}, "a model", ["x", "w"], 3, **kwargs)


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # nothing listens once the socket is closed


def _threads(n: int, target: Callable[[int], Any]) -> None:
    """Run target(i) in n threads and wait for them; re-raise the first exception."""
    errors: list[BaseException] = []

    def run(i: int) -> None:
        try:
            target(i)
        except BaseException as e:  # noqa: BLE001 - collected and re-raised in the test thread
            errors.append(e)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not any(t.is_alive() for t in threads), "a thread did not finish in 120 s"
    if errors:
        raise errors[0]


@pytest.fixture
def pg_app_url(pg_schemas: Callable[[], str]) -> tuple[str, str]:
    """A fresh schema's URL tagged with an application_name unique to this test, so the test can
    terminate exactly its own connections (other sessions may share the database)."""
    app = f"nabla_test_{uuid.uuid4().hex[:12]}"
    return f"{pg_schemas()}&application_name={app}", app


@pytest.fixture
def opened() -> Iterator[list[Registry]]:
    """Registries to close at the end of the test."""
    registries: list[Registry] = []
    yield registries
    for r in registries:
        r.close()


@pytest.fixture(params=["sqlite", "postgresql"])
def make_registry(request: pytest.FixtureRequest, tmp_path: Path,
                  opened: list[Registry]) -> Callable[[], Registry]:
    """make_registry() -> a new Registry object on the test's one database (call twice for two
    replicas sharing it)."""
    if request.param == "sqlite":
        path = tmp_path / "registry.sqlite3"

        def make() -> Registry:
            opened.append(SqliteRegistry(path))
            return opened[-1]
    else:
        url = request.getfixturevalue("pg_schemas")()

        def make() -> Registry:
            opened.append(store.PostgresRegistry(url))
            return opened[-1]
    return make


# ----------------------------------------------------------------------------- PostgreSQL connections


def _terminate_backends(base_url: str, application_name: str) -> int:
    import psycopg

    with psycopg.connect(base_url, autocommit=True, connect_timeout=3) as admin:
        rows = admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                             "WHERE application_name = %s AND pid <> pg_backend_pid()", (application_name,)).fetchall()
    return sum(1 for (ok,) in rows if ok)


def test_postgres_registry_survives_terminated_backends(pg_app_url: tuple[str, str],
                                                        opened: list[Registry]) -> None:
    url, app = pg_app_url
    registry = store.PostgresRegistry(url, min_connections=2, max_connections=4)
    opened.append(registry)
    assert add(registry) == 1
    # Several connections in use at once, so the pool holds more than one when they are killed.
    _threads(4, lambda _: [registry.get("m") for _ in range(20)])
    for round_ in range(3):
        killed = _terminate_backends(url.split("?")[0], app)
        assert killed >= 1
        t0 = time.monotonic()
        record = registry.get("m")  # the first request after the kill: served on a fresh connection
        elapsed = time.monotonic() - t0
        assert record is not None and record.version == 1 + round_
        assert elapsed < 5.0, elapsed
        assert add(registry) == 2 + round_  # and writes too
        assert registry.ping()
    assert registry.versions("m") == [1, 2, 3, 4]


def test_an_unreachable_database_is_registry_unavailable_quickly() -> None:
    url = f"postgresql://postgres@127.0.0.1:{closed_port()}/test"
    t0 = time.monotonic()
    registry = store.PostgresRegistry(url, pool_timeout_s=0.5)  # starts, to report not ready
    try:
        assert time.monotonic() - t0 < 5
        t0 = time.monotonic()
        with pytest.raises(RegistryUnavailable) as caught:
            registry.get("m")
        assert time.monotonic() - t0 < 5
        assert caught.value.retry_after > 0
        for method, args in (("latest_version", ("m",)), ("versions", ("m",)), ("list", ()), ("generation", ()),
                             ("delete", ("m",))):
            with pytest.raises(RegistryUnavailable):
                getattr(registry, method)(*args)
        with pytest.raises(RegistryUnavailable):
            add(registry)
        t0 = time.monotonic()
        assert registry.ping(timeout=0.5) is False
        assert time.monotonic() - t0 < 5
    finally:
        registry.close()


def test_a_closed_registry_is_unavailable_not_a_driver_error(make_registry: Callable[[], Registry]) -> None:
    registry = make_registry()
    add(registry)
    registry.close()
    with pytest.raises(RegistryUnavailable):
        registry.get("m")
    assert registry.ping() is False


# ----------------------------------------------------------------------------- SQLite contention


def test_sqlite_contended_writers_all_succeed_with_consecutive_versions(tmp_path: Path,
                                                                       opened: list[Registry]) -> None:
    path = tmp_path / "registry.sqlite3"
    # One Registry per thread, like separate processes; a busy timeout so short that SQLite's own
    # wait gives up constantly, so the retry loop is what makes every write succeed.
    registries = [SqliteRegistry(path, busy_timeout_s=0.001) for _ in range(12)]
    opened.extend(registries)
    versions: list[int] = []
    lock = threading.Lock()

    def writer(i: int) -> None:
        for _ in range(15):
            v = add(registries[i])
            with lock:
                versions.append(v)

    _threads(len(registries), writer)
    assert sorted(versions) == list(range(1, 12 * 15 + 1))
    assert registries[0].versions("m") == list(range(1, 12 * 15 + 1))


def test_sqlite_write_still_locked_after_the_budget_is_registry_unavailable(tmp_path: Path,
                                                                           opened: list[Registry]) -> None:
    path = tmp_path / "registry.sqlite3"
    registry = SqliteRegistry(path, busy_timeout_s=0.05, retry_budget_s=0.5)
    opened.append(registry)
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # another process holds the writer lock
    try:
        t0 = time.monotonic()
        with pytest.raises(RegistryUnavailable) as caught:
            add(registry)
        assert 0.4 < time.monotonic() - t0 < 3
        assert caught.value.retry_after == 1.0
        assert "busy" in str(caught.value)
        assert registry.get("m") is None  # reads are not blocked by the writer (WAL)
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert add(registry) == 1


# ----------------------------------------------------------------------------- idempotency


def test_a_repeated_idempotency_key_returns_the_original_version(make_registry: Callable[[], Registry]) -> None:
    registry = make_registry()
    first = register(registry, idempotency_key="k-1", request_hash="h1")
    again = register(registry, idempotency_key="k-1", request_hash="h1")
    assert first == store.Registration(1, True)
    assert again == store.Registration(1, False)
    assert add(registry, idempotency_key="k-1", request_hash="h1") == 1
    assert registry.versions("m") == [1]
    # another key, or none, is a new registration
    assert register(registry, idempotency_key="k-2", request_hash="h1") == store.Registration(2, True)
    assert add(registry) == 3
    # a second replica sees the same keys
    other = make_registry()
    assert register(other, idempotency_key="k-1", request_hash="h1") == store.Registration(1, False)
    assert registry.versions("m") == [1, 2, 3]


def test_a_reused_idempotency_key_with_another_request_is_a_conflict(make_registry: Callable[[], Registry]) -> None:
    registry = make_registry()
    add(registry, idempotency_key="k", request_hash="h1")
    generation = registry.generation()
    with pytest.raises(IdempotencyConflict) as caught:
        add(registry, idempotency_key="k", request_hash="h2")
    assert (caught.value.key, caught.value.name, caught.value.version) == ("k", "m", 1)
    with pytest.raises(IdempotencyConflict):
        add(registry, "other", idempotency_key="k", request_hash="h1")
    assert registry.versions("m") == [1] and registry.get("other") is None
    assert registry.generation() == generation  # nothing was written
    with pytest.raises(ValueError):
        add(registry, idempotency_key="x" * 256)


def test_idempotency_keys_expire_after_their_ttl(make_registry: Callable[[], Registry],
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    registry = make_registry()
    add(registry, idempotency_key="k", request_hash="h")
    monkeypatch.setattr(store, "_now_ms", lambda: int(time.time() * 1000) + (store.IDEMPOTENCY_TTL_S + 60) * 1000)
    assert register(registry, idempotency_key="k", request_hash="other") == store.Registration(2, True)
    # pruning removes expired keys (forced here: it runs at most every few minutes)
    add(registry, idempotency_key="fresh", request_hash="h")
    registry._last_prune = float("-inf")
    monkeypatch.setattr(store, "_now_ms", lambda: int(time.time() * 1000) + 3 * store.IDEMPOTENCY_TTL_S * 1000)
    add(registry, "n")

    def count(cur: Any) -> int:
        cur.execute("SELECT COUNT(*) FROM idempotency_keys")
        return int(cur.fetchone()[0])

    assert registry._run(count, write=False) == 0


def test_concurrent_requests_with_one_key_add_one_version(make_registry: Callable[[], Registry]) -> None:
    replicas = [make_registry() for _ in range(4)]
    results: list[store.Registration] = []
    lock = threading.Lock()

    def send(i: int) -> None:
        for _ in range(3):
            r = register(replicas[i], idempotency_key="same", request_hash="h")
            with lock:
                results.append(r)

    _threads(len(replicas), send)
    assert sorted(results, key=lambda r: not r.created)[0] == store.Registration(1, True)
    assert sum(r.created for r in results) == 1 and {r.version for r in results} == {1}
    assert replicas[0].versions("m") == [1]


# ----------------------------------------------------------------------------- generation


def test_the_generation_changes_on_every_add_and_delete_seen_from_another_replica(
        make_registry: Callable[[], Registry]) -> None:
    writer, reader = make_registry(), make_registry()
    g0 = reader.generation()
    add(writer)
    g1 = reader.generation()
    assert g1 > g0
    add(writer, "n")
    g2 = reader.generation()
    assert g2 > g1
    assert writer.delete("m") == 1
    g3 = reader.generation()
    assert g3 > g2  # a delete through one object is a change for the other
    assert writer.delete("nothing") == 0
    assert reader.generation() == g3  # deleting nothing changes nothing
    add(writer, idempotency_key="k", request_hash="h")
    g4 = reader.generation()
    add(writer, idempotency_key="k", request_hash="h")  # a replay adds nothing
    assert reader.generation() == g4 > g3


# ----------------------------------------------------------------------------- versions


def test_out_of_range_versions_are_refused_not_overflowed(make_registry: Callable[[], Registry]) -> None:
    registry = make_registry()
    add(registry)
    for bad in (2**63, 2**31, 0, -1, True):
        with pytest.raises(ValueError):
            registry.get("m", bad)
    assert registry.get("m", store.MAX_VERSION) is None
    assert registry.get("m", 1).version == 1
    assert registry.get("m").version == 1


def test_a_new_registry_migrates_to_the_latest_schema(make_registry: Callable[[], Registry]) -> None:
    registry = make_registry()
    assert registry.schema_version() == len(store.MIGRATIONS)
    assert registry.generation() == 0
    assert make_registry().schema_version() == len(store.MIGRATIONS)  # a second process: nothing to do
