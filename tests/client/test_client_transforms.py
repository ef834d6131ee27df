"""Every transform of the client against a real server, through `Client` and `AsyncClient` alike
(the `api` fixture), compared with the local engine: values, structure, types and dtypes."""

from __future__ import annotations

from collections import namedtuple
from typing import Any

import numpy as np
import pytest

import client
import engine
import engine.numpy as jnp
from engine.tree_util import tree_leaves, tree_structure

Params = namedtuple("Params", "w b")

x32 = np.array([0.5, -1.0, 2.0], np.float32)
y32 = np.array([1.5, 0.25, -0.75], np.float32)


def assert_tree_close(got: Any, expected: Any, rtol: float = 1e-6, atol: float = 1e-6) -> None:
    """Same pytree structure (containers and their types), NumPy leaves of the same dtypes, close values."""
    assert tree_structure(got) == tree_structure(expected), (got, expected)
    _same_container_types(got, expected)
    for g, e in zip(tree_leaves(got), tree_leaves(expected), strict=True):
        assert type(g) is np.ndarray, f"{type(g).__name__} is not a NumPy array"
        assert g.dtype == np.asarray(e).dtype, (g.dtype, np.asarray(e).dtype)
        np.testing.assert_allclose(g, np.asarray(e), rtol=rtol, atol=atol)


def _same_container_types(got: Any, expected: Any) -> None:
    if isinstance(expected, (tuple, list, dict)):
        assert type(got) is type(expected), (type(got), type(expected))
        items = expected.items() if isinstance(expected, dict) else enumerate(expected)
        for k, v in items:
            _same_container_types(got[k], v)


def sum_sq(x):
    return jnp.sum(jnp.sin(x) ** 2)


def two_args(x, y):
    return jnp.sum(x * y ** 2 + jnp.tanh(x))


# ----------------------------------------------------------------------------- grad


def test_grad_python_function_float32(api) -> None:
    assert_tree_close(api.grad(sum_sq)(x32), engine.grad(sum_sq)(x32))


def test_grad_float64_stays_float64(api) -> None:
    x64 = x32.astype(np.float64)
    got = api.grad(sum_sq)(x64)
    assert got.dtype == np.float64
    np.testing.assert_allclose(got, np.sin(2 * x64), rtol=1e-12)


def test_grad_of_a_python_float_is_a_float32_scalar(api) -> None:
    got = api.grad(jnp.tanh)(2.0)
    assert type(got) is np.ndarray and got.shape == () and got.dtype == np.float32
    assert got == pytest.approx(0.070650816, rel=1e-6)


@pytest.mark.parametrize("argnums", [0, 1, (0, 1), (1,), (1, 0)])
def test_grad_argnums(api, argnums) -> None:
    got = api.grad(two_args, argnums=argnums)(x32, y32)
    assert_tree_close(got, engine.grad(two_args, argnums=argnums)(x32, y32))
    assert isinstance(got, tuple) == (not isinstance(argnums, int))


@pytest.mark.parametrize("order", [2, 3, 4])
def test_grad_order(api, order) -> None:
    f = lambda x: x ** 3 + 2 * x ** 2 - 3 * x + 1  # noqa: E731 - as in the tutorial
    local = f
    for _ in range(order):
        local = engine.grad(local)
    assert_tree_close(api.grad(f, order=order)(1.0), local(1.0))
    assert_tree_close(api.grad(jnp.tanh, order=order)(0.3), _nested_grad(jnp.tanh, order)(0.3), rtol=1e-5)


def _nested_grad(f, order):
    for _ in range(order):
        f = engine.grad(f)
    return f


def test_grad_has_aux(api) -> None:
    def f(x):
        return jnp.sum(x ** 2), {"double": x * 2, "total": jnp.sum(x)}

    got = api.grad(f, has_aux=True)(x32)
    assert_tree_close(got, engine.grad(f, has_aux=True)(x32))


def test_grad_has_aux_with_tuple_argnums(api) -> None:
    def f(x, y):
        return two_args(x, y), x * y

    assert_tree_close(api.grad(f, (0, 1), has_aux=True)(x32, y32), engine.grad(f, (0, 1), has_aux=True)(x32, y32))


# ----------------------------------------------------------------------------- pytree arguments


