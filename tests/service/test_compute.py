"""Every transform over HTTP: the tutorial's numbers for each form of the same function, float64
results against closed forms, has_aux, order, argnums, jvp/vjp shapes, Jacobians, Hessians,
check_grads reports and the response's meta."""

from __future__ import annotations

import base64
from typing import Any

import numpy as np
import pytest
from _service_support import (
    B_GRAD,
    B_PRINTED,
    INPUTS,
    LOSS,
    PARAMS,
    TANH_DERIVATIVES,
    TARGETS,
    TUTORIAL_EXPR,
    W_GRAD,
    W_PRINTED,
    arr,
    b64,
    expr,
    strict_json,
    tutorial_b,
    tutorial_graph,
    tutorial_w,
)
from closed_forms import rosenbrock_hessian
from fastapi.testclient import TestClient

RTOL = 1e-6


def post(client: TestClient, path: str, body: dict[str, Any]) -> dict[str, Any]:
    response = client.post(path, json=body)
    assert response.status_code == 200, response.text
    return strict_json(response.text)


# ----------------------------------------------------------------------------- the tutorial


def _tutorial_forms(client: TestClient, form: str) -> tuple[str, dict[str, Any], list[Any]]:
    """(path prefix, function field or {}, extra args) computing the tutorial's loss(W, b)."""
    if form == "expr":
        return "/v1", {"function": expr(TUTORIAL_EXPR, PARAMS)}, [INPUTS, TARGETS]
    if form == "graph":
        return "/v1", {"function": {"graph": tutorial_graph(with_constants=True)}}, []
    if form == "graph_all_params":
        return "/v1", {"function": {"graph": tutorial_graph(with_constants=False)}}, [INPUTS, [1.0, 1.0, 0.0, 1.0]]
    if form == "builtin":
        return "/v1/models/tutorial_logreg", {}, []
    if form == "registered_expr":
        response = client.post("/v1/models", json={
            "name": "logreg_expr", "function": expr(TUTORIAL_EXPR, PARAMS),
            # the page's data is float32; plain JSON numbers would be stored as float64
            "constants": {"inputs": b64(np.array(INPUTS, np.float32)), "targets": TARGETS}})
        assert response.status_code == 201, response.text
        return "/v1/models/logreg_expr", {}, []
    if form == "registered_graph":
        response = client.post("/v1/models", json={
            "name": "logreg_graph", "function": {"graph": tutorial_graph(with_constants=False)},
            "constants": {"inputs": b64(np.array(INPUTS, np.float32)),
                          "targets": b64(np.array([1.0, 1.0, 0.0, 1.0], np.float32))}})
        assert response.status_code == 201, response.text
        return "/v1/models/logreg_graph", {}, []
    raise AssertionError(form)


FORMS = ["expr", "graph", "graph_all_params", "builtin", "registered_expr", "registered_graph"]


@pytest.mark.parametrize("form", FORMS)
def test_the_tutorials_numbers_come_back_for_every_form(client: TestClient, form: str) -> None:
    prefix, function, rest = _tutorial_forms(client, form)
    args = [tutorial_w(), tutorial_b(), *rest]  # the exact float32 bits of the tutorial's W and b
    function = {**function, "dtype": "float32"}  # the page computes in float32

    out = post(client, f"{prefix}/grad", {**function, "args": args, "argnums": 0})
    np.testing.assert_allclose(arr(out["grad"]), W_GRAD, rtol=RTOL)
    out = post(client, f"{prefix}/grad", {**function, "args": args})  # argnums defaults to 0
    np.testing.assert_allclose(arr(out["grad"]), W_GRAD, rtol=RTOL)
    out = post(client, f"{prefix}/grad", {**function, "args": args, "argnums": 1})
    np.testing.assert_allclose(arr(out["grad"]), B_GRAD, rtol=RTOL)
    out = post(client, f"{prefix}/grad", {**function, "args": args, "argnums": [0, 1]})
    assert isinstance(out["grad"], list) and len(out["grad"]) == 2
    np.testing.assert_allclose(arr(out["grad"][0]), W_GRAD, rtol=RTOL)
    np.testing.assert_allclose(arr(out["grad"][1]), B_GRAD, rtol=RTOL)
    out = post(client, f"{prefix}/value_and_grad", {**function, "args": args, "argnums": [0, 1]})
    np.testing.assert_allclose(arr(out["value"]), LOSS, rtol=RTOL)
    np.testing.assert_allclose(arr(out["grad"][0]), W_GRAD, rtol=RTOL)
    np.testing.assert_allclose(arr(out["grad"][1]), B_GRAD, rtol=RTOL)
    out = post(client, f"{prefix}/value", {**function, "args": args})
    np.testing.assert_allclose(arr(out["value"]), LOSS, rtol=RTOL)
    assert out["meta"]["dtype"] == "float32"
    if prefix.startswith("/v1/models/"):
        assert out["meta"]["model"]["name"] == prefix.rsplit("/", 1)[1]


