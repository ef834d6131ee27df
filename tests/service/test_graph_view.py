"""POST /v1/graph: the graph /v1/grad compiles, returned instead of run (service.graph_view).

The document is checked by what it computes: sent back as a `{"graph": ...}` function it gives the
same numbers as /v1/grad (and the closed forms), and its operation count is the one /v1/grad
reports for its plan.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

SIN_X2 = {"expr": "sin(x) * x**2", "params": ["x"]}


def derivatives(x: float) -> list[float]:
    """d^k/dx^k of x² sin x, k = 1..4."""
    s, c = math.sin(x), math.cos(x)
    return [2 * x * s + x * x * c,
            (2 - x * x) * s + 4 * x * c,
            (6 - x * x) * c - 6 * x * s,
            (x * x - 12) * s - 8 * x * c]


def graph(client: TestClient, body: dict[str, Any], status: int = 200) -> dict[str, Any]:
    response = client.post("/v1/graph", json=body)
    assert response.status_code == status, response.text
    return response.json()


def test_closed_forms_used_here_are_right() -> None:
    # each closed form is the derivative of the one before (central differences): a typo there would show
    x, h = 0.7, 1e-5
    for k in range(3):
        fd = (derivatives(x + h)[k] - derivatives(x - h)[k]) / (2 * h)
        assert fd == pytest.approx(derivatives(x)[k + 1], rel=1e-8)


@pytest.mark.parametrize("order", [1, 2, 3, 4])
def test_the_graph_computes_the_derivative_grad_computes(client: TestClient, order: int) -> None:
    x = 1.3
    answer = graph(client, {"function": SIN_X2, "args": [x], "order": order})
    doc = answer["graph"]
    assert doc["format"] == "nabla.graph/1" and doc["params"] == [{"name": "x", "shape": [], "dtype": "float64"}]
    replayed = client.post("/v1/value", json={"function": {"graph": doc}, "args": [x]}).json()
    direct = client.post("/v1/grad", json={"function": SIN_X2, "args": [x], "order": order}).json()
    assert replayed["value"] == pytest.approx(derivatives(x)[order - 1], rel=1e-12)
    assert replayed["value"] == pytest.approx(direct["grad"], rel=1e-14)
    # the optimised graph is the plan /v1/grad runs; the traced one is larger
    assert answer["nodes"]["optimised"] == len(doc["nodes"]) == direct["meta"]["graph_nodes"]
    assert answer["nodes"]["traced"] > answer["nodes"]["optimised"]
    assert answer["nodes"]["function"] == 3  # sin, integer_pow, mul
    assert answer["meta"]["order"] == order


def test_every_node_has_its_shapes(client: TestClient) -> None:
    f = {"expr": "sum(tanh(A @ x))", "params": ["A", "x"]}
    answer = graph(client, {"function": f, "args": [[[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]], [0.1, 0.2]], "argnums": 1})
    doc, shapes = answer["graph"], answer["shapes"]
    assert set(shapes) == {node["id"] for node in doc["nodes"]}
    assert [p["shape"] for p in doc["params"]] == [[3, 2], [2]]
    out = doc["outputs"][0]
    assert shapes[out] == [{"shape": [2], "dtype": "float64"}]  # the gradient is shaped like x
    ops = {node["op"]: shapes[node["id"]][0]["shape"] for node in doc["nodes"]}
    assert ops["tanh"] == [3]


def test_structured_arguments_name_each_leaf_and_the_graph_replays(client: TestClient) -> None:
    params = {"W1": [[0.1, -0.2], [0.3, 0.4]], "b1": [0.0, 0.1], "W2": [[1.0, -1.0], [2.0, 0.5]], "b2": [0.2, -0.1]}
    inputs, labels = [[1.0, 2.0], [-0.5, 0.3], [0.7, -1.2]], [0, 1, 1]
    args = [params, inputs, labels]
    answer = graph(client, {"function": {"model": "mlp_classifier"}, "args": args})
    doc = answer["graph"]
    names = [p["name"] for p in doc["params"]]
    assert names == ["params.W1", "params.W2", "params.b1", "params.b2", "inputs", "labels"]
    assert doc["params"][-1]["dtype"] == "int32"  # the model's schema types the labels, as /v1/grad does
    flat = [params["W1"], params["W2"], params["b1"], params["b2"], inputs, labels]
    replayed = client.post("/v1/value", json={"function": {"graph": doc}, "args": flat}).json()["value"]
    direct = client.post("/v1/grad", json={"function": {"model": "mlp_classifier"}, "args": args}).json()["grad"]
    for k, name in enumerate(["W1", "W2", "b1", "b2"]):
        np.testing.assert_allclose(replayed[k], direct[name], rtol=1e-12)


def test_a_non_scalar_gradient_of_order_two_is_refused_as_grad_refuses_it(client: TestClient) -> None:
    error = graph(client, {"function": {"model": "rosenbrock"}, "args": [[1.0, 2.0]], "order": 2}, 422)["error"]
    assert error["type"] == "not_differentiable" and error["detail"]["shape"] == [2]


def test_an_expression_error_has_its_line_and_column(client: TestClient) -> None:
    body = {"function": {"expr": "y = sin(x)\ny * foo(x)", "params": ["x"]}, "args": [1.0]}
    error = graph(client, body, 422)["error"]
    assert error["type"] == "invalid_function"
    assert (error["detail"]["line"], error["detail"]["column"]) == (2, 5)


@pytest.mark.parametrize("body, status, says", [
    ({"function": SIN_X2, "args": [1.0], "order": 5}, 413, "NABLA_MAX_ORDER"),
    ({"function": SIN_X2, "args": [1.0], "order": 0}, 400, "order must be a positive integer"),
    ({"function": SIN_X2, "args": [1.0], "tangents": [1.0]}, 400, "unknown field(s) ['tangents'] for graph"),
    ({"function": SIN_X2, "args": [1.0, 2.0]}, 400, "takes 1 argument(s)"),
    ({"function": SIN_X2, "args": [1.0], "argnums": 3}, 400, "argnums 3 is out of range"),
    ({"function": SIN_X2}, 400, "args"),
])
def test_bad_requests_say_what_is_wrong(client: TestClient, body: dict[str, Any], status: int, says: str) -> None:
    assert says in graph(client, body, status)["error"]["message"]


def test_a_derivative_too_large_to_trace_is_refused_before_it_is_traced(
        make_client: Callable[..., TestClient]) -> None:
    client = make_client(max_plan_nodes=100)
    # A traced derivative may have 4 x 100 operations; the function's 3 predict 3 x 4**order of them.
    assert graph(client, {"function": SIN_X2, "args": [1.0], "order": 3})["nodes"]["optimised"] <= 100
    error = graph(client, {"function": SIN_X2, "args": [1.0], "order": 4}, 413)["error"]
    assert error["detail"] == {"limit": "NABLA_MAX_PLAN_NODES", "requested": 3 * 4**4, "maximum": 400}


def test_a_document_over_the_response_limit_is_refused_with_its_figures(
        make_client: Callable[..., TestClient]) -> None:
    client = make_client(max_response_bytes=20_000)
    # the gradient of sum(x * c) is the constant c: a 5000-element constant in the document
    body = {"function": {"expr": "sum(x * arange(5000.0))", "params": ["x"]}, "args": [[1.0] * 5000]}
    error = graph(client, body, 413)["error"]
    assert error["detail"]["limit"] == "NABLA_MAX_RESPONSE_BYTES" and error["detail"]["maximum"] == 20_000
    # the prediction bounds the document the server writes when it may
    written = make_client().post("/v1/graph", json=body)
    assert written.status_code == 200 and 20_000 < len(written.content) <= error["detail"]["requested"]


def test_a_keyed_server_needs_the_key(make_client: Callable[..., TestClient]) -> None:
    client = make_client(api_keys="secret")
    assert client.post("/v1/graph", json={"function": SIN_X2, "args": [1.0]}).status_code == 401
    response = client.post("/v1/graph", json={"function": SIN_X2, "args": [1.0]},
                           headers={"Authorization": "Bearer secret"})
    assert response.status_code == 200


def test_the_route_is_documented(client: TestClient) -> None:
    doc = client.get("/openapi.json").json()
    op = doc["paths"]["/v1/graph"]["post"]
    assert op["operationId"] == "graph"
    assert op["requestBody"]["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/GraphRequest"}
    response = doc["components"]["schemas"]["GraphResponse"]
    assert response["properties"]["graph"] == {"$ref": "#/components/schemas/NablaGraphV1"}


def test_the_answer_validates_against_the_published_schema(client: TestClient) -> None:
    import jsonschema

    doc = client.get("/openapi.json").json()
    answer = graph(client, {"function": SIN_X2, "args": [1.0], "order": 2})
    jsonschema.validate(answer, {"$ref": "#/components/schemas/GraphResponse", "components": doc["components"]})
