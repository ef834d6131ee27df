"""Behaviour spec for the engine's transformations (grad, value_and_grad, jvp, vjp, jacfwd, jacrev,
hessian, jit, make_graph, custom_vjp, stop_gradient) and the engine.numpy surface they run on.

Expected numbers are closed forms, NumPy, or were computed once with JAX 0.10.2 and written down
here: the engine follows JAX's numbers, output structures and conventions.
"""

from __future__ import annotations

import collections
import dataclasses
import math
from typing import Any

import numpy as np
import pytest

import engine as jax
import engine.numpy as jnp
from engine import tree_util as tu
from engine.array import Array

# ----------------------------------------------------------------------------- helpers


@pytest.fixture
def x64():
    """Run a test in float64 (jax_enable_x64), restoring the float32 default afterwards."""
    jax.config.update("jax_enable_x64", True)
    try:
        yield
    finally:
        jax.config.update("jax_enable_x64", False)


def close(actual: Any, expected: Any, rtol: float = 1e-6, atol: float = 1e-6) -> None:
    np.testing.assert_allclose(np.asarray(actual), np.asarray(expected), rtol=rtol, atol=atol)


def assert_tree(actual: Any, expected: Any, rtol: float = 1e-5, atol: float = 1e-6) -> None:
    """`actual` has exactly `expected`'s containers (dict keys, tuple vs list, lengths), and at each
    leaf an engine Array with the expected shape and values (expected leaves are nested lists)."""
    if isinstance(expected, dict):
        assert isinstance(actual, dict), f"expected a dict, got {type(actual).__name__}"
        assert sorted(actual) == sorted(expected)
        for k in expected:
            assert_tree(actual[k], expected[k], rtol, atol)
    elif isinstance(expected, tuple):
        assert type(actual) is tuple, f"expected a tuple, got {type(actual).__name__}"
        assert len(actual) == len(expected)
        for a, e in zip(actual, expected, strict=True):
            assert_tree(a, e, rtol, atol)
    else:
        assert isinstance(actual, Array), f"expected an Array leaf, got {type(actual).__name__}"
        e = np.asarray(expected, dtype=np.float64)
        assert actual.shape == e.shape
        close(actual, e, rtol, atol)


def nth_grad(f, n: int):
    for _ in range(n):
        f = jax.grad(f)
    return f


# ----------------------------------------------------------------------------- higher-order grad


def _tanh_derivs(x):
    t = math.tanh(x)
    s = 1 - t * t
    return [s, -2 * t * s, -2 * s * (1 - 3 * t * t), 8 * t * s * (2 - 3 * t * t)]


CLOSED_FORMS = {
    # name: (function, [f', f'', f''', f''''] as functions of x)
    "tanh": (jnp.tanh, _tanh_derivs),
    "sin": (jnp.sin, lambda x: [math.cos(x), -math.sin(x), -math.cos(x), math.sin(x)]),
    "cos": (jnp.cos, lambda x: [-math.sin(x), -math.cos(x), math.sin(x), math.cos(x)]),
    "exp": (jnp.exp, lambda x: [math.exp(x)] * 4),
    "polynomial": (lambda x: x**3 + 2 * x**2 - 3 * x + 1, lambda x: [3 * x * x + 4 * x - 3, 6 * x + 4, 6.0, 0.0]),
    "log": (jnp.log, lambda x: [1 / x, -1 / x**2, 2 / x**3, -6 / x**4]),
    "x**-1": (lambda x: x**-1, lambda x: [-1 / x**2, 2 / x**3, -6 / x**4, 24 / x**5]),
    "1/x": (lambda x: 1 / x, lambda x: [-1 / x**2, 2 / x**3, -6 / x**4, 24 / x**5]),
}


@pytest.mark.parametrize("x", [0.5, 1.0, 2.0])
@pytest.mark.parametrize("name", sorted(CLOSED_FORMS))
def test_nested_grad_to_fourth_order_matches_closed_form_in_float64(x64, name, x):
    f, derivs = CLOSED_FORMS[name]
    for order, expected in enumerate(derivs(x), start=1):
        got = nth_grad(f, order)(x)
        assert got.dtype == np.float64
        close(got, expected, rtol=1e-12, atol=1e-12)


def test_polynomial_derivatives_at_one_are_4_10_6_0(x64):
    f = lambda x: x**3 + 2 * x**2 - 3 * x + 1
    assert [float(nth_grad(f, n)(1.0)) for n in range(1, 5)] == [4.0, 10.0, 6.0, 0.0]


def test_nested_grad_in_float32_stays_float32():
    g4 = nth_grad(jnp.sin, 4)(1.0)
    assert g4.dtype == np.float32
    close(g4, math.sin(1.0), rtol=1e-6)


# ----------------------------------------------------------------------------- grad API


def test_grad_argnums_int_differentiates_that_argument_only():
    f = lambda a, b: jnp.sum(a * b**2)
    a, b = jnp.array([1.0, 2.0]), jnp.array([3.0, 4.0])
    close(jax.grad(f)(a, b), [9.0, 16.0])
    close(jax.grad(f, argnums=1)(a, b), [6.0, 16.0])
    close(jax.grad(f, argnums=-1)(a, b), [6.0, 16.0])


def test_grad_argnums_tuple_returns_a_tuple_of_gradients():
    f = lambda a, b: jnp.sum(a * b**2)
    a, b = jnp.array([1.0, 2.0]), jnp.array([3.0, 4.0])
    g = jax.grad(f, argnums=(0, 1))(a, b)
    assert type(g) is tuple and len(g) == 2
    close(g[0], [9.0, 16.0])
    close(g[1], [6.0, 16.0])
    (g1,) = jax.grad(f, argnums=(1,))(a, b)  # a 1-tuple stays a tuple
    close(g1, [6.0, 16.0])


def test_grad_passes_keyword_arguments_through_undifferentiated():
    f = lambda x, scale=1.0: scale * x**2
    close(jax.grad(f)(3.0, scale=2.0), 12.0)


def test_grad_has_aux_returns_gradient_and_aux():
    def f(x):
        return jnp.sum(x**2), {"mean": jnp.mean(x), "note": "static"}

    g, aux = jax.grad(f, has_aux=True)(jnp.array([1.0, 2.0, 3.0]))
    close(g, [2.0, 4.0, 6.0])
    close(aux["mean"], 2.0)
    assert aux["note"] == "static"  # non-array aux passes through unchanged


def test_value_and_grad_returns_value_and_gradient():
    v, g = jax.value_and_grad(lambda x: jnp.sum(x**2))(jnp.array([1.0, 2.0]))
    close(v, 5.0)
    close(g, [2.0, 4.0])


def test_value_and_grad_has_aux_returns_value_aux_pair_then_gradient():
    (v, aux), g = jax.value_and_grad(lambda x: (x**3, x * 10), has_aux=True)(2.0)
    close(v, 8.0)
    close(aux, 20.0)
    close(g, 12.0)


def test_value_and_grad_argnums_tuple():
    v, (ga, gb) = jax.value_and_grad(lambda a, b: a * b, argnums=(0, 1))(2.0, 5.0)
    close(v, 10.0)
    close(ga, 5.0)
    close(gb, 2.0)


def test_grad_with_allow_int_gives_zeros_for_integer_inputs():
    # JAX returns float0 zeros here; the engine has no float0 and gives float32 zeros.
    ga, gn = jax.grad(lambda x, n: jnp.sum(x * n), argnums=(0, 1), allow_int=True)(
        jnp.array([1.0, 2.0]), jnp.arange(2))
    close(ga, [0.0, 1.0])
    close(gn, [0.0, 0.0])


Point = collections.namedtuple("Point", ["w", "b"])


@tu.register_dataclass
@dataclasses.dataclass
class Params:
    w: Any
    b: Any
    name: str = dataclasses.field(default="p", metadata={"static": True})


class Box:
    """A user class registered as a custom pytree node."""

    def __init__(self, a: Any, b: Any) -> None:
        self.a, self.b = a, b


tu.register_pytree_node(Box, lambda box: ((box.a, box.b), None), lambda aux, children: Box(*children))


def _loss(w, b):
    return jnp.sum(jnp.tanh(w * 2.0 + b) ** 2)


