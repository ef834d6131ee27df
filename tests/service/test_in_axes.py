"""`in_axes` on the transforms: per-example results of a whole batch in one request and one
compiled plan, equal to one request per example; validation and admission of the batch."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from _service_support import PARAMS, TUTORIAL_EXPR, b64, expr, strict_json
from fastapi.testclient import TestClient

import engine
import engine.numpy as jnp

RNG = np.random.default_rng(2026)
N = 1000
INPUTS = RNG.normal(size=(N, 3))
TARGETS = RNG.random(N) < 0.5
W = [-0.36838785, -2.275689, 0.01144757]
B = 0.8535516
TUTORIAL = expr(TUTORIAL_EXPR, PARAMS)


def post(client: TestClient, path: str, body: dict[str, Any]) -> dict[str, Any]:
    response = client.post(path, json=body)
    assert response.status_code == 200, response.text
    return strict_json(response.text)


def refused(client: TestClient, path: str, body: dict[str, Any], status: int = 400) -> dict[str, Any]:
    response = client.post(path, json=body)
    assert response.status_code == status, response.text
    return response.json()["error"]


def tutorial_loss(W: Any, b: Any, inputs: Any, targets: Any) -> Any:
    """The same loss as TUTORIAL_EXPR, in the engine's Python API."""
    preds = 0.5 * (jnp.tanh((inputs @ W + b) / 2) + 1)
    return -jnp.sum(jnp.log(preds * targets + (1 - preds) * (1 - targets)))


def per_example_request(**extra: Any) -> dict[str, Any]:
    return {"function": TUTORIAL, "args": [W, B, INPUTS.tolist(), TARGETS.tolist()], "argnums": [0, 1],
            "in_axes": [None, None, 0, 0], **extra}


# ----------------------------------------------------------------------------- the tutorial, per example


def test_per_example_gradients_of_1000_examples_equal_1000_separate_calls(client: TestClient) -> None:
    out = post(client, "/v1/grad", per_example_request())
    w_grads, b_grads = np.array(out["grad"][0]), np.array(out["grad"][1])
    assert w_grads.shape == (N, 3) and b_grads.shape == (N,)

    # Every example against the engine, one call per example.
    per_call = engine.grad(tutorial_loss, (0, 1))
    f64 = lambda x: jnp.asarray(x, jnp.float64)  # the service computes JSON numbers in float64
    for i in range(N):
        gw, gb = per_call(f64(W), f64(B), f64(INPUTS[i]), f64(TARGETS[i]))
        np.testing.assert_allclose(w_grads[i], np.asarray(gw), rtol=1e-12, atol=1e-15)
        np.testing.assert_allclose(b_grads[i], float(gb), rtol=1e-12, atol=1e-15)

    # A sample against separate HTTP requests, one example each. Equal up to rounding: the batch's
    # products are one matrix product, which may sum in another order than a single dot product.
    for i in RNG.choice(N, size=25, replace=False):
        single = post(client, "/v1/grad", {"function": TUTORIAL, "args": [W, B, INPUTS[i].tolist(), bool(TARGETS[i])],
                                           "argnums": [0, 1]})
        np.testing.assert_allclose(single["grad"][0], w_grads[i], rtol=1e-13, atol=1e-16)
        np.testing.assert_allclose(single["grad"][1], b_grads[i], rtol=1e-13, atol=1e-16)


def test_the_per_example_gradients_sum_to_the_whole_batch_gradient(client: TestClient) -> None:
    per_example = post(client, "/v1/grad", per_example_request())
    whole = post(client, "/v1/grad", {"function": TUTORIAL, "args": [W, B, INPUTS.tolist(), TARGETS.tolist()],
                                      "argnums": [0, 1]})
    np.testing.assert_allclose(np.sum(per_example["grad"][0], axis=0), whole["grad"][0], rtol=1e-10)
    np.testing.assert_allclose(np.sum(per_example["grad"][1]), whole["grad"][1], rtol=1e-10)


def test_a_batch_is_one_plan_whatever_its_size(client: TestClient) -> None:
    small = post(client, "/v1/grad", {**per_example_request(), "args": [W, B, INPUTS[:10].tolist(),
                                                                        TARGETS[:10].tolist()]})
    large = post(client, "/v1/grad", per_example_request())
    assert small["meta"]["graph_nodes"] == large["meta"]["graph_nodes"]  # not unrolled per example
    again = post(client, "/v1/grad", per_example_request())
    assert not large["meta"]["cache_hit"] and again["meta"]["cache_hit"]


