"""Derived functions: `{"jvp": f}` is (primals..., tangents...) -> the output's tangent, and
`{"vjp": f}` is (primals..., cotangent) -> one cotangent per parameter. They nest, every transform
takes them (so the server gives derivatives of any order of a derived function), and their cost
is predicted before they are traced.

Closed forms: for f(x, y) = sum(sin(x) * y),
  jvp f (x, y, tx, ty) = sum(cos(x) y tx + sin(x) ty)
  vjp f (x, y, c)      = (c cos(x) y, c sin(x))
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

F = {"expr": "sum(sin(x) * y)", "params": ["x", "y"]}
X, Y = np.array([0.3, -1.2, 2.0]), np.array([1.5, 0.5, -2.0])
TX, TY = np.array([1.0, -0.5, 0.25]), np.array([0.0, 2.0, 1.0])


def post(client: Any, path: str, body: dict[str, Any]) -> dict[str, Any]:
    response = client.post(path, json=body)
    assert response.status_code == 200, response.text
    return response.json()


def lists(*arrays: np.ndarray) -> list[Any]:
    return [np.asarray(a).tolist() for a in arrays]


def test_jvp_function_is_the_directional_derivative(client) -> None:
    out = post(client, "/v1/value", {"function": {"jvp": F}, "args": lists(X, Y, TX, TY)})
    assert out["value"] == pytest.approx(np.sum(np.cos(X) * Y * TX + np.sin(X) * TY), rel=1e-14)
    # the same number as the jvp transform's
    jvp = post(client, "/v1/jvp", {"function": F, "args": lists(X, Y), "tangents": lists(TX, TY)})
    assert out["value"] == pytest.approx(jvp["jvp"], rel=1e-15)


def test_vjp_function_gives_one_cotangent_per_parameter(client) -> None:
    out = post(client, "/v1/value", {"function": {"vjp": F}, "args": lists(X, Y, 2.0), "encoding": "base64"})
    from client._wire import decode_leaf

    x_bar, y_bar = (decode_leaf(v) for v in out["value"])
    np.testing.assert_allclose(x_bar, 2.0 * np.cos(X) * Y, rtol=1e-14)
    np.testing.assert_allclose(y_bar, 2.0 * np.sin(X), rtol=1e-14)


def test_the_cotangent_of_several_outputs_may_arrive_stacked(client) -> None:
    """JSON has no tuples: the cotangent of (2x, x^2), two f64[2], arrives as one [2, 2] array."""
    g = {"expr": "(2 * x, x ** 2)", "params": ["x"]}
    x = [1.0, 3.0]
    out = post(client, "/v1/value", {"function": {"vjp": g}, "args": [x, [[1.0, 1.0], [0.5, 2.0]]]})
    assert out["value"] == [[2.0 + 0.5 * 2 * 1.0, 2.0 + 2.0 * 2 * 3.0]]


def test_transforms_of_derived_functions_are_higher_derivatives(client) -> None:
    # grad of the JVP with respect to x: a Hessian-vector product (-sin(x) y tx + cos(x) ty)
    hvp = post(client, "/v1/grad", {"function": {"jvp": F}, "args": lists(X, Y, TX, TY), "argnums": 0})
    np.testing.assert_allclose(hvp["grad"], -np.sin(X) * Y * TX + np.cos(X) * TY, rtol=1e-14)
    # the VJP of the JVP, with cotangent c: d(c * jvp)/d(x, y, tx, ty)
    c = 3.0
    nested = post(client, "/v1/value", {"function": {"vjp": {"jvp": F}}, "args": lists(X, Y, TX, TY, c)})
    expected = [c * (-np.sin(X) * Y * TX + np.cos(X) * TY), c * np.cos(X) * TX, c * np.cos(X) * Y, c * np.sin(X)]
    for got, want in zip(nested["value"], expected, strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-14)
    # third order: the Hessian of the JVP in x, diag(-cos(x) y tx - sin(x) ty)
    third = post(client, "/v1/hessian", {"function": {"jvp": F}, "args": lists(X, Y, TX, TY), "argnums": 0})
    np.testing.assert_allclose(third["hessian"], np.diag(-np.cos(X) * Y * TX - np.sin(X) * TY), rtol=1e-14,
                               atol=1e-15)


def test_a_models_derivative_keeps_the_model_and_its_types(client) -> None:
    x, t = np.array([1.0, 2.0, 3.0]), np.array([0.5, -1.0, 2.0])
    out = post(client, "/v1/value", {"function": {"jvp": {"model": "rosenbrock"}}, "args": lists(x, t)})
    grad = post(client, "/v1/grad", {"function": {"model": "rosenbrock"}, "args": lists(x)})["grad"]
    assert out["value"] == pytest.approx(float(np.dot(grad, t)), rel=1e-14)
    assert out["meta"]["model"] == {"name": "rosenbrock", "version": 1}
    # the tangent is typed like x (f64[n]), so n is bound by x
    response = client.post("/v1/value", json={"function": {"jvp": {"model": "rosenbrock"}},
                                              "args": lists(x, [1.0, 2.0])})
    assert response.status_code == 422, response.text
    assert "tangent(x)" in response.json()["error"]["message"]


def test_shapes_of_a_derived_function(client) -> None:
    out = post(client, "/v1/shapes", {"function": {"vjp": F}, "args": [{"shape": [3]}, {"shape": [3]},
                                                                       {"shape": []}]})
    assert out["output"] == [{"shape": [3], "dtype": "float64"}, {"shape": [3], "dtype": "float64"}]


def test_in_axes_batches_a_derived_function(client) -> None:
    """Per-example VJPs (x and the cotangent batched, y shared), as in a vmap of a gradient."""
    xs, cs = np.array([[0.3, -1.2, 2.0], [1.0, 0.0, -0.5]]), np.array([1.0, -2.0])
    out = post(client, "/v1/value", {"function": {"vjp": F}, "args": lists(xs, Y, cs), "in_axes": [0, None, 0]})
    x_bars, y_bars = out["value"]
    np.testing.assert_allclose(x_bars, cs[:, None] * np.cos(xs) * Y, rtol=1e-14)
    np.testing.assert_allclose(y_bars, cs[:, None] * np.sin(xs), rtol=1e-14)
    # per-direction JVPs at one point (the primals shared, the tangents batched), as in jacfwd
    tangents = np.eye(3)
    out = post(client, "/v1/value", {"function": {"jvp": F}, "args": lists(X, Y, tangents, np.zeros((3, 3))),
                                     "in_axes": [None, None, 0, 0]})
    np.testing.assert_allclose(out["value"], np.cos(X) * Y, rtol=1e-14)


# ----------------------------------------------------------------------------- refusals


def error(client: Any, body: dict[str, Any], status: int, path: str = "/v1/value") -> dict[str, Any]:
    response = client.post(path, json=body)
    assert response.status_code == status, response.text
    return response.json()["error"]


def test_a_derived_function_has_exactly_one_field(client) -> None:
    e = error(client, {"function": {"jvp": F, "expr": "x"}, "args": []}, 422)
    assert e["type"] == "invalid_function" and e["detail"]["keys"] == ["expr", "jvp"]


def test_nesting_deeper_than_the_order_limit_is_refused_before_resolving(client) -> None:
    spec: dict[str, Any] = {"model": "no_such_model"}  # never looked up: the depth is refused first
    for _ in range(5):
        spec = {"vjp": spec}
    e = error(client, {"function": spec, "args": []}, 413)
    assert e["type"] == "limit_exceeded" and "NABLA_MAX_ORDER" in e["message"]
    assert e["detail"] == {"limit": "NABLA_MAX_ORDER", "requested": 5, "maximum": 4}


def test_the_traced_size_of_a_deep_derivative_is_predicted(make_client) -> None:
    """Each level multiplies the trace by about 4: refused from the function's own size, with the
    figures, before the derivative is traced."""
    client = make_client(max_plan_nodes=30)  # 120 operations before optimising
    assert client.post("/v1/value", json={"function": {"jvp": F}, "args": lists(X, Y, TX, TY)}).status_code == 200
    deep = {"jvp": {"jvp": {"jvp": F}}}  # (x, y) and 2 + 4 + 8 tangents
    args = lists(*([X, Y] * 8))
    e = error(client, {"function": deep, "args": args}, 413)
    assert e["detail"]["limit"] == "NABLA_MAX_PLAN_NODES" and e["detail"]["maximum"] == 120
    assert e["detail"]["requested"] % 4 ** 3 == 0  # the function's operations times 4 per level


def test_tangents_and_cotangents_are_checked_by_name(client) -> None:
    e = error(client, {"function": {"jvp": F}, "args": lists(X, Y, TX[:2], TY)}, 422)
    assert e["detail"] == {"path": "args.tangent(x)", "expected": "f64[3]", "got": "f64[2]"}
    e = error(client, {"function": {"vjp": F}, "args": lists(X, Y, [1.0, 2.0])}, 422)
    assert e["detail"] == {"path": "args.cotangent(output)", "expected": "f64[]", "got": "f64[2]"}
    e = error(client, {"function": {"jvp": F}, "args": lists(X, Y, TX)}, 400)
    assert "4 argument(s)" in e["message"] and "tangent(y)" in e["message"]
