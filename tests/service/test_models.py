"""The model registry over HTTP on both stores (SQLite, PostgreSQL): register, versions, describe,
compute by name, constants bound by name, delete, built-ins, the model-repository folder,
concurrent registrations, and restarts (a new app, and a real uvicorn server, on the same store)."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from _service_support import (
    B_GRAD,
    INPUTS,
    LOSS,
    PARAMS,
    TARGETS,
    TUTORIAL_EXPR,
    W_GRAD,
    arr,
    assert_error,
    expr,
    tutorial_b,
    tutorial_graph,
    tutorial_w,
)
from fastapi.testclient import TestClient

BUILTINS = {"tutorial_logreg", "logistic_regression", "linear_regression", "mlp_classifier", "rosenbrock"}


def register(client: TestClient, body: dict[str, Any], status: int = 201) -> dict[str, Any]:
    response = client.post("/v1/models", json=body)
    assert response.status_code == status, response.text
    return response.json()


def compute(client: TestClient, path: str, body: dict[str, Any]) -> dict[str, Any]:
    response = client.post(path, json=body)
    assert response.status_code == 200, response.text
    return response.json()


def test_register_versions_describe_compute_delete(make_client: Callable[..., TestClient],
                                                   store: dict[str, Any]) -> None:
    client = make_client(**store)
    assert client.get("/readyz").json()["registry"] == ("postgresql" if store else "sqlite")
    v1 = register(client, {"name": "scaled", "description": "c * sum(x**2)",
                           "function": expr("c * sum(x ** 2)", ["x", "c"]), "constants": {"c": 1.0}})
    assert v1 == {"name": "scaled", "version": 1, "params": ["x"], "constants": ["c"],
                  "graph_nodes": v1["graph_nodes"], "schema": None, "signature": None}
    v2 = register(client, {"name": "scaled", "function": expr("c * sum(x ** 2)", ["x", "c"]),
                           "constants": {"c": 10.0}})
    assert v2["version"] == 2

    info = client.get("/v1/models/scaled").json()
    assert info["source"] == "registry" and info["versions"] == [1, 2] and info["latest"] == 2
    assert info["params"] == ["x"] and info["constants"] == ["c"]
    assert info["function"] == expr("c * sum(x ** 2)", ["x", "c"]) and info["created_at"]
    listed = {m["name"]: m for m in client.get("/v1/models").json()["models"]}
    assert listed["scaled"]["version"] == 2 and listed["scaled"]["source"] == "registry"
    assert BUILTINS <= set(listed)

    x = {"args": [[1.0, 2.0]]}
    assert compute(client, "/v1/models/scaled/value", x)["value"] == 50.0  # the latest version
    assert compute(client, "/v1/models/scaled/value", {**x, "version": 1})["value"] == 5.0
    out = compute(client, "/v1/grad", {"function": {"model": "scaled", "version": 1}, **x})
    assert out["grad"] == [2.0, 4.0] and out["meta"]["model"] == {"name": "scaled", "version": 1}
    out = compute(client, "/v1/grad", {"function": {"model": "scaled"}, **x})
    assert out["grad"] == [20.0, 40.0] and out["meta"]["model"] == {"name": "scaled", "version": 2}
    assert_error(client.post("/v1/models/scaled/value", json={**x, "version": 3}), 404, "not_found",
                 "no version 3", {"model": "scaled", "version": 3})

    deleted = client.delete("/v1/models/scaled")
    assert deleted.status_code == 200 and deleted.json() == {"name": "scaled", "deleted_versions": 2}
    assert_error(client.get("/v1/models/scaled"), 404, "not_found", "scaled", {"model": "scaled"})
    assert_error(client.post("/v1/models/scaled/value", json=x), 404, "not_found", "no model named 'scaled'")
    assert_error(client.delete("/v1/models/scaled"), 404, "not_found", "scaled")
    assert "scaled" not in {m["name"] for m in client.get("/v1/models").json()["models"]}

    # the name is free again, but version numbers are never reused (replicas may cache an old
    # (name, version)): the new function is version 3, computed, not a cached plan of the old one
    again = register(client, {"name": "scaled", "function": expr("sum(x) * 3", ["x"])})
    assert again["version"] == 3
    assert compute(client, "/v1/models/scaled/value", x)["value"] == 9.0


def test_the_tutorial_as_registered_expression_and_graph(make_client: Callable[..., TestClient],
                                                         store: dict[str, Any]) -> None:
    client = make_client(**store)
    register(client, {"name": "tut_expr", "function": expr(TUTORIAL_EXPR, PARAMS),
                      "constants": {"inputs": INPUTS, "targets": TARGETS}})
    register(client, {"name": "tut_graph", "function": {"graph": tutorial_graph(with_constants=True)}})
    for name in ("tut_expr", "tut_graph", "tutorial_logreg"):
        out = compute(client, f"/v1/models/{name}/value_and_grad",
                      {"args": [tutorial_w(), tutorial_b()], "argnums": [0, 1]})
        np.testing.assert_allclose(arr(out["value"]), LOSS, rtol=1e-6)
        np.testing.assert_allclose(arr(out["grad"][0]), W_GRAD, rtol=1e-6)
        np.testing.assert_allclose(arr(out["grad"][1]), B_GRAD, rtol=1e-6)


def test_constants_bind_parameters_by_name(client: TestClient) -> None:
    # bind the middle and last parameters; callers send the rest, in order
    body = {"name": "affine", "function": expr("sum(a * x + b) + 0 * y", ["a", "x", "b", "y"]),
            "constants": {"x": [1.0, 2.0], "y": {"$array": {"dtype": "float32", "shape": [], "data": "AAAAAA=="}}}}
    info = register(client, body)
    assert info["params"] == ["a", "b"] and info["constants"] == ["x", "y"]
    out = compute(client, "/v1/models/affine/grad", {"args": [3.0, 0.5], "argnums": [0, 1]})
    assert out["grad"] == [3.0, 2.0]
    assert_error(client.post("/v1/models/affine/value", json={"args": [3.0, 0.5, 1.0]}), 400, "invalid_request",
                 "takes 2 argument", {"expected": ["a", "b"], "got": 3})
    assert_error(client.post("/v1/models", json={"name": "bad", "function": expr("x", ["x"]),
                                                 "constants": {"z": 1.0}}),
                 400, "invalid_request", "name no parameter")
    assert_error(client.post("/v1/models", json={"name": "bad", "function": expr("x", ["x"]),
                                                 "constants": [1.0]}),
                 400, "invalid_request", "constants must be an object")


def test_builtin_models_are_listed_described_and_protected(client: TestClient) -> None:
    listed = {m["name"]: m for m in client.get("/v1/models").json()["models"]}
    assert BUILTINS <= set(listed)
    assert all(listed[name]["source"] == "builtin" for name in BUILTINS)
    assert listed["tutorial_logreg"]["params"] == ["W", "b"]
    info = client.get("/v1/models/tutorial_logreg").json()
    assert info["constants"] == ["inputs", "targets"] and info["versions"] == [1]
    assert_error(client.delete("/v1/models/rosenbrock"), 409, "conflict", "cannot be deleted")
    assert_error(client.post("/v1/models", json={"name": "rosenbrock", "function": expr("x", ["x"])}),
                 409, "conflict", "cannot be replaced")
    # every built-in computes
    rng = np.random.default_rng(3)
    X, y = rng.normal(size=(6, 2)).tolist(), [0.0, 1.0, 1.0, 0.0, 1.0, 0.0]
    assert compute(client, "/v1/models/logistic_regression/grad", {"args": [[0.1, -0.2], 0.0, X, y]})["grad"]
    out = compute(client, "/v1/models/linear_regression/grad", {"args": [[0.0, 0.0], 0.0, X, y], "argnums": 1,
                                                                "dtype": "float64"})
    np.testing.assert_allclose(out["grad"], -2 * np.mean(y), rtol=1e-12)


def _write_repository(folder: Path) -> None:
    (folder / "cubic.json").write_text(json.dumps({
        "name": "cubic", "description": "k * x ** 3", "function": expr("sum(k * x ** 3)", ["x", "k"]),
        "constants": {"k": 2.0}}))
    (folder / "tutorial.json").write_text(json.dumps({
        "name": "repo_tutorial", "function": {"graph": tutorial_graph(with_constants=True)}}))
    (folder / "README.txt").write_text("not a model")


def test_model_repository_folder(make_client: Callable[..., TestClient], tmp_path: Path) -> None:
    folder = tmp_path / "models"
    folder.mkdir()
    _write_repository(folder)
    client = make_client(model_repository=folder)
    listed = {m["name"]: m for m in client.get("/v1/models").json()["models"]}
    assert listed["cubic"]["source"] == "repository" and listed["cubic"]["params"] == ["x"]
    assert listed["repo_tutorial"]["source"] == "repository"
    info = client.get("/v1/models/cubic").json()
    assert info["description"] == "k * x ** 3" and info["constants"] == ["k"] and info["versions"] == [1]
    assert compute(client, "/v1/models/cubic/grad", {"args": [[1.0, 2.0]]})["grad"] == [6.0, 24.0]
    out = compute(client, "/v1/models/repo_tutorial/grad", {"args": [tutorial_w(), tutorial_b()]})
    np.testing.assert_allclose(arr(out["grad"]), W_GRAD, rtol=1e-6)
    assert_error(client.delete("/v1/models/cubic"), 409, "conflict", "cannot be deleted")
    assert_error(client.post("/v1/models", json={"name": "cubic", "function": expr("x", ["x"])}), 409, "conflict")
    assert_error(client.post("/v1/models/cubic/value", json={"args": [1.0], "version": 2}), 404, "not_found")


def test_a_bad_model_repository_file_stops_the_start(make_app: Callable[..., Any], tmp_path: Path) -> None:
    folder = tmp_path / "models"
    folder.mkdir()
    (folder / "broken.json").write_text(json.dumps({"name": "broken", "function": expr("x +", ["x"])}))
    with pytest.raises(Exception, match="syntax"):
        make_app(model_repository=folder)
    (folder / "broken.json").write_text(json.dumps({"name": "rosenbrock", "function": expr("x", ["x"])}))
    with pytest.raises(RuntimeError, match="defined twice"):
        make_app(model_repository=folder)
    with pytest.raises(RuntimeError, match="not a folder"):
        make_app(model_repository=tmp_path / "missing")


def test_concurrent_registrations_get_distinct_consecutive_versions(make_client: Callable[..., TestClient],
                                                                    store: dict[str, Any]) -> None:
    client = make_client(compute_threads=8, **store)
    n = 16
    versions: list[int] = []
    errors: list[str] = []
    barrier = threading.Barrier(n)

    def worker(i: int) -> None:
        barrier.wait()
        response = client.post("/v1/models", json={"name": "raced", "function": expr(f"x * {i}", ["x"])})
        if response.status_code == 201:
            versions.append(response.json()["version"])
        else:
            errors.append(response.text)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert sorted(versions) == list(range(1, n + 1))
    assert client.get("/v1/models/raced").json()["versions"] == list(range(1, n + 1))
    # each version is the function registered under it
    multipliers = {compute(client, "/v1/models/raced/value", {"args": [1.0], "version": v})["value"]
                   for v in range(1, n + 1)}
    assert multipliers == {float(i) for i in range(n)}


def test_a_new_app_on_the_same_store_keeps_registered_models(make_client: Callable[..., TestClient],
                                                             store: dict[str, Any]) -> None:
    first = make_client(**store)
    register(first, {"name": "kept", "function": expr("sum(x * w)", ["x", "w"]), "constants": {"w": [1.0, -1.0]}})
    register(first, {"name": "kept", "function": expr("sum(x * w) * 2", ["x", "w"]), "constants": {"w": [1.0, 1.0]}})
    second = make_client(**store)  # a restart: a new app, new caches, the same data dir / database
    assert second.get("/v1/models/kept").json()["versions"] == [1, 2]
    assert compute(second, "/v1/models/kept/value", {"args": [[3.0, 4.0]]})["value"] == 14.0
    assert compute(second, "/v1/models/kept/grad", {"args": [[3.0, 4.0]], "version": 1})["grad"] == [1.0, -1.0]


def test_a_restarted_uvicorn_server_keeps_registered_models(start_server: Callable[..., Any], data_dir: Path,
                                                            store: dict[str, Any]) -> None:
    env = {"NABLA_DATA_DIR": str(data_dir), "NABLA_API_KEYS": "user", "NABLA_ADMIN_KEYS": "admin"}
    if store:
        env["NABLA_DATABASE_URL"] = store["database_url"]
    admin = {"Authorization": "Bearer admin"}
    server = start_server(env)
    response = httpx.post(server.url + "/v1/models", headers=admin, json={
        "name": "survivor", "function": expr(TUTORIAL_EXPR, PARAMS), "constants": {"inputs": INPUTS,
                                                                                   "targets": TARGETS}})
    assert response.status_code == 201, response.text
    server.stop()
    assert server.process.returncode is not None

    again = start_server(env)
    response = httpx.post(again.url + "/v1/models/survivor/grad", headers={"Authorization": "Bearer user"},
                          json={"args": [tutorial_w(), tutorial_b()], "argnums": [0, 1]})
    assert response.status_code == 200, response.text
    np.testing.assert_allclose(arr(response.json()["grad"][0]), W_GRAD, rtol=1e-6)
    np.testing.assert_allclose(arr(response.json()["grad"][1]), B_GRAD, rtol=1e-6)
    assert httpx.get(again.url + "/readyz").json()["registry"] == ("postgresql" if store else "sqlite")


def test_register_refuses_bad_bodies(client: TestClient) -> None:
    ok = expr("x", ["x"])
    cases = [
        ({"name": "bad name!", "function": ok}, 400, "invalid_request", "name must be"),
        ({"name": "", "function": ok}, 400, "invalid_request", "name must be"),
        ({"name": "x" * 65, "function": ok}, 400, "invalid_request", "name must be"),
        ({"name": "m", "function": {"model": "rosenbrock"}}, 400, "invalid_request", "not a reference"),
        ({"name": "m", "function": ok, "extra": 1}, 400, "invalid_request", "unknown field"),
        ({"name": "m", "function": ok, "description": 5}, 400, "invalid_request", "description"),
        ({"name": "m"}, 400, "invalid_request", "needs a `function`"),
        ({"name": "m", "function": expr("x +", ["x"])}, 422, "invalid_function", "syntax"),
        ({"name": "m", "function": ok, "constants": {"x": "word"}}, 422, "invalid_argument", "constants['x']"),
    ]
    for body, status, error_type, fragment in cases:
        assert_error(client.post("/v1/models", json=body), status, error_type, fragment)
    assert_error(client.post("/v1/models", content=b"[]", headers={"content-type": "application/json"}), 400,
                 "invalid_request", "JSON object")
    assert [m for m in client.get("/v1/models").json()["models"] if m["source"] == "registry"] == []
