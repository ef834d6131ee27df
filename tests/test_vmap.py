"""engine.vmap: JAX's semantics, checked against Python loops over the examples, closed forms and
numbers from JAX (compared directly too when jax is installed)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

import engine as jax
import engine.numpy as jnp
from engine import BatchAxisError, ConcretizationError, grad, jit, vmap

RNG = np.random.default_rng(7)
X = RNG.normal(size=(5, 3))
W = RNG.normal(size=3)


@pytest.fixture(autouse=True)
def x64() -> Any:
    jax.config.update("jax_enable_x64", True)
    yield
    jax.config.update("jax_enable_x64", False)


def loop(f: Any, *args: Any) -> np.ndarray:
    """What vmap must equal: f on each example (axis 0 of every argument), stacked."""
    return np.stack([np.asarray(f(*[a[i] for a in args])) for i in range(len(args[0]))])


def close(a: Any, b: Any) -> None:
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-12, atol=1e-12)


def tanh_score(w: Any, x: Any) -> Any:
    return jnp.tanh(x @ w)


# The JAX autodiff tutorial's loss for one example (x: (3,), t: a 0/1 target).
def tutorial_loss(W: Any, b: Any, x: Any, t: Any) -> Any:
    p = 0.5 * (jnp.tanh((x @ W + b) / 2) + 1)
    return -jnp.sum(jnp.log(p * t + (1 - p) * (1 - t)))


TUTORIAL_X = np.array([[0.52, 1.12, 0.77], [0.88, -1.08, 0.15], [0.52, 0.06, -1.30], [0.74, -2.49, 1.39]])
TUTORIAL_T = np.array([1.0, 1.0, 0.0, 1.0])
TUTORIAL_W = np.array([-0.36838785, -2.275689, 0.01144757])
TUTORIAL_B = 0.8535516


# ----------------------------------------------------------------------------- in_axes


def test_axis_zero_maps_over_rows_and_axis_one_over_columns() -> None:
    close(vmap(jnp.sum)(X), X.sum(axis=1))
    close(vmap(jnp.sum, in_axes=1)(X), X.sum(axis=0))


def test_negative_axes_count_from_the_end() -> None:
    y = RNG.normal(size=(2, 4, 3))
    close(vmap(lambda a: a @ W, in_axes=-2)(y), np.stack([y[:, i, :] @ W for i in range(4)]))


def test_none_shares_an_argument_between_examples() -> None:
    close(vmap(tanh_score, in_axes=(None, 0))(W, X), loop(lambda x: tanh_score(W, x), X))


def test_a_top_level_list_of_axes_reads_as_a_tuple() -> None:
    close(vmap(tanh_score, in_axes=[None, 0])(W, X), vmap(tanh_score, in_axes=(None, 0))(W, X))


def test_in_axes_may_be_a_pytree_prefix_of_an_argument() -> None:
    params = {"w": W, "scale": np.array([1.0, 2.0, 3.0, 4.0, 5.0])}
    out = vmap(lambda p, x: p["scale"] * tanh_score(p["w"], x), in_axes=({"w": None, "scale": 0}, 0))(params, X)
    close(out, params["scale"] * np.tanh(X @ W))


def test_keyword_arguments_are_mapped_along_axis_zero() -> None:
    close(vmap(lambda x, w: x * w)(X, w=X), X * X)


def test_unmapped_python_scalars_keep_their_weak_type() -> None:
    x32 = X.astype(np.float32)
    assert vmap(lambda x, s: x * s, in_axes=(0, None))(x32, 2.0).dtype == np.float32


# ----------------------------------------------------------------------------- out_axes


def test_out_axes_places_the_batch_axis() -> None:
    assert vmap(lambda x: jnp.outer(x, x), out_axes=1)(X).shape == (3, 5, 3)
    assert vmap(lambda x: jnp.outer(x, x), out_axes=-1)(X).shape == (3, 3, 5)
    close(vmap(lambda x: jnp.outer(x, x), out_axes=2)(X), np.einsum("bi,bj->ijb", X, X))


def test_out_axes_may_be_a_pytree_prefix_of_the_result() -> None:
    out = vmap(lambda x: {"row": x * 2, "total": jnp.sum(x)}, out_axes={"row": 1, "total": 0})(X)
    close(out["row"], (X * 2).T)
    close(out["total"], X.sum(axis=1))


def test_a_result_that_does_not_depend_on_the_batch_is_broadcast_or_kept_with_none() -> None:
    both = vmap(lambda x: (x, W), out_axes=(0, None))(X)
    close(both[1], W)
    close(vmap(lambda x: (x, W))(X)[1], np.broadcast_to(W, (5, 3)))


def test_axis_size_broadcasts_when_nothing_is_mapped() -> None:
    close(vmap(lambda: jnp.arange(2.0), in_axes=(), axis_size=4)(), np.broadcast_to(np.arange(2.0), (4, 2)))


def test_an_empty_batch_gives_empty_results_of_the_right_shape() -> None:
    assert vmap(lambda x: jnp.outer(x, x))(np.zeros((0, 3))).shape == (0, 3, 3)
    assert vmap(lambda a, i: a[i])(np.zeros((0, 3)), np.zeros(0, np.int64)).shape == (0,)


# ----------------------------------------------------------------------------- composition


def test_nested_vmap_is_an_outer_product() -> None:
    a, b = np.arange(3.0), np.arange(4.0)
    close(vmap(vmap(lambda x, y: x * y, (None, 0)), (0, None))(a, b), np.outer(a, b))


def test_vmap_of_grad_gives_per_example_gradients() -> None:
    per_example = vmap(grad(tanh_score), in_axes=(None, 0))(W, X)
    close(per_example, loop(lambda x: grad(tanh_score)(W, x), X))
    close(per_example, (1 - np.tanh(X @ W) ** 2)[:, None] * X)  # the closed form


def test_grad_of_vmap_sums_the_per_example_gradients() -> None:
    total = grad(lambda w: jnp.sum(vmap(tanh_score, in_axes=(None, 0))(w, X)))(W)
    close(total, sum(grad(tanh_score)(W, x) for x in X))


def test_jit_of_vmap_and_vmap_of_jit() -> None:
    expected = loop(lambda x: grad(tanh_score)(W, x), X)
    close(jit(vmap(grad(tanh_score), in_axes=(None, 0)))(W, X), expected)
    close(vmap(jit(grad(tanh_score)), in_axes=(None, 0))(W, X), expected)


def test_vmap_of_hessian_jacfwd_and_jacrev() -> None:
    close(vmap(jax.hessian(tanh_score), (None, 0))(W, X), loop(lambda x: jax.hessian(tanh_score)(W, x), X))
    close(vmap(jax.jacfwd(lambda x: jnp.sin(x) * W))(X), loop(jax.jacfwd(lambda x: jnp.sin(x) * W), X))
    close(vmap(jax.jacrev(lambda x: jnp.sin(x) * W))(X), loop(jax.jacrev(lambda x: jnp.sin(x) * W), X))


def test_hessian_of_a_vmapped_sum() -> None:
    h = jax.hessian(lambda w: jnp.sum(vmap(tanh_score, (None, 0))(w, X)))(W)
    t = np.tanh(X @ W)
    close(h, np.einsum("b,bi,bj->ij", -2 * t * (1 - t**2), X, X))  # d2/dw2 tanh(x.w) = -2t(1-t^2) x x^T


def test_per_example_gradients_of_the_tutorial_loss_match_jax() -> None:
    gW, gb = vmap(grad(tutorial_loss, (0, 1)), (None, None, 0, 0))(TUTORIAL_W, TUTORIAL_B, TUTORIAL_X, TUTORIAL_T)
    # jax.vmap(jax.grad(loss, (0, 1)), (None, None, 0, 0)) in float64 (jax 0.10.2)
    np.testing.assert_allclose(np.asarray(gW), [[-0.45103628, -0.97146275, -0.66788064],
                                                [-0.04218103, 0.05176762, -0.00718995],
                                                [0.32496845, 0.03749636, -0.81242112],
                                                [-0.00140695, 0.0047342, -0.00264279]], atol=5e-9)
    np.testing.assert_allclose(np.asarray(gb), [-0.86737745, -0.04793298, 0.62493932, -0.00190128], atol=5e-9)
    # their sum is the tutorial's whole-batch gradient
    np.testing.assert_allclose(np.asarray(gW).sum(axis=0), [-0.16965583, -0.8774644, -1.4901346], atol=1e-6)


def test_nested_vmap_of_grad_matches_jax() -> None:
    f = lambda a, x: jnp.sum(jnp.sin(a * x))
    out = vmap(vmap(grad(f), (None, 0)), (0, None))(np.array([1.0, 2.0]),
                                                     np.array([[0.1, 0.2], [0.3, -0.4], [1.0, 2.0]]))
    # jax.vmap(jax.vmap(jax.grad(f), (None, 0)), (0, None)) (jax 0.10.2)
    np.testing.assert_allclose(np.asarray(out), [[0.29551373, -0.08182345, -0.29199137],
                                                 [0.28221886, -0.031082, -1.72343408]], atol=5e-9)


# ----------------------------------------------------------------------------- one pass, not a loop


def test_the_batch_is_one_pass_whatever_its_size() -> None:
    """The traced batched program has the same operations for 2 examples as for 1,000."""
    per_example = vmap(grad(tanh_score), in_axes=(None, 0))
    small = jax.make_graph(per_example)(W, RNG.normal(size=(2, 3)))
    large = jax.make_graph(per_example)(W, RNG.normal(size=(1000, 3)))
    assert [e.prim.name for e in small.eqns] == [e.prim.name for e in large.eqns]
    assert large.outvars[0].aval.shape == (1000, 3)


def test_operations_without_a_batching_rule_run_per_example_and_stay_correct() -> None:
    """Indexing with a batched index array has no batching rule yet: it runs once per example."""
    idx = np.array([0, 2, 1, 1, 0])
    close(vmap(lambda a, i: a[i])(X, idx), X[np.arange(5), idx])
    close(vmap(grad(lambda a, i: a[i] ** 2))(X, idx), loop(grad(lambda a, i: a[i] ** 2), X, idx))


def test_a_per_example_budget_bounds_the_runs_without_a_batching_rule() -> None:
    from engine.batching import PER_EXAMPLE_LIMIT, per_example_budget

    idx = np.array([0, 2, 1, 1, 0])
    with per_example_budget(5):
        close(vmap(lambda a, i: a[i])(X, idx), X[np.arange(5), idx])
    with per_example_budget(4), pytest.raises(jax.LimitExceeded) as refused:
        vmap(lambda a, i: a[i])(X, idx)
    assert (refused.value.limit, refused.value.value, refused.value.maximum) == (PER_EXAMPLE_LIMIT, 5, 4)


def test_custom_vjp_functions_are_batched_with_their_rule() -> None:
    @jax.custom_vjp
    def scaled_sin(x: Any) -> Any:
        return jnp.sin(x)

    scaled_sin.defvjp(lambda x: (jnp.sin(x), x), lambda x, g: (g * 2.0 * x,))  # deliberately not cos
    close(vmap(scaled_sin)(X), np.sin(X))
    close(vmap(grad(lambda x: jnp.sum(scaled_sin(x))))(X), 2.0 * X)
    close(grad(lambda x: jnp.sum(vmap(scaled_sin)(x)))(X), 2.0 * X)


# ----------------------------------------------------------------------------- control flow


def test_python_control_flow_on_an_unmapped_argument_works() -> None:
    def f(x: Any, mode: Any) -> Any:
        return jnp.sum(x) if mode > 0 else jnp.prod(x)

    close(vmap(f, in_axes=(0, None))(X, np.array(1.0)), X.sum(axis=1))


def test_python_control_flow_on_a_mapped_value_raises() -> None:
    with pytest.raises(ConcretizationError):
        vmap(lambda x: x if jnp.sum(x) > 0 else -x)(X)


# ----------------------------------------------------------------------------- errors


def test_mismatched_batch_sizes_name_both_arguments() -> None:
    with pytest.raises(BatchAxisError, match=r"size 3: axis 0 of argument 0 \(w\) of type f64\[3\].*"
                                             r"size 5: axis 0 of argument 1 \(x\) of type f64\[5,3\]"):
        vmap(tanh_score)(W, X)


def test_axis_size_must_agree_with_the_mapped_axes() -> None:
    with pytest.raises(BatchAxisError, match="size 5.*size 4: axis_size"):
        vmap(jnp.sum, axis_size=4)(X)


def test_all_none_in_axes_without_axis_size_is_refused() -> None:
    with pytest.raises(BatchAxisError, match="needs at least one mapped argument"):
        vmap(tanh_score, in_axes=(None, None))(W, X)


def test_an_axis_out_of_range_is_refused() -> None:
    with pytest.raises(BatchAxisError, match=r"in_axes 2 is out of range for argument 1 \(x\).*-2\.\.1"):
        vmap(tanh_score, in_axes=(None, 2))(W, X)


def test_a_scalar_cannot_be_mapped() -> None:
    with pytest.raises(BatchAxisError, match="it is a scalar"):
        vmap(lambda a, s: a * s)(X, 2.0)


def test_in_axes_must_have_one_entry_per_argument() -> None:
    with pytest.raises(BatchAxisError, match="in_axes has 3 entries but the function was called with 2"):
        vmap(tanh_score, in_axes=(None, 0, 0))(W, X)


def test_in_axes_must_be_a_prefix_of_the_arguments() -> None:
    with pytest.raises(BatchAxisError, match="prefix of the arguments' structure"):
        vmap(tanh_score, in_axes=({"a": 0}, 0))(W, X)


def test_axes_must_be_ints_or_none() -> None:
    with pytest.raises(BatchAxisError, match="holds 0.5"):
        vmap(tanh_score, in_axes=(None, 0.5))


def test_out_axes_none_for_a_result_that_varies_is_refused() -> None:
    with pytest.raises(BatchAxisError, match="out_axes is None for the result"):
        vmap(lambda x: x * 2, out_axes=None)(X)


# ----------------------------------------------------------------------------- against JAX itself


def test_agrees_with_jax() -> None:
    real = pytest.importorskip("jax")
    real.config.update("jax_enable_x64", True)
    rjnp = real.numpy
    y = RNG.normal(size=(3, 5, 2))
    cases = [
        (lambda j, n: j.vmap(lambda y: n.sum(y ** 2, axis=0), in_axes=-2, out_axes=-1), (y,)),
        (lambda j, n: j.vmap(j.hessian(lambda w, x: n.tanh(x @ w)), (None, 0)), (W, X)),
        (lambda j, n: j.vmap(lambda p, x: {"out": p["a"] * x, "s": n.sum(p["b"])},
                             in_axes=({"a": None, "b": 0}, 0), out_axes={"out": 1, "s": 0}),
         ({"a": W, "b": y[:, :, 0]}, X[:3])),
        (lambda j, n: j.jit(j.vmap(j.grad(lambda w, x: n.log1p(n.exp(x @ w))), (None, 0))), (W, X)),
        (lambda j, n: j.vmap(lambda x: n.linalg.solve(n.eye(3) * 2 + n.outer(x, x), x)), (X,)),
        (lambda j, n: j.jacrev(j.vmap(lambda x: n.tanh(x) * 2)), (X,)),
    ]
    for build, args in cases:
        ours = jax.tree_util.tree_leaves(build(jax, jnp)(*args))
        theirs = real.tree_util.tree_leaves(build(real, rjnp)(*args))
        assert len(ours) == len(theirs)
        for a, b in zip(ours, theirs):
            assert np.shape(a) == np.shape(b)
            np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-10, atol=1e-12)