def test_grad_dict_argument(api) -> None:
    def f(p):
        return jnp.sum(jnp.tanh(p["w"] * p["b"]))

    arg = {"w": x32, "b": np.float32(0.5)}
    got = api.grad(f)(arg)
    assert isinstance(got, dict) and set(got) == {"w", "b"}
    assert_tree_close(got, engine.grad(f)(arg))


def test_grad_list_and_tuple_arguments(api) -> None:
    def f(seq):
        return jnp.sum(seq[0] ** 2) * seq[1]

    for arg in ([x32, np.float32(3.0)], (x32, np.float32(3.0))):
        got = api.grad(f)(arg)
        assert type(got) is type(arg)
        assert_tree_close(got, engine.grad(f)(arg))


def test_grad_namedtuple_argument(api) -> None:
    def f(p):
        return jnp.sum((p.w - 1.0) ** 2) + p.b ** 2

    arg = Params(w=x32, b=np.float32(2.0))
    got = api.grad(f)(arg)
    assert type(got) is Params
    assert_tree_close(got, engine.grad(f)(arg))


def test_grad_nested_pytrees_with_several_argnums(api) -> None:
    def f(layers, scale, extra):
        total = sum(jnp.sum(jnp.tanh(layer["W"]) * layer["b"]) for layer in layers)
        return scale * total + jnp.sum(extra[0] * extra[1].w)

    layers = [{"W": np.full((2, 3), 0.1, np.float32), "b": np.float32(1.0)},
              {"W": np.full((2, 3), -0.2, np.float32), "b": np.float32(2.0)}]
    extra = (x32, Params(y32, np.float32(0.0)))
    args = (layers, np.float32(1.5), extra)
    assert_tree_close(api.grad(f, (0, 2))(*args), engine.grad(f, (0, 2))(*args))
    assert_tree_close(api.grad(f, 1)(*args), engine.grad(f, 1)(*args))


def test_float64_anywhere_makes_the_request_float64(api) -> None:
    def f(p):
        return jnp.sum(p["a"] * p["b"])

    got = api.grad(f)({"a": x32, "b": y32.astype(np.float64)})
    assert got["a"].dtype == np.float64 and got["b"].dtype == np.float64


def test_integer_arguments_keep_their_dtype(api) -> None:
    def f(x, n):
        return jnp.sum(x * n)

    got = api.grad(f)(x32, np.array([1, 2, 3], np.int32))
    np.testing.assert_array_equal(got, [1, 2, 3])
    assert got.dtype == np.float32


# ----------------------------------------------------------------------------- value, value_and_grad


def test_value(api) -> None:
    assert_tree_close(api.value(sum_sq)(x32), sum_sq(x32))


def test_value_with_a_pytree_output(api) -> None:
    def f(x):
        return {"y": x * 2, "parts": (jnp.sum(x), [x[0]])}

    assert_tree_close(api.value(f)(x32), f(x32))


@pytest.mark.parametrize("argnums", [0, (0, 1)])
def test_value_and_grad(api, argnums) -> None:
    got = api.value_and_grad(two_args, argnums)(x32, y32)
    assert_tree_close(got, engine.value_and_grad(two_args, argnums)(x32, y32))


def test_value_and_grad_has_aux(api) -> None:
    def f(p):
        return jnp.sum(p["w"] ** 2), p["w"] * 3

    arg = {"w": x32}
    assert_tree_close(api.value_and_grad(f, has_aux=True)(arg), engine.value_and_grad(f, has_aux=True)(arg))


# ----------------------------------------------------------------------------- jvp, vjp


def test_jvp(api) -> None:
    t = np.ones(3, np.float32)
    assert_tree_close(api.jvp(sum_sq, (x32,), (t,)), engine.jvp(sum_sq, (x32,), (t,)))


def test_jvp_pytree_and_several_arguments(api) -> None:
    def f(p, s):
        return jnp.sin(p["a"]) * p["b"] * s

    primals = ({"a": x32, "b": y32}, np.float32(2.0))
    tangents = ({"a": y32, "b": x32}, np.float32(1.0))
    assert_tree_close(api.jvp(f, primals, tangents), engine.jvp(f, primals, tangents))


def test_jvp_has_aux(api) -> None:
    def f(x):
        return jnp.sin(x), jnp.sum(x)

    t = np.ones(3, np.float32)
    assert_tree_close(api.jvp(f, (x32,), (t,), has_aux=True), engine.jvp(f, (x32,), (t,), has_aux=True))


