"""Introspection and operations: /v1/ops, /v1/shapes, /livez, /readyz, /metrics, the offline docs,
the OpenAPI document, request ids and JSON log lines."""

from __future__ import annotations

import io
import json
import logging
import re
from collections.abc import Callable
from typing import Any

from _service_support import expr, tutorial_graph
from fastapi.testclient import TestClient

from engine.primitives import PRIMITIVES
from service.app import JsonLogFormatter
from service.compute import TRANSFORMS


def test_ops_lists_every_primitive_with_arity_attrs_and_rules(client: TestClient) -> None:
    body = client.get("/v1/ops").json()
    assert body["graph_format"] == "nabla.graph/1"
    ops = {op["name"]: op for op in body["ops"]}
    assert set(ops) == set(PRIMITIVES) - {"custom_vjp_call"}
    for name, op in ops.items():
        prim = PRIMITIVES[name]
        assert op["arity"] == prim.arity and op["attrs"] == list(prim.attr_names)
        assert isinstance(op["vjp"], bool) and isinstance(op["jvp"], bool) and isinstance(op["doc"], str)
    assert ops["add"]["arity"] == 2 and ops["add"]["vjp"] and ops["add"]["jvp"]
    assert ops["reduce_sum"]["attrs"] == ["axes"]
    assert ops["argmax"]["vjp"] is False  # integer-valued: no derivative
    assert {"tanh", "sum", "matmul", "linalg.inv"} <= set(body["expression_functions"])


def test_shapes_are_inferred_without_computing(client: TestClient) -> None:
    response = client.post("/v1/shapes", json={"function": expr("(tanh(A @ x), sum(x) > 0)", ["A", "x"]),
                                               "args": [{"shape": [100, 50]}, {"shape": [50], "dtype": "float64"}]})
    assert response.status_code == 200, response.text
    out = response.json()
    assert out["output"] == [{"shape": [100], "dtype": "float64"}, {"shape": [], "dtype": "bool"}]
    assert out["meta"]["graph_nodes"] > 0
    # pytrees of specs; a model; a graph
    mlp = client.post("/v1/shapes", json={"function": {"model": "mlp_classifier"}, "args": [
        {"W1": {"shape": [3, 8]}, "b1": {"shape": [8]}, "W2": {"shape": [8, 4]}, "b2": {"shape": [4]}},
        {"shape": [10, 3]}, {"shape": [10], "dtype": "int32"}]}).json()
    assert mlp["output"] == {"shape": [], "dtype": "float64"}  # a spec's dtype defaults to float64
    graph = client.post("/v1/shapes", json={"function": {"graph": tutorial_graph(with_constants=True)},
                                            "args": [{"shape": [3], "dtype": "float32"},
                                                     {"shape": [], "dtype": "float32"}]}).json()
    assert graph["output"] == {"shape": [], "dtype": "float32"}
    # sizes far beyond memory are fine as long as every intermediate is within the budget... and
    # refused when one is not (nothing is allocated either way)
    big = client.post("/v1/shapes", json={"function": expr("sum(x)", ["x"]), "args": [{"shape": [10**7]}]})
    assert big.status_code == 200 and big.json()["output"]["shape"] == []


def test_livez_and_readyz(client: TestClient) -> None:
    assert client.get("/livez").json() == {"status": "ok"}
    assert client.get("/readyz").json() == {"status": "ok", "registry": "sqlite"}


def test_readyz_is_503_when_the_registry_does_not_answer(client: TestClient) -> None:
    registry = client.app.state.service.registry
    registry.ping = lambda: False  # the store is down
    response = client.get("/readyz")
    assert response.status_code == 503
    assert response.json()["error"]["type"] == "not_ready"
    assert client.get("/livez").status_code == 200  # alive, though not ready


def test_readyz_on_postgresql(make_client: Callable[..., TestClient], pg_url: str) -> None:
    assert make_client(database_url=pg_url).get("/readyz").json() == {"status": "ok", "registry": "postgresql"}


def _samples(text: str, name: str) -> dict[str, float]:
    out = {}
    for line in text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            key, value = line.rsplit(" ", 1)
            out[key] = float(value)
    return out


