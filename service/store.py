"""The model registry: SQLite by default (one host), PostgreSQL to share it between replicas.

Each registration is one row `(name, version)` written in a single transaction, so a crash
leaves either the whole model or nothing. Versions are assigned inside the transaction by one
atomic upsert of `model_versions`, so two writers racing for the same name get consecutive
versions. The schema is versioned from day one: `schema_version` records which migrations ran,
and every process applies missing ones under a lock at start.

Failures are typed: a database that cannot be reached, a connection that drops, or a write that
stays contended after bounded retries raise `RegistryUnavailable` (the service answers 503 with
`Retry-After`); no sqlite3 or psycopg exception leaves a public method.
"""

from __future__ import annotations

import json
import logging
import random
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NamedTuple, TypeVar
from urllib.parse import urlsplit, urlunsplit

log = logging.getLogger("nabla.store")

# Each migration is a list of statements; never edit one that has shipped, append a new one.
MIGRATIONS: list[list[str]] = [
    [
        """CREATE TABLE IF NOT EXISTS models (
            name TEXT NOT NULL,
            version INTEGER NOT NULL,
            function TEXT NOT NULL,
            constants TEXT NOT NULL,
            description TEXT NOT NULL,
            params TEXT NOT NULL,
            graph_nodes INTEGER NOT NULL,
            created_at TEXT NOT NULL,
            PRIMARY KEY (name, version)
        )""",
    ],
    # 2: versions are never reused, even after a model is deleted: replicas may still cache an
    # old (name, version), so a number must always mean the same function.
    [
        "CREATE TABLE IF NOT EXISTS model_versions (name TEXT PRIMARY KEY, last_version INTEGER NOT NULL)",
        "INSERT INTO model_versions (name, last_version) SELECT name, MAX(version) FROM models GROUP BY name",
    ],
    # 3: one counter that every add and delete bumps in its own transaction, so replicas can tell
    # with a single-row read whether anything they cached may be stale.
    [
        "CREATE TABLE IF NOT EXISTS registry_generation (id INTEGER PRIMARY KEY, generation BIGINT NOT NULL)",
        "INSERT INTO registry_generation (id, generation) VALUES (1, 0)",
    ],
    # 4: idempotency keys of registrations, so a retried POST never adds a second version.
    [
        """CREATE TABLE IF NOT EXISTS idempotency_keys (
            idempotency_key TEXT PRIMARY KEY,
            name TEXT NOT NULL,
            version INTEGER NOT NULL,
            request_hash TEXT,
            created_ms BIGINT NOT NULL
        )""",
        "CREATE INDEX IF NOT EXISTS idempotency_keys_created ON idempotency_keys (created_ms)",
    ],
    # 5: each model's typed parameters (pytree structure, shapes with symbolic dimensions, dtypes);
    # 'null' for models registered before, or without a schema.
    [
        "ALTER TABLE models ADD COLUMN param_schema TEXT NOT NULL DEFAULT 'null'",
    ],
]
_PG_LOCK_ID = 727_001  # an arbitrary advisory-lock key for migrations

MAX_VERSION = 2**31 - 1  # the `version` column is a 32-bit INTEGER in PostgreSQL
MAX_IDEMPOTENCY_KEY_CHARS = 255
IDEMPOTENCY_TTL_S = 24 * 3600
_PRUNE_EVERY_S = 600.0  # old keys are deleted by at most one add per interval per process

# Retry-After hints: a contended write usually clears within a second; a database that is
# unreachable or restarting takes longer, and asking sooner only adds load.
_RETRY_AFTER_CONTENDED = 1.0
_RETRY_AFTER_UNREACHABLE = 2.0

T = TypeVar("T")


@dataclass(frozen=True)
class ModelRecord:
    name: str
    version: int
    function: dict[str, Any]
    constants: dict[str, Any]  # JSON pytrees of arrays ($array leaves)
    description: str
    params: list[str]
    graph_nodes: int
    created_at: str
    param_schema: dict[str, Any] | None = None  # parameter name -> spec pytree (service.model_schema)


class Registration(NamedTuple):
    """The outcome of `Registry.register`: the version, and whether this call created it
    (False: an earlier request with the same idempotency key did, and nothing was added)."""

    version: int
    created: bool


class StoreError(Exception):
    """The registry could not be reached or written."""


