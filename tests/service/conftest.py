"""Fixtures of the service tests: apps on a temporary data dir, TestClients and PostgreSQL schemas
(real servers on loopback: `start_server` in tests/conftest.py).

PostgreSQL: tests that use the `postgresql` store get a schema of their own (named after a prefix
unique to the test session) on NABLA_TEST_POSTGRES_URL (default postgresql://postgres@127.0.0.1:5432/test);
every schema is dropped at the end of the session. When the server is unreachable those tests skip.
"""

from __future__ import annotations

import os
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from service.app import create_app
from service.settings import Settings

# The test modules import _service_support from this folder, under any --import-mode.
if str(Path(__file__).parent) not in sys.path:
    sys.path.insert(0, str(Path(__file__).parent))

PG_BASE_URL = os.environ.get("NABLA_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")


# ----------------------------------------------------------------------------- apps and clients


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    path = tmp_path / "data"
    path.mkdir()
    return path


@pytest.fixture
def make_settings(data_dir: Path) -> Callable[..., Settings]:
    def make(**overrides: Any) -> Settings:
        values: dict[str, Any] = {"data_dir": data_dir, "log_level": "warning"}
        values.update(overrides)
        return Settings(**values)

    return make


@pytest.fixture
def make_app(make_settings: Callable[..., Settings]) -> Callable[..., FastAPI]:
    """create_app(Settings(data_dir=<tmp>, log_level="warning", **overrides))."""

    def make(**overrides: Any) -> FastAPI:
        return create_app(make_settings(**overrides))

    return make


@pytest.fixture
def make_client(make_app: Callable[..., FastAPI]) -> Iterator[Callable[..., TestClient]]:
    """A TestClient of a new app with the given settings; server exceptions are raised, so a 500
    fails the test with its traceback."""
    clients: list[TestClient] = []

    def make(headers: dict[str, str] | None = None, **overrides: Any) -> TestClient:
        client = TestClient(make_app(**overrides), headers=headers)
        client.__enter__()
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.__exit__(None, None, None)


@pytest.fixture
def client(make_client: Callable[..., TestClient]) -> TestClient:
    return make_client()


# ----------------------------------------------------------------------------- PostgreSQL


@pytest.fixture(scope="session")
def pg_schemas() -> Iterator[Callable[[], str]]:
    """A factory of fresh schemas (URLs whose search_path is the schema), all dropped at the end."""
    try:
        import psycopg

        admin = psycopg.connect(PG_BASE_URL, autocommit=True, connect_timeout=3)
    except Exception as e:  # noqa: BLE001 - any failure to connect means: no server to test against
        pytest.skip(f"PostgreSQL is not reachable at {PG_BASE_URL} ({type(e).__name__}: {e})")
    prefix = f"nabla_test_{uuid.uuid4().hex[:10]}"
    created: list[str] = []

    def new_schema() -> str:
        name = f"{prefix}_{len(created)}"
        admin.execute(f'CREATE SCHEMA "{name}"')
        created.append(name)
        return f"{PG_BASE_URL}?options=-csearch_path%3D{name}"

    yield new_schema
    for name in created:
        admin.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')
    admin.close()


@pytest.fixture
def pg_url(pg_schemas: Callable[[], str]) -> str:
    return pg_schemas()


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest) -> dict[str, Any]:
    """Settings overrides selecting the registry backend (the app's data dir is always a tmp dir)."""
    if request.param == "sqlite":
        return {}
    return {"database_url": request.getfixturevalue("pg_url")}
