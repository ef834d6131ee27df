"""engine.custom_jvp: the function runs as written, and every derivative (jvp, grad, jacobians,
hessians, at any order, under vmap and jit) uses its rule. Checked against closed forms, finite
differences and JAX's custom_jvp documentation (and JAX itself when installed)."""

from __future__ import annotations

import functools
from typing import Any

import numpy as np
import pytest

import engine as jax
import engine.numpy as jnp
from engine import DifferentiationError, GraphFormatError, custom_jvp, grad, jit, jvp, vmap
from engine.test_util import check_grads


@pytest.fixture(autouse=True)
def x64() -> Any:
    jax.config.update("jax_enable_x64", True)
    yield
    jax.config.update("jax_enable_x64", False)


def close(a: Any, b: Any, tol: float = 1e-12) -> None:
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=tol, atol=tol)


def sigmoid(x: Any) -> Any:
    return 1 / (1 + np.exp(-np.asarray(x)))


# JAX's custom_jvp documentation: log(1 + exp(x)) with a numerically stable derivative.
@custom_jvp
def log1pexp(x: Any) -> Any:
    return jnp.log(1.0 + jnp.exp(x))


@log1pexp.defjvp
def log1pexp_jvp(primals: tuple, tangents: tuple) -> tuple:
    (x,), (x_dot,) = primals, tangents
    return log1pexp(x), (1 - 1 / (1 + jnp.exp(x))) * x_dot


# sin with the rule written out: the classic check that the rule is what gets differentiated.
@custom_jvp
def custom_sin(x: Any) -> Any:
    return jnp.sin(x)


custom_sin.defjvp(lambda primals, tangents: (custom_sin(primals[0]), jnp.cos(primals[0]) * tangents[0]))


@custom_jvp
def sin_with_wrong_rule(x: Any) -> Any:
    return jnp.sin(x)


# Deliberately not sin's derivative: only the rule can produce 2 * t.
sin_with_wrong_rule.defjvp(lambda primals, tangents: (sin_with_wrong_rule(primals[0]), 2.0 * tangents[0]))


# ----------------------------------------------------------------------------- log1pexp


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # exp(100) overflows float32, as in JAX
def test_log1pexp_has_a_finite_gradient_where_the_plain_one_is_nan() -> None:
    jax.config.update("jax_enable_x64", False)
    plain = lambda x: jnp.log(1.0 + jnp.exp(x))
    assert np.isnan(float(grad(plain)(100.0)))
    assert float(grad(log1pexp)(100.0)) == 1.0
    assert float(jit(grad(log1pexp))(100.0)) == 1.0


def test_log1pexp_computes_its_value_normally() -> None:
    close(log1pexp(3.0), np.log1p(np.exp(3.0)))
    close(jit(log1pexp)(3.0), np.log1p(np.exp(3.0)))


def test_log1pexp_under_vmap_jit_grad_matches_the_documentation() -> None:
    # JAX's custom_jvp page prints [0.5, 0.7310586, 0.8807971] for vmap(jit(grad(log1pexp)))(arange(3.))
    close(vmap(jit(grad(log1pexp)))(jnp.arange(3.0)), [0.5, 0.73105858, 0.88079708], tol=1e-8)


def test_second_derivative_differentiates_the_rule() -> None:
    xs = np.array([-2.0, 0.5, 3.0])
    expected = sigmoid(xs) * (1 - sigmoid(xs))  # d/dx of the rule's 1 - 1/(1+e^x) = sigmoid(x)
    close(vmap(grad(grad(log1pexp)))(xs), expected)
    close([jax.hessian(log1pexp)(x) for x in xs], expected)
    # jax.vmap(jax.grad(jax.grad(log1pexp))) in float64 (jax 0.10.2)
    close(vmap(grad(grad(log1pexp)))(xs), [0.10499359, 0.23500371, 0.04517666], tol=5e-9)


# ----------------------------------------------------------------------------- the rule is used


