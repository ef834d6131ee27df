"""The model registry: SQLite by default (one host), PostgreSQL to share it between replicas.

Each registration is one row `(name, version)` written in a single transaction, so a crash
leaves either the whole model or nothing. Versions are assigned inside the transaction; two
writers racing for the same name get consecutive versions (the primary key refuses a
duplicate and the loser retries). The schema is versioned from day one: `schema_version`
records which migrations ran, and every process applies missing ones under a lock at start.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

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
]
_PG_LOCK_ID = 727_001  # an arbitrary advisory-lock key for migrations


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


class StoreError(Exception):
    """The registry could not be reached or written."""


class _VersionTaken(Exception):
    """Another writer registered the version this one was about to take."""


class Registry:
    """Common logic; subclasses supply connections and the SQL placeholder."""

    placeholder = "?"
    backend = "?"

    def _connect(self) -> Any:
        raise NotImplementedError

    def _cursor(self) -> Iterator[Any]:
        raise NotImplementedError

    def _q(self, sql: str) -> str:
        return sql.replace("?", self.placeholder)

    # ------------------------------------------------------------------ reads

    def ping(self) -> bool:
        try:
            with self._cursor() as cur:
                cur.execute("SELECT 1")
                cur.fetchone()
            return True
        except Exception:
            return False

    def schema_version(self) -> int:
        with self._cursor() as cur:
            cur.execute("SELECT MAX(version) FROM schema_version")
            row = cur.fetchone()
        return int(row[0] or 0)

    def latest_version(self, name: str) -> int | None:
        with self._cursor() as cur:
            cur.execute(self._q("SELECT MAX(version) FROM models WHERE name = ?"), (name,))
            row = cur.fetchone()
        return None if row is None or row[0] is None else int(row[0])

    def get(self, name: str, version: int | None = None) -> ModelRecord | None:
        if version is None:
            version = self.latest_version(name)
            if version is None:
                return None
        with self._cursor() as cur:
            cur.execute(self._q("SELECT name, version, function, constants, description, params, graph_nodes, "
                                "created_at FROM models WHERE name = ? AND version = ?"), (name, version))
            row = cur.fetchone()
        if row is None:
            return None
        return ModelRecord(row[0], int(row[1]), json.loads(row[2]), json.loads(row[3]), row[4],
                           json.loads(row[5]), int(row[6]), str(row[7]))

    def versions(self, name: str) -> list[int]:
        with self._cursor() as cur:
            cur.execute(self._q("SELECT version FROM models WHERE name = ? ORDER BY version"), (name,))
            return [int(r[0]) for r in cur.fetchall()]

    def list(self) -> list[ModelRecord]:
        """The latest version of every model."""
        with self._cursor() as cur:
            cur.execute("SELECT m.name, m.version, m.description, m.params, m.graph_nodes, m.created_at "
                        "FROM models m JOIN (SELECT name, MAX(version) AS v FROM models GROUP BY name) l "
                        "ON m.name = l.name AND m.version = l.v ORDER BY m.name")
            rows = cur.fetchall()
        return [ModelRecord(r[0], int(r[1]), {}, {}, r[2], json.loads(r[3]), int(r[4]), str(r[5])) for r in rows]

    # ------------------------------------------------------------------ writes

    def add(self, name: str, function: dict[str, Any], constants: dict[str, Any], description: str,
            params: list[str], graph_nodes: int) -> int:
        """Store a new version of `name` and return its number."""
        created = datetime.now(UTC).isoformat()
        payload = (json.dumps(function, separators=(",", ":")), json.dumps(constants, separators=(",", ":")),
                   description, json.dumps(params), graph_nodes, created)
        for attempt in range(20):
            try:
                return self._insert_next_version(name, payload)
            except self._integrity_errors():
                time.sleep(0.005 * (attempt + 1))  # another writer took that version: try the next
        raise StoreError(f"could not register {name!r}: too many concurrent writers")

    def _insert_next_version(self, name: str, payload: tuple) -> int:
        with self._transaction() as cur:
            cur.execute(self._q("SELECT last_version FROM model_versions WHERE name = ?"), (name,))
            row = cur.fetchone()
            version = (int(row[0]) if row else 0) + 1
            if row:
                # Only if nobody advanced it meanwhile; otherwise retry with the next number.
                cur.execute(self._q("UPDATE model_versions SET last_version = ? WHERE name = ? AND last_version = ?"),
                            (version, name, version - 1))
                if cur.rowcount != 1:
                    raise _VersionTaken
            else:
                cur.execute(self._q("INSERT INTO model_versions (name, last_version) VALUES (?, ?)"), (name, version))
            cur.execute(self._q("INSERT INTO models (name, version, function, constants, description, params, "
                                "graph_nodes, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"), (name, version, *payload))
        return version

    def _integrity_errors(self) -> tuple[type[Exception], ...]:
        raise NotImplementedError

    def delete(self, name: str) -> int:
        with self._transaction() as cur:
            cur.execute(self._q("DELETE FROM models WHERE name = ?"), (name,))
            return cur.rowcount

    def _transaction(self) -> Any:
        raise NotImplementedError

    def _lock_migrations(self, cur: Any) -> None:
        """Keep other processes from migrating at the same time (SQLite's writer lock does)."""

    def _migrate(self) -> None:
        with self._transaction() as cur:
            self._lock_migrations(cur)
            cur.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
            cur.execute("SELECT MAX(version) FROM schema_version")
            current = cur.fetchone()[0] or 0
            for number, statements in enumerate(MIGRATIONS, start=1):
                if number > current:
                    for sql in statements:
                        cur.execute(sql)
                    cur.execute(self._q("INSERT INTO schema_version (version) VALUES (?)"), (number,))

    def close(self) -> None:
        pass


class _SqliteCursor:
    def __init__(self, path: Path, write: bool) -> None:
        self.path = path
        self.write = write

    def __enter__(self) -> sqlite3.Cursor:
        self.conn = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        self.conn.execute("PRAGMA busy_timeout = 30000")
        self.cur = self.conn.cursor()
        if self.write:
            self.cur.execute("BEGIN IMMEDIATE")  # one writer at a time, across processes
        return self.cur

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        try:
            if self.write:
                self.conn.execute("COMMIT" if exc_type is None else "ROLLBACK")
        finally:
            self.conn.close()


class SqliteRegistry(Registry):
    placeholder = "?"
    backend = "sqlite"

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        try:
            conn.execute("PRAGMA journal_mode = WAL")  # readers never block the writer
            conn.execute("PRAGMA synchronous = FULL")  # a committed model survives power loss
        finally:
            conn.close()
        self._migrate()

    def _cursor(self) -> _SqliteCursor:
        return _SqliteCursor(self.path, write=False)

    def _transaction(self) -> _SqliteCursor:
        return _SqliteCursor(self.path, write=True)

    def _integrity_errors(self) -> tuple[type[Exception], ...]:
        return (sqlite3.IntegrityError, _VersionTaken)


class PostgresRegistry(Registry):
    placeholder = "%s"
    backend = "postgresql"

    def __init__(self, url: str) -> None:
        import psycopg

        self._psycopg = psycopg
        self.url = url
        self._local = threading.local()
        self._migrate()

    def _conn(self) -> Any:
        conn = getattr(self._local, "conn", None)
        if conn is None or conn.closed or conn.broken:
            conn = self._psycopg.connect(self.url, autocommit=True, connect_timeout=5)
            self._local.conn = conn
        return conn

    def _cursor(self) -> Any:
        return _PgCursor(self, write=False)

    def _transaction(self) -> Any:
        return _PgCursor(self, write=True)

    def _lock_migrations(self, cur: Any) -> None:
        cur.execute("SELECT pg_advisory_xact_lock(%s)", (_PG_LOCK_ID,))  # one migrator at a time

    def _integrity_errors(self) -> tuple[type[Exception], ...]:
        return (self._psycopg.errors.UniqueViolation, _VersionTaken)

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()


class _PgCursor:
    def __init__(self, registry: PostgresRegistry, write: bool) -> None:
        self.registry = registry
        self.write = write

    def __enter__(self) -> Any:
        conn = self.registry._conn()
        if self.write:
            self.tx = conn.transaction()
            self.tx.__enter__()
        self.cur = conn.cursor()
        return self.cur

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        try:
            self.cur.close()
        finally:
            if self.write:
                self.tx.__exit__(exc_type, exc, tb)


def open_registry(database_url: str | None, data_dir: Path) -> Registry:
    if database_url:
        if not database_url.startswith(("postgresql://", "postgres://")):
            raise ValueError("NABLA_DATABASE_URL must be a postgresql:// URL (leave it unset for SQLite)")
        return PostgresRegistry(database_url)
    return SqliteRegistry(Path(data_dir) / "registry.sqlite3")