# ----------------------------------------------------------------------------- each transform


def test_value_and_value_and_grad_per_example(client: TestClient) -> None:
    body = {"function": TUTORIAL, "args": [W, B, INPUTS[:5].tolist(), TARGETS[:5].tolist()],
            "in_axes": [None, None, 0, 0]}
    value = post(client, "/v1/value", body)
    f64 = lambda x: jnp.asarray(x, jnp.float64)
    expected = [float(tutorial_loss(f64(W), f64(B), f64(INPUTS[i]), f64(TARGETS[i]))) for i in range(5)]
    np.testing.assert_allclose(value["value"], expected, rtol=1e-12)
    both = post(client, "/v1/value_and_grad", body)
    np.testing.assert_allclose(both["value"], expected, rtol=1e-12)
    assert np.shape(both["grad"]) == (5, 3)


def test_hessian_per_example(client: TestClient) -> None:
    f = expr("sum(tanh(A @ x))", ["A", "x"])
    A = RNG.normal(size=(2, 3))
    xs = RNG.normal(size=(4, 3))
    out = post(client, "/v1/hessian", {"function": f, "args": [A.tolist(), xs.tolist()], "argnums": 1,
                                       "in_axes": [None, 0]})
    hessians = np.array(out["hessian"])
    assert hessians.shape == (4, 3, 3)
    for x, h in zip(xs, hessians):
        t = np.tanh(A @ x)  # d2/dx2 sum(tanh(Ax)) = A^T diag(-2 t (1 - t^2)) A
        np.testing.assert_allclose(h, A.T @ np.diag(-2 * t * (1 - t**2)) @ A, rtol=1e-10, atol=1e-14)


def test_jvp_per_example_with_tangents_batched_like_their_arguments(client: TestClient) -> None:
    f = expr("x ** 2 * y", ["x", "y"])
    xs, ts = RNG.normal(size=(6, 2)), RNG.normal(size=(6, 2))
    out = post(client, "/v1/jvp", {"function": f, "args": [xs.tolist(), 3.0], "tangents": [ts.tolist(), 0.5],
                                   "in_axes": [0, None]})
    np.testing.assert_allclose(out["value"], xs**2 * 3.0, rtol=1e-12)
    np.testing.assert_allclose(out["jvp"], 2 * xs * 3.0 * ts + xs**2 * 0.5, rtol=1e-12)


def test_vjp_per_example_takes_one_cotangent_per_example(client: TestClient) -> None:
    f = expr("x * y", ["x", "y"])
    xs, cts = RNG.normal(size=(4, 2)), RNG.normal(size=(4, 2))
    out = post(client, "/v1/vjp", {"function": f, "args": [xs.tolist(), 3.0], "cotangent": cts.tolist(),
                                   "in_axes": [0, None]})
    np.testing.assert_allclose(out["vjp"][0], 3.0 * cts, rtol=1e-12)
    np.testing.assert_allclose(out["vjp"][1], np.sum(xs * cts, axis=1), rtol=1e-12)  # one per example


def test_vjp_of_several_outputs_takes_a_batch_per_output(client: TestClient) -> None:
    f = expr("(x * 2, sin(x))", ["x"])
    xs, c1, c2 = RNG.normal(size=(3, 2)), RNG.normal(size=(3, 2)), RNG.normal(size=(3, 2))
    out = post(client, "/v1/vjp", {"function": f, "args": [xs.tolist()], "cotangent": [c1.tolist(), c2.tolist()],
                                   "in_axes": [0]})
    np.testing.assert_allclose(out["vjp"][0], 2 * c1 + np.cos(xs) * c2, rtol=1e-12)


def test_jacobian_per_example_along_a_non_leading_negative_axis(client: TestClient) -> None:
    f = expr("sin(x) * 2", ["x"])
    xs = RNG.normal(size=(3, 5))  # 5 examples of 3 values, stacked along the last axis
    out = post(client, "/v1/jacobian", {"function": f, "args": [xs.tolist()], "in_axes": [-1]})
    jac = np.array(out["jacobian"])
    assert jac.shape == (5, 3, 3)
    for k in range(5):
        np.testing.assert_allclose(jac[k], np.diag(2 * np.cos(xs[:, k])), rtol=1e-12)


