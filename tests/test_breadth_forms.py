"""Forms of existing functions (issue 15): einsum with '...' and the sublist form, linspace
differentiable in start and stop, cumsum of a 0-d array, axes of 0-d arrays in reductions, and
the dtypes of integer sums without x64. Reference numbers come from NumPy (einsum, dtypes) and
from jax.numpy under jax_enable_x64 (linspace), stored here.
"""

from __future__ import annotations

import numpy as np
import pytest

import engine
import engine.numpy as jnp
from engine.errors import InvalidArgumentError, ShapeError
from engine.test_util import check_grads

RNG = np.random.default_rng(15)



# ----------------------------------------------------------------------------- einsum

ELLIPSIS_CASES = [
    ("...i,...i", [(2, 3), (4, 1, 3)]),  # broadcast batch axes, aligned from the right
    ("i...,i...->...", [(3, 2), (3, 1)]),
    ("...ij,...jk->...ik", [(5, 2, 3), (3, 4)]),
    ("...ji", [(4, 2, 3)]),  # implicit output: the broadcast axes first, then the letters in order
    ("ij...", [(2, 3, 4)]),
    ("...,...", [(3,), ()]),
    ("ii...->i...", [(3, 3, 2)]),
    ("...", [(2, 3)]),
    ("a...b,b...c->ac...", [(2, 4, 3), (3, 4, 5)]),
]


@pytest.mark.parametrize("spec,shapes", ELLIPSIS_CASES)
def test_einsum_with_an_ellipsis_is_numpys(spec: str, shapes: list[tuple[int, ...]], x64) -> None:
    operands = [RNG.normal(size=s) for s in shapes]
    want = np.einsum(spec, *operands)
    got = jnp.einsum(spec, *operands)
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-13)
    np.testing.assert_allclose(engine.jit(lambda *ops: jnp.einsum(spec, *ops))(*operands), want, rtol=1e-13)


def test_an_explicit_output_without_ellipsis_sums_the_broadcast_axes_as_jax_does() -> None:
    x = RNG.normal(size=(2, 3, 4)).astype(np.float32)
    np.testing.assert_allclose(jnp.einsum("...i->i", x), x.sum(axis=(0, 1)), rtol=1e-5)


def test_einsum_with_an_ellipsis_differentiates_and_batches(x64) -> None:
    a, b = RNG.normal(size=(4, 2, 3)), RNG.normal(size=(3, 5))
    f = lambda a, b: jnp.sum(jnp.sin(jnp.einsum("...ij,...jk->...ik", a, b)))  # noqa: E731
    check_grads(f, (a, b), order=2)
    # d/da sum(A B) = 1 B^T, row by row
    np.testing.assert_allclose(engine.grad(lambda a: jnp.sum(jnp.einsum("...ij,jk", a, b)))(a),
                               np.broadcast_to(b.sum(axis=1), a.shape), rtol=1e-13)
    np.testing.assert_allclose(engine.vmap(lambda r: jnp.einsum("...i,...i->...", r, r))(a),
                               np.einsum("bij,bij->bi", a, a), rtol=1e-13)


SUBLIST_CASES = [
    lambda a, b: (a, [0, 1], b, [1, 2]),
    lambda a, b: (a, [0, 1], b, [1, 2], [2, 0]),
    lambda a, b: (a, [Ellipsis, 1], a, [Ellipsis, 1]),
    lambda a, b: (a, [0, Ellipsis], [Ellipsis]),
    lambda a, b: (a, [1, 0]),
    lambda a, b: (a, [30, 3], b, [3, 40], [40, 30]),  # numbers past 25 (lower-case letters)
]


@pytest.mark.parametrize("case", range(len(SUBLIST_CASES)))
def test_einsum_sublist_form_is_numpys(case: int, x64) -> None:
    a, b = RNG.normal(size=(2, 3)), RNG.normal(size=(3, 4))
    args = SUBLIST_CASES[case](a, b)
    want = np.einsum(*args)
    got = jnp.einsum(*args)
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-13)


def test_malformed_ellipses_and_sublists_are_refused_with_reasons() -> None:
    x = np.ones((2, 3))
    with pytest.raises(InvalidArgumentError, match=r"'\.\.\.'"):
        jnp.einsum("..i", x)
    with pytest.raises(ShapeError, match="fewer"):
        jnp.einsum("...ijk", x)
    with pytest.raises(InvalidArgumentError, match="axis numbers"):
        jnp.einsum(x, [0, "a"])
    with pytest.raises(InvalidArgumentError, match="axis numbers"):
        jnp.einsum(x, [0, 52])


# ----------------------------------------------------------------------------- linspace

def test_linspace_is_differentiable_in_start_and_stop(x64) -> None:
    f = lambda s, t: jnp.sum(jnp.sin(jnp.linspace(s, t, 6)) ** 2)  # noqa: E731
    # jax.numpy: value, grad and Hessian at (0.3, 1.7)
    assert float(f(0.3, 1.7)) == pytest.approx(3.748434012721023, rel=1e-14)
    grads = engine.grad(f, (0, 1))(0.3, 1.7)
    np.testing.assert_allclose([float(g) for g in grads], [2.2543793735490048, 1.0163369320834217], rtol=1e-13)
    hess = engine.hessian(f, (0, 1))(0.3, 1.7)
    np.testing.assert_allclose(np.array([[float(h) for h in row] for row in hess]),
                               [[1.7700146625848192, -0.5617106010149497],
                                [-0.5617106010149497, -3.6403295114390115]], rtol=1e-12)
    check_grads(f, (0.3, 1.7), order=2)
    # each point is start * (1 - t) + stop * t: its Jacobian columns are 1 - t and t
    jac = engine.jacfwd(lambda s: jnp.linspace(s, 2.0, 5))(0.5)
    np.testing.assert_allclose(jac, 1 - np.linspace(0, 1, 5), rtol=1e-15)