def test_the_tutorials_printed_decimals_give_its_numbers_in_both_encodings(client: TestClient) -> None:
    body = {"function": expr(TUTORIAL_EXPR, PARAMS), "args": [W_PRINTED, B_PRINTED, INPUTS, TARGETS],
            "argnums": [0, 1], "dtype": "float32"}
    for encoding in ("json", "base64"):
        out = post(client, "/v1/value_and_grad", {**body, "encoding": encoding})
        np.testing.assert_allclose(arr(out["value"]), LOSS, rtol=RTOL)
        np.testing.assert_allclose(arr(out["grad"][0]), W_GRAD, rtol=RTOL)
        np.testing.assert_allclose(arr(out["grad"][1]), B_GRAD, rtol=RTOL)
    assert out["grad"][0]["$array"]["dtype"] == "float32"


def test_the_tutorials_check_grads_order_2_passes(client: TestClient) -> None:
    out = post(client, "/v1/models/tutorial_logreg/check_grads",
               {"args": [tutorial_w(), tutorial_b()], "check": {"order": 2}, "dtype": "float64"})
    report = out["check"]
    assert report["passed"] is True
    assert {(r["order"], r["mode"]) for r in report["results"]} == {(1, "fwd"), (2, "fwd"), (1, "rev"), (2, "rev")}


@pytest.mark.parametrize("order", [1, 2, 3])
def test_grad_order_n_is_grad_applied_n_times(client: TestClient, order: int) -> None:
    out = post(client, "/v1/grad", {"function": expr("tanh(x)", ["x"]), "args": [2.0], "order": order})
    np.testing.assert_allclose(arr(out["grad"]), TANH_DERIVATIVES[order], rtol=RTOL)


def test_grad_order_of_the_tutorial_polynomial(client: TestClient) -> None:
    f = expr("x**3 + 2*x**2 - 3*x + 1", ["x"])
    got = [arr(post(client, "/v1/grad", {"function": f, "args": [1.0], "order": n})["grad"]) for n in (1, 2, 3, 4)]
    np.testing.assert_allclose(got, [4.0, 10.0, 6.0, 0.0])


# ----------------------------------------------------------------------------- float64 closed forms

X = [0.3, -1.2, 2.5]
F = expr("sum(sin(x) * x ** 2)", ["x"])


def _closed_forms(x: np.ndarray) -> dict[str, np.ndarray]:
    s, c = np.sin(x), np.cos(x)
    return {"value": np.sum(s * x**2), "grad": c * x**2 + 2 * x * s,
            "hess_diag": -s * x**2 + 4 * x * c + 2 * s}