def test_a_rule_returning_cos_gives_sins_derivatives_at_every_order() -> None:
    x = 0.7
    close(jvp(custom_sin, (x,), (1.0,)), (np.sin(x), np.cos(x)))
    close(grad(custom_sin)(x), np.cos(x))
    close(grad(grad(custom_sin))(x), -np.sin(x))
    close(grad(grad(grad(custom_sin)))(x), -np.cos(x))
    close(jax.hessian(custom_sin)(x), -np.sin(x))


def test_every_mode_uses_the_rule_not_the_function() -> None:
    x = np.array([0.3, -1.2, 2.0])
    total = lambda v: jnp.sum(sin_with_wrong_rule(v))
    close(sin_with_wrong_rule(x), np.sin(x))  # the value is the function's
    close(jvp(sin_with_wrong_rule, (x,), (np.ones(3),))[1], 2.0 * np.ones(3))
    close(grad(total)(x), 2.0 * np.ones(3))
    close(jax.jacfwd(sin_with_wrong_rule)(x), 2.0 * np.eye(3))
    close(jax.jacrev(sin_with_wrong_rule)(x), 2.0 * np.eye(3))
    close(jit(grad(total))(x), 2.0 * np.ones(3))
    close(grad(grad(lambda v: sin_with_wrong_rule(v)))(0.4), 0.0)  # the rule's 2 is constant


def test_higher_orders_match_closed_forms_of_the_rule() -> None:
    @custom_jvp
    def cube(x: Any) -> Any:
        return x * x * x

    cube.defjvp(lambda p, t: (cube(p[0]), 3 * p[0] ** 2 * t[0]))
    close(grad(cube)(2.0), 12.0)
    close(grad(grad(cube))(2.0), 12.0)
    close(grad(grad(grad(cube)))(2.0), 6.0)
    close(jax.jacfwd(jax.jacrev(cube))(2.0), 12.0)


def test_a_correct_rule_passes_finite_difference_checks_to_second_order() -> None:
    @custom_jvp
    def f(x: Any, y: Any) -> Any:
        return jnp.sin(x) * y

    @f.defjvp
    def f_jvp(primals: tuple, tangents: tuple) -> tuple:
        (x, y), (x_dot, y_dot) = primals, tangents
        return f(x, y), jnp.cos(x) * x_dot * y + jnp.sin(x) * y_dot

    check_grads(f, (np.array([0.2, -0.7]), np.array([1.5, 0.3])), order=2, modes=("fwd", "rev"))
    # JAX's documentation example: f(2., 3.) and its jvp along (1., 0.)
    y, y_dot = jvp(f, (2.0, 3.0), (1.0, 0.0))
    close(y, 3 * np.sin(2.0))
    close(y_dot, 3 * np.cos(2.0))
    close(grad(f)(2.0, 3.0), 3 * np.cos(2.0))


def test_defjvps_gives_one_rule_per_argument() -> None:
    @custom_jvp
    def f(x: Any, y: Any) -> Any:
        return jnp.sin(x) * y

    f.defjvps(lambda x_dot, out, x, y: jnp.cos(x) * x_dot * y, lambda y_dot, out, x, y: jnp.sin(x) * y_dot)
    close(jvp(f, (2.0, 3.0), (1.0, 0.5))[1], 3 * np.cos(2.0) + 0.5 * np.sin(2.0))
    close(grad(f, (0, 1))(2.0, 3.0), (3 * np.cos(2.0), np.sin(2.0)))
    close(grad(grad(f))(2.0, 3.0), -3 * np.sin(2.0))


def test_defjvps_with_none_means_no_derivative_for_that_argument() -> None:
    @custom_jvp
    def f(x: Any, y: Any) -> Any:
        return x * y

    f.defjvps(lambda x_dot, out, x, y: x_dot * y, None)
    close(grad(f, (0, 1))(2.0, 3.0), (3.0, 0.0))


def test_the_rule_may_branch_on_concrete_values() -> None:
    @custom_jvp
    def relu_like(x: Any) -> Any:
        return jnp.maximum(x, 0.0)

    @relu_like.defjvp
    def rule(primals: tuple, tangents: tuple) -> tuple:
        (x,), (t,) = primals, tangents
        return relu_like(x), (t if x > 0 else 0.5 * t)  # Python control flow, as under JAX's grad

    close(grad(relu_like)(2.0), 1.0)
    close(grad(relu_like)(-2.0), 0.5)


def test_pytree_arguments_and_results() -> None:
    @custom_jvp
    def f(p: dict) -> tuple:
        return p["a"] * p["b"], jnp.sum(p["a"])

    @f.defjvp
    def rule(primals: tuple, tangents: tuple) -> tuple:
        (p,), (t,) = primals, tangents
        return f(p), (t["a"] * p["b"] + p["a"] * t["b"], jnp.sum(t["a"]))

    p = {"a": np.array([1.0, 2.0]), "b": np.array([3.0, -1.0])}
    g = grad(lambda q: jnp.sum(f(q)[0]) + f(q)[1])(p)
    close(g["a"], p["b"] + 1)
    close(g["b"], p["a"])


# ----------------------------------------------------------------------------- nondiff_argnums


@functools.partial(custom_jvp, nondiff_argnums=(0,))
def app(f: Any, x: Any) -> Any:
    return f(x)


@app.defjvp
def app_jvp(f: Any, primals: tuple, tangents: tuple) -> tuple:
    (x,), (x_dot,) = primals, tangents
    return f(x), 2.0 * x_dot


def test_nondiff_arguments_are_passed_to_the_rule_first() -> None:
    # JAX's documentation: app(lambda x: x ** 3, 3.) is 27 and its custom derivative 2
    close(app(lambda x: x**3, 3.0), 27.0)
    close(grad(app, 1)(lambda x: x**3, 3.0), 2.0)
    close(jvp(lambda x: app(jnp.sin, x), (1.0,), (3.0,))[1], 6.0)


def test_several_nondiff_arguments_in_any_position() -> None:
    @functools.partial(custom_jvp, nondiff_argnums=(0, 2))
    def app2(f: Any, x: Any, g: Any) -> Any:
        return f(g(x))

    @app2.defjvp
    def app2_jvp(f: Any, g: Any, primals: tuple, tangents: tuple) -> tuple:
        (x,), (x_dot,) = primals, tangents
        return f(g(x)), 3.0 * x_dot

    close(app2(lambda x: x**3, 3.0, lambda y: 5 * y), 3375.0)
    close(grad(app2, 1)(lambda x: x**3, 3.0, lambda y: 5 * y), 3.0)


def test_a_traced_nondiff_argument_is_refused() -> None:
    @functools.partial(custom_jvp, nondiff_argnums=(1,))
    def scale(x: Any, s: Any) -> Any:
        return x * s

    scale.defjvp(lambda s, p, t: (scale(p[0], s), t[0] * s))
    with pytest.raises(DifferentiationError, match="nondiff_argnums is being traced"):
        grad(lambda s: scale(1.0, s))(2.0)


def test_keyword_arguments_are_bound_to_their_positions() -> None:
    close(grad(lambda x: app(jnp.sin, x=x))(0.3), 2.0)


# ----------------------------------------------------------------------------- vmap and jit


def test_under_vmap_the_batch_keeps_the_rule() -> None:
    xs = np.array([0.3, -1.2, 2.0])
    close(vmap(sin_with_wrong_rule)(xs), np.sin(xs))
    close(vmap(grad(sin_with_wrong_rule))(xs), 2.0 * np.ones(3))
    close(grad(lambda v: jnp.sum(vmap(sin_with_wrong_rule)(v)))(xs), 2.0 * np.ones(3))
    close(jax.jacfwd(vmap(sin_with_wrong_rule))(xs), 2.0 * np.eye(3))
    close(jit(vmap(grad(log1pexp)))(xs), sigmoid(xs))


def test_a_batch_is_one_custom_call_not_a_loop() -> None:
    graph = jax.make_graph(vmap(custom_sin))(np.zeros(1000))
    assert [e.prim.name for e in graph.eqns] == ["custom_jvp_call"]


def test_vmap_with_an_unbatched_argument_differentiates_both() -> None:
    @custom_jvp
    def f(x: Any, y: Any) -> Any:
        return jnp.sin(x) * y

    f.defjvp(lambda p, t: (f(*p), 3 * jnp.cos(p[0]) * t[0] * p[1] + jnp.sin(p[0]) * t[1]))  # 3x on purpose
    xs, y = np.array([0.1, 0.4, -0.8]), 1.7
    close(grad(lambda y: jnp.sum(vmap(f, (0, None))(xs, y)))(y), np.sin(xs).sum())
    close(grad(lambda v: jnp.sum(vmap(f, (0, None))(v, y)))(xs), 3 * np.cos(xs) * y)


# ----------------------------------------------------------------------------- errors


def test_calling_without_a_rule_says_to_call_defjvp() -> None:
    def plain(x: Any) -> Any:
        return x

    with pytest.raises(DifferentiationError, match=r"has no rule: call plain\.defjvp\(rule\) first"):
        custom_jvp(plain)(1.0)


def test_a_rule_must_return_a_tangent_shaped_like_the_output() -> None:
    @custom_jvp
    def f(x: Any) -> Any:
        return x * 2

    f.defjvp(lambda p, t: (f(p[0]), jnp.sum(t[0])))
    with pytest.raises(DifferentiationError, match=r"tangent of shape \(\) for output 0, whose shape is \(3,\)"):
        jvp(f, (np.ones(3),), (np.ones(3),))


def test_a_rule_must_return_the_outputs_structure() -> None:
    @custom_jvp
    def f(x: Any) -> Any:
        return x, x

    f.defjvp(lambda p, t: (f(p[0]), t[0]))
    with pytest.raises(DifferentiationError, match="structure differs from the function's output"):
        jvp(f, (1.0,), (1.0,))


def test_a_rule_must_return_a_pair() -> None:
    @custom_jvp
    def f(x: Any) -> Any:
        return x

    f.defjvp(lambda p, t: t[0])
    with pytest.raises(DifferentiationError, match=r"must return a pair \(primal_out, tangent_out\)"):
        grad(f)(1.0)


def test_closing_over_a_traced_value_is_refused_with_advice() -> None:
    def outer(y: Any) -> Any:
        @custom_jvp
        def times_y(x: Any) -> Any:
            return x * y

        times_y.defjvp(lambda p, t: (times_y(*p), t[0] * y))
        return times_y(y * 2.0)

    with pytest.raises(DifferentiationError, match="pass that value as an argument instead"):
        grad(outer)(3.0)


def test_a_graph_holding_a_custom_jvp_function_is_not_serialised() -> None:
    graph = jax.make_graph(lambda x: custom_sin(x) * 2)(1.0)
    with pytest.raises(GraphFormatError, match="a custom_jvp function holds Python code"):
        graph.to_json()


# ----------------------------------------------------------------------------- against JAX itself


def test_agrees_with_jax() -> None:
    real = pytest.importorskip("jax")
    real.config.update("jax_enable_x64", True)

    def make(j: Any, n: Any) -> Any:
        @j.custom_jvp
        def f(x: Any, y: Any) -> Any:
            return n.sin(x) * y

        @f.defjvp
        def rule(p: tuple, t: tuple) -> tuple:
            return f(*p), 3 * n.cos(p[0]) * t[0] * p[1] + n.sin(p[0]) * t[1]

        return f

    rng = np.random.default_rng(3)
    x, w = rng.normal(size=(5, 3)), rng.normal(size=3)
    cases = [
        lambda j, n: j.vmap(j.grad(lambda x, y: make(j, n)(x, y).sum()), (0, None))(x, w),
        lambda j, n: j.hessian(lambda y: j.vmap(make(j, n), (0, None))(x, y).sum())(w),
        lambda j, n: j.jacfwd(j.grad(lambda v: make(j, n)(v, w).sum()))(x[0]),
        lambda j, n: j.jit(j.grad(j.grad(lambda v: make(j, n)(v, 2.0))))(0.7),
        lambda j, n: j.grad(lambda v: j.vmap(j.vmap(make(j, n)))(v, x).sum())(x),
    ]
    for case in cases:
        close(case(jax, jnp), case(real, real.numpy), tol=1e-10)