def test_vjp(api) -> None:
    out, vjp_fun = api.vjp(jnp.sin, x32)
    local_out, local_vjp = engine.vjp(jnp.sin, x32)
    assert_tree_close(out, local_out)
    ct = np.array([1.0, 2.0, 3.0], np.float32)
    assert_tree_close(vjp_fun(ct), local_vjp(ct))


def test_vjp_several_and_pytree_primals(api) -> None:
    def f(p, y):
        return p["w"] * y + p["b"]

    primals = ({"w": x32, "b": np.float32(1.0)}, y32)
    out, vjp_fun = api.vjp(f, *primals)
    local_out, local_vjp = engine.vjp(f, *primals)
    assert_tree_close(out, local_out)
    assert_tree_close(vjp_fun(x32), local_vjp(x32))


def test_vjp_has_aux(api) -> None:
    def f(x):
        return jnp.sin(x) * 2, {"n": jnp.sum(x)}

    out, vjp_fun, aux = api.vjp(f, x32, has_aux=True)
    local_out, local_vjp, local_aux = engine.vjp(f, x32, has_aux=True)
    assert_tree_close(out, local_out)
    assert_tree_close(aux, local_aux)
    assert_tree_close(vjp_fun(y32), local_vjp(y32))


def test_vjp_of_a_function_with_several_outputs(api) -> None:
    def f(p):
        return {"prod": p["a"] * p["b"], "sum": jnp.sum(p["a"])}

    arg = {"a": x32, "b": y32}
    out, vjp_fun = api.vjp(f, arg)
    local_out, local_vjp = engine.vjp(f, arg)
    ct = {"prod": np.ones(3, np.float32), "sum": np.float32(1.0)}
    assert_tree_close(vjp_fun(ct), local_vjp(ct))


# ----------------------------------------------------------------------------- jacobian, hessian


@pytest.mark.parametrize("mode", ["rev", "fwd"])
@pytest.mark.parametrize("argnums", [0, 1, (0, 1)])
def test_jacobian(api, mode, argnums) -> None:
    def f(x, y):
        return jnp.sin(x) * y

    local = (engine.jacrev if mode == "rev" else engine.jacfwd)(f, argnums)(x32, y32)
    got = api.jacobian(f, argnums, mode=mode)(x32, y32)
    assert_tree_close(got, local)


@pytest.mark.parametrize("mode", ["rev", "fwd"])
def test_jacobian_pytree_input_and_output(api, mode) -> None:
    def f(p, s):
        return {"prod": p["a"] * p["b"] * s, "sum": jnp.sum(p["a"]) * s}

    args = ({"a": x32, "b": y32}, np.float32(2.0))
    local = (engine.jacrev if mode == "rev" else engine.jacfwd)(f, (0, 1))(*args)
    assert_tree_close(api.jacobian(f, (0, 1), mode=mode)(*args), local)


def test_jacobian_has_aux(api) -> None:
    def f(x):
        return jnp.tanh(x), {"k": jnp.sum(x)}

    assert_tree_close(api.jacobian(f, has_aux=True)(x32), engine.jacrev(f, has_aux=True)(x32))


@pytest.mark.parametrize("argnums", [0, 1, (0, 1)])
def test_hessian(api, argnums) -> None:
    assert_tree_close(api.hessian(two_args, argnums)(x32, y32), engine.hessian(two_args, argnums)(x32, y32))


def test_hessian_of_a_dict_argument(api) -> None:
    def f(p):
        return jnp.sum(p["a"] ** 2 * p["b"]) + jnp.sum(jnp.sin(p["a"]))

    arg = {"a": x32, "b": y32}
    assert_tree_close(api.hessian(f)(arg), engine.hessian(f)(arg))


# ----------------------------------------------------------------------------- gradient checks


def test_check_gradients_returns_the_report(api) -> None:
    report = api.check_gradients(sum_sq, (x32,), order=2, modes=("fwd", "rev"))
    assert report["passed"] is True
    seen = {(r["order"], r["mode"]) for r in report["results"]}
    assert seen == {(1, "fwd"), (2, "fwd"), (1, "rev"), (2, "rev")}
    for r in report["results"]:
        assert set(r) >= {"order", "mode", "kind", "max_abs_error", "max_rel_error", "atol", "rtol", "passed"}
        assert r["passed"] and r["max_abs_error"] <= r["atol"] + r["rtol"] * 10


