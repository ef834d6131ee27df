"""Batches of tangents and cotangents: `"batched_tangents": true` on jvp (and hvp) and
`"batched_cotangent": true` on vjp send B vectors, each leaf with a leading batch axis, and get B
products in one call and one compiled plan: J T (a Jacobian-matrix product), C J, H V. Checked
against /v1/jacobian and /v1/hessian, against B separate calls, for pytrees, tuple outputs and
aux; batch sizes that disagree are 400 naming the leaf, and admission counts the batch."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from _service_support import arr, assert_error, b64, expr, strict_json
from fastapi.testclient import TestClient

RNG = np.random.default_rng(7)
F = expr("tanh(A @ x) * sum(x)", ["A", "x"])  # f64[3] from A: f64[3,2], x: f64[2]
A, X = RNG.normal(size=(3, 2)), RNG.normal(size=2)


def post(client: TestClient, path: str, body: dict[str, Any]) -> dict[str, Any]:
    response = client.post(path, json=body)
    assert response.status_code == 200, response.text
    return strict_json(response.text)


def jacobians(client: TestClient) -> tuple[np.ndarray, np.ndarray]:
    jac = post(client, "/v1/jacobian", {"function": F, "args": [A.tolist(), X.tolist()], "argnums": [0, 1]})
    return arr(jac["jacobian"][0]), arr(jac["jacobian"][1])  # f64[3,3,2], f64[3,2]


# ----------------------------------------------------------------------------- jvp


def test_a_batch_of_tangents_gives_the_jacobian_times_the_tangent_matrix(client: TestClient) -> None:
    t_a, t_x = RNG.normal(size=(5, 3, 2)), RNG.normal(size=(5, 2))
    out = post(client, "/v1/jvp", {"function": F, "args": [A.tolist(), X.tolist()],
                                   "tangents": [t_a.tolist(), t_x.tolist()], "batched_tangents": True})
    j_a, j_x = jacobians(client)
    expected = np.einsum("oij,bij->bo", j_a, t_a) + t_x @ j_x.T
    np.testing.assert_allclose(arr(out["jvp"]), expected, rtol=1e-12, atol=1e-14)
    value = post(client, "/v1/value", {"function": F, "args": [A.tolist(), X.tolist()]})["value"]
    assert out["value"] == value  # computed once, without the batch axis


def test_the_batch_equals_one_call_per_tangent(client: TestClient) -> None:
    t_a, t_x = RNG.normal(size=(4, 3, 2)), RNG.normal(size=(4, 2))
    out = post(client, "/v1/jvp", {"function": F, "args": [A.tolist(), X.tolist()],
                                   "tangents": [t_a.tolist(), t_x.tolist()], "batched_tangents": True})
    for row in range(4):
        one = post(client, "/v1/jvp", {"function": F, "args": [A.tolist(), X.tolist()],
                                       "tangents": [t_a[row].tolist(), t_x[row].tolist()]})
        np.testing.assert_allclose(arr(out["jvp"])[row], arr(one["jvp"]), rtol=1e-14, atol=1e-15)


def test_one_compiled_plan_serves_a_batch_whatever_its_size(client: TestClient) -> None:
    def call(rows: int) -> dict[str, Any]:
        return post(client, "/v1/jvp", {"function": F, "args": [A.tolist(), X.tolist()],
                                        "tangents": [np.ones((rows, 3, 2)).tolist(), np.ones((rows, 2)).tolist()],
                                        "batched_tangents": True})

    small, large, again = call(2)["meta"], call(64)["meta"], call(64)["meta"]
    assert small["graph_nodes"] == large["graph_nodes"]  # batched as array operations, not unrolled per row
    assert large["cache_hit"] is False and again["cache_hit"] is True


def test_pytree_and_scalar_arguments_take_batched_tangents_per_leaf(client: TestClient) -> None:
    # f(p, s) = s * sum(p.w * p.v): df = ds * sum(w v) + s * sum(dw v + w dv)
    w, v, s = np.array([1.0, 2.0]), np.array([0.5, -1.0]), 3.0
    dw, dv, ds = RNG.normal(size=(3, 2)), RNG.normal(size=(3, 2)), RNG.normal(size=3)
    out = post(client, "/v1/jvp", {"function": expr("s * sum(p['w'] * p['v'])", ["p", "s"]),
                                   "args": [{"w": w.tolist(), "v": v.tolist()}, s],
                                   "tangents": [{"w": dw.tolist(), "v": dv.tolist()}, ds.tolist()],
                                   "batched_tangents": True})
    expected = ds * (w @ v) + s * (dw @ v + dv @ w)
    np.testing.assert_allclose(arr(out["jvp"]), expected, rtol=1e-14)


def test_with_has_aux_the_auxiliary_output_is_not_batched(client: TestClient) -> None:
    out = post(client, "/v1/jvp", {"function": expr("p = x * 2\n(sum(p ** 3), p)", ["x"]), "args": [[1.0, 2.0]],
                                   "tangents": [[[1.0, 0.0], [0.0, 1.0]]], "batched_tangents": True,
                                   "has_aux": True})
    # f = 8 sum(x^3): the rows of the tangent matrix pick out 24 x^2
    assert out == {**out, "value": 72.0, "jvp": [24.0, 96.0], "aux": [2.0, 4.0]}


def test_float32_arguments_give_float32_products(client: TestClient) -> None:
    out = post(client, "/v1/jvp", {"function": expr("sin(x)", ["x"]), "args": [[0.5, 1.0]], "dtype": "float32",
                                   "tangents": [[[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]], "batched_tangents": True,
                                   "encoding": "base64"})
    assert out["jvp"]["$array"]["dtype"] == "float32" and out["jvp"]["$array"]["shape"] == [3, 2]
    np.testing.assert_allclose(arr(out["jvp"]), [[np.cos(0.5), 0], [0, np.cos(1.0)], [np.cos(0.5), np.cos(1.0)]],
                               rtol=1e-7)


# ----------------------------------------------------------------------------- vjp


def test_a_batch_of_cotangents_gives_the_cotangent_matrix_times_the_jacobian(client: TestClient) -> None:
    c = RNG.normal(size=(6, 3))
    out = post(client, "/v1/vjp", {"function": F, "args": [A.tolist(), X.tolist()], "cotangent": c.tolist(),
                                   "batched_cotangent": True})
    j_a, j_x = jacobians(client)
    np.testing.assert_allclose(arr(out["vjp"][0]), np.einsum("bo,oij->bij", c, j_a), rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(arr(out["vjp"][1]), c @ j_x, rtol=1e-12, atol=1e-14)
    for row in (0, 5):
        one = post(client, "/v1/vjp", {"function": F, "args": [A.tolist(), X.tolist()], "cotangent": c[row].tolist()})
        np.testing.assert_allclose(arr(out["vjp"][1])[row], arr(one["vjp"][1]), rtol=1e-14, atol=1e-15)


def test_a_tuple_output_takes_one_batch_per_output(client: TestClient) -> None:
    x = [1.0, 2.0]
    # outputs of different shapes: (sum(x), 2 x) -> vjp = c0 + 2 c1
    out = post(client, "/v1/vjp", {"function": expr("(sum(x), x * 2)", ["x"]), "args": [x],
                                   "cotangent": [[1.0, 2.0, 3.0], [[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]],
                                   "batched_cotangent": True})
    assert out["vjp"] == [[[3.0, 1.0], [2.0, 4.0], [5.0, 5.0]]]
    # outputs of one shape arrive as one JSON array: (2 x, 3 x) -> vjp = 2 c0 + 3 c1
    c0, c1 = RNG.normal(size=(4, 2)), RNG.normal(size=(4, 2))
    out = post(client, "/v1/vjp", {"function": expr("(x * 2, x * 3)", ["x"]), "args": [x],
                                   "cotangent": [c0.tolist(), c1.tolist()], "batched_cotangent": True})
    np.testing.assert_allclose(arr(out["vjp"][0]), 2 * c0 + 3 * c1, rtol=1e-15)


def test_a_scalar_output_takes_a_vector_of_cotangents(client: TestClient) -> None:
    out = post(client, "/v1/models/rosenbrock/vjp", {"args": [[1.0, 2.0, 3.0]], "cotangent": [1.0, -2.0],
                                                     "batched_cotangent": True})
    assert out["vjp"] == [[[-400.0, 1002.0, -200.0], [800.0, -2004.0, 400.0]]]


# ----------------------------------------------------------------------------- hvp


def test_a_batch_of_hessian_vector_products_is_the_hessian_times_the_matrix(client: TestClient) -> None:
    x, v = RNG.normal(size=4), RNG.normal(size=(3, 4))
    hessian = arr(post(client, "/v1/models/rosenbrock/hessian", {"args": [x.tolist()]})["hessian"])
    out = post(client, "/v1/models/rosenbrock/hvp", {"args": [x.tolist()], "tangents": [v.tolist()],
                                                     "batched_tangents": True})
    np.testing.assert_allclose(arr(out["hvp"]), v @ hessian.T, rtol=1e-12, atol=1e-12)
    assert np.shape(out["grad"]) == (4,)  # the gradient is not batched


# ----------------------------------------------------------------------------- errors


def test_batch_sizes_that_disagree_are_400_naming_the_leaf(client: TestClient) -> None:
    body = {"function": F, "args": [A.tolist(), X.tolist()], "batched_tangents": True}
    error = assert_error(client.post("/v1/jvp", json={**body, "tangents": [np.ones((3, 3, 2)).tolist(),
                                                                           np.ones((2, 2)).tolist()]}),
                         400, "invalid_request", "tangents.x: batch size 2 differs from 3 in tangents.A")
    assert error["detail"] == {"path": "tangents.x", "batch_size": 2, "expected": 3, "first": "tangents.A"}
    pytree = {"function": expr("sum(p['w'] * p['v'])", ["p"]), "args": [{"w": [1.0, 2.0], "v": [3.0, 4.0]}],
              "batched_tangents": True}
    assert_error(client.post("/v1/jvp", json={**pytree, "tangents": [{"w": [[1.0, 0.0]], "v": [[1.0, 0.0]] * 2}]}),
                 400, "invalid_request", "tangents.p.w: batch size 1 differs from 2 in tangents.p.v")
    assert_error(client.post("/v1/jvp", json={**body, "tangents": [np.ones((3, 3, 2)).tolist(), 1.0]}), 400,
                 "invalid_request", "tangents.x: with batched_tangents every leaf needs a leading batch axis")
    assert_error(client.post("/v1/vjp", json={"function": expr("(sum(x), x * 2)", ["x"]), "args": [[1.0, 2.0]],
                                              "cotangent": [[1.0, 2.0], [[1.0, 0.0]]], "batched_cotangent": True}),
                 400, "invalid_request", "cotangent[1]: batch size 1 differs from 2 in cotangent[0]")


def test_a_row_not_shaped_like_its_argument_or_output_is_422(client: TestClient) -> None:
    body = {"function": F, "args": [A.tolist(), X.tolist()]}
    assert_error(client.post("/v1/jvp", json={**body, "batched_tangents": True,
                                              "tangents": [np.ones((2, 3, 2)).tolist(), np.ones((2, 3)).tolist()]}),
                 422, "invalid_argument", "tangents.x: expected f64[2,2] (a batch of x's shape), got f64[2,3]")
    cotangents = np.ones((2, 4)).tolist()
    assert_error(client.post("/v1/vjp", json={**body, "batched_cotangent": True, "cotangent": cotangents}), 422,
                 "invalid_argument", "cotangent: expected f64[2,3] (a batch of the output's shape), got f64[2,4]")
    assert_error(client.post("/v1/hvp", json={"function": {"model": "rosenbrock"}, "args": [[1.0, 2.0]],
                                              "tangents": [[1.0, 2.0]], "batched_tangents": True}),
                 422, "invalid_argument", "tangents.x: expected f64[2,2]")


def test_each_batch_option_belongs_to_its_transform(client: TestClient) -> None:
    body = {"function": F, "args": [A.tolist(), X.tolist()]}
    assert_error(client.post("/v1/vjp", json={**body, "cotangent": [1.0, 1.0, 1.0], "batched_tangents": True}),
                 400, "invalid_request", "do not apply to vjp (they apply to hvp, jvp)")
    assert_error(client.post("/v1/jvp", json={**body, "tangents": [A.tolist(), X.tolist()], "batched_cotangent": 1}),
                 400, "invalid_request", "do not apply to jvp (they apply to vjp)")
    assert_error(client.post("/v1/jvp", json={**body, "tangents": [A.tolist(), X.tolist()], "batched_tangents": 1}),
                 400, "invalid_request", "batched_tangents must be true or false")


# ----------------------------------------------------------------------------- admission


@pytest.mark.parametrize("transform", ["jvp", "vjp"])
def test_the_batch_counts_in_the_predicted_result(make_client: Any, transform: str) -> None:
    """20 inputs, a 20 x 20 output: 10 tangents make a [10, 20, 20] product, 10 cotangents a
    [10, 20] one each; refused before tracing when that is over the element limit."""
    client = make_client(max_array_elements=1000)
    x = np.linspace(0.1, 2.0, 20)
    body: dict[str, Any] = {"function": expr("outer(x, x) * 2", ["x"]), "args": [x.tolist()]}
    if transform == "jvp":
        body.update(tangents=[np.ones((10, 20)).tolist()], batched_tangents=True)
        error = assert_error(client.post("/v1/jvp", json=body), 413, "limit_exceeded", "shape [10, 20, 20]")
        assert error["detail"] == {"limit": "NABLA_MAX_ARRAY_ELEMENTS", "requested": 4000, "maximum": 1000}
        body["tangents"] = [np.ones((2, 20)).tolist()]
        assert np.shape(post(client, "/v1/jvp", body)["jvp"]) == (2, 20, 20)
    else:
        body = {"function": expr("sum(x)", ["x"]), "args": [np.ones(200).tolist()],
                "cotangent": np.ones(10).tolist(), "batched_cotangent": True}
        error = assert_error(client.post("/v1/vjp", json=body), 413, "limit_exceeded", "shape [10, 200]")
        assert error["detail"] == {"limit": "NABLA_MAX_ARRAY_ELEMENTS", "requested": 2000, "maximum": 1000}
        body["cotangent"] = [1.0, 2.0]
        assert arr(post(client, "/v1/vjp", body)["vjp"][0]).tolist() == [[1.0] * 200, [2.0] * 200]


def test_an_empty_batch_is_an_empty_answer(client: TestClient) -> None:
    out = post(client, "/v1/jvp", {"function": expr("x * 2", ["x"]), "args": [[1.0, 2.0]],
                                   "tangents": [b64(np.zeros((0, 2)))], "batched_tangents": True})
    assert out["jvp"] == [] and out["value"] == [2.0, 4.0]