W = jnp.array([0.1, 0.2])
B = jnp.array(0.3)
# JAX: grad(_loss, argnums=(0, 1))(W, B)
GW = [1.4537239074707031, 1.5344645977020264]
GB = 1.4940942525863647


def test_grad_of_dict_is_a_dict_with_the_same_keys():
    g = jax.grad(lambda p: _loss(p["w"], p["b"]))({"w": W, "b": B})
    assert_tree(g, {"w": GW, "b": GB})


def test_grad_of_list_is_a_list():
    g = jax.grad(lambda p: _loss(p[0], p[1]))([W, B])
    assert type(g) is list and len(g) == 2
    close(g[0], GW, rtol=1e-5)
    close(g[1], GB, rtol=1e-5)


def test_grad_of_tuple_is_a_tuple():
    g = jax.grad(lambda p: _loss(p[0], p[1]))((W, B))
    assert_tree(g, (GW, GB))


def test_grad_of_nested_dict_of_lists_keeps_the_nesting():
    p = {"layers": [W, B], "extra": {"z": jnp.array([1.0, 2.0])}}
    g = jax.grad(lambda p: _loss(*p["layers"]) + jnp.sum(p["extra"]["z"] ** 3))(p)
    assert sorted(g) == ["extra", "layers"]
    assert type(g["layers"]) is list
    close(g["layers"][0], GW, rtol=1e-5)
    close(g["layers"][1], GB, rtol=1e-5)
    close(g["extra"]["z"], [3.0, 12.0])


def test_grad_of_namedtuple_is_the_same_namedtuple():
    g = jax.grad(lambda p: _loss(p.w, p.b))(Point(W, B))
    assert type(g) is Point
    close(g.w, GW, rtol=1e-5)
    close(g.b, GB, rtol=1e-5)


def test_grad_of_registered_dataclass_keeps_class_and_static_fields():
    g = jax.grad(lambda p: _loss(p.w, p.b))(Params(W, B, name="layer1"))
    assert type(g) is Params
    assert g.name == "layer1"
    close(g.w, GW, rtol=1e-5)
    close(g.b, GB, rtol=1e-5)


def test_grad_of_custom_pytree_node_is_that_node():
    g = jax.grad(lambda box: _loss(box.a, box.b))(Box(W, B))
    assert type(g) is Box
    close(g.a, GW, rtol=1e-5)
    close(g.b, GB, rtol=1e-5)


def test_grad_keeps_none_subtrees_of_the_argument():
    g = jax.grad(lambda p: _loss(p["w"], p["b"]))({"w": W, "b": B, "unused": None})
    assert g["unused"] is None
    close(g["w"], GW, rtol=1e-5)


def test_grad_of_python_scalar_is_a_float32_scalar_array():
    g = jax.grad(lambda x: x * x)(3.0)
    assert isinstance(g, Array) and g.shape == () and g.dtype == np.float32
    close(g, 6.0)


# ----------------------------------------------------------------------------- jvp / vjp


def test_jvp_pushes_a_tangent_through_the_closed_form_derivative():
    x = jnp.array([0.5, -0.2, 0.1])
    v = jnp.array([1.0, 2.0, -1.0])
    y, t = jax.jvp(lambda x: jnp.sin(x) * x, (x,), (v,))
    xn, vn = np.asarray(x, np.float64), np.asarray(v, np.float64)
    close(y, np.sin(xn) * xn)
    close(t, (np.cos(xn) * xn + np.sin(xn)) * vn)


def test_jvp_with_several_arguments_sums_their_contributions():
    y, t = jax.jvp(lambda a, b: a * b, (2.0, 3.0), (1.0, 10.0))
    close(y, 6.0)
    close(t, 1.0 * 3.0 + 10.0 * 2.0)


def test_jvp_of_pytree_arguments_and_outputs():
    p = {"a": jnp.array([1.0, 2.0]), "b": jnp.array(3.0)}
    tp = {"a": jnp.array([1.0, 0.0]), "b": jnp.array(1.0)}
    y, t = jax.jvp(lambda p: (p["a"] * p["b"], jnp.sum(p["a"])), (p,), (tp,))
    assert_tree(y, ([3.0, 6.0], 3.0))
    assert_tree(t, ([1.0 * 3 + 1 * 1.0, 0 * 3 + 1 * 2.0], 1.0))


def test_jvp_has_aux_returns_aux_third():
    y, t, aux = jax.jvp(lambda x: (x**2, x + 100), (3.0,), (1.0,), has_aux=True)
    close(y, 9.0)
    close(t, 6.0)
    close(aux, 103.0)


def test_vjp_pulls_a_cotangent_back_through_the_closed_form_derivative():
    x = jnp.array([0.5, -0.2, 0.1])
    y, pullback = jax.vjp(lambda x: jnp.sin(x) * x, x)
    xn = np.asarray(x, np.float64)
    close(y, np.sin(xn) * xn)
    (ct,) = pullback(jnp.array([1.0, 2.0, 3.0]))
    close(ct, (np.cos(xn) * xn + np.sin(xn)) * [1.0, 2.0, 3.0])


def test_vjp_returns_one_cotangent_per_primal_as_a_tuple():
    _, pullback = jax.vjp(lambda a, b: a * b, 2.0, 5.0)
    ct = pullback(1.0)
    assert type(ct) is tuple and len(ct) == 2
    close(ct[0], 5.0)
    close(ct[1], 2.0)


def test_vjp_has_aux_returns_aux_third():
    x = jnp.array([1.0, 2.0])
    y, pullback, aux = jax.vjp(lambda x: (x**2, {"n": jnp.sum(x)}), x, has_aux=True)
    close(y, [1.0, 4.0])
    close(aux["n"], 3.0)
    (ct,) = pullback(jnp.ones(2))
    close(ct, [2.0, 4.0])


def test_vjp_of_pytree_output_takes_a_cotangent_of_that_structure():
    x = jnp.array([1.0, 2.0])
    _, pullback = jax.vjp(lambda x: {"sq": x**2, "sum": jnp.sum(x)}, x)
    (ct,) = pullback({"sq": jnp.array([1.0, 0.0]), "sum": jnp.array(1.0)})
    close(ct, [2.0 + 1.0, 0.0 + 1.0])


# ----------------------------------------------------------------------------- jacobians


A23 = jnp.array([[1.0, 2.0, 0.5], [0.3, -1.0, 2.0]])
X3 = jnp.array([0.5, -0.2, 0.1])

JAC_CASES = {
    # name: (function, args, kwargs for jacfwd/jacrev, JAX's result)
    "R^n->R^m": (
        lambda x: jnp.sin(A23 @ x) * x[:2], (X3,), {},
        [[0.6438236832618713, 0.9887710809707642, 0.24719277024269104],
         [-0.05115147680044174, 0.693192183971405, -0.34100982546806335]],
    ),
    "dict in, dict out": (
        lambda p: {"a": jnp.tanh(p["w"] @ p["b"]), "b": (p["w"] ** 2).sum(axis=0)},
        ({"w": A23, "b": X3},), {},
        {"a": {"b": [[0.9778332710266113, 1.9556665420532227, 0.48891663551330566],
                     [0.22484387457370758, -0.7494795322418213, 1.4989590644836426]],
               "w": [[[0.48891663551330566, -0.19556665420532227, 0.09778332710266113], [0.0, 0.0, 0.0]],
                     [[0.0, 0.0, 0.0], [0.37473976612091064, -0.14989590644836426, 0.07494795322418213]]]},
         "b": {"b": [[0.0] * 3] * 3,
               "w": [[[2.0, 0.0, 0.0], [0.6000000238418579, 0.0, 0.0]],
                     [[0.0, 4.0, 0.0], [0.0, -2.0, 0.0]],
                     [[0.0, 0.0, 1.0], [0.0, 0.0, 4.0]]]}},
    ),
    "tuple out, argnums tuple": (
        lambda x, y: (x * y, jnp.sum(x) * y[0]), (jnp.array([1.0, 2.0]), jnp.array([3.0, 4.0])),
        {"argnums": (0, 1)},
        (([[3.0, 0.0], [0.0, 4.0]], [[1.0, 0.0], [0.0, 2.0]]), ([3.0, 3.0], [3.0, 0.0])),
    ),
    "scalar->scalar": (jnp.sin, (0.5,), {}, math.cos(0.5)),
    "scalar->vector": (lambda s: jnp.stack([s, s**2]), (2.0,), {}, [1.0, 4.0]),
    "vector->scalar": (lambda v: jnp.sum(v**2), (X3,), {}, [1.0, -0.4, 0.2]),
}