class RegistryUnavailable(StoreError):
    """The database cannot be reached, a connection dropped, or a contended write still failed
    after the retry budget. Transient: retry after `retry_after` seconds (the service answers 503
    with a Retry-After header)."""

    def __init__(self, message: str, retry_after: float = _RETRY_AFTER_UNREACHABLE) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class IdempotencyConflict(StoreError):
    """An idempotency key was used again for a different request (another name or body); the
    service answers 409. `version` is what the key's original request registered."""

    def __init__(self, message: str, key: str, name: str, version: int) -> None:
        super().__init__(message)
        self.key = key
        self.name = name
        self.version = version


# How a backend exception is treated by `Registry._run`.
_CONTENDED = "contended"  # another writer holds the lock: retry within the budget
_LOST = "lost"  # the connection dropped mid-operation: a read may be retried once
_UNREACHABLE = "unreachable"  # no connection at all: fail fast, RegistryUnavailable
_BROKEN = "broken"  # anything else from the driver: StoreError


def _check_version(version: int) -> int:
    if not isinstance(version, int) or isinstance(version, bool) or not 1 <= version <= MAX_VERSION:
        raise ValueError(f"version must be an integer in 1..{MAX_VERSION}, got {version!r}")
    return version


def _now_ms() -> int:
    return int(time.time() * 1000)