def test_metrics_count_requests_latency_errors_and_cache(client: TestClient) -> None:
    body = {"function": expr("sum(x ** 2)", ["x"]), "args": [[1.0, 2.0]]}
    for _ in range(3):
        assert client.post("/v1/grad", json=body).status_code == 200
    client.post("/v1/grad", json={**body, "args": []})
    client.post("/v1/value", json={"function": {"model": "missing"}, "args": []})
    client.get("/v1/no/such/path")
    response = client.get("/metrics")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    text = response.text
    requests = _samples(text, "nabla_http_requests_total")
    assert requests['nabla_http_requests_total{method="POST",route="/v1/grad",status="200"}'] == 3
    assert requests['nabla_http_requests_total{method="POST",route="/v1/grad",status="400"}'] == 1
    assert requests['nabla_http_requests_total{method="POST",route="/v1/value",status="404"}'] == 1
    assert requests['nabla_http_requests_total{method="GET",route="unmatched",status="404"}'] == 1  # no path label
    latency = _samples(text, "nabla_http_request_seconds_count")
    assert latency['nabla_http_request_seconds_count{method="POST",route="/v1/grad"}'] == 4
    assert 'nabla_http_request_seconds_bucket{le="0.1",method="POST",route="/v1/grad"}' in text
    errors = _samples(text, "nabla_errors_total")
    assert errors['nabla_errors_total{type="invalid_request"}'] == 1
    assert errors['nabla_errors_total{type="not_found"}'] == 2
    cache = _samples(text, "nabla_plan_cache_total")
    assert cache['nabla_plan_cache_total{result="miss"}'] == 1 and cache['nabla_plan_cache_total{result="hit"}'] == 2
    assert _samples(text, "nabla_plan_cache_entries")["nabla_plan_cache_entries"] == 1
    assert _samples(text, "nabla_compute_seconds_count")['nabla_compute_seconds_count{transform="grad"}'] == 3


def test_docs_render_offline_from_local_assets(client: TestClient) -> None:
    for page in ("/docs", "/redoc"):
        html = client.get(page)
        assert html.status_code == 200 and "text/html" in html.headers["content-type"]
        assets = re.findall(r'(?:src|href)="([^"]+)"', html.text)
        assert assets, html.text
        for asset in assets:
            assert not asset.startswith(("http://", "https://", "//")), f"{page} loads {asset} from the internet"
            response = client.get(asset)
            assert response.status_code == 200, asset
            assert len(response.content) > 0
        assert "/openapi.json" in html.text


def test_openapi_has_every_endpoint_examples_and_the_graph_schema(client: TestClient) -> None:
    doc = client.get("/openapi.json").json()
    paths = doc["paths"]
    for transform in TRANSFORMS:
        op = paths[f"/v1/{transform}"]["post"]
        content = op["requestBody"]["content"]["application/json"]
        model = "".join(part.capitalize() for part in transform.split("_")) + "Request"
        assert content["schema"] == {"$ref": f"#/components/schemas/{model}"}
        assert content["examples"], transform
        assert "4XX" in op["responses"]
    expected = {("/v1/models", "get"), ("/v1/models", "post"), ("/v1/models/{name}", "get"),
                ("/v1/models/{name}", "delete"), ("/v1/models/{name}/grad", "post"), ("/v1/ops", "get"),
                ("/v1/models/{name}/versions/{version}", "delete"), ("/v1/models/{name}/schema", "get"),
                ("/v1/shapes", "post"), ("/livez", "get"), ("/readyz", "get"), ("/metrics", "get")}
    for path, method in expected:
        assert method in paths[path], (path, method)
    schemas = doc["components"]["schemas"]
    assert {"GradRequest", "ModelGradRequest", "HessianRequest", "RegisterRequest", "ShapesRequest", "ErrorResponse",
            "NablaGraphV1"} <= set(schemas)
    assert "nodes" in json.dumps(schemas["NablaGraphV1"])
    # every $ref points at a schema that exists
    refs = set(re.findall(r'"\$ref": "#/components/schemas/([^"]+)"', json.dumps(doc)))
    assert refs <= set(schemas), refs - set(schemas)
    # the examples work as documented
    for transform in TRANSFORMS:
        content = paths[f"/v1/{transform}"]["post"]["requestBody"]["content"]["application/json"]
        for example in content["examples"].values():
            response = client.post(f"/v1/{transform}", json=example["value"])
            assert response.status_code == 200, (transform, response.text)


def test_every_response_has_a_request_id_and_a_given_one_is_echoed(client: TestClient) -> None:
    for method, path in (("get", "/livez"), ("get", "/readyz"), ("get", "/metrics"), ("get", "/v1/ops"),
                         ("get", "/docs"), ("get", "/openapi.json"), ("get", "/nowhere"), ("post", "/v1/value")):
        response = getattr(client, method)(path)
        assert re.fullmatch(r"[0-9a-f]{32}", response.headers["x-request-id"]), path
        response = getattr(client, method)(path, headers={"X-Request-ID": "trace-abc.1"})
        assert response.headers["x-request-id"] == "trace-abc.1", path
    ids = {client.get("/livez").headers["x-request-id"] for _ in range(5)}
    assert len(ids) == 5


def test_log_lines_are_json_with_the_request_id(client: TestClient) -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonLogFormatter())
    logger = logging.getLogger("nabla")
    logger.addHandler(handler)
    level = logger.level
    logger.setLevel(logging.INFO)
    try:
        client.post("/v1/grad", json={"function": expr("x * 2", ["x"]), "args": [[1.0]]},
                    headers={"X-Request-ID": "log-check-1"})
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    lines: list[dict[str, Any]] = [json.loads(line) for line in stream.getvalue().splitlines()]
    access = [entry for entry in lines if entry.get("request_id") == "log-check-1"]
    assert access, lines
    entry = access[-1]
    assert entry["method"] == "POST" and entry["path"] == "/v1/grad" and entry["status"] == 422
    assert isinstance(entry["ms"], float) and entry["level"] == "info"