@pytest.mark.parametrize("name", list(JAC_CASES))
def test_jacfwd_and_jacrev_match_jax_values_and_structure(name):
    f, args, kwargs, expected = JAC_CASES[name]
    fwd = jax.jacfwd(f, **kwargs)(*args)
    rev = jax.jacrev(f, **kwargs)(*args)
    assert_tree(fwd, expected)
    assert_tree(rev, expected)
    for a, b in zip(tu.tree_leaves(fwd), tu.tree_leaves(rev), strict=True):
        close(a, b, rtol=1e-5)


def test_jacobian_leaf_shape_is_output_shape_plus_input_shape():
    J = jax.jacrev(lambda m: m @ jnp.ones((3, 4)))(jnp.ones((2, 3)))
    assert J.shape == (2, 4, 2, 3)
    assert jax.jacfwd(lambda m: m @ jnp.ones((3, 4)))(jnp.ones((2, 3))).shape == (2, 4, 2, 3)


def test_jacobian_is_reverse_mode_jacobian():
    f = lambda x: jnp.sin(x) * jnp.sum(x)
    close(jax.jacobian(f)(X3), jax.jacrev(f)(X3))


def test_jacrev_and_jacfwd_has_aux():
    f = lambda a: (a**2, jnp.sum(a))
    for jac in (jax.jacrev, jax.jacfwd):
        J, aux = jac(f, has_aux=True)(jnp.array([1.0, 2.0]))
        close(J, [[2.0, 0.0], [0.0, 4.0]])
        close(aux, 3.0)


B33 = jnp.array([[1.0, 2.0, 0.5], [0.3, -1.0, 2.0], [0.7, 0.1, -0.4]])


def test_hessian_of_scalar_function_matches_jax():
    H = jax.hessian(lambda x: jnp.sum(jnp.tanh(B33 @ x) ** 2))(X3)
    expected = [[2.5457265377044678, 3.637594223022461, 0.7439060211181641],
                [3.637594223022461, 7.688869476318359, 1.0247676372528076],
                [0.7439061403274536, 1.0247676372528076, 2.1701948642730713]]
    close(H, expected, rtol=2e-6)
    close(H, np.asarray(H).T, rtol=1e-6)  # symmetric


def test_hessian_of_dict_input_is_a_dict_of_dicts():
    f = lambda p: jnp.sum(p["a"] ** 2 * p["b"][0]) + jnp.sin(p["b"][1])
    H = jax.hessian(f)({"a": jnp.array([1.0, 2.0]), "b": jnp.array([3.0, 0.5])})
    assert_tree(H, {"a": {"a": [[6.0, 0.0], [0.0, 6.0]], "b": [[2.0, 0.0], [4.0, 0.0]]},
                    "b": {"a": [[2.0, 4.0], [0.0, 0.0]], "b": [[0.0, 0.0], [0.0, -0.4794255495071411]]}})


def test_hessian_argnums_tuple_is_a_tuple_of_tuples():
    H = jax.hessian(lambda a, b: jnp.sum(a**2 * b), argnums=(0, 1))(jnp.array([1.0, 2.0]), jnp.array([3.0, 4.0]))
    assert_tree(H, (([[6.0, 0.0], [0.0, 8.0]], [[2.0, 0.0], [0.0, 4.0]]),
                    ([[2.0, 0.0], [0.0, 4.0]], [[0.0, 0.0], [0.0, 0.0]])))


# ----------------------------------------------------------------------------- compositions

XC = jnp.array([0.3, -1.2, 2.0])
_sin_x = lambda v: jnp.sum(jnp.sin(v) * v)
_HESS_SIN_X = np.diag([1.822016954421997, -0.3937320113182068, -2.650887966156006])  # JAX

COMPOSITIONS = {
    # name: (thunk, JAX's result)
    "jacfwd(grad)": (lambda: jax.jacfwd(jax.grad(_sin_x))(XC), _HESS_SIN_X),
    "jacrev(grad)": (lambda: jax.jacrev(jax.grad(_sin_x))(XC), _HESS_SIN_X),
    "jvp(grad)": (lambda: jax.jvp(jax.grad(_sin_x), (XC,), (jnp.ones(3),)),
                  ([0.5821210145950317, -1.366868019104004, 0.07700400054454803], np.diag(_HESS_SIN_X))),
    "grad(jvp)": (lambda: jax.grad(lambda v: jax.jvp(jnp.sin, (v,), (v,))[1].sum())(XC),
                  [0.8666800260543823, -0.7560889720916748, -2.2347419261932373]),
    "grad(vjp)": (lambda: jax.grad(lambda v: jax.vjp(jnp.sin, v)[1](v)[0].sum())(XC),
                  [0.8666800260543823, -0.7560889720916748, -2.2347419261932373]),
    "vjp(jit)": (lambda: jax.vjp(jax.jit(jnp.sin), XC)[1](jnp.ones(3)),
                 ([0.9553359746932983, 0.3623580038547516, -0.41614699363708496],)),
    "jvp(jit)": (lambda: jax.jvp(jax.jit(lambda v: v**3), (XC,), (jnp.ones(3),)),
                 ([0.027000000700354576, -1.7280000448226929, 8.0], [0.27000001072883606, 4.320000171661377, 12.0])),
    "jacrev(jit)": (lambda: jax.jacrev(jax.jit(lambda v: v**3))(XC), np.diag([0.27, 4.32, 12.0])),
    "hessian(jit)": (lambda: jax.hessian(jax.jit(lambda v: jnp.sum(v**3)))(XC), np.diag([1.8, -7.2, 12.0])),
    "jit(hessian)": (lambda: jax.jit(jax.hessian(lambda v: jnp.sum(v**3)))(XC), np.diag([1.8, -7.2, 12.0])),
    "grad(grad(grad(jit)))": (lambda: jax.grad(jax.grad(jax.grad(jax.jit(lambda s: s**4))))(2.0), 48.0),
    "jit(grad(grad))": (lambda: jax.jit(jax.grad(jax.grad(lambda s: s**4)))(2.0), 48.0),
    "grad(jit closing over the outer tracer)": (lambda: jax.grad(lambda a: jax.jit(lambda y: a * y)(2.0))(3.0), 2.0),
    "grad(jit(sin) closing over the outer tracer)": (
        lambda: jax.grad(lambda a: jax.jit(lambda y: jnp.sin(a * y))(2.0))(3.0), 1.9203399419784546),
}


@pytest.mark.parametrize("name", list(COMPOSITIONS))
def test_compositions_of_transformations_match_jax(name):
    thunk, expected = COMPOSITIONS[name]
    got = thunk()
    if isinstance(expected, tuple):
        assert type(got) is tuple and len(got) == len(expected)
        for g, e in zip(got, expected, strict=True):
            close(g, e, rtol=1e-5, atol=1e-6)
    else:
        close(got, expected, rtol=1e-5, atol=1e-6)


# ----------------------------------------------------------------------------- stop_gradient, custom_vjp


def test_stop_gradient_zeroes_the_derivative_through_it():
    close(jax.grad(lambda x: x * jax.stop_gradient(x))(3.0), 3.0)
    close(jax.grad(lambda x: jnp.sum(jax.stop_gradient(x) ** 2))(jnp.ones(3)), [0.0, 0.0, 0.0])
    close(jax.grad(jax.grad(lambda x: jax.stop_gradient(x**3) + x**2))(2.0), 2.0)


def test_stop_gradient_keeps_the_value_and_maps_over_pytrees():
    out = jax.stop_gradient({"a": jnp.array([1.0, 2.0]), "b": 3.0})
    close(out["a"], [1.0, 2.0])
    close(out["b"], 3.0)


@jax.custom_vjp
def clip_gradient(x):
    return x


def _clip_fwd(x):
    return x, None


def _clip_bwd(_, g):
    return (jnp.clip(g, -1.0, 1.0),)


clip_gradient.defvjp(_clip_fwd, _clip_bwd)