class Registry:
    """Common logic; subclasses supply connections, the SQL placeholder and error classification.

    Every public method runs through `_run`, which retries contended writes with jittered backoff
    within `retry_budget_s` and turns driver exceptions into `RegistryUnavailable`/`StoreError`.
    """

    placeholder = "?"
    backend = "?"
    location = "?"  # where the data lives, for logs (a file path, or the URL without its password)
    retry_budget_s = 10.0

    def __init__(self) -> None:
        self._schema_ready = False
        self._schema_lock = threading.Lock()
        self._last_prune = float("-inf")  # the first add of a process prunes

    # ------------------------------------------------------------------ backend hooks

    def _cursor(self, timeout: float | None = None) -> Any:
        """A context manager yielding a cursor in autocommit mode."""
        raise NotImplementedError

    def _transaction(self, timeout: float | None = None) -> Any:
        """A context manager yielding a cursor inside a write transaction (commit on success)."""
        raise NotImplementedError

    def _classify(self, error: BaseException) -> str | None:
        """One of the _CONTENDED/_LOST/_UNREACHABLE/_BROKEN kinds, or None: not a driver error."""
        raise NotImplementedError

    def _lock_migrations(self, cur: Any) -> None:
        """Keep other processes from migrating at the same time (SQLite's writer lock does)."""

    def _q(self, sql: str) -> str:
        return sql.replace("?", self.placeholder)

    # ------------------------------------------------------------------ the one way in

    def _run(self, fn: Callable[[Any], T], *, write: bool, timeout: float | None = None,
             migrate: bool = True) -> T:
        if migrate:
            self._ensure_schema(timeout)
        deadline = time.monotonic() + self.retry_budget_s
        attempt = 0
        while True:
            try:
                with (self._transaction(timeout) if write else self._cursor(timeout)) as cur:
                    return fn(cur)
            except StoreError:
                raise
            except Exception as e:
                kind = self._classify(e)
                if kind is None:
                    raise
                if kind == _BROKEN:
                    raise StoreError(f"the {self.backend} registry failed: {type(e).__name__}: {e}") from e
                # A write whose connection dropped may have committed: retrying it could apply it
                # twice, so only reads are retried (the client retries registrations with their
                # idempotency key, which is safe).
                retry = kind == _CONTENDED or (kind == _LOST and not write and attempt == 0)
                if not retry or time.monotonic() >= deadline:
                    raise self._unavailable(e, kind, attempt + 1) from e
                time.sleep(min(max(0.0, deadline - time.monotonic()),
                               random.uniform(0.5, 1.5) * min(0.25, 0.005 * 2 ** attempt)))
                attempt += 1

    def _unavailable(self, error: Exception, kind: str, attempts: int) -> RegistryUnavailable:
        if kind == _CONTENDED:
            return RegistryUnavailable(f"the {self.backend} registry is busy: still contended after {attempts} "
                                       f"attempts in {self.retry_budget_s:g} s ({error})", _RETRY_AFTER_CONTENDED)
        return RegistryUnavailable(f"the {self.backend} registry is unavailable: {type(error).__name__}: {error}",
                                   _RETRY_AFTER_UNREACHABLE)

    def _ensure_schema(self, timeout: float | None = None) -> None:
        if self._schema_ready:
            return
        with self._schema_lock:
            if not self._schema_ready:
                self._run(self._migrate, write=True, timeout=timeout, migrate=False)
                self._schema_ready = True

    def _migrate(self, cur: Any) -> None:
        self._lock_migrations(cur)
        cur.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
        cur.execute("SELECT MAX(version) FROM schema_version")
        current = cur.fetchone()[0] or 0
        for number, statements in enumerate(MIGRATIONS, start=1):
            if number > current:
                for sql in statements:
                    cur.execute(sql)
                cur.execute(self._q("INSERT INTO schema_version (version) VALUES (?)"), (number,))

    # ------------------------------------------------------------------ reads

    def ping(self, timeout: float = 2.0) -> bool:
        """True when the database answers within about `timeout` seconds and the schema is current."""
        def select_one(cur: Any) -> None:
            cur.execute("SELECT 1")
            cur.fetchone()

        try:
            self._run(select_one, write=False, timeout=timeout)
            return True
        except StoreError:
            return False

    def schema_version(self) -> int:
        def read(cur: Any) -> int:
            cur.execute("SELECT MAX(version) FROM schema_version")
            return int(cur.fetchone()[0] or 0)

        return self._run(read, write=False)

    def generation(self) -> int:
        """A counter bumped by every add and every delete that removed something, in the same
        transaction. Two equal readings mean nothing was registered or deleted in between, on
        any replica sharing this database; one indexed single-row read."""
        def read(cur: Any) -> int:
            cur.execute("SELECT generation FROM registry_generation WHERE id = 1")
            row = cur.fetchone()
            return int(row[0]) if row else 0

        return self._run(read, write=False)

    def latest_version(self, name: str) -> int | None:
        def read(cur: Any) -> int | None:
            cur.execute(self._q("SELECT MAX(version) FROM models WHERE name = ?"), (name,))
            row = cur.fetchone()
            return None if row is None or row[0] is None else int(row[0])

        return self._run(read, write=False)

    def get(self, name: str, version: int | None = None) -> ModelRecord | None:
        """The given version of `name` (default: the latest), or None. Raises ValueError for a
        version outside 1..MAX_VERSION (no such row can exist; the driver would overflow)."""
        columns = "name, version, function, constants, description, params, graph_nodes, created_at, param_schema"
        if version is None:
            sql, args = f"SELECT {columns} FROM models WHERE name = ? ORDER BY version DESC LIMIT 1", (name,)
        else:
            sql, args = f"SELECT {columns} FROM models WHERE name = ? AND version = ?", (name, _check_version(version))

        def read(cur: Any) -> Any:
            cur.execute(self._q(sql), args)
            return cur.fetchone()

        row = self._run(read, write=False)
        if row is None:
            return None
        return ModelRecord(row[0], int(row[1]), json.loads(row[2]), json.loads(row[3]), row[4],
                           json.loads(row[5]), int(row[6]), str(row[7]), json.loads(row[8]))

    def versions(self, name: str) -> list[int]:
        def read(cur: Any) -> list[int]:
            cur.execute(self._q("SELECT version FROM models WHERE name = ? ORDER BY version"), (name,))
            return [int(r[0]) for r in cur.fetchall()]

        return self._run(read, write=False)

    def list(self, after: str | None = None, limit: int | None = None) -> list[ModelRecord]:
        """The latest version of every model, by name; only names after `after`, at most `limit`
        (pagination). Functions and constants are left out (empty)."""
        where = "WHERE m.name > ? " if after is not None else ""
        bound = f" LIMIT {int(limit)}" if limit is not None else ""

        def read(cur: Any) -> list[Any]:
            cur.execute(self._q("SELECT m.name, m.version, m.description, m.params, m.graph_nodes, m.created_at, "
                                "m.param_schema FROM models m JOIN (SELECT name, MAX(version) AS v FROM models "
                                f"GROUP BY name) l ON m.name = l.name AND m.version = l.v {where}ORDER BY m.name"
                                + bound), (after,) if after is not None else ())
            return cur.fetchall()

        rows = self._run(read, write=False)
        return [ModelRecord(r[0], int(r[1]), {}, {}, r[2], json.loads(r[3]), int(r[4]), str(r[5]), json.loads(r[6]))
                for r in rows]

    # ------------------------------------------------------------------ writes

    def add(self, name: str, function: dict[str, Any], constants: dict[str, Any], description: str,
            params: list[str], graph_nodes: int, *, idempotency_key: str | None = None,
            request_hash: str | None = None) -> int:
        """Store a new version of `name` and return its number; `register` with the same
        arguments, for callers that do not need to know whether the version is new."""
        return self.register(name, function, constants, description, params, graph_nodes,
                             idempotency_key=idempotency_key, request_hash=request_hash).version

    def register(self, name: str, function: dict[str, Any], constants: dict[str, Any], description: str,
                 params: list[str], graph_nodes: int, *, idempotency_key: str | None = None,
                 request_hash: str | None = None, param_schema: dict[str, Any] | None = None) -> Registration:
        """Store a new version of `name`: `Registration(version, created=True)`.

        With an `idempotency_key`, the key is recorded with (name, version, request_hash) in the
        same transaction. Used again within IDEMPOTENCY_TTL_S with the same name and request_hash,
        nothing is added and the original `Registration(version, created=False)` is returned
        (even if that model has been deleted since); with another name or hash it raises
        IdempotencyConflict. Raises RegistryUnavailable when the database cannot take the write.
        """
        if idempotency_key is not None and not 1 <= len(idempotency_key) <= MAX_IDEMPOTENCY_KEY_CHARS:
            raise ValueError(f"an idempotency key must have 1..{MAX_IDEMPOTENCY_KEY_CHARS} characters")
        created = datetime.now(UTC).isoformat()
        payload = (json.dumps(function, separators=(",", ":")), json.dumps(constants, separators=(",", ":")),
                   description, json.dumps(params), graph_nodes, created, json.dumps(param_schema))
        prune = time.monotonic() - self._last_prune > _PRUNE_EVERY_S
        if prune:
            self._last_prune = time.monotonic()  # claimed now, so concurrent adds do not all prune

        def insert(cur: Any) -> Registration:
            now = _now_ms()
            if prune:
                cur.execute(self._q("DELETE FROM idempotency_keys WHERE created_ms < ?"),
                            (now - IDEMPOTENCY_TTL_S * 1000,))
            if idempotency_key is not None:
                replay = self._replay(cur, idempotency_key, name, request_hash, now)
                if replay is not None:
                    return replay
            # One statement takes the next number: concurrent writers queue on the row's lock,
            # and a number is never handed out twice (nor reused after a delete).
            cur.execute(self._q("INSERT INTO model_versions (name, last_version) VALUES (?, 1) ON CONFLICT (name) "
                                "DO UPDATE SET last_version = model_versions.last_version + 1 RETURNING last_version"),
                        (name,))
            version = int(cur.fetchone()[0])
            if version > MAX_VERSION:
                raise StoreError(f"{name!r} has used up its version numbers (at most {MAX_VERSION})")
            cur.execute(self._q("INSERT INTO models (name, version, function, constants, description, params, "
                                "graph_nodes, created_at, param_schema) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"),
                        (name, version, *payload))
            if idempotency_key is not None:
                # Two requests with one key racing on PostgreSQL: the second fails here on the
                # primary key, is retried by _run, and then finds the first one's row.
                cur.execute(self._q("INSERT INTO idempotency_keys (idempotency_key, name, version, request_hash, "
                                    "created_ms) VALUES (?, ?, ?, ?, ?)"),
                            (idempotency_key, name, version, request_hash, now))
            self._bump_generation(cur)
            return Registration(version, True)

        return self._run(insert, write=True)

    def _replay(self, cur: Any, key: str, name: str, request_hash: str | None, now: int) -> Registration | None:
        cur.execute(self._q("SELECT name, version, request_hash, created_ms FROM idempotency_keys "
                            "WHERE idempotency_key = ?"), (key,))
        row = cur.fetchone()
        if row is None:
            return None
        if int(row[3]) < now - IDEMPOTENCY_TTL_S * 1000:  # expired, not yet pruned: a new request
            cur.execute(self._q("DELETE FROM idempotency_keys WHERE idempotency_key = ?"), (key,))
            return None
        if row[0] != name or row[2] != request_hash:
            raise IdempotencyConflict(
                f"the idempotency key {key!r} was already used for another request (it registered "
                f"{row[0]!r} version {int(row[1])}); send a new key for a new request", key, row[0], int(row[1]))
        return Registration(int(row[1]), False)

    def _bump_generation(self, cur: Any) -> None:
        cur.execute("UPDATE registry_generation SET generation = generation + 1 WHERE id = 1")

    def delete(self, name: str) -> int:
        """Delete every version of `name`; the number of versions deleted (0: there was none)."""
        def remove(cur: Any) -> int:
            cur.execute(self._q("DELETE FROM models WHERE name = ?"), (name,))
            deleted = cur.rowcount
            if deleted:
                self._bump_generation(cur)
            return deleted

        return self._run(remove, write=True)

    def delete_version(self, name: str, version: int) -> bool:
        """Delete one version of `name`; False when there was no such version. Its number is
        never handed out again."""
        version = _check_version(version)

        def remove(cur: Any) -> bool:
            cur.execute(self._q("DELETE FROM models WHERE name = ? AND version = ?"), (name, version))
            deleted = cur.rowcount > 0
            if deleted:
                self._bump_generation(cur)
            return deleted

        return self._run(remove, write=True)

    def close(self) -> None:
        """Release the registry's connections; it cannot be used afterwards."""