def test_traced_linspace_has_numpys_values_and_forms(x64) -> None:
    for kwargs in ({"num": 7}, {"num": 4, "endpoint": False}, {"num": 1}, {"num": 0}):
        want = np.linspace(0.25, 3.0, **kwargs)
        traced = engine.jit(lambda s, kwargs=kwargs: jnp.linspace(s, 3.0, **kwargs))(0.25)
        np.testing.assert_allclose(traced, want, rtol=1e-15)
    lo, hi = np.array([0.0, 1.0]), np.array([1.0, -2.0])
    out, step = engine.jit(lambda a: jnp.linspace(a, hi, 5, axis=1, retstep=True))(lo)
    want, want_step = np.linspace(lo, hi, 5, axis=1, retstep=True)
    np.testing.assert_allclose(out, want, rtol=1e-15)
    np.testing.assert_allclose(step, want_step, rtol=1e-15)
    # concrete bounds keep NumPy's values exactly, as before
    np.testing.assert_array_equal(jnp.linspace(0.1, 0.7, 9), np.linspace(0.1, 0.7, 9))
    # an integer dtype rounds down, as NumPy and JAX do ([-3, -2, -1, 1]; truncation gave [-2, -1, 0, 1])
    np.testing.assert_array_equal(jnp.linspace(-2.5, 1.0, 4, dtype=np.int32), [-3, -2, -1, 1])
    np.testing.assert_array_equal(engine.jit(lambda s: jnp.linspace(s, 1.0, 4, dtype=np.int32))(-2.5), [-3, -2, -1, 1])


# ----------------------------------------------------------------------------- 0-d arrays and dtypes

def test_cumsum_of_a_0d_array_is_1d() -> None:
    for axis in (None, 0, -1):
        out = jnp.cumsum(jnp.float32(2.5), axis=axis)
        assert out.shape == (1,) and float(out[0]) == 2.5
    assert engine.grad(lambda x: jnp.cumsum(x)[0] * 3.0)(2.0) == 3.0


@pytest.mark.parametrize("name", ["sum", "prod", "max", "min", "all", "any", "mean", "var", "std", "logsumexp"])
def test_reductions_refuse_a_tuple_axis_on_a_0d_array_as_numpy_does(name: str) -> None:
    with pytest.raises(ShapeError, match="0 dimensions"):
        getattr(jnp, name)(jnp.float32(2.0), axis=(0,))
    with pytest.raises(ShapeError, match="0 dimensions"):
        getattr(jnp, name)(jnp.float32(2.0), axis=1)


def test_0d_axis_rules_follow_numpy() -> None:
    x = np.float32(2.0)
    for name in ("sum", "prod", "max", "min", "all", "any", "argmax", "argmin", "cumsum"):
        for axis in (0, -1):
            np.testing.assert_array_equal(getattr(jnp, name)(x, axis=axis), getattr(np, name)(np.asarray(x), axis=axis))
    for name in ("mean", "var", "std"):
        with pytest.raises(np.exceptions.AxisError):
            getattr(np, name)(np.asarray(x), axis=0)
        with pytest.raises(ShapeError, match="axis=None"):
            getattr(jnp, name)(x, axis=0)
        assert float(getattr(jnp, name)(x, axis=())) == float(getattr(np, name)(np.asarray(x), axis=()))


# jax.numpy without x64: the dtypes of sum, prod and cumsum of each integer dtype
INTEGER_DTYPES = {  # input: (sum, prod, cumsum)
    "int8": ("int32", "int32", "int8"), "int16": ("int32", "int32", "int16"), "int32": ("int32", "int32", "int32"),
    "uint8": ("uint32", "uint32", "uint8"), "uint32": ("uint32", "uint32", "uint32"),
    "bool": ("int32", "int32", "int32"),
}


@pytest.mark.parametrize("dtype", sorted(INTEGER_DTYPES))
def test_integer_sums_keep_jaxs_dtypes_without_x64(dtype: str) -> None:
    x = np.arange(1, 7).astype(dtype).reshape(2, 3)
    for fn, want in zip(("sum", "prod", "cumsum"), INTEGER_DTYPES[dtype]):
        for axis in (None, 0):
            eager = getattr(jnp, fn)(x, axis=axis)
            jitted = engine.jit(lambda a, fn=fn, axis=axis: getattr(jnp, fn)(a, axis=axis))(x)
            assert eager.dtype == want and jitted.dtype == want, (fn, axis)
            np.testing.assert_array_equal(eager, getattr(np, fn)(x, axis=axis).astype(want))
    assert jnp.sum(np.full(3, 2**30, np.int32)).dtype == np.int32  # wraps as int32 does, like JAX