def test_custom_vjp_backward_rule_replaces_the_true_derivative():
    x = jnp.ones(3)
    close(clip_gradient(x), x)  # forward is the identity
    g = jax.grad(lambda x: jnp.sum(clip_gradient(x) * jnp.array([0.5, 3.0, -4.0])))(x)
    close(g, [0.5, 1.0, -1.0])


@jax.custom_vjp
def sin_doubled_grad(x):
    return jnp.sin(x)


def _sdg_fwd(x):
    return jnp.sin(x), x


def _sdg_bwd(x, g):
    return (g * 2 * jnp.cos(x),)  # deliberately twice the true derivative


sin_doubled_grad.defvjp(_sdg_fwd, _sdg_bwd)


def test_custom_vjp_grad_of_grad_differentiates_the_backward_rule():
    close(sin_doubled_grad(0.5), math.sin(0.5))
    close(jax.grad(sin_doubled_grad)(0.5), 2 * math.cos(0.5))
    close(jax.grad(jax.grad(sin_doubled_grad))(0.5), -2 * math.sin(0.5))


def test_custom_vjp_under_jit_and_value_and_grad():
    v, g = jax.value_and_grad(jax.jit(lambda x: sin_doubled_grad(x) * 3.0))(0.5)
    close(v, 3 * math.sin(0.5))
    close(g, 6 * math.cos(0.5))


@jax.custom_vjp
def scaled_affine(p, s):
    return p["a"] * s + p["b"]


def _affine_fwd(p, s):
    return scaled_affine(p, s), (p, s)


def _affine_bwd(res, ct):
    p, s = res
    return ({"a": ct * s * 10, "b": ct * 10}, jnp.sum(ct * p["a"]))


scaled_affine.defvjp(_affine_fwd, _affine_bwd)


def test_custom_vjp_with_pytree_arguments_returns_cotangents_of_their_structure():
    p = {"a": jnp.array([1.0, 2.0]), "b": jnp.array([3.0, 4.0])}
    gp, gs = jax.grad(lambda p, s: jnp.sum(scaled_affine(p, s)), argnums=(0, 1))(p, 2.0)
    assert_tree(gp, {"a": [20.0, 20.0], "b": [10.0, 10.0]})
    close(gs, 3.0)


# ----------------------------------------------------------------------------- closures


def test_inner_grad_closing_over_outer_variable_is_not_confused():
    close(jax.grad(lambda x: jax.grad(lambda y: x * y)(1.0))(2.0), 1.0)


def test_perturbation_confusion_d_dx_of_x_times_d_dy_x_plus_y():
    # d/dx [x * d/dy (x + y)] = d/dx [x * 1] = 1; a confused implementation gives 2.
    close(jax.grad(lambda x: x * jax.grad(lambda y: x + y)(1.0))(2.0), 1.0)


def test_nested_closures_three_levels():
    # f(x) = x * g(x) where g(x) = d/dy [x*y*y] at y = 3 = 6x, so f = 6x^2 and f'(x) = 12x.
    f = lambda x: x * jax.grad(lambda y: x * y * y)(3.0)
    close(jax.grad(f)(2.0), 24.0)
    close(jax.grad(jax.grad(f))(2.0), 12.0)


def test_inner_jvp_and_vjp_close_over_outer_grad_variable():
    close(jax.grad(lambda x: jax.jvp(lambda y: x * y**2, (3.0,), (1.0,))[1])(2.0), 6.0)
    close(jax.grad(lambda x: jax.vjp(lambda y: x * y**2, 3.0)[1](1.0)[0])(2.0), 6.0)


def test_jacrev_of_a_closure_over_an_outer_grad_variable():
    g = jax.grad(lambda a: jnp.sum(jax.jacrev(lambda v: a * v**2)(jnp.array([1.0, 2.0]))))(3.0)
    close(g, 2.0 * 1.0 + 2.0 * 2.0)


# ----------------------------------------------------------------------------- control flow


def _branchy(x):
    return x**2 if x > 0 else -x


def test_python_control_flow_on_values_works_under_grad():
    close(jax.grad(_branchy)(3.0), 6.0)
    close(jax.grad(_branchy)(-3.0), -1.0)
    close(jax.grad(jax.grad(_branchy))(3.0), 2.0)


def test_python_loops_with_value_dependent_exit_work_under_grad():
    def f(x):
        while x < 10.0:
            x = x * 2.0
        return x

    close(jax.grad(f)(3.0), 4.0)  # 3 -> 6 -> 12 : two doublings


def test_make_graph_of_value_dependent_control_flow_raises_concretization_error():
    with pytest.raises(jax.ConcretizationError):
        jax.make_graph(_branchy)(3.0)


def test_jit_of_value_dependent_control_flow_raises_concretization_error():
    with pytest.raises(jax.ConcretizationError):
        jax.jit(_branchy)(3.0)


def test_jit_static_argument_may_drive_control_flow():
    f = jax.jit(lambda x, positive: x**2 if positive else -x, static_argnums=1)
    close(f(3.0, True), 9.0)
    close(f(3.0, False), -3.0)


# ----------------------------------------------------------------------------- jit


def _f(x):
    return jnp.sum(jnp.tanh(x) ** 2 * x)


def test_jit_computes_the_same_values_as_without_jit():
    x = jnp.array([0.1, 0.5, -2.0])
    close(jax.jit(_f)(x), _f(x))
    close(jax.jit(lambda p: {"s": p["a"] + p["b"]})({"a": x, "b": x})["s"], 2 * np.asarray(x))


def test_jit_retraces_only_for_new_shapes():
    jf = jax.jit(_f)
    jf(jnp.ones(3))
    jf(jnp.ones(3) * 2)
    assert len(jf._cache) == 1
    close(jf(jnp.ones(5)), _f(jnp.ones(5)))
    assert len(jf._cache) == 2


def test_jit_of_grad_equals_grad():
    x = jnp.array([0.1, 0.5, -2.0])
    close(jax.jit(jax.grad(_f))(x), jax.grad(_f)(x))


def test_grad_of_jit_works_to_second_order():
    x = jnp.array([0.1, 0.5, -2.0])
    close(jax.grad(jax.jit(_f))(x), jax.grad(_f)(x))
    close(jax.grad(jax.grad(jax.jit(jnp.sin)))(0.5), -math.sin(0.5))


def test_make_graph_records_a_graph_with_one_input_per_leaf():
    graph = jax.make_graph(lambda p: jnp.sin(p["a"]) * p["b"])({"a": jnp.ones(3), "b": 2.0})
    assert isinstance(graph, jax.Graph)
    assert len(graph.invars) == 2
    assert [e.prim.name for e in graph.eqns] == ["sin", "mul"]


# ----------------------------------------------------------------------------- non-differentiable points


def test_abs_derivative_at_zero_is_one():
    close(jax.grad(jnp.abs)(0.0), 1.0)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_sqrt_derivative_at_zero_is_inf():
    assert float(jax.grad(jnp.sqrt)(0.0)) == math.inf


def test_maximum_and_minimum_split_ties_evenly():
    close(jax.grad(lambda x: jnp.maximum(x, 1.0))(1.0), 0.5)
    close(jax.grad(lambda x: jnp.minimum(x, 1.0))(1.0), 0.5)
    close(jax.grad(jnp.maximum, argnums=(0, 1))(2.0, 2.0), (0.5, 0.5))


def test_clip_derivative_at_either_boundary_is_one_half():
    clip01 = lambda x: jnp.clip(x, 0.0, 1.0)
    close(jax.grad(clip01)(0.0), 0.5)
    close(jax.grad(clip01)(1.0), 0.5)
    close(jax.grad(clip01)(0.5), 1.0)
    close(jax.grad(clip01)(2.0), 0.0)


def test_relu_derivative_at_zero_is_zero():
    close(jax.grad(jax.nn.relu)(0.0), 0.0)
    close(jax.grad(jax.nn.relu)(1.0), 1.0)


def test_max_reduction_splits_gradient_equally_among_ties():
    close(jax.grad(jnp.max)(jnp.array([1.0, 3.0, 3.0])), [0.0, 0.5, 0.5])
    close(jax.grad(lambda x: jnp.sum(jnp.max(x, axis=1)))(jnp.array([[2.0, 2.0, 2.0], [1.0, 0.0, 1.0]])),
          [[1 / 3, 1 / 3, 1 / 3], [0.5, 0.0, 0.5]])
    close(jax.grad(jnp.min)(jnp.array([1.0, 1.0, 3.0])), [0.5, 0.5, 0.0])


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_where_does_not_protect_the_gradient_from_nan_in_the_untaken_branch():
    close(jax.grad(lambda x: jnp.where(x > 0, jnp.log(x), 0.0))(0.0), math.nan)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_double_where_gives_a_finite_gradient():
    safe = lambda x: jnp.where(x > 0, jnp.log(jnp.where(x > 0, x, 1.0)), 0.0)
    close(jax.grad(safe)(0.0), 0.0)
    close(jax.grad(safe)(2.0), 0.5)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_prod_gradient_with_zeros():
    close(jax.grad(jnp.prod)(jnp.array([2.0, 0.0, 3.0])), [0.0, 6.0, 0.0])
    close(jax.grad(jnp.prod)(jnp.array([2.0, 0.0, 0.0])), [0.0, 0.0, 0.0])
    close(jax.grad(jnp.prod)(jnp.array([2.0, 4.0, 3.0])), [12.0, 6.0, 8.0])


def test_logaddexp_tie_splits_gradient_evenly():
    close(jax.grad(jnp.logaddexp, argnums=(0, 1))(1.0, 1.0), (0.5, 0.5))


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_norm_gradient_at_zero_is_nan_as_in_jax():
    assert np.isnan(np.asarray(jax.grad(jnp.linalg.norm)(jnp.zeros(3)))).all()


SCALAR_GRAD_CASES = {
    # name: (thunk, JAX's result)
    "a**b w.r.t. both": (lambda: jax.grad(lambda a, b: a**b, argnums=(0, 1))(2.0, 3.0), (12.0, 8 * math.log(2))),
    "0**2 w.r.t. both": (lambda: jax.grad(lambda a, b: a**b, argnums=(0, 1))(0.0, 2.0), (0.0, 0.0)),
    "x**-2": (lambda: jax.grad(lambda s: s**-2)(2.0), -0.25),
    "x**2.5": (lambda: jax.grad(lambda s: s**2.5)(2.0), 2.5 * 2**1.5),
    "x**0.5 at 0": (lambda: jax.grad(lambda s: s**0.5)(0.0), math.inf),
    "x**0 (integer) at 0": (lambda: jax.grad(lambda s: s**0)(0.0), 0.0),
    "arctan2 w.r.t. both": (lambda: jax.grad(jnp.arctan2, argnums=(0, 1))(1.0, 2.0), (0.4, -0.2)),
    "logaddexp with -inf": (lambda: jax.grad(lambda a: jnp.logaddexp(a, -jnp.inf))(1.0), 1.0),
    "full": (lambda: jax.grad(lambda s: jnp.sum(jnp.full((2, 2), s)))(2.0), 4.0),
    "asarray of traced list": (lambda: jax.grad(lambda s: jnp.sum(jnp.asarray([s, 2 * s, 3.0 * s])))(2.0), 6.0),
    "stack w.r.t. both": (lambda: jax.grad(lambda a, b: jnp.sum(jnp.stack([a, b]) * jnp.array([[1.0], [2.0]])),
                                           argnums=(0, 1))(XC, XC), ([1.0] * 3, [2.0] * 3)),
    "jvp of max with ties averages tangents": (
        lambda: jax.jvp(jnp.max, (jnp.array([1.0, 3.0, 3.0]),), (jnp.array([1.0, 2.0, 4.0]),)), (3.0, 3.0)),
    "jvp of abs at 0": (lambda: jax.jvp(jnp.abs, (0.0,), (1.0,)), (0.0, 1.0)),
    "jacfwd of clip at both bounds": (lambda: jax.jacfwd(lambda v: jnp.clip(v, 0.0, 2.0))(jnp.array([0.0, 1.0, 2.0])),
                                      np.diag([0.5, 1.0, 0.5])),
}


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
@pytest.mark.parametrize("name", list(SCALAR_GRAD_CASES))
def test_derivative_conventions_match_jax(name):
    thunk, expected = SCALAR_GRAD_CASES[name]
    got = thunk()
    if isinstance(expected, tuple):
        assert type(got) is tuple and len(got) == len(expected)
        for g, e in zip(got, expected, strict=True):
            close(g, e, rtol=1e-6)
    else:
        close(got, expected, rtol=1e-6)


# ----------------------------------------------------------------------------- dtypes and printing


def test_python_floats_become_float32():
    assert jnp.asarray(1.0).dtype == np.float32
    assert jnp.array([1.0, 2.0]).dtype == np.float32
    assert jnp.asarray(np.ones(2)).dtype == np.float32  # float64 NumPy data too
    assert jnp.arange(3).dtype == np.int32


def test_promotion_follows_jax_rules():
    f32 = jnp.ones(2)
    assert (jnp.array([True, False]) * f32).dtype == np.float32
    assert (jnp.arange(3) * 2.0).dtype == np.float32
    assert (f32 * jnp.arange(2)).dtype == np.float32
    assert (jnp.arange(3) * 2).dtype == np.int32
    assert (jnp.ones(2, jnp.float16) * 2.0).dtype == np.float16  # weak scalars adapt
    assert jnp.sin(jnp.arange(2)).dtype == np.float32


def test_x64_switches_defaults_to_float64_and_int64(x64):
    assert jnp.asarray(1.0).dtype == np.float64
    assert jnp.zeros(2).dtype == np.float64
    assert jnp.arange(2).dtype == np.int64
    assert jax.grad(jnp.sin)(1.0).dtype == np.float64
    assert jnp.asarray(1.0, dtype=jnp.float32).dtype == np.float32
    assert (jnp.ones(2, jnp.float32) * 2.0).dtype == np.float32


def test_explicit_dtype_is_kept():
    assert jnp.array([1, 2], dtype=jnp.float16).dtype == np.float16
    assert jnp.zeros(2, jnp.int8).dtype == np.int8
    assert jnp.ones(3).astype(jnp.int32).dtype == np.int32
    assert jax.grad(lambda x: x * x)(jnp.float16(3.0)).dtype == np.float16


def test_arrays_print_like_jax():
    assert repr(jnp.array([1.0, 2.0])) == "Array([1., 2.], dtype=float32)"
    assert repr(jnp.array(True)) == "Array(True, dtype=bool)"
    assert repr(jnp.arange(3)) == "Array([0, 1, 2], dtype=int32)"
    assert repr(jnp.array([[1.0, 2.0], [3.0, 4.0]])) == "Array([[1., 2.],\n       [3., 4.]], dtype=float32)"
    scalar = jax.grad(jnp.tanh)(2.0)
    assert str(scalar) == "0.070650816"  # shortest round-trip digits, as JAX prints
    assert repr(scalar) == "Array(0.07065082, dtype=float32)"
    assert str(jnp.array([1.0, 2.5])) == "[1.  2.5]"


def test_tracers_print_their_abstract_type():
    seen = []
    jax.grad(lambda x: seen.append(repr(x)) or jnp.sum(x))(jnp.ones((2, 3)))
    assert seen == ["Traced<f32[2,3]>"]


# ----------------------------------------------------------------------------- engine.numpy coverage

X = np.array([[0.5, -1.5, 2.0], [3.0, 0.25, -0.75]])
Y = np.array([[1.5, 2.0, -0.5], [0.5, 4.0, 1.25]])
POS = np.array([[0.5, 1.5, 2.0], [3.0, 0.25, 0.75]])
UNIT = np.array([[0.1, -0.5, 0.9], [0.3, 0.0, -0.7]])
V = np.array([1.0, -2.0, 3.0])
SQ = np.array([[4.0, 1.0, 0.5], [1.0, 3.0, 0.2], [0.5, 0.2, 2.0]])
I3 = np.arange(24).reshape(2, 3, 4).astype(np.float64)

# Each case runs with m = engine.numpy and with m = numpy; the results must agree.
NUMPY_CASES = {
    # creation
    "array": lambda m: m.array([[1, 2], [3, 4]]),
    "asarray": lambda m: m.asarray([1.5, 2.5]),
    "zeros": lambda m: m.zeros((2, 3)),
    "ones": lambda m: m.ones(4),
    "full": lambda m: m.full((2, 2), 7.0),
    "zeros_like": lambda m: m.zeros_like(m.asarray(X)),
    "ones_like": lambda m: m.ones_like(m.asarray(X)),
    "arange": lambda m: m.arange(2, 11, 3),
    "linspace": lambda m: m.linspace(0.0, 1.0, 5),
    "eye": lambda m: m.eye(3),
    # elementwise
    "add": lambda m: m.add(X, Y),
    "subtract": lambda m: m.subtract(X, Y),
    "multiply": lambda m: m.multiply(X, Y),
    "divide": lambda m: m.divide(X, Y),
    "power": lambda m: m.power(POS, Y),
    "power int": lambda m: m.power(X, 3),
    "negative": lambda m: m.negative(X),
    "abs": lambda m: m.abs(X),
    "sign": lambda m: m.sign(X),
    "sqrt": lambda m: m.sqrt(POS),
    "square": lambda m: m.square(X),
    "reciprocal": lambda m: m.reciprocal(POS),
    "exp": lambda m: m.exp(X),
    "expm1": lambda m: m.expm1(X),
    "exp2": lambda m: m.exp2(X),
    "log": lambda m: m.log(POS),
    "log1p": lambda m: m.log1p(POS),
    "log2": lambda m: m.log2(POS),
    "log10": lambda m: m.log10(POS),
    "sin": lambda m: m.sin(X),
    "cos": lambda m: m.cos(X),
    "tan": lambda m: m.tan(X),
    "arcsin": lambda m: m.arcsin(UNIT),
    "arccos": lambda m: m.arccos(UNIT),
    "arctan": lambda m: m.arctan(X),
    "arctan2": lambda m: m.arctan2(X, Y),
    "sinh": lambda m: m.sinh(X),
    "cosh": lambda m: m.cosh(X),
    "tanh": lambda m: m.tanh(X),
    "arcsinh": lambda m: m.arcsinh(X),
    "arccosh": lambda m: m.arccosh(POS + 1),
    "arctanh": lambda m: m.arctanh(UNIT),
    "maximum": lambda m: m.maximum(X, Y),
    "minimum": lambda m: m.minimum(X, Y),
    "clip": lambda m: m.clip(X, -1.0, 1.0),
    "where": lambda m: m.where(X > 0, X, Y),
    "floor": lambda m: m.floor(X),
    "ceil": lambda m: m.ceil(X),
    "trunc": lambda m: m.trunc(X),
    "mod": lambda m: m.mod(X, 0.7),
    "fmod": lambda m: m.fmod(X, 0.7),
    "floor_divide": lambda m: m.floor_divide(X, 0.7),
    "logaddexp": lambda m: m.logaddexp(X, Y),
    "round": lambda m: m.round(np.array([0.5, 1.5, 2.5, -0.5, 1.26])),
    "round decimals": lambda m: m.round(np.array([1.234, -5.678]), 1),
    # comparisons and logic
    "equal": lambda m: m.equal(X, np.round(X)),
    "not_equal": lambda m: m.not_equal(X, np.round(X)),
    "less": lambda m: m.less(X, Y),
    "less_equal": lambda m: m.less_equal(X, 0.5),
    "greater": lambda m: m.greater(X, Y),
    "greater_equal": lambda m: m.greater_equal(X, 0.5),
    "logical_and": lambda m: m.logical_and(X > 0, Y > 0),
    "logical_or": lambda m: m.logical_or(X > 0, Y > 0),
    "logical_not": lambda m: m.logical_not(X > 0),
    "isnan": lambda m: m.isnan(np.array([1.0, np.nan, np.inf])),
    "isfinite": lambda m: m.isfinite(np.array([1.0, np.nan, np.inf])),
    "isinf": lambda m: m.isinf(np.array([1.0, np.nan, -np.inf])),
    # reductions
    "sum": lambda m: m.sum(X),
    "sum axis": lambda m: m.sum(I3, axis=1),
    "sum axes keepdims": lambda m: m.sum(I3, axis=(0, 2), keepdims=True),
    "mean axis": lambda m: m.mean(X, axis=0),
    "mean keepdims": lambda m: m.mean(X, axis=-1, keepdims=True),
    "prod": lambda m: m.prod(X, axis=1),
    "max": lambda m: m.max(X),
    "max axis keepdims": lambda m: m.max(X, axis=0, keepdims=True),
    "min axis": lambda m: m.min(I3, axis=2),
    "var": lambda m: m.var(X),
    "var axis ddof": lambda m: m.var(X, axis=1, ddof=1),
    "std axis": lambda m: m.std(X, axis=0),
    "cumsum": lambda m: m.cumsum(X, axis=1),
    "cumsum flat": lambda m: m.cumsum(X),
    "argmax": lambda m: m.argmax(X),
    "argmax axis": lambda m: m.argmax(X, axis=1),
    "argmin axis": lambda m: m.argmin(X, axis=0),
    "all": lambda m: m.all(X > -2),
    "all axis": lambda m: m.all(X > 0, axis=0),
    "any axis keepdims": lambda m: m.any(X > 2, axis=1, keepdims=True),
    # contractions
    "dot": lambda m: m.dot(X, V),
    "dot matrices": lambda m: m.dot(X, Y.T),
    "vdot": lambda m: m.vdot(X, Y),
    "matmul": lambda m: m.matmul(X, SQ),
    "matmul batched": lambda m: m.matmul(I3, I3.transpose(0, 2, 1)),
    "inner": lambda m: m.inner(X, Y),
    "outer": lambda m: m.outer(V, V[:2]),
    "tensordot": lambda m: m.tensordot(I3, I3, axes=([1, 2], [1, 2])),
    "tensordot int": lambda m: m.tensordot(X, Y.T, axes=1),
    "einsum": lambda m: m.einsum("ij,jk->ik", X, SQ),
    "einsum implicit": lambda m: m.einsum("ij,kj", X, Y),
    "einsum trace": lambda m: m.einsum("ii", SQ),
    "trace": lambda m: m.trace(SQ),
    "diag of matrix": lambda m: m.diag(SQ),
    "diag of vector": lambda m: m.diag(V, k=1),
    # shapes
    "reshape": lambda m: m.reshape(I3, (4, -1)),
    "ravel": lambda m: m.ravel(X),
    "transpose": lambda m: m.transpose(I3),
    "transpose axes": lambda m: m.transpose(I3, (1, 0, 2)),
    "swapaxes": lambda m: m.swapaxes(I3, 0, 2),
    "moveaxis": lambda m: m.moveaxis(I3, 0, -1),
    "expand_dims": lambda m: m.expand_dims(X, 1),
    "squeeze": lambda m: m.squeeze(np.ones((1, 3, 1))),
    "squeeze axis": lambda m: m.squeeze(np.ones((1, 3, 1)), axis=0),
    "broadcast_to": lambda m: m.broadcast_to(V, (2, 3)),
    "concatenate": lambda m: m.concatenate([X, Y], axis=1),
    "concatenate axis None": lambda m: m.concatenate([X, V], axis=None),
    "stack": lambda m: m.stack([X, Y], axis=1),
    "hstack": lambda m: m.hstack([V, V]),
    "vstack": lambda m: m.vstack([V, V]),
    "tile": lambda m: m.tile(X, (2, 1)),
    "repeat": lambda m: m.repeat(X, 2, axis=1),
    "repeat counts": lambda m: m.repeat(V, np.array([1, 0, 2])),
    "flip": lambda m: m.flip(X, axis=1),
    "flip all": lambda m: m.flip(X),
    "split sections": lambda m: tuple(m.split(X, 3, axis=1)),
    "split indices": lambda m: tuple(m.split(V, [1])),
    "take": lambda m: m.take(V, np.array([2, 0, 2])),
    "take axis": lambda m: m.take(X, np.array([1, 0]), axis=1),
    # linear algebra
    "linalg.solve": lambda m: m.linalg.solve(SQ, V),
    "linalg.inv": lambda m: m.linalg.inv(SQ),
    "linalg.det": lambda m: m.linalg.det(SQ),
    "linalg.slogdet": lambda m: tuple(m.linalg.slogdet(SQ - 2 * np.eye(3))),
    "linalg.cholesky": lambda m: m.linalg.cholesky(SQ),
    "linalg.norm": lambda m: m.linalg.norm(X),
    "linalg.norm vector ord 1": lambda m: m.linalg.norm(V, 1),
    "linalg.norm axis": lambda m: m.linalg.norm(X, axis=1),
    "linalg.norm fro": lambda m: m.linalg.norm(X, "fro"),
    "linalg.norm inf": lambda m: m.linalg.norm(V, np.inf),
    # indexing
    "index int": lambda m: m.asarray(I3)[1],
    "index negative int": lambda m: m.asarray(I3)[-1, 2],
    "index slices": lambda m: m.asarray(I3)[:, 1:3, ::2],
    "index negative step": lambda m: m.asarray(I3)[0, ::-1],
    "index ellipsis": lambda m: m.asarray(I3)[..., 1],
    "index newaxis": lambda m: m.asarray(X)[:, None, :],
    "index int array": lambda m: m.asarray(I3)[np.array([1, 0, 1])],
    "index two int arrays": lambda m: m.asarray(I3)[np.array([0, 1]), :, np.array([3, 2])],
    "index bool mask": lambda m: m.asarray(X)[X > 0],
    "index row mask": lambda m: m.asarray(X)[np.array([False, True])],
}


@pytest.mark.parametrize("name", list(NUMPY_CASES))
def test_engine_numpy_function_matches_numpy(name):
    case = NUMPY_CASES[name]
    got = case(jnp)
    want = case(np)
    got_leaves = got if isinstance(got, tuple) else (got,)
    want_leaves = want if isinstance(want, tuple) else (want,)
    for g, w in zip(got_leaves, want_leaves, strict=True):
        assert isinstance(g, Array)
        w = np.asarray(w)
        assert g.shape == w.shape
        assert g.dtype.kind == w.dtype.kind or (g.dtype.kind == "i" and w.dtype.kind in "iu")
        if w.dtype == bool:
            assert np.array_equal(np.asarray(g), w)
        else:
            close(g, w, rtol=2e-6, atol=2e-6)


def _softmax(x, axis=-1):
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def _logsumexp(x, axis=None):
    m = np.max(x, axis=axis, keepdims=True)
    return np.squeeze(np.log(np.sum(np.exp(x - m), axis=axis, keepdims=True)) + m, axis=axis)


NN_CASES = {
    # name: (engine result, NumPy reference)
    "nn.sigmoid": (lambda: jax.nn.sigmoid(X), 1 / (1 + np.exp(-X))),
    "nn.relu": (lambda: jax.nn.relu(X), np.maximum(X, 0)),
    "nn.softplus": (lambda: jax.nn.softplus(X), np.log1p(np.exp(X))),
    "nn.softmax": (lambda: jax.nn.softmax(X), _softmax(X)),
    "nn.softmax axis 0": (lambda: jax.nn.softmax(X, axis=0), _softmax(X, axis=0)),
    "nn.log_softmax": (lambda: jax.nn.log_softmax(X), np.log(_softmax(X))),
    "nn.logsumexp": (lambda: jax.nn.logsumexp(X), _logsumexp(X)),
    "nn.logsumexp axis": (lambda: jax.nn.logsumexp(X, axis=1), _logsumexp(X, axis=1)),
    "scipy.special.expit": (lambda: jax.scipy.special.expit(X), 1 / (1 + np.exp(-X))),
    "scipy.special.logit": (lambda: jax.scipy.special.logit(POS / 4), np.log((POS / 4) / (1 - POS / 4))),
    "scipy.special.logsumexp": (lambda: jax.scipy.special.logsumexp(X, axis=0), _logsumexp(X, axis=0)),
    "scipy.special.erf": (lambda: jax.scipy.special.erf(X), np.vectorize(math.erf)(X)),
    "nn.softplus large": (lambda: jax.nn.softplus(np.array([100.0, -100.0])), [100.0, math.exp(-100.0)]),
    "nn.logsumexp large": (lambda: jax.nn.logsumexp(np.array([1000.0, 1000.0])), 1000 + math.log(2)),
}


@pytest.mark.parametrize("name", list(NN_CASES))
def test_engine_nn_and_scipy_special_match_numpy(name):
    got, want = NN_CASES[name]
    got = got()
    assert got.dtype == np.float32
    close(got, want, rtol=2e-6, atol=1e-6)


def test_at_set_add_multiply_return_updated_copies():
    x = jnp.arange(6.0).reshape(2, 3)
    close(x.at[0, 1].set(10.0), [[0, 10, 2], [3, 4, 5]])
    close(x.at[:, 0].add(1.0), [[1, 1, 2], [4, 4, 5]])
    close(x.at[1].multiply(2.0), [[0, 1, 2], [6, 8, 10]])
    close(x.at[np.array([0, 0]), np.array([2, 2])].add(1.0), [[0, 1, 4], [3, 4, 5]])  # repeats accumulate
    close(x.at[x > 3].set(0.0), [[0, 1, 2], [3, 0, 0]])
    close(x, [[0, 1, 2], [3, 4, 5]])  # the original is unchanged
    close(x.at[1, 2].get(), 5.0)


NUMPY_GRAD_CASES = {
    # name: (scalar function, point, expected gradient)
    "sum of squares": (lambda x: jnp.sum(x**2), V, 2 * V),
    "mean": (jnp.mean, X, np.full(X.shape, 1 / 6)),
    "var": (jnp.var, V, 2 * (V - V.mean()) / 3),
    "matmul": (lambda a: jnp.sum(a @ SQ), X, np.tile(SQ.sum(axis=1), (2, 1))),
    "einsum": (lambda a: jnp.einsum("ij,ij->", a, Y), X, Y),
    "indexing": (lambda x: x[1, ::2].sum() + x[0, np.array([1, 1])].sum(), X, [[0, 2, 0], [1, 0, 1]]),
    "at.set": (lambda x: jnp.sum(x.at[0].set(5.0) * Y), X, [[0, 0, 0], Y[1]]),
    "concatenate": (lambda x: jnp.sum(jnp.concatenate([x, 2 * x]) * jnp.arange(6.0).reshape(3, 2).T.ravel()),
                    np.array([1.0, 2.0, 3.0]), [0 + 2 * 1, 2 + 2 * 3, 4 + 2 * 5]),
    "cumsum": (lambda x: jnp.sum(jnp.cumsum(x) * jnp.array([1.0, 10.0, 100.0])), V, [111.0, 110.0, 100.0]),
    "logsumexp is softmax": (jax.nn.logsumexp, V, _softmax(V)),
    "sigmoid": (lambda x: jnp.sum(jax.nn.sigmoid(x)), V, (1 / (1 + np.exp(-V))) * (1 - 1 / (1 + np.exp(-V)))),
    "det": (jnp.linalg.det, SQ, np.linalg.det(SQ) * np.linalg.inv(SQ).T),
    "slogdet": (lambda a: jnp.linalg.slogdet(a)[1], SQ, np.linalg.inv(SQ).T),
    "solve": (lambda b: jnp.sum(jnp.linalg.solve(SQ, b)), V, np.linalg.solve(SQ.T, np.ones(3))),
    "inv": (lambda a: jnp.trace(jnp.linalg.inv(a)), SQ, -(np.linalg.inv(SQ) @ np.linalg.inv(SQ)).T),
    "norm": (jnp.linalg.norm, V, V / np.linalg.norm(V)),
    "reshape transpose": (lambda x: jnp.sum(x.reshape(3, 2).T * Y), X, Y.T.reshape(3, 2).reshape(2, 3)),
}


# Gradients whose expected values were computed with JAX (same function, same point).
NUMPY_GRAD_CASES.update({
    "boolean mask": (lambda v: jnp.sum(v[v > 0] ** 2), XC, [0.6, 0.0, 4.0]),
    "ellipsis and newaxis": (lambda m: jnp.sum(m[..., None, 1] * 3), np.ones((2, 3)), [[0, 3, 0], [0, 3, 0]]),
    "repeated integer index": (lambda v: jnp.sum(v[jnp.array([0, 0, 2])]), XC, [2.0, 0.0, 1.0]),
    "at.add repeated": (lambda v: jnp.sum(jnp.zeros(5).at[jnp.array([1, 1, 3])].add(v) ** 2), XC, [-1.8, -1.8, 4.0]),
    "at.multiply": (lambda v: jnp.sum(jnp.ones(3).at[1].multiply(v[0]) * v), XC, [-0.2, 0.3, 1.0]),
    "softmax": (lambda v: jax.nn.softmax(v)[0], XC,
                [0.12702299654483795, -0.0049749999307096004, -0.12204799801111221]),
    "log_softmax": (lambda v: jax.nn.log_softmax(v)[1], XC,
                    [-0.14931899309158325, 0.9666820168495178, -0.817363977432251]),
    "softplus": (lambda v: jnp.sum(jax.nn.softplus(v)), XC,
                 [0.5744420289993286, 0.23147499561309814, 0.8807970285415649]),
    "erf": (lambda v: jnp.sum(jax.scipy.special.erf(v)), XC,
            [1.0312609672546387, 0.26734399795532227, 0.020666999742388725]),
    "logit": (lambda v: jnp.sum(jax.scipy.special.logit(v)), np.array([0.2, 0.5]), [6.25, 4.0]),
    "cholesky": (lambda m: jnp.sum(jnp.linalg.cholesky(m @ m.T + jnp.eye(2))), np.array([[1.0, 0.5], [0.2, 2.0]]),
                 [[0.5291969776153564, 1.0481770038604736], [0.5077559947967529, 1.15966796875]]),
    "std": (jnp.std, XC, [-0.016999000683426857, -0.39948299527168274, 0.41648200154304504]),
    "tile and repeat": (lambda v: jnp.sum(jnp.tile(v, 2) * jnp.arange(6.0))
                        + jnp.sum(jnp.repeat(v, 2) * jnp.arange(6.0)), XC, [4.0, 10.0, 16.0]),
    "flip and take": (lambda v: jnp.sum(jnp.flip(v) * jnp.arange(3.0)) + jnp.take(v, 2), XC, [2.0, 1.0, 1.0]),
    "split": (lambda v: jnp.sum(jnp.split(v, 3)[1] * 5), XC, [0.0, 5.0, 0.0]),
    "diag and trace": (lambda m: jnp.trace(m) + jnp.sum(jnp.diag(m) ** 2), np.arange(9.0).reshape(3, 3),
                       np.diag([1.0, 9.0, 17.0])),
    "diag of vector": (lambda v: jnp.sum(jnp.diag(v, k=1) * jnp.arange(16.0).reshape(4, 4)), XC, [1.0, 6.0, 11.0]),
    "outer and tensordot": (lambda v: jnp.sum(jnp.outer(v, v)) + jnp.tensordot(v, v, axes=1), XC, [2.8, -0.2, 6.2]),
    "where with scalar branch": (lambda v: jnp.sum(jnp.where(v > 0, v, 2.0)), XC, [1.0, 0.0, 1.0]),
    "maximum with scalar": (lambda v: jnp.sum(jnp.maximum(v, 0.3)), XC, [0.5, 0.0, 1.0]),
    "var keepdims": (lambda m: jnp.sum(jnp.var(m, axis=0, keepdims=True) * jnp.array([1.0, 2.0])),
                     np.array([[1.0, 2.0], [3.0, 5.0]]), [[-1.0, -3.0], [1.0, 3.0]]),
    "cumsum axis": (lambda m: jnp.sum(jnp.cumsum(m, axis=0) * jnp.array([[1.0, 2.0], [3.0, 4.0]])), np.ones((2, 2)),
                    [[4.0, 6.0], [3.0, 4.0]]),
    "prod axis with a zero": (lambda m: jnp.sum(jnp.prod(m, axis=1)), np.array([[1.0, 2.0, 3.0], [0.0, 4.0, 5.0]]),
                              [[6.0, 3.0, 2.0], [20.0, 0.0, 0.0]]),
    "moveaxis": (lambda m: jnp.sum(jnp.moveaxis(m, 0, -1) * jnp.arange(6.0).reshape(3, 2)), np.ones((2, 3)),
                 [[0.0, 2.0, 4.0], [1.0, 3.0, 5.0]]),
    "slogdet of negative det": (lambda m: jnp.linalg.slogdet(m)[1], np.array([[2.0, 1.0], [1.0, -3.0]]),
                                [[3 / 7, 1 / 7], [1 / 7, -2 / 7]]),
    "norm ord 1": (lambda v: jnp.linalg.norm(v, 1), XC, [1.0, -1.0, 1.0]),
    "norm ord inf": (lambda v: jnp.linalg.norm(v, jnp.inf), XC, [0.0, 0.0, 1.0]),
    "logsumexp with -inf": (jax.nn.logsumexp, np.array([-np.inf, 0.0]), [0.0, 1.0]),
    "hstack and vstack": (lambda v: jnp.sum(jnp.hstack([v, v]) * jnp.arange(6.0)) + jnp.sum(jnp.vstack([v, 2 * v])),
                          XC, [6.0, 8.0, 10.0]),
    "broadcast_to": (lambda v: jnp.sum(jnp.broadcast_to(v, (4, 3))), XC, [4.0, 4.0, 4.0]),
    "round floor sign are flat": (lambda v: jnp.sum(jnp.round(v) + jnp.floor(v) + jnp.sign(v)), XC, [0.0, 0.0, 0.0]),
    "abs at -1, 0, 1": (lambda v: jnp.sum(jnp.abs(v)), np.array([-1.0, 0.0, 1.0]), [-1.0, 1.0, 1.0]),
    "where between branches at 0": (lambda v: jnp.sum(jnp.where(v > 0, v**2, -v)), np.array([-1.0, 0.0, 1.0]),
                                    [-1.0, -1.0, 2.0]),
    "batched einsum": (lambda a: jnp.einsum("bij,bjk->", a, a), np.arange(8.0).reshape(2, 2, 2),
                       [[[3.0, 7.0], [5.0, 9.0]], [[19.0, 23.0], [21.0, 25.0]]]),
    "dot of vector and matrix": (lambda v: jnp.sum(jnp.dot(v, jnp.arange(6.0).reshape(3, 2))), XC, [1.0, 5.0, 9.0]),
    "vdot and inner": (lambda v: jnp.vdot(v, v) + jnp.inner(v, 2 * v), XC, [1.8, -7.2, 12.0]),
    "index chosen by argmax": (lambda v: v[jnp.argmax(v)], XC, [0.0, 0.0, 1.0]),
    "astype round trip through float16": (lambda v: jnp.sum(v.astype(jnp.float16) ** 2).astype(jnp.float32), XC,
                                          [0.6000980138778687, -2.4003899097442627, 4.0]),
    "expm1 and log1p": (lambda v: jnp.sum(jnp.expm1(v) + jnp.log1p(v**2)), XC,
                        [1.9003169536590576, -0.6824120283126831, 8.189056396484375]),
    "inverse trig": (lambda v: jnp.sum(jnp.arcsin(v) + jnp.arccos(v) * 2 + jnp.arctanh(v)), np.array([0.1, -0.5]),
                     [0.00506300013512373, 0.17863300442695618]),
    "hyperbolic": (lambda v: jnp.sum(jnp.sinh(v) + jnp.cosh(v) + jnp.arcsinh(v)), XC,
                   [2.307684898376465, 0.9413790106773376, 7.836269855499268]),
    "arccosh": (lambda v: jnp.sum(jnp.arccosh(v)), np.array([1.5, 3.0]), [0.8944270014762878, 0.35355299711227417]),
    "tan": (lambda v: jnp.sum(jnp.tan(v)), XC, [1.095689058303833, 7.615965843200684, 5.7743988037109375]),
    "log2 log10 exp2": (lambda v: jnp.sum(jnp.log2(v) + jnp.log10(v) + jnp.exp2(v)), np.array([0.5, 2.0]),
                        [4.734237194061279, 3.7110838890075684]),
    "square and reciprocal": (lambda v: jnp.sum(jnp.square(v) + jnp.reciprocal(v)), XC,
                              [-10.511110305786133, -3.0944440364837646, 3.75]),
    "mod and floor_divide": (lambda v: jnp.sum(jnp.mod(v, 0.7) + v // 0.7), XC, [1.0, 1.0, 1.0]),
})


@pytest.mark.parametrize("name", list(NUMPY_GRAD_CASES))
def test_gradients_of_engine_numpy_functions(name):
    f, x, expected = NUMPY_GRAD_CASES[name]
    close(jax.grad(f)(jnp.asarray(x)), expected, rtol=1e-5, atol=1e-5)