def test_check_gradients_options(api) -> None:
    report = api.check_gradients(two_args, (x32, y32), order=1, modes="rev", atol=0.5, rtol=0.5, eps=1e-2)
    assert [(r["order"], r["mode"], r["atol"], r["rtol"]) for r in report["results"]] == [(1, "rev", 0.5, 0.5)]


def test_check_grads_passes_silently(api) -> None:
    assert api.check_grads(two_args, (x32, y32), order=2) is None
    assert api.check_grads("sum(tanh(x) * y)", (x32, y32), order=2, params=["x", "y"]) is None


WRONG_EXPR = "sum(x * stop_gradient(x))"  # autodiff says x, finite differences 2x


def wrong_python(x):
    return jnp.sum(x * engine.stop_gradient(x))


@pytest.mark.parametrize("f, params", [(WRONG_EXPR, ["x"]), (wrong_python, None)], ids=["expr", "python"])
def test_check_grads_raises_for_a_wrong_derivative(api, f, params) -> None:
    report = api.check_gradients(f, (x32,), order=1, params=params)
    assert report["passed"] is False and not all(r["passed"] for r in report["results"])
    with pytest.raises(client.GradientCheckError, match="disagrees with finite differences") as info:
        api.check_grads(f, (x32,), order=1, params=params)
    assert isinstance(info.value, AssertionError) and isinstance(info.value, client.NablaError)
    # The engine's check_grads raises for the same function, the same way.
    with pytest.raises(AssertionError, match="disagrees"):
        from engine.test_util import check_grads

        check_grads(wrong_python, (x32,), order=1)


def test_check_grads_raises_for_a_discontinuity(api) -> None:
    """sign(x) has derivative 0 everywhere autodiff looks, but finite differences across 0 see a jump."""
    with pytest.raises(client.GradientCheckError):
        api.check_grads("sum(sign(x))", (np.zeros(3, np.float32),), order=1, params=["x"])


# ----------------------------------------------------------------------------- expressions and models


def test_expression_with_params(api) -> None:
    got = api.grad("sum(tanh(x) ** 2 * y)", argnums=(0, 1), params=["x", "y"])(x32, y32)
    local = engine.grad(lambda x, y: jnp.sum(jnp.tanh(x) ** 2 * y), (0, 1))(x32, y32)
    assert_tree_close(got, local)
    assert_tree_close(api.value(api.expr("sum(x * y)", ["x", "y"]))(x32, y32), jnp.sum(x32 * y32))


def test_expression_needs_params(api) -> None:
    with pytest.raises(TypeError, match="params"):
        api.grad("sum(x)")


def test_expression_jacobian_hessian_jvp_vjp(api) -> None:
    f = lambda x, y: jnp.sin(x) * y  # noqa: E731
    assert_tree_close(api.jacobian("sin(x) * y", (0, 1), params=["x", "y"])(x32, y32),
                      engine.jacrev(f, (0, 1))(x32, y32))
    h = lambda x, y: jnp.sum(x ** 2 * y)  # noqa: E731
    assert_tree_close(api.hessian("sum(x ** 2 * y)", (0, 1), params=["x", "y"])(x32, y32),
                      engine.hessian(h, (0, 1))(x32, y32))
    assert_tree_close(api.jvp("sin(x) * y", (x32, y32), (y32, x32), params=["x", "y"]),
                      engine.jvp(f, (x32, y32), (y32, x32)))
    out, vjp_fun = api.vjp("sin(x) * y", x32, y32, params=["x", "y"])
    local_out, local_vjp = engine.vjp(f, x32, y32)
    assert_tree_close(out, local_out)
    assert_tree_close(vjp_fun(x32), local_vjp(x32))


def _builtin(name: str):
    from service.builtin_models import BUILTIN_MODELS

    return BUILTIN_MODELS[name]


def test_model_tutorial_logreg(api) -> None:
    m = _builtin("tutorial_logreg")
    W, b = np.array([0.1, -0.2, 0.3], np.float32), np.float32(0.5)

    def local(W, b):
        return m.function(W, b, m.constants["inputs"], m.constants["targets"])

    got = api.value_and_grad(api.model("tutorial_logreg"), (0, 1))(W, b)
    assert_tree_close(got, engine.value_and_grad(local, (0, 1))(W, b), rtol=1e-5)


