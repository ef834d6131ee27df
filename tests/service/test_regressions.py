"""Bugs found outside the main suites, pinned so they stay fixed."""

from __future__ import annotations

from fastapi.testclient import TestClient

from service.app import create_app
from service.settings import Settings


def test_transforms_without_argnums_accept_functions_of_no_arguments(tmp_path) -> None:
    # argnums only applies to grad-like transforms: `value` of a constant program is fine.
    client = TestClient(create_app(Settings(data_dir=tmp_path, log_level="warning")))
    r = client.post("/v1/value", json={"function": {"expr": "sum(ones((2, 3)))", "params": []}, "args": []})
    assert r.status_code == 200, r.text
    assert r.json()["value"] == 6.0


def test_migrating_a_version_1_registry_keeps_models_and_never_reuses_their_versions(tmp_path) -> None:
    import sqlite3

    from service import store

    path = tmp_path / "registry.sqlite3"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
    for sql in store.MIGRATIONS[0]:
        conn.execute(sql)
    conn.execute("INSERT INTO schema_version (version) VALUES (1)")
    conn.execute("INSERT INTO models VALUES ('m', 4, '{}', '{}', '', '[]', 1, 'then')")
    conn.commit()
    conn.close()

    registry = store.SqliteRegistry(path)  # applies migration 2 on open
    assert registry.schema_version() == len(store.MIGRATIONS)
    assert registry.get("m").version == 4
    registry.delete("m")
    assert registry.add("m", {"expr": "x", "params": ["x"]}, {}, "", ["x"], 1) == 5