def test_float64_results_match_closed_forms(client: TestClient) -> None:
    x = np.array(X)
    want = _closed_forms(x)
    base = {"function": F, "args": [X], "dtype": "float64"}
    out = post(client, "/v1/value", base)
    np.testing.assert_allclose(arr(out["value"]), want["value"], rtol=1e-13)
    assert out["meta"]["dtype"] == "float64"
    np.testing.assert_allclose(arr(post(client, "/v1/grad", base)["grad"]), want["grad"], rtol=1e-13)
    out = post(client, "/v1/value_and_grad", base)
    np.testing.assert_allclose(arr(out["value"]), want["value"], rtol=1e-13)
    np.testing.assert_allclose(arr(out["grad"]), want["grad"], rtol=1e-13)
    np.testing.assert_allclose(arr(post(client, "/v1/hessian", base)["hessian"]), np.diag(want["hess_diag"]),
                               rtol=1e-12, atol=1e-13)
    v = np.array([1.0, -2.0, 0.5])
    out = post(client, "/v1/jvp", {**base, "tangents": [v.tolist()]})
    np.testing.assert_allclose(arr(out["value"]), want["value"], rtol=1e-13)
    np.testing.assert_allclose(arr(out["jvp"]), want["grad"] @ v, rtol=1e-13)
    out = post(client, "/v1/vjp", {**base, "cotangent": 2.0})
    np.testing.assert_allclose(arr(out["vjp"][0]), 2.0 * want["grad"], rtol=1e-13)
    # base64 answers carry float64 bits
    out = post(client, "/v1/grad", {**base, "encoding": "base64"})
    assert out["grad"]["$array"]["dtype"] == "float64"
    np.testing.assert_allclose(arr(out["grad"]), want["grad"], rtol=1e-13)


def test_json_numbers_are_doubles_and_float32_is_asked_for(client: TestClient) -> None:
    third = "x / 3"
    out64 = post(client, "/v1/value", {"function": expr(third, ["x"]), "args": [1.0], "encoding": "base64"})
    out32 = post(client, "/v1/value", {"function": expr(third, ["x"]), "args": [1.0], "encoding": "base64",
                                       "dtype": "float32"})
    assert out32["value"]["$array"]["dtype"] == "float32" and out64["value"]["$array"]["dtype"] == "float64"
    assert arr(out32["value"]) == np.float64(np.float32(1) / np.float32(3))
    assert arr(out64["value"]) == 1 / 3


def test_explicit_array_dtypes_are_honoured(client: TestClient) -> None:
    """A base64 leaf keeps its dtype whatever `dtype` says (it applies to plain numbers only)."""
    x64 = {"$array": {"dtype": "float64", "shape": [], "data": base64.b64encode(np.float64(1.0).tobytes()).decode()}}
    for dtype in ("float32", "float64", None):
        body = {"function": expr("x / 3", ["x"]), "args": [x64], **({"dtype": dtype} if dtype else {})}
        assert arr(post(client, "/v1/value", body)["value"]) == 1 / 3


def test_rosenbrock_is_exact_in_float64_by_default(client: TestClient) -> None:
    x = np.array([-1.2, 1.0])
    float64_value = np.sum(100.0 * (x[1:] - x[:-1] ** 2) ** 2 + (1.0 - x[:-1]) ** 2)
    out = post(client, "/v1/models/rosenbrock/value", {"args": [[-1.2, 1.0]]})
    assert out["value"] == float64_value and out["meta"]["dtype"] == "float64"  # 24.199999999999996
    out = post(client, "/v1/models/rosenbrock/value", {"args": [[-1.2, 1.0]], "dtype": "float32"})
    assert out["value"] == 24.20000457763672 and out["meta"]["dtype"] == "float32"


def test_a_graph_traced_in_float64_takes_plain_json_numbers(client: TestClient) -> None:
    import engine

    with engine.config_context(jax_enable_x64=True) if hasattr(engine, "config_context") else _x64():
        graph = engine.make_graph(lambda x, y: (x * y).sum())(np.ones(3), np.ones(3)).to_json()
    assert {p["dtype"] for p in graph["params"]} == {"float64"}
    out = post(client, "/v1/grad", {"function": {"graph": graph}, "args": [[1.0, 2.0, 3.0], [0.1, 0.2, 0.3]],
                                    "argnums": [0, 1]})
    assert out["grad"] == [[0.1, 0.2, 0.3], [1.0, 2.0, 3.0]]


def _x64() -> Any:
    import contextlib

    import engine

    @contextlib.contextmanager
    def enabled() -> Any:
        engine.config.update("jax_enable_x64", True)
        try:
            yield
        finally:
            engine.config.update("jax_enable_x64", False)

    return enabled()


# ----------------------------------------------------------------------------- options