def test_in_axes_may_be_a_prefix_of_an_object_argument(client: TestClient) -> None:
    f = expr("sum(p['w'] * x) + p['b']", ["p", "x"])
    xs = RNG.normal(size=(4, 2))
    bs = [0.5, -1.0, 2.0, 0.0]
    out = post(client, "/v1/value", {"function": f, "args": [{"w": [1.0, 2.0], "b": bs}, xs.tolist()],
                                     "in_axes": [{"w": None, "b": 0}, 0]})
    np.testing.assert_allclose(out["value"], xs @ [1.0, 2.0] + bs, rtol=1e-12)


def test_a_different_in_axes_is_a_different_plan(client: TestClient) -> None:
    f = expr("sum(x)", ["x"])
    x = np.arange(12.0).reshape(3, 4)
    rows = post(client, "/v1/value", {"function": f, "args": [x.tolist()], "in_axes": [0]})
    cols = post(client, "/v1/value", {"function": f, "args": [x.tolist()], "in_axes": [1]})
    assert rows["value"] == x.sum(axis=1).tolist() and cols["value"] == x.sum(axis=0).tolist()
    assert not cols["meta"]["cache_hit"]


def test_a_registered_model_takes_in_axes(client: TestClient) -> None:
    response = client.post("/v1/models", json={"name": "tutorial_untyped", "function": TUTORIAL})
    assert response.status_code == 201, response.text
    out = post(client, "/v1/models/tutorial_untyped/grad",
               {"args": [W, B, INPUTS[:3].tolist(), TARGETS[:3].tolist()], "in_axes": [None, None, 0, 0]})
    direct = post(client, "/v1/grad", {**per_example_request(argnums=0),
                                       "args": [W, B, INPUTS[:3].tolist(), TARGETS[:3].tolist()]})
    assert out["grad"] == direct["grad"]


# ----------------------------------------------------------------------------- validation


def test_in_axes_needs_one_entry_per_argument(client: TestClient) -> None:
    error = refused(client, "/v1/grad", per_example_request(in_axes=[None, 0]))
    assert "in_axes has 2 entries but the function takes 4 argument(s)" in error["message"]
    assert error["detail"]["expected"] == PARAMS


def test_mismatched_batch_sizes_name_the_arguments(client: TestClient) -> None:
    body = per_example_request()
    body["args"][3] = TARGETS[:999].tolist()
    error = refused(client, "/v1/grad", body)
    assert error["detail"]["argument"] == "targets" and error["detail"]["batch_size"] == 999
    assert error["detail"]["expected"] == 1000 and error["detail"]["first"] == "inputs (axis 0)"
    assert "targets has 999 examples along axis 0 but inputs (axis 0) has 1000" in error["message"]


def test_an_axis_out_of_range_names_the_argument(client: TestClient) -> None:
    error = refused(client, "/v1/grad", per_example_request(in_axes=[None, None, 2, 0]))
    assert error["detail"] == {"path": "in_axes[2]", "argument": "inputs", "axis": 2, "shape": [N, 3]}
    error = refused(client, "/v1/grad", per_example_request(in_axes=[None, 0, 0, 0]))
    assert error["detail"]["argument"] == "b" and "it is a scalar" in error["message"]


def test_every_entry_null_is_refused(client: TestClient) -> None:
    error = refused(client, "/v1/grad", per_example_request(in_axes=[None] * 4))
    assert "in_axes maps no argument" in error["message"]


def test_a_prefix_that_does_not_fit_the_argument_is_refused(client: TestClient) -> None:
    error = refused(client, "/v1/grad", per_example_request(in_axes=[None, None, {"a": 0}, 0]))
    assert error["detail"]["argument"] == "inputs" and "is an object, but inputs is an array" in error["message"]


@pytest.mark.parametrize("bad", [[None, None, True, 0], [None, None, 0.0, 0], "0", [None, None, 99, 0], []])
def test_malformed_in_axes_are_refused_by_the_request_model(client: TestClient, bad: Any) -> None:
    error = refused(client, "/v1/grad", per_example_request(in_axes=bad))
    assert error["message"].startswith("in_axes must be a list with one entry per argument")


def test_check_grads_refuses_in_axes(client: TestClient) -> None:
    error = refused(client, "/v1/check_grads", {"function": expr("sum(x ** 2)", ["x"]), "args": [[[1.0, 2.0]]],
                                                "in_axes": [0]})
    assert error["detail"]["options"] == ["in_axes"]


