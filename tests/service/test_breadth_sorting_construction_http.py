"""Each sorting, selection and construction function of the expression language, differentiated
over HTTP (POST /v1/grad): the gradient of a weighted sum of its result at x = [3, 1, 2, 5],
worked out by hand from where each element of x lands."""

from __future__ import annotations

import numpy as np
import pytest
from _service_support import arr, expr, strict_json
from fastapi.testclient import TestClient

X = [3.0, 1.0, 2.0, 5.0]
SQUARE = "reshape(x, (2, 2))"  # [[3, 1], [2, 5]]
WEIGHTS = "array([[1.0, 2.0], [3.0, 4.0]])"

CASES = [
    ("sum(sort(x) * arange(4))", [2, 0, 1, 3]),  # sorted: 1, 2, 3, 5
    ("sum(take_along_axis(x, argsort(x), 0) * arange(4))", [2, 0, 1, 3]),
    (f"sum(msort({SQUARE}) * {WEIGHTS})", [3, 2, 1, 4]),  # [[2, 1], [3, 5]]
    ("sum(partition(x, 0) * arange(4))", [2, 0, 3, 1]),  # [1] then descending [5, 3, 2]
    ("sum(take_along_axis(x, argpartition(x, 1), 0) * arange(4))", [2, 0, 1, 3]),  # indices [1, 2, 0, 3]
    ("sum(select([x > 2.5], [x ** 2], x))", [6, 1, 1, 10]),
    ("sum(x[nonzero(x > 1.5, size=2)[0]])", [1, 0, 1, 0]),
    ("sum(x[flatnonzero(x > 2.5, size=2)])", [1, 0, 0, 1]),
    ("sum(x[argwhere(x < 2.5, size=2)[:, 0]])", [0, 1, 1, 0]),
    ("sum(pad(x, 1, mode='edge'))", [2, 1, 1, 2]),
    ("sum(pad(x, (3, 0), mode='reflect'))", [1, 2, 2, 2]),  # 5 2 1 | 3 1 2 5
    ("sum(roll(x, 1) * arange(4))", [1, 2, 3, 0]),  # [5, 3, 1, 2]
    (f"sum(rot90({SQUARE}) * {WEIGHTS})", [3, 1, 4, 2]),  # [[1, 5], [3, 2]]
    (f"sum(fliplr({SQUARE}) * {WEIGHTS})", [2, 1, 4, 3]),
    (f"sum(flipud({SQUARE}) * {WEIGHTS})", [3, 4, 1, 2]),
    (f"sum(tril({SQUARE}))", [1, 0, 1, 1]),
    (f"sum(triu({SQUARE}))", [1, 1, 0, 1]),
    ("sum(diff(x ** 2))", [-6, 0, 0, 10]),
    ("sum(append(x, x ** 2))", [7, 3, 5, 11]),
    ("sum(split(x, 2)[1] ** 2)", [0, 0, 4, 10]),
    ("sum(array_split(x, 3)[0] ** 2)", [6, 2, 0, 0]),
    ("sum(hsplit(x, 2)[0] ** 2)", [6, 2, 0, 0]),
    (f"sum(vsplit({SQUARE}, 2)[1] ** 2)", [0, 0, 4, 10]),
    ("sum(dsplit(reshape(x, (1, 2, 2)), 2)[1] ** 2)", [0, 2, 0, 10]),
    ("sum(column_stack([x, x ** 2])[:, 1])", [6, 2, 4, 10]),
    ("sum(row_stack([x, x ** 2])[1])", [6, 2, 4, 10]),
    ("sum(atleast_3d(x)[0, :, 0] * arange(4))", [0, 1, 2, 3]),
    ("sum(kron(x, array([1.0, 2.0])))", [3, 3, 3, 3]),
    ("sum(cross(x[:3], array([0.0, 0.0, 1.0])) * array([1.0, 2.0, 3.0]))", [-2, 1, 0, 0]),  # (x1, -x0, 0)
    (f"sum(rollaxis({SQUARE}, 1)[0] * array([1.0, 2.0]))", [1, 0, 2, 0]),  # the first column
]


@pytest.mark.parametrize("source, want", CASES, ids=[c[0] for c in CASES])
def test_gradient_over_http(client: TestClient, source: str, want: list[float]) -> None:
    response = client.post("/v1/grad", json={"function": expr(source, ["x"]), "args": [X], "dtype": "float64"})
    assert response.status_code == 200, response.text
    np.testing.assert_allclose(arr(strict_json(response.text)["grad"]), want, rtol=1e-15)


def test_one_argument_where_of_a_traced_value_is_a_client_error(client: TestClient) -> None:
    response = client.post("/v1/grad", json={"function": expr("sum(x[where(x > 2)[0]])", ["x"]), "args": [X]})
    assert 400 <= response.status_code < 500, response.text
    body = response.json()
    assert set(body["error"]) >= {"type", "message", "detail"}
    assert "size=" in body["error"]["message"]


def test_a_bad_pad_mode_is_a_client_error(client: TestClient) -> None:
    response = client.post("/v1/grad", json={"function": expr("sum(pad(x, 1, mode='median'))", ["x"]), "args": [X]})
    assert 400 <= response.status_code < 500, response.text
    assert "mode 'median' is not supported" in response.json()["error"]["message"]


def test_padding_past_the_element_limit_is_refused_before_anything_is_allocated(client: TestClient) -> None:
    response = client.post("/v1/grad", json={"function": expr("sum(pad(x, 10 ** 8, mode='wrap'))", ["x"]),
                                             "args": [X]})
    assert 400 <= response.status_code < 500, response.text
    error = response.json()["error"]
    assert "padded array" in error["message"] and "max_array_elements" in error["message"]


def test_ops_lists_the_argsort_primitive_and_the_functions(client: TestClient) -> None:
    body = client.get("/v1/ops").json()
    (argsort,) = [op for op in body["ops"] if op["name"] == "argsort"]
    assert argsort["attrs"] == ["axis"] and not argsort["vjp"] and not argsort["jvp"]
    assert {"sort", "argsort", "partition", "select", "pad", "roll", "kron", "cross", "array_split"} <= set(
        body["expression_functions"])


def test_a_graph_document_naming_argsort_runs(client: TestClient) -> None:
    graph = {"format": "nabla.graph/1", "params": [{"name": "x", "shape": [4], "dtype": "float64"}],
             "nodes": [{"id": "order", "op": "argsort", "inputs": ["x"], "attrs": {"axis": 0}}],
             "outputs": ["order"]}
    response = client.post("/v1/value", json={"function": {"graph": graph}, "args": [X]})
    assert response.status_code == 200, response.text
    np.testing.assert_array_equal(arr(strict_json(response.text)["value"]), [1, 2, 0, 3])