def test_argnums_int_list_and_negative(client: TestClient) -> None:
    f = expr("sum(x * y ** 2)", ["x", "y"])
    x, y = np.array([1.0, 2.0]), np.array([3.0, -1.0])
    base = {"function": f, "args": [x.tolist(), y.tolist()], "dtype": "float64"}
    np.testing.assert_allclose(arr(post(client, "/v1/grad", base)["grad"]), y**2)
    np.testing.assert_allclose(arr(post(client, "/v1/grad", {**base, "argnums": 1})["grad"]), 2 * x * y)
    np.testing.assert_allclose(arr(post(client, "/v1/grad", {**base, "argnums": -1})["grad"]), 2 * x * y)
    out = post(client, "/v1/grad", {**base, "argnums": [1, 0]})
    np.testing.assert_allclose(arr(out["grad"][0]), 2 * x * y)
    np.testing.assert_allclose(arr(out["grad"][1]), y**2)
    out = post(client, "/v1/value_and_grad", {**base, "argnums": [0]})
    assert isinstance(out["grad"], list) and len(out["grad"]) == 1


def test_has_aux_on_every_transform_that_takes_it(client: TestClient) -> None:
    f = expr("y = x * x\n(sum(y), [y, 2 * x])", ["x"])
    base = {"function": f, "args": [[1.0, 2.0]], "has_aux": True}
    aux = [[1.0, 4.0], [2.0, 4.0]]
    out = post(client, "/v1/grad", base)
    assert out["grad"] == [2.0, 4.0] and out["aux"] == aux
    out = post(client, "/v1/value_and_grad", base)
    assert out["value"] == 5.0 and out["grad"] == [2.0, 4.0] and out["aux"] == aux
    out = post(client, "/v1/jacobian", base)
    assert out["jacobian"] == [2.0, 4.0] and out["aux"] == aux
    out = post(client, "/v1/hessian", base)
    assert out["hessian"] == [[2.0, 0.0], [0.0, 2.0]] and out["aux"] == aux
    out = post(client, "/v1/jvp", {**base, "tangents": [[1.0, 1.0]]})
    assert out["value"] == 5.0 and out["jvp"] == 6.0 and out["aux"] == aux
    out = post(client, "/v1/vjp", {**base, "cotangent": 1.0})
    assert out["value"] == 5.0 and out["vjp"] == [[2.0, 4.0]] and out["aux"] == aux
    out = post(client, "/v1/grad", {**base, "order": 2, "args": [3.0],
                                    "function": expr("(x ** 3, x)", ["x"])})
    assert out["grad"] == 18.0 and out["aux"] == 3.0


def test_jvp_and_vjp_are_shaped_like_outputs_and_arguments(client: TestClient) -> None:
    f = expr("A @ x", ["A", "x"])
    A = [[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]]
    x = [1.0, -1.0]
    out = post(client, "/v1/jvp", {"function": f, "args": [A, x], "tangents": [np.zeros((3, 2)).tolist(), [1.0, 0.0]]})
    assert out["value"] == [-1.0, -1.0, -1.0] and out["jvp"] == [1.0, 3.0, 5.0]
    out = post(client, "/v1/vjp", {"function": f, "args": [A, x], "cotangent": [1.0, 0.0, 1.0]})
    assert len(out["vjp"]) == 2
    assert np.shape(out["vjp"][0]) == (3, 2) and np.shape(out["vjp"][1]) == (2,)
    assert out["vjp"][0] == [[1.0, -1.0], [0.0, 0.0], [1.0, -1.0]] and out["vjp"][1] == [6.0, 8.0]


def test_jacobian_reverse_and_forward_modes_agree(client: TestClient) -> None:
    A = [[0.5, -1.0], [2.0, 0.25]]
    x = [0.1, -0.3]
    base = {"function": expr("tanh(A @ x)", ["A", "x"]), "args": [A, x], "dtype": "float64", "argnums": [0, 1]}
    rev = post(client, "/v1/jacobian", {**base, "mode": "rev"})["jacobian"]
    fwd = post(client, "/v1/jacobian", {**base, "mode": "fwd"})["jacobian"]
    default = post(client, "/v1/jacobian", base)["jacobian"]
    assert np.shape(rev[0]) == (2, 2, 2) and np.shape(rev[1]) == (2, 2)
    for r, f, d in zip(rev, fwd, default):
        np.testing.assert_allclose(arr(r), arr(f), rtol=1e-14)
        np.testing.assert_allclose(arr(r), arr(d), rtol=0)
    z = np.array(A) @ np.array(x)
    np.testing.assert_allclose(arr(rev[1]), np.diag(1 - np.tanh(z) ** 2) @ np.array(A), rtol=1e-14)