def test_model_rosenbrock(api) -> None:
    x = np.array([1.2, 0.8, -0.5], np.float32)
    f = _builtin("rosenbrock").function
    assert_tree_close(api.grad(api.model("rosenbrock"))(x), engine.grad(f)(x))
    assert_tree_close(api.hessian(api.model("rosenbrock"))(x), engine.hessian(f)(x))
    np.testing.assert_allclose(api.grad(api.model("rosenbrock"))(np.ones(4, np.float32)), 0, atol=1e-6)


def test_model_logistic_and_linear_regression(api) -> None:
    rng = np.random.default_rng(1)
    X = rng.normal(size=(6, 3)).astype(np.float32)
    W, b = rng.normal(size=3).astype(np.float32), np.float32(0.1)
    labels = np.array([0, 1, 1, 0, 1, 0])
    targets = rng.normal(size=6).astype(np.float32)
    for name, last in (("logistic_regression", labels), ("linear_regression", targets)):
        f = _builtin(name).function
        got = api.value_and_grad(api.model(name), (0, 1))(W, b, X, last)
        assert_tree_close(got, engine.value_and_grad(f, (0, 1))(W, b, X, last), rtol=1e-5)
        assert_tree_close(api.jacobian(api.model(name), (0, 1))(W, b, X, last),
                          engine.jacrev(f, (0, 1))(W, b, X, last), rtol=1e-5)


def test_model_mlp_classifier_dict_params(api) -> None:
    rng = np.random.default_rng(2)
    params = {"W1": rng.normal(size=(3, 4)).astype(np.float32), "b1": np.zeros(4, np.float32),
              "W2": rng.normal(size=(4, 2)).astype(np.float32), "b2": np.zeros(2, np.float32)}
    X = rng.normal(size=(5, 3)).astype(np.float32)
    labels = np.array([0, 1, 1, 0, 1])
    got = api.grad(api.model("mlp_classifier"))(params, X, labels)
    assert isinstance(got, dict) and set(got) == set(params)
    assert_tree_close(got, engine.grad(_builtin("mlp_classifier").function)(params, X, labels), rtol=1e-5)
    report = api.check_gradients(api.model("mlp_classifier"), (params, X, labels), order=1)
    assert report["passed"]


# ----------------------------------------------------------------------------- tracing, wire encoding


def test_python_function_traced_once_per_signature(api) -> None:
    calls = []

    def f(x, y):
        calls.append(1)
        return jnp.sum(x * y)

    for _ in range(3):
        api.grad(f)(x32, y32)
        api.value_and_grad(f, (0, 1))(x32 + 1, y32)  # same signature, other values
        api.value(f)(x32, y32)
    assert len(calls) == 1
    api.grad(f)(np.ones(5, np.float32), np.ones(5, np.float32))  # new shapes
    assert len(calls) == 2
    api.grad(f)(x32.astype(np.float64), y32)  # new dtype
    assert len(calls) == 3
    api.grad(f)(x32, y32)  # the first signature is still cached
    assert len(calls) == 3


def test_python_function_with_control_flow_on_shapes(api) -> None:
    def f(x):
        return jnp.sum(x ** 2) if x.shape[0] > 2 else jnp.sum(x ** 3)

    np.testing.assert_allclose(api.grad(f)(np.ones(3, np.float32)), 2)
    np.testing.assert_allclose(api.grad(f)(np.ones(2, np.float32)), 3)


def test_hessian_has_aux(api) -> None:
    def f(x):
        return jnp.sum(x ** 3), {"twice": x * 2}

    assert_tree_close(api.hessian(f, has_aux=True)(x32), engine.hessian(f, has_aux=True)(x32))


def test_graph_document(api) -> None:
    doc = engine.make_graph(lambda v: jnp.sum(v ** 3))(x32).to_json()
    np.testing.assert_allclose(api.grad(doc)(x32), 3 * x32 ** 2, rtol=1e-6)
    np.testing.assert_allclose(api.grad(client.GraphDoc(doc))(x32), 3 * x32 ** 2, rtol=1e-6)


def test_grad_of_a_non_scalar_function_is_refused_like_the_engine(api) -> None:
    with pytest.raises(client.BadRequestError) as info:
        api.grad(jnp.sin)(x32)
    assert info.value.status_code == 422 and info.value.type == "not_differentiable"
    with pytest.raises(engine.errors.NonScalarOutputError) as local:
        engine.grad(jnp.sin)(x32)
    # the same facts; the server's advice is for an HTTP caller (sum(...), /v1/jacobian)
    assert info.value.detail["shape"] == list(local.value.shape)
    assert "/v1/jacobian" in info.value.message