# ----------------------------------------------------------------------------- SQLite


class SqliteRegistry(Registry):
    placeholder = "?"
    backend = "sqlite"

    def __init__(self, path: Path, *, busy_timeout_s: float = 2.0, retry_budget_s: float = 10.0) -> None:
        """`busy_timeout_s`: how long one attempt waits for SQLite's writer lock; `retry_budget_s`:
        how long a write keeps retrying (with jitter) before RegistryUnavailable."""
        super().__init__()
        self.path = Path(path)
        self.location = str(self.path.resolve())
        self.busy_timeout_s = busy_timeout_s
        self.retry_budget_s = retry_budget_s
        self._idle: list[sqlite3.Connection] = []
        self._idle_lock = threading.Lock()
        self._closed = False
        self.path.parent.mkdir(parents=True, exist_ok=True)

        def set_wal(cur: Any) -> None:
            cur.execute("PRAGMA journal_mode = WAL")  # persistent: readers never block the writer

        self._run(set_wal, write=False, migrate=False)
        self._ensure_schema()

    def _open(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, timeout=self.busy_timeout_s, isolation_level=None,
                               check_same_thread=False)  # pooled: used by one thread at a time
        conn.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout_s * 1000)}")
        conn.execute("PRAGMA synchronous = FULL")  # per connection: a committed model survives power loss
        return conn

    @contextmanager
    def _connection(self) -> Iterator[sqlite3.Connection]:
        if self._closed:
            raise RegistryUnavailable("the registry is closed")
        with self._idle_lock:
            conn = self._idle.pop() if self._idle else None
        if conn is None:
            conn = self._open()
        healthy = False
        try:
            yield conn
            healthy = True
        finally:
            with self._idle_lock:
                keep = healthy and not self._closed and len(self._idle) < 16
                if keep:
                    self._idle.append(conn)
            if not keep:
                conn.close()

    @contextmanager
    def _cursor(self, timeout: float | None = None) -> Iterator[sqlite3.Cursor]:
        with self._connection() as conn:
            yield conn.cursor()

    @contextmanager
    def _transaction(self, timeout: float | None = None) -> Iterator[sqlite3.Cursor]:
        with self._connection() as conn:
            cur = conn.cursor()
            cur.execute("BEGIN IMMEDIATE")  # take the writer lock now: one writer at a time, across processes
            try:
                yield cur
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    def _classify(self, error: BaseException) -> str | None:
        if isinstance(error, sqlite3.OperationalError):
            message = str(error).lower()
            if "locked" in message or "busy" in message:
                return _CONTENDED
            return _UNREACHABLE  # cannot open the file, disk I/O error, read-only file system...
        if isinstance(error, sqlite3.Error):
            return _BROKEN
        return None

    def close(self) -> None:
        with self._idle_lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()