def test_hessian_of_rosenbrock_matches_its_closed_form(client: TestClient) -> None:
    x = np.array([0.5, -1.5, 2.0, 0.75])
    out = post(client, "/v1/models/rosenbrock/hessian", {"args": [x.tolist()], "dtype": "float64"})
    np.testing.assert_allclose(arr(out["hessian"]), rosenbrock_hessian(x), rtol=1e-13)
    grad = post(client, "/v1/grad", {"function": {"model": "rosenbrock"}, "args": [[1.0, 1.0, 1.0]]})["grad"]
    assert grad == [0.0, 0.0, 0.0]  # the minimum


def test_hessian_with_argnums_list_gives_blocks(client: TestClient) -> None:
    out = post(client, "/v1/hessian", {"function": expr("sum(x ** 3 * y)", ["x", "y"]),
                                       "args": [[1.0, 2.0], 3.0], "argnums": [0, 1]})
    H = out["hessian"]
    assert H[0][0] == [[18.0, 0.0], [0.0, 36.0]] and H[0][1] == [3.0, 12.0]
    assert H[1][0] == [3.0, 12.0] and H[1][1] == 0.0


def test_check_grads_reports_every_order_and_mode(client: TestClient) -> None:
    good = post(client, "/v1/check_grads", {"function": F, "args": [X], "dtype": "float64",
                                            "check": {"order": 2, "modes": ["rev"], "atol": 1e-4, "rtol": 1e-4}})
    report = good["check"]
    assert report["passed"] is True
    assert [(r["order"], r["mode"]) for r in report["results"]] == [(1, "rev"), (2, "rev")]
    for r in report["results"]:
        assert r["passed"] and r["max_abs_error"] <= r["atol"] + r["rtol"] and r["atol"] == 1e-4
    # stop_gradient hides half the derivative: finite differences disagree with the rule
    bad = post(client, "/v1/check_grads", {"function": expr("sum(x * stop_gradient(x))", ["x"]),
                                           "args": [[1.0, 2.0]], "dtype": "float64"})
    assert bad["check"]["passed"] is False
    assert {r["mode"] for r in bad["check"]["results"]} == {"fwd", "rev"}
    assert all(not r["passed"] and r["max_rel_error"] > 0.1 for r in bad["check"]["results"])
    # a function undefined next to its point: infinite errors are written as JSON strings, not a 500
    response = client.post("/v1/check_grads", json={"function": expr("sum(log(x))", ["x"]), "args": [[0.0, 1.0]],
                                                    "dtype": "float64"})
    report = strict_json(response.text)["check"]
    assert report["passed"] is False and report["results"][0]["max_abs_error"] in ("Infinity", "NaN")


# ----------------------------------------------------------------------------- pytrees and models


def test_gradients_of_pytree_arguments_are_shaped_like_them(client: TestClient) -> None:
    rng = np.random.default_rng(0)
    params = {"W1": rng.normal(size=(3, 4)).tolist(), "b1": [0.0] * 4,
              "W2": rng.normal(size=(4, 2)).tolist(), "b2": [0.1, -0.1]}
    inputs = rng.normal(size=(5, 3)).tolist()
    labels = b64(np.array([0, 1, 1, 0, 1], np.int32))
    out = post(client, "/v1/models/mlp_classifier/value_and_grad",
               {"args": [params, inputs, labels], "dtype": "float64"})
    grad = out["grad"]
    assert set(grad) == set(params)
    for key, value in params.items():
        assert np.shape(grad[key]) == np.shape(value)
    # against a central difference in one coordinate
    eps = 1e-6
    for sign in (1, -1):
        bumped = {**params, "b2": [0.1 + sign * eps, -0.1]}
        value = post(client, "/v1/models/mlp_classifier/value",
                     {"args": [bumped, inputs, labels], "dtype": "float64"})["value"]
        if sign == 1:
            plus = value
        else:
            minus = value
    np.testing.assert_allclose(grad["b2"][0], (plus - minus) / (2 * eps), rtol=1e-6)
    out = post(client, "/v1/models/mlp_classifier/jvp", {
        "args": [params, inputs, labels], "dtype": "float64",
        "tangents": [{k: np.zeros(np.shape(v)).tolist() for k, v in params.items()}, np.zeros((5, 3)).tolist(),
                     b64(np.zeros(5, np.int32))]})
    assert out["jvp"] == 0.0