def test_the_cotangent_of_a_batched_vjp_needs_one_per_example(client: TestClient) -> None:
    error = refused(client, "/v1/vjp", {"function": expr("x * 2", ["x"]), "args": [[[1.0, 2.0], [3.0, 4.0]]],
                                        "cotangent": [[1.0, 1.0], [1.0, 1.0], [1.0, 1.0]], "in_axes": [0]})
    assert error["detail"]["path"] == "cotangent" and error["detail"]["batch_size"] == 2


# ----------------------------------------------------------------------------- admission


def test_the_batch_counts_toward_the_result_limit(make_client: Any) -> None:
    client = make_client(max_array_elements=5000)
    A = np.eye(3).tolist()
    f = expr("sum(tanh(A @ x))", ["A", "x"])
    one = post(client, "/v1/hessian", {"function": f, "args": [A, [0.1, 0.2, 0.3]], "argnums": 1})
    assert np.shape(one["hessian"]) == (3, 3)
    error = refused(client, "/v1/hessian", {"function": f, "args": [A, RNG.normal(size=(600, 3)).tolist()],
                                            "argnums": 1, "in_axes": [None, 0]}, status=413)
    assert error["detail"]["limit"] == "NABLA_MAX_ARRAY_ELEMENTS" and error["detail"]["requested"] == 600 * 9
    assert "[600, 3, 3]" in error["message"]


def test_an_operation_without_a_batching_rule_runs_per_example_within_the_plan_limit(make_client: Any) -> None:
    """Indexing with a batched index array has no batching rule yet: each example is one more
    operation of the plan, so a small batch is computed and a large one refused before tracing."""
    client = make_client(max_plan_nodes=200)
    f = expr("x[i] * 2", ["x", "i"])
    x = np.arange(12.0).reshape(4, 3)
    out = post(client, "/v1/value", {"function": f, "args": [x.tolist(), b64(np.array([0, 2, 1, 1]))],
                                     "in_axes": [0, 0]})
    assert out["value"] == (2 * x[np.arange(4), [0, 2, 1, 1]]).tolist()
    error = refused(client, "/v1/value", {"function": f, "args": [np.zeros((500, 3)).tolist(),
                                                                  b64(np.zeros(500, np.int64))],
                                          "in_axes": [0, 0]}, status=413)
    assert error["detail"] == {"limit": "NABLA_MAX_PLAN_NODES", "requested": 500, "maximum": 200}
    assert "without a batching rule once per example" in error["message"]


# ----------------------------------------------------------------------------- typed models


def test_a_typed_model_takes_batched_arguments_checked_one_example_at_a_time(client: TestClient) -> None:
    """tutorial_logreg declares W: f32[3], b: f32[]; with in_axes each example must be of that
    type, the batch dimension inserted at the mapped axis."""
    W = [[0.1, 0.2, 0.3], [0.3, 0.2, 0.1]]
    batched = post(client, "/v1/models/tutorial_logreg/grad",
                   {"args": [W, [0.5, 0.4]], "in_axes": [0, 0], "argnums": [0, 1]})
    assert batched["meta"]["examples"] == 2 and batched["meta"]["dtype"] == "float32"
    for i, (w, b) in enumerate(zip(W, [0.5, 0.4])):
        one = post(client, "/v1/models/tutorial_logreg/grad", {"args": [w, b], "argnums": [0, 1]})
        # float32: the batch sums its matrix product in another order (one ulp apart at most)
        np.testing.assert_allclose(batched["grad"][0][i], one["grad"][0], rtol=2e-7)
        np.testing.assert_allclose(batched["grad"][1][i], one["grad"][1], rtol=2e-7)
    shared_b = post(client, "/v1/models/tutorial_logreg/grad", {"args": [W, 0.5], "in_axes": [0, None]})
    assert np.shape(shared_b["grad"]) == (2, 3)


def test_a_typed_model_names_the_batched_type_it_expected(client: TestClient) -> None:
    error = refused(client, "/v1/models/tutorial_logreg/grad",
                    {"args": [[[0.1, 0.2], [0.3, 0.4]], [0.5, 0.4]], "in_axes": [0, 0]}, status=422)
    assert error["detail"] == {"path": "W", "expected": "f32[batch(in_axes),3]", "got": "f32[2,2]"}
    error = refused(client, "/v1/models/tutorial_logreg/grad",
                    {"args": [[[0.1, 0.2, 0.3]] * 2, [0.5, 0.4, 0.3]], "in_axes": [0, 0]}, status=422)
    assert error["message"] == "b: expected f32[batch(in_axes)], got f32[3]; batch(in_axes) is 2 in W"