# ----------------------------------------------------------------------------- PostgreSQL


class PostgresRegistry(Registry):
    """A registry in PostgreSQL through a psycopg_pool.ConnectionPool.

    Connections are checked on checkout, so one the server closed (a restart, a failover,
    pg_terminate_backend) is replaced before a request sees it. If the database cannot be
    reached at start, the schema is migrated on first use instead: the process starts and
    reports not ready (ping() False) until the database answers.
    """

    placeholder = "%s"
    backend = "postgresql"

    def __init__(self, url: str, *, min_connections: int = 1, max_connections: int = 8,
                 pool_timeout_s: float = 5.0, connect_timeout_s: int = 3, statement_timeout_s: float = 15.0,
                 retry_budget_s: float = 10.0) -> None:
        """`pool_timeout_s` bounds the wait for a connection (then RegistryUnavailable);
        `connect_timeout_s` bounds one connection attempt (libpq's minimum is 2 s);
        `statement_timeout_s` bounds one statement, lock waits included."""
        import psycopg
        from psycopg.conninfo import conninfo_to_dict
        from psycopg_pool import ConnectionPool

        super().__init__()
        self._psycopg = psycopg
        self.url = url
        self.location = _without_password(url)
        self.retry_budget_s = retry_budget_s
        self.pool_timeout_s = pool_timeout_s
        given = conninfo_to_dict(url)
        kwargs: dict[str, Any] = {"autocommit": True}
        # Only where the URL does not choose: a URL's own setting wins.
        if "connect_timeout" not in given:
            kwargs["connect_timeout"] = connect_timeout_s
        if "application_name" not in given:
            kwargs["application_name"] = "nabla-registry"
        statement_ms = int(statement_timeout_s * 1000)

        def configure(conn: Any) -> None:
            conn.execute(f"SET statement_timeout = {statement_ms}")

        self._pool = ConnectionPool(url, kwargs=kwargs, min_size=min_connections, max_size=max_connections,
                                    open=False, configure=configure, check=self._check_on_checkout,
                                    timeout=pool_timeout_s, name="nabla-registry")
        self._pool.open(wait=False)
        try:
            self._ensure_schema()
        except RegistryUnavailable as e:
            log.warning("the PostgreSQL registry is not reachable yet; migrating on first use: %s", e)

    def _check_on_checkout(self, conn: Any) -> None:
        from psycopg_pool import ConnectionPool

        try:
            ConnectionPool.check_connection(conn)
        except Exception:
            # One dead connection usually means all idle ones died together (a server restart or
            # pg_terminate_backend): drop them all now, so the pool's next try is a fresh one.
            self._pool.check()
            raise

    @contextmanager
    def _cursor(self, timeout: float | None = None) -> Iterator[Any]:
        with self._pool.connection(timeout=timeout if timeout is not None else self.pool_timeout_s) as conn:
            with conn.cursor() as cur:
                yield cur

    @contextmanager
    def _transaction(self, timeout: float | None = None) -> Iterator[Any]:
        with self._pool.connection(timeout=timeout if timeout is not None else self.pool_timeout_s) as conn:
            with conn.transaction(), conn.cursor() as cur:
                yield cur

    def _lock_migrations(self, cur: Any) -> None:
        cur.execute("SELECT pg_advisory_xact_lock(%s)", (_PG_LOCK_ID,))  # one migrator at a time

    def _classify(self, error: BaseException) -> str | None:
        from psycopg_pool import PoolClosed, PoolTimeout

        errors = self._psycopg.errors
        if isinstance(error, PoolTimeout | PoolClosed):
            return _UNREACHABLE
        if isinstance(error, errors.SerializationFailure | errors.DeadlockDetected | errors.LockNotAvailable
                      | errors.UniqueViolation):
            return _CONTENDED
        if isinstance(error, errors.QueryCanceled):  # statement_timeout: something holds a lock too long
            return _CONTENDED
        if isinstance(error, self._psycopg.OperationalError | self._psycopg.InterfaceError):
            return _LOST  # server closed the connection, admin shutdown, connection reset
        if isinstance(error, self._psycopg.Error):
            return _BROKEN
        return None

    def close(self) -> None:
        self._pool.close()


def open_registry(database_url: str | None, data_dir: Path) -> Registry:
    """PostgreSQL when `database_url` is set, else SQLite under `data_dir`."""
    if database_url:
        if not database_url.startswith(("postgresql://", "postgres://")):
            raise ValueError("NABLA_DATABASE_URL must be a postgresql:// URL (leave it unset for SQLite)")
        return PostgresRegistry(database_url)
    return SqliteRegistry(Path(data_dir) / "registry.sqlite3")


def _without_password(url: str) -> str:
    """The URL for logs: host, port and database, never the password."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
    return urlunsplit(parts._replace(netloc=netloc))