TRANSFORM_BODIES: dict[str, dict[str, Any]] = {
    "value": {}, "grad": {"argnums": 0}, "value_and_grad": {"argnums": [0]},
    "jvp": {"tangents": [[1.0, 0.0]]}, "vjp": {"cotangent": 1.0}, "jacobian": {"mode": "fwd"}, "hessian": {},
    "check_grads": {"check": {"order": 1}},
}


@pytest.mark.parametrize("transform", list(TRANSFORM_BODIES))
def test_every_transform_on_a_registered_model(client: TestClient, transform: str) -> None:
    response = client.post("/v1/models", json={"name": "sq", "function": expr("sum(c * x ** 2)", ["x", "c"]),
                                               "constants": {"c": 3.0}})
    assert response.status_code == 201, response.text
    out = post(client, f"/v1/models/sq/{transform}", {"args": [[1.0, 2.0]], **TRANSFORM_BODIES[transform]})
    same = post(client, f"/v1/{transform}", {"function": {"model": "sq", "version": 1}, "args": [[1.0, 2.0]],
                                              **TRANSFORM_BODIES[transform]})
    expected = {"value": {"value": 15.0}, "grad": {"grad": [6.0, 12.0]},
                "value_and_grad": {"value": 15.0, "grad": [[6.0, 12.0]]}, "jvp": {"value": 15.0, "jvp": 6.0},
                "vjp": {"value": 15.0, "vjp": [[6.0, 12.0]]}, "jacobian": {"jacobian": [6.0, 12.0]},
                "hessian": {"hessian": [[6.0, 0.0], [0.0, 6.0]]}}
    if transform == "check_grads":
        assert out["check"]["passed"] is True
    else:
        assert {k: v for k, v in out.items() if k != "meta"} == expected[transform]
        assert {k: v for k, v in same.items() if k != "meta"} == expected[transform]
    assert out["meta"]["model"] == {"name": "sq", "version": 1}
    assert out["meta"]["transform"] == transform


def test_meta_reports_dtype_time_nodes_and_plan_cache_hits(client: TestClient) -> None:
    body = {"function": F, "args": [X]}
    first = post(client, "/v1/grad", body)["meta"]
    second = post(client, "/v1/grad", body)["meta"]
    assert first["cache_hit"] is False and second["cache_hit"] is True
    assert first["transform"] == "grad" and first["dtype"] == "float64"
    assert isinstance(first["elapsed_ms"], float) and first["elapsed_ms"] >= 0
    assert isinstance(first["graph_nodes"], int) and first["graph_nodes"] > 0
    assert first["graph_nodes"] == second["graph_nodes"]
    # a plan is per (function, transform, argnums, order, shapes, dtype)
    for changed in ({"args": [X + [1.0]]}, {"dtype": "float32"}, {"order": 2, "function": expr("sum(sin(x))", ["x"]),
                                                                   "args": [1.0]}):
        assert post(client, "/v1/grad", {**body, **changed})["meta"]["cache_hit"] is False
    assert post(client, "/v1/value_and_grad", body)["meta"]["cache_hit"] is False
    assert post(client, "/v1/grad", {**body, "encoding": "base64"})["meta"]["cache_hit"] is True
    # the same expression sent again (another dict, same content) reuses the plan
    assert post(client, "/v1/grad", {"function": dict(F), "args": [[9.0, 8.0, 7.0]]})["meta"]["cache_hit"] is True
