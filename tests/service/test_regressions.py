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