def test_echo_returns_the_body(client: TestClient) -> None:
    body = b'{"function": {"expr": "x", "params": ["x"]}, "args": [1.0]}'
    response = client.post("/v1/echo", content=body, headers={"content-type": "application/json"})
    assert response.status_code == 200 and response.content == body
    assert response.headers["content-type"] == "application/json"


def test_openapi_is_enough_to_generate_a_client(client: TestClient) -> None:
    """Named operations, a documented 200/201 body everywhere, our error body (not FastAPI's),
    a bearer scheme, and no benchmark-only route."""
    doc = client.get("/openapi.json").json()
    ids = {op["operationId"] for ops in doc["paths"].values() for op in ops.values()}
    assert {"grad", "hessian", "model_grad", "register_model", "get_model", "list_models", "delete_model_version",
            "shapes", "ops", "livez"} <= ids
    assert not any("_post" in i or "_get" in i for i in ids), ids
    assert "/v1/echo" not in doc["paths"]
    assert "bearer" in doc["components"]["securitySchemes"]
    assert "HTTPValidationError" not in doc["components"]["schemas"]
    for path, ops in doc["paths"].items():
        for method, op in ops.items():
            ok = [s for s in op["responses"] if s.startswith("2")]
            assert ok, (path, method)
            if path != "/metrics" and path != "/v1/models/{name}/schema":
                schema = op["responses"][ok[0]]["content"]["application/json"]["schema"]
                assert "$ref" in schema, (path, method)
            assert op["responses"]["4XX"]["content"]["application/json"]["schema"] == {
                "$ref": "#/components/schemas/ErrorResponse"}


def test_real_answers_validate_against_the_published_response_schemas(client: TestClient) -> None:
    import jsonschema

    doc = client.get("/openapi.json").json()

    def check(path: str, body: dict[str, Any] | None, status: str = "200", method: str = "post",
              template: str | None = None) -> None:
        response = client.post(path, json=body) if method == "post" else client.request(method.upper(), path)
        assert response.status_code == int(status), response.text
        schema = doc["paths"][template or path][method]["responses"][status]["content"]["application/json"]["schema"]
        jsonschema.validate(response.json(), {**schema, "components": doc["components"]})

    f = {"expr": "sum(sin(x) * y)", "params": ["x", "y"]}
    for transform, extra in [("value", {}), ("grad", {"argnums": [0, 1]}), ("value_and_grad", {}),
                             ("jvp", {"tangents": [[1.0, 0.0], 1.0]}), ("vjp", {"cotangent": 1.0}),
                             ("jacobian", {}), ("hessian", {}), ("check_grads", {})]:
        check(f"/v1/{transform}", {"function": f, "args": [[0.5, 1.0], 2.0], **extra})
    check("/v1/shapes", {"function": f, "args": [{"shape": [2]}, {"shape": []}]})
    check("/v1/models", {"name": "typed_check", "function": f, "example_args": [[0.5, 1.0], 2.0]}, "201")
    for path in ("/v1/models", "/v1/ops", "/livez", "/readyz"):
        check(path, None, method="get")
    check("/v1/models/typed_check", None, method="get", template="/v1/models/{name}")
    check("/v1/models/typed_check/grad", {"args": [[0.5, 1.0], 2.0]}, template="/v1/models/{name}/grad")
    check("/v1/models/typed_check", None, method="delete", template="/v1/models/{name}")
    response = client.post("/v1/grad", json={"function": f, "args": [[0.5], 2.0, 3.0]})
    jsonschema.validate(response.json(), {"$ref": "#/components/schemas/ErrorResponse",
                                          "components": doc["components"]})


def test_the_root_points_at_the_docs(client: TestClient) -> None:
    body = client.get("/").json()
    assert body["docs"] == "/docs" and body["openapi"] == "/openapi.json" and body["version"]


def test_the_start_up_line_says_where_everything_is(start_server: Any, data_dir: Any) -> None:
    server = start_server({"NABLA_LOG_LEVEL": "info", "NABLA_DATA_DIR": str(data_dir)})
    server.stop()
    lines = [json.loads(line) for line in server.output().splitlines() if line.strip()]
    started = [e["message"] for e in lines if e["message"].startswith("Nabla ")]
    assert started, lines
    message = started[0]
    assert f"serving {server.url}" in message and f"{server.url}/docs" in message
    assert "model registry: sqlite at " + str(data_dir.resolve()) in message
    assert "5 built in, 0 from the model repository, 0 registered" in message


def test_every_engine_module_is_loaded_when_the_service_starts() -> None:
    """A running server never imports engine code for the first time mid-request (its files may
    have been replaced by an upgrade since it started)."""
    import subprocess
    import sys

    code = ("import pkgutil, sys, engine, service.app\n"
            "names = [m.name for m in pkgutil.walk_packages(engine.__path__, 'engine.')]\n"
            "missing = [name for name in names if name not in sys.modules]\n"
            "print(missing)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr
