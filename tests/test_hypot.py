"""hypot, the primitive added by the worked example of docs/ENGINE.md ("Adding a primitive").

Its one declaration in engine/primitives.py makes it a function of engine.numpy and of the
expression language, an op of the graph format, differentiable in both modes at every order,
batchable, and spelled as NumPy's ufunc in compiled plans. Derivatives are checked against the
closed forms d/dx hypot(x, y) = x / hypot(x, y), d/dy = y / hypot(x, y), and against finite
differences at second order.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

import engine
import engine as jax
import engine.numpy as jnp
from engine.expr import compile_expression
from engine.plan import compile_plan
from engine.primitives import PRIMITIVES, hypot_p
from engine.serialize import load_graph
from engine.test_util import check_grads

pytestmark = pytest.mark.usefixtures("x64")  # every test computes in float64 (tests/conftest.py)


RNG = np.random.default_rng(7)
X = RNG.uniform(-3, 3, (4, 3))
Y = RNG.uniform(-3, 3, (4, 3))


def test_values_are_numpys_and_dtypes_promote_to_float() -> None:
    np.testing.assert_array_equal(np.asarray(jnp.hypot(X, Y)), np.hypot(X, Y))
    assert float(jnp.hypot(3, 4)) == 5.0 and jnp.hypot(3, 4).dtype == np.float64  # ints become the float
    assert jnp.hypot(np.float32(3), np.float32(4)).dtype == np.float32
    # broadcasting, and no overflow where x*x would overflow
    np.testing.assert_array_equal(np.asarray(jnp.hypot(X, 2.0)), np.hypot(X, 2.0))
    assert float(jnp.hypot(1e200, 1e200)) == pytest.approx(np.sqrt(2) * 1e200)


def test_derivatives_are_the_closed_forms() -> None:
    h = np.hypot(X, Y)
    gx, gy = jax.grad(lambda x, y: jnp.sum(jnp.hypot(x, y)), argnums=(0, 1))(X, Y)
    np.testing.assert_allclose(np.asarray(gx), X / h, rtol=1e-14)
    np.testing.assert_allclose(np.asarray(gy), Y / h, rtol=1e-14)
    tx, ty = RNG.standard_normal((2, 4, 3))
    _, tangent = jax.jvp(jnp.hypot, (X, Y), (tx, ty))
    np.testing.assert_allclose(np.asarray(tangent), (X * tx + Y * ty) / h, rtol=1e-13)
    # second derivative along x: d2/dx2 hypot = y^2 / h^3
    d2 = jax.grad(lambda x: jnp.sum(jax.grad(lambda v: jnp.sum(jnp.hypot(v, Y)))(x)))(X)
    np.testing.assert_allclose(np.asarray(d2), Y * Y / h**3, rtol=1e-12)
    # broadcast operand: its cotangent is summed over the broadcast axis
    gb = jax.grad(lambda b: jnp.sum(jnp.hypot(X, b)))(Y[0])
    np.testing.assert_allclose(np.asarray(gb), np.sum(Y[0] / np.hypot(X, Y[0]), axis=0), rtol=1e-13)


def test_derivatives_against_finite_differences_to_second_order() -> None:
    check_grads(jnp.hypot, (X, Y), order=2, modes=("fwd", "rev"))
    check_grads(lambda x: jnp.hypot(x, 1.5) * jnp.sin(x), (X,), order=2)


def test_derivative_at_the_origin_is_zero_and_finite() -> None:
    """hypot is not differentiable at (0, 0); its rules give 0 there (as JAX does), never NaN."""
    gx, gy = jax.grad(jnp.hypot, argnums=(0, 1))(0.0, 0.0)
    assert float(gx) == 0.0 and float(gy) == 0.0
    hess = jax.hessian(lambda v: jnp.hypot(v[0], v[1]))(jnp.zeros(2))
    assert np.all(np.isfinite(np.asarray(hess)))


def test_batched_like_a_loop_and_jitted_as_the_ufunc() -> None:
    batched = jax.vmap(jnp.hypot, in_axes=(0, None))(X, Y[0])
    np.testing.assert_array_equal(np.asarray(batched), np.stack([np.hypot(x, Y[0]) for x in X]))
    jac = jax.jacfwd(lambda x: jnp.hypot(x, Y[0]))(X[0])  # one batched pass over the basis
    np.testing.assert_allclose(np.asarray(jac), np.diag(X[0] / np.hypot(X[0], Y[0])), rtol=1e-14)
    graph = engine.optimize(jax.make_graph(lambda x, y: jnp.hypot(x * 2, y) + 1)(X, Y))
    plan = compile_plan(graph, chains=False)  # one line per equation
    assert "u_hypot(" in plan.source and "out=" in plan.source  # written into the dying x * 2
    np.testing.assert_array_equal(plan([X, Y])[0], np.hypot(X * 2, Y) + 1)
    chained = compile_plan(graph)  # float64: one chain of NumPy's own loops, the same bits
    assert "u_hypot(" not in chained.source
    np.testing.assert_array_equal(chained([X, Y])[0], np.hypot(X * 2, Y) + 1)


def test_in_the_expression_language_and_the_graph_format() -> None:
    program = compile_expression("sum(hypot(x, y) * 2)", ["x", "y"])
    assert float(program(X, Y)) == pytest.approx(2 * np.sum(np.hypot(X, Y)), rel=1e-14)
    np.testing.assert_allclose(np.asarray(jax.grad(program)(X, Y)), 2 * X / np.hypot(X, Y), rtol=1e-14)
    assert PRIMITIVES["hypot"] is hypot_p
    doc = json.loads(json.dumps(jax.make_graph(jnp.hypot)(X, Y).to_json()))
    assert [node["op"] for node in doc["nodes"]] == ["hypot"]
    np.testing.assert_array_equal(np.asarray(load_graph(doc)(X, Y)), np.hypot(X, Y))
