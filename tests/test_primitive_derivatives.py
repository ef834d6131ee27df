"""Acceptance test: every primitive's VJP and JVP rules against central finite differences.

For every entry of `engine.primitives.PRIMITIVES` that has derivative rules there is at least
one case below: a function built from the public facade that exercises the primitive, and a
hypothesis strategy for inputs inside the primitive's domain (away from kinks, jumps and
singularities by construction). Each case is checked in float64:

* first order: the JVP against a central difference along a random direction t, and the VJP
  through the identity <ct, J t> = <J^T ct, t> (plus agreement of the two modes);
* second order: the same checks applied to x -> jvp(f, x, t) and x -> vjp(f, x)(ct), in both
  modes, i.e. fwd-over-fwd, rev-over-fwd, fwd-over-rev and rev-over-rev.

The finite differences are computed here, independently of `engine.test_util`; a separate test
also runs `check_grads(order=2)` on a few inputs per case as a cross-check.
Primitives without derivative rules (comparisons, logical operations, arg-reductions, ...) are
checked to contribute no gradient, and the piecewise-constant ones to have a zero derivative.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import engine as jax
import engine.numpy as jnp
import engine.scipy.special as special
from engine import primitives as P
from engine.errors import DifferentiationError
from engine.test_util import check_grads
from engine.tree_util import tree_leaves, tree_structure, tree_unflatten

F64 = np.float64


pytestmark = pytest.mark.usefixtures("x64")  # every test computes in float64 (tests/conftest.py)


SETTINGS = settings(max_examples=15, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
FEW = settings(SETTINGS, max_examples=3)

# ----------------------------------------------------------------------------- input strategies


def _floats(lo: float, hi: float) -> st.SearchStrategy[float]:
    return st.floats(lo, hi, allow_nan=False, allow_infinity=False, allow_subnormal=False)


SHAPES = hnp.array_shapes(min_dims=0, max_dims=3, min_side=1, max_side=4)
NONSCALAR = hnp.array_shapes(min_dims=1, max_dims=3, min_side=1, max_side=4)


def arr(shape: Any = SHAPES, lo: float = -2.0, hi: float = 2.0) -> st.SearchStrategy[np.ndarray]:
    """float64 arrays with elements in [lo, hi] (a fixed shape, or a strategy for one)."""
    return hnp.arrays(F64, shape, elements=_floats(lo, hi))


def signed(shape: Any = SHAPES, lo: float = 0.5, hi: float = 2.0) -> st.SearchStrategy[np.ndarray]:
    """Elements with |x| in [lo, hi] and either sign: bounded away from zero."""
    shapes = shape if isinstance(shape, st.SearchStrategy) else st.just(shape)
    return shapes.flatmap(lambda s: st.tuples(arr(s, lo, hi), hnp.arrays(np.bool_, s)).map(
        lambda p: np.where(p[1], p[0], -p[0])))


def off_grid(shape: Any = SHAPES) -> st.SearchStrategy[np.ndarray]:
    """Values k + 0.5 +- 0.3 for integers k: at least 0.2 from every integer, where floor, ceil
    and trunc jump."""
    shapes = shape if isinstance(shape, st.SearchStrategy) else st.just(shape)
    return shapes.flatmap(lambda s: st.tuples(hnp.arrays(np.int64, s, elements=st.integers(-3, 3)),
                                              arr(s, -0.3, 0.3)).map(lambda p: p[0] + 0.5 + p[1]))


def near_int(shape: Any = SHAPES) -> st.SearchStrategy[np.ndarray]:
    """Values k +- 0.3 for integers k: at least 0.2 from every half-integer, where round jumps."""
    shapes = shape if isinstance(shape, st.SearchStrategy) else st.just(shape)
    return shapes.flatmap(lambda s: st.tuples(hnp.arrays(np.int64, s, elements=st.integers(-3, 3)),
                                              arr(s, -0.3, 0.3)).map(lambda p: p[0] + p[1]))


def distinct(shape: tuple[int, ...]) -> st.SearchStrategy[np.ndarray]:
    """Values at least 0.3 apart from each other (no ties for max/min), in random order."""
    n = math.prod(shape)
    return st.tuples(st.permutations(range(n)), arr(shape, 0.0, 0.2)).map(
        lambda p: (np.asarray(p[0], F64) - n / 2).reshape(shape) * 0.5 + p[1])


def interleaved(shape_x: tuple[int, ...], shape_y: tuple[int, ...]) -> st.SearchStrategy[tuple]:
    """x on k + 0.25 + [0, 0.1], y on k + 0.75 + [0, 0.1]: |x - y| >= 0.4 for every pair, so
    max/min never tie, whatever broadcasting pairs up."""
    def grid(shape: tuple[int, ...], offset: float) -> st.SearchStrategy[np.ndarray]:
        return st.tuples(hnp.arrays(np.int64, shape, elements=st.integers(-3, 3)), arr(shape, 0.0, 0.1)).map(
            lambda p: p[0] + offset + p[1])
    return st.tuples(grid(shape_x, 0.25), grid(shape_y, 0.75))


def fmod_pair(shape_x: tuple[int, ...], shape_y: tuple[int, ...]) -> st.SearchStrategy[tuple]:
    """(x, y) with x / y never within 0.1 of an integer (fmod jumps there). One of the shapes
    is () and the other operand is built from it."""
    big = shape_x if shape_x != () else shape_y
    q = st.tuples(hnp.arrays(np.int64, big, elements=st.integers(-3, 3)), arr(big, 0.1, 0.9)).map(
        lambda p: p[0] + p[1])
    if shape_y == ():  # x = y * q
        return st.tuples(signed((), 0.5, 2.0), q).map(lambda p: (p[0] * p[1], p[0]))
    return st.tuples(signed((), 0.5, 2.0), q).map(lambda p: (p[0], p[0] / p[1]))


def well_conditioned(n: int, batch: tuple[int, ...] = ()) -> st.SearchStrategy[np.ndarray]:
    """2n I + M with |M_ij| <= 1: singular values in [n, 3n]; a random row sign flip makes
    det(A) negative half of the time."""
    shape = batch + (n, n)
    return st.tuples(arr(shape, -1.0, 1.0), st.booleans()).map(
        lambda p: (2 * n * np.eye(n) + p[0]) * np.where(p[1], np.array([-1.0] + [1.0] * (n - 1)), 1.0)[:, None])


def spd(n: int, batch: tuple[int, ...] = ()) -> st.SearchStrategy[np.ndarray]:
    """M M^T + n I: symmetric positive definite with eigenvalues in [n, n + n^2]."""
    return arr(batch + (n, n), -1.0, 1.0).map(lambda m: m @ np.swapaxes(m, -1, -2) + n * np.eye(n))


def tup(*strategies: st.SearchStrategy) -> st.SearchStrategy[tuple]:
    return st.tuples(*strategies)


def one(strategy: st.SearchStrategy) -> st.SearchStrategy[tuple]:
    return st.tuples(strategy)


# ----------------------------------------------------------------------------- the case table


@dataclass
class Case:
    prim: str  # the primitive this case is about (it must appear in the function's graph)
    fn: Callable[..., Any]
    args: st.SearchStrategy[tuple]  # a tuple of float64 NumPy arrays
    label: str = ""
    modes: tuple[str, ...] = ("fwd", "rev")
    eps: float = 1e-6  # finite-difference step, relative to max(1, |x|_inf)
    rtol: float = 2e-6
    atol: float = 2e-6  # relative to max(1, |expected|_inf)
    mode_rtol: float = 1e-10  # JVP against VJP (the same derivative computed two ways)
    xfail: str | None = None

    @property
    def id(self) -> str:
        return f"{self.prim}-{self.label}" if self.label else self.prim


CASES: list[Case] = []


def case(prim: str, fn: Callable[..., Any], args: st.SearchStrategy[tuple], label: str = "", **kw: Any) -> None:
    CASES.append(Case(prim, fn, args, label, **kw))


# Elementwise unary, on random shapes (including scalars) inside each function's domain.
for _prim, _fn, _strategy in [
    ("neg", lambda x: -x, arr()),
    ("exp", jnp.exp, arr()),
    ("expm1", jnp.expm1, arr()),
    ("log", jnp.log, arr(lo=0.1, hi=10.0)),
    ("log1p", jnp.log1p, arr(lo=-0.9, hi=10.0)),
    ("sin", jnp.sin, arr(lo=-4.0, hi=4.0)),
    ("cos", jnp.cos, arr(lo=-4.0, hi=4.0)),
    ("tan", jnp.tan, arr(lo=-1.2, hi=1.2)),
    ("asin", jnp.arcsin, arr(lo=-0.9, hi=0.9)),
    ("acos", jnp.arccos, arr(lo=-0.9, hi=0.9)),
    ("atan", jnp.arctan, arr(lo=-5.0, hi=5.0)),
    ("sinh", jnp.sinh, arr()),
    ("cosh", jnp.cosh, arr()),
    ("tanh", jnp.tanh, arr()),
    ("asinh", jnp.arcsinh, arr(lo=-5.0, hi=5.0)),
    ("acosh", jnp.arccosh, arr(lo=1.1, hi=10.0)),
    ("atanh", jnp.arctanh, arr(lo=-0.9, hi=0.9)),
    ("sqrt", jnp.sqrt, arr(lo=0.1, hi=10.0)),
    ("logistic", jax.nn.sigmoid, arr(lo=-6.0, hi=6.0)),
    ("abs", jnp.abs, signed(lo=0.1, hi=3.0)),
    ("erf", jnp.erf, arr(lo=-3.0, hi=3.0)),
    # Piecewise constant: derivative 0 away from the jumps (exact zeros are tested below).
    ("sign", jnp.sign, signed(lo=0.1, hi=3.0)),
    ("floor", jnp.floor, off_grid()),
    ("ceil", jnp.ceil, off_grid()),
    ("trunc", jnp.trunc, off_grid()),
    ("round", jnp.round, near_int()),
]:
    case(_prim, _fn, one(_strategy))

# x ** k for static integers k, through both spellings.
for _k in (-3, -2, -1, 0, 1, 2, 3, 5):
    case("integer_pow", lambda x, k=_k: x ** k, one(signed(lo=0.5, hi=2.0)), f"y={_k}")
case("integer_pow", jnp.square, one(arr()), "square")
case("integer_pow", lambda x: jnp.power(x, 4) * x, one(arr()), "power4")

# Elementwise binary: same shapes, and broadcasting so that the VJPs' unbroadcast is exercised.
_BROADCASTS = [((3, 1), (4,)), ((), (2, 3)), ((2, 3), ())]
_BINARY = [
    ("add", lambda x, y: x + y, lambda sx, sy: tup(arr(sx), arr(sy))),
    ("sub", lambda x, y: x - y, lambda sx, sy: tup(arr(sx), arr(sy))),
    ("mul", lambda x, y: x * y, lambda sx, sy: tup(arr(sx), arr(sy))),
    ("div", lambda x, y: x / y, lambda sx, sy: tup(arr(sx, -3.0, 3.0), signed(sy, 0.5, 3.0))),
    ("pow", jnp.power, lambda sx, sy: tup(arr(sx, 0.5, 3.0), arr(sy, -2.0, 2.0))),
    ("max", jnp.maximum, interleaved),
    ("min", jnp.minimum, interleaved),
    ("atan2", jnp.arctan2, lambda sx, sy: tup(signed(sx, 0.3, 3.0), arr(sy, -3.0, 3.0))),
    # away from the origin, where hypot is not differentiable
    ("hypot", jnp.hypot, lambda sx, sy: tup(signed(sx, 0.3, 3.0), arr(sy, -3.0, 3.0))),
]
for _prim, _fn, _strategy in _BINARY:
    case(_prim, _fn, SHAPES.flatmap(lambda s, mk=_strategy: mk(s, s)), "same")
    for _sx, _sy in _BROADCASTS:
        case(_prim, _fn, _strategy(_sx, _sy), f"{_sx}x{_sy}")
case("max", lambda x: jnp.maximum(x, 0.3), one(signed(lo=0.5, hi=2.0)), "const")
case("min", lambda x: jnp.clip(x, -0.3, 0.3), one(signed(lo=0.5, hi=2.0)), "clip")
case("rem", jnp.fmod, fmod_pair((2, 3), ()), "(2, 3)x()")
case("rem", jnp.fmod, fmod_pair((), (2, 3)), "()x(2, 3)")
case("rem", lambda x, y: jnp.remainder(x, y), fmod_pair((4,), ()), "remainder")

# select: a constant condition with broadcast branches, and a condition computed from x.
_COND = np.array([[True], [False], [True]])
case("select", lambda x, y: jnp.where(_COND, x, y), tup(arr((4,)), arr(())), "broadcast")
case("select", lambda x, y: jnp.where(x > 0, jnp.sin(x), y * x), tup(signed((2, 3)), arr((2, 3))), "data")
case("select", lambda x: jnp.where(x > 0, x, 0.0), one(signed((5,))), "relu")

# convert_element_type: float64 -> float32 -> float64 (float32 rounding needs a coarse step).
# (Quadratics only: their central differences are exact, leaving only float32 rounding.)
case("convert_element_type", lambda x: (x.astype(jnp.float32) * 3.0).astype(jnp.float64) ** 2,
     one(arr((2, 3))), "f64-f32-f64", eps=1e-2, rtol=1e-4, atol=1e-4, mode_rtol=1e-6)
case("convert_element_type", lambda x: x.astype(jnp.float32).astype(jnp.float64) * x,
     one(arr((3,))), "product", eps=1e-2, rtol=1e-4, atol=1e-4, mode_rtol=1e-6)

# Reductions.
case("reduce_sum", lambda x: jnp.sum(x), one(arr(NONSCALAR)), "all")
case("reduce_sum", lambda x: jnp.sum(x, axis=(0, 2)), one(arr((2, 3, 4))), "axes02")
case("reduce_sum", lambda x: jnp.sin(jnp.sum(x, axis=1, keepdims=True)) * x, one(arr((3, 4))), "keepdims")
case("reduce_sum", lambda x: jnp.mean(x * x, axis=0), one(arr((4, 2))), "mean")
for _prim, _red in (("reduce_max", jnp.max), ("reduce_min", jnp.min)):
    case(_prim, lambda x, r=_red: r(x), one(distinct((3, 4))), "all")
    case(_prim, lambda x, r=_red: r(x, axis=1) * r(x, axis=1), one(distinct((3, 4))), "axis1")
    case(_prim, lambda x, r=_red: jnp.sin(r(x, axis=(0, 2), keepdims=True) * x), one(distinct((2, 3, 2))), "axes02")
case("reduce_prod", lambda x: jnp.prod(x), one(signed((2, 3), 0.5, 1.5)), "all")
case("reduce_prod", lambda x: jnp.prod(x, axis=1), one(signed((3, 4), 0.5, 1.5)), "axis1")
case("reduce_prod", lambda x: jnp.prod(x.at[1, 2].set(0.0), axis=1),
     one(arr((3, 4), -1.5, 1.5)), "fixed-zero")
case("reduce_prod", lambda x: jnp.prod(x, axis=0),
     one(st.tuples(signed((3, 4), 0.5, 1.5), st.integers(0, 11)).map(
         lambda p: np.where(np.arange(12).reshape(3, 4) == p[1], 0.0, p[0]))), "one-zero")
# Two zeros in one group: the first derivative vanishes there, the second does not.
case("reduce_prod", lambda x: jnp.prod(x, axis=0),
     one(signed((3, 4), 0.5, 1.5).map(lambda x: np.where(np.isin(np.arange(12).reshape(3, 4), (1, 5)), 0.0, x))),
     "two-zeros")
case("reduce_prod", lambda x: jnp.prod(x), one(arr((5,), -1.0, 1.0)), "tiny-values")
case("cumsum", lambda x: jnp.cumsum(x, axis=1) ** 2, one(arr((3, 4))), "axis1")
case("cumsum", lambda x: jnp.cumsum(x), one(arr(NONSCALAR)), "flat")
case("cumsum", lambda x: jnp.sin(P.cumsum_p(x, axis=0, reverse=True)), one(arr((4, 2))), "reverse")

# Shapes.
case("reshape", lambda x: jnp.sin(jnp.reshape(x, (4, 3))) * jnp.reshape(x, (4, 3)), one(arr((2, 6))), "2d")
case("reshape", lambda x: x.reshape(-1) ** 3, one(arr((2, 3, 2))), "flatten")
case("transpose", lambda x: jnp.transpose(x, (2, 0, 1)) ** 2, one(arr((2, 3, 4))), "perm")
case("transpose", lambda x: jnp.sin(x.T) @ x, one(arr((3, 4))), "T")
case("broadcast_to", lambda x: jnp.broadcast_to(x, (2, 3, 4)) ** 2, one(arr((3, 1))), "(3,1)->(2,3,4)")
case("broadcast_to", lambda x: jnp.sin(jnp.broadcast_to(x, (2, 3))), one(arr(())), "scalar")
case("concatenate", lambda x, y: jnp.concatenate([x, y], axis=0) ** 2, tup(arr((2, 3)), arr((1, 3))), "axis0")
case("concatenate", lambda x, y, z: jnp.sin(jnp.concatenate([x, y, z], axis=1)),
     tup(arr((2, 1)), arr((2, 3)), arr((2, 2))), "three")
case("concatenate", lambda x: jnp.concatenate([x, jnp.ones((2, 2), jnp.float64)], axis=-1) ** 3,
     one(arr((2, 3))), "const")
case("concatenate", lambda x: jnp.stack([x, x * x, jnp.sin(x)], axis=1), one(arr((3,))), "stack")

# Indexing (gather): ints, slices with steps, newaxis, ellipsis, integer arrays with repeats,
# broadcast and non-adjacent advanced indices, boolean masks.
_I = np.array([0, 2, 2, 3])
_MASK = np.array([[True, False, True, False, True]] * 2 + [[False] * 5] + [[True] * 5])
for _label, _index in [
    ("int", 1),
    ("neg-int", (-1, slice(2, None))),
    ("slices", (slice(1, 3), slice(None, None, -1))),
    ("newaxis", (slice(None, None, 2), None, slice(1, 4))),
    ("ellipsis", (Ellipsis, 3)),
    ("array-repeat", _I),
    ("array-2d", (np.array([[0, 1], [3, 3]]), np.array([1, 4]))),
    ("slice-array", (slice(None), None, np.array([4, 0, 0]))),
    ("mask", _MASK),
]:
    case("gather", lambda x, i=_index: x[i] ** 2, one(arr((4, 5))), _label)
case("gather", lambda x: jnp.sin(x[np.array([1, 0, 1]), :, np.array([3, 0, 0])]), one(arr((2, 3, 4))),
     "non-adjacent")
case("gather", lambda x: jnp.take(x, np.array([2, 0, 2]), axis=1) * x[:, :3], one(arr((3, 4))), "take")

# Indexing (index_update): x.at[idx].set/add/multiply(y), with scalar and broadcast values.
_U = np.array([3, 0, 1])
_D = np.array([1, 3, 1, 1])
for _label, _f, _shapes in [
    ("set-int", lambda x, y: x.at[1].set(y), ((4, 5), (5,))),
    ("set-scalar", lambda x, y: x.at[1:3, ::2].set(y), ((4, 5), ())),
    ("set-array", lambda x, y: x.at[_U].set(y), ((4, 5), (3, 5))),
    ("set-bcast", lambda x, y: x.at[_U, 2:].set(y), ((4, 5), (1, 3))),
    ("add-array-dups", lambda x, y: x.at[_D].add(y), ((4, 5), (4, 5))),
    ("add-col", lambda x, y: x.at[:, 1].add(y), ((4, 5), (4,))),
    ("add-scalar-dups", lambda x, y: x.at[_D, _D].add(y), ((4, 5), ())),
    ("subtract", lambda x, y: x.at[1:, 0].subtract(y), ((4, 5), (3,))),
    ("mul-array", lambda x, y: x.at[_U].multiply(y), ((4, 5), (3, 5))),
    ("mul-slice", lambda x, y: x.at[1:3, ::2].multiply(y), ((4, 5), (2, 3))),
    ("mul-scalar", lambda x, y: x.at[..., 2].multiply(y), ((4, 5), ())),
]:
    case("index_update", lambda x, y, f=_f: f(x, y) ** 2, tup(arr(_shapes[0]), arr(_shapes[1])), _label)
case("index_update", lambda x, y: x.at[_U].divide(y), tup(arr((4, 5)), signed((3, 5))), "divide")
# With repeated indices the derivative in x is right; the one in the values is refused (as JAX
# refuses it): test_multiply_at_repeated_indices_refuses_the_values_derivative below.
_Y = np.linspace(0.5, 2.0, 20).reshape(4, 5)
case("index_update", lambda x: x.at[_D].multiply(_Y) ** 2, one(arr((4, 5))), "mul-dups-x")

# Contractions.
case("matmul", lambda a, b: a @ b, tup(arr((3, 4)), arr((4, 2))), "2d")
case("matmul", lambda a, b: jnp.matmul(a, b), tup(arr((2, 3, 4)), arr((4, 5))), "batch-bcast")
case("matmul", lambda a, b: jnp.matmul(a, b), tup(arr((1, 3, 4)), arr((2, 4, 2))), "batch-1")
case("matmul", lambda a, b: jnp.sin(a @ b), tup(arr((4,)), arr((4, 3))), "vec-mat")
case("matmul", lambda a, b: (a @ b) ** 2, tup(arr((3, 4)), arr((4,))), "mat-vec")
case("matmul", lambda a: a @ a.T @ a, one(arr((3, 2))), "aat-a")
for _spec, _shapes in [
    ("ij,jk->ik", ((3, 4), (4, 2))),
    ("ij->i", ((3, 4),)),
    ("ijk->kj", ((2, 3, 4),)),
    ("ij,ij->", ((2, 3), (2, 3))),
    ("i,j->ij", ((3,), (4,))),
    ("bij,bjk->bik", ((2, 3, 4), (2, 4, 2))),
    ("ij,k->ik", ((3, 4), (2,))),
    ("ij,jk,kl->il", ((2, 3), (3, 4), (4, 2))),
]:
    case("einsum", lambda *ops, s=_spec: jnp.einsum(s, *ops) ** 2, tup(*[arr(s) for s in _shapes]), _spec)
case("einsum", lambda x: jnp.einsum("ii->i", x) ** 3, one(arr((3, 3))), "ii->i")
case("einsum", lambda a, b: jnp.sin(jnp.tensordot(a, b, axes=1)), tup(arr((2, 3)), arr((3, 2))), "tensordot")

# Linear algebra, on well-conditioned matrices.
case("solve", lambda a, b: jnp.linalg.solve(a, b), tup(well_conditioned(3), arr((3, 2))), "matrix")
case("solve", lambda a, b: jnp.linalg.solve(a, b), tup(well_conditioned(3), arr((3,))), "vector")
case("solve", lambda a, b: jnp.linalg.solve(a, b), tup(well_conditioned(3, (2,)), arr((2, 3, 2))), "batch")
case("solve", lambda a, b: P.solve_p(a, b), tup(well_conditioned(3, (2,)), arr((3, 2))), "batch-bcast")
case("solve", lambda a, b: P.solve_p(a, b), tup(well_conditioned(2), arr((2, 2, 3))), "rhs-batch")
case("inv", jnp.linalg.inv, one(well_conditioned(3)), "3x3")
case("inv", jnp.linalg.inv, one(well_conditioned(2, (2,))), "batch")
case("det", jnp.linalg.det, one(well_conditioned(3)), "3x3")
case("det", jnp.linalg.det, one(well_conditioned(2, (3,))), "batch")
case("det", jnp.linalg.det, one(arr((1, 1), 0.5, 2.0)), "1x1")
case("cofactor", lambda a: P.cofactor_p(a), one(well_conditioned(3)), "3x3")
case("cofactor", lambda a: P.cofactor_p(a), one(well_conditioned(2, (2,))), "batch")
case("cofactor", lambda a: P.cofactor_p(a), one(well_conditioned(4)), "4x4, from the SVD")
case("cofactor_derivative", lambda a, t: P.cofactor_derivative_p(a, t), tup(well_conditioned(3), arr((3, 3))), "3x3")
case("cofactor_derivative", lambda a, t: P.cofactor_derivative_p(a, t), tup(well_conditioned(4), arr((4, 4))),
     "4x4, from the SVD")
case("cofactor_derivative", lambda a, t: P.cofactor_derivative_p(a, t),
     tup(well_conditioned(2, (2,)), arr((2, 2))), "batch, one direction")
case("logabsdet", lambda a: jnp.linalg.slogdet(a)[1], one(well_conditioned(3)), "3x3")
case("logabsdet", lambda a: jnp.linalg.slogdet(a)[1], one(well_conditioned(2, (2,))), "batch")
case("logabsdet", lambda a: jnp.linalg.slogdet(a)[0] * jnp.linalg.slogdet(a)[1], one(well_conditioned(3)), "sign")
case("det_sign", lambda a: jnp.linalg.slogdet(a)[0] * jnp.sum(a), one(well_conditioned(3)), "times-sum")


def _sym(a: Any) -> Any:
    return (a + jnp.swapaxes(a, -1, -2)) * 0.5


case("cholesky", lambda a: jnp.linalg.cholesky(_sym(a)), one(spd(3)), "3x3")
case("cholesky", lambda a: jnp.linalg.cholesky(_sym(a)), one(spd(2, (2,))), "batch")
case("cholesky", lambda m: jnp.linalg.cholesky(m @ m.T + 3.0 * jnp.eye(3, dtype=jnp.float64)),
     one(arr((3, 3), -1.0, 1.0)), "gram")


# Factorisations (engine.primitives_linalg), near matrices with well-separated singular values or
# eigenvalues (4, 2, 1 / 1, 2.5, 4), perturbed by at most 0.1 per entry so they stay separated;
# the functions depend on the factors only through sign-free combinations.
_SEPARATED_TALL = np.array([[4.0, 0.0, 0.0], [0.0, 2.0, 0.0], [0.0, 0.0, 1.0], [0.0, 0.0, 0.0]])
_SEPARATED_UPPER = np.array([[1.0, 0.5, 0.2], [0.0, 2.5, 0.3], [0.0, 0.0, 4.0]])


def _near(base: np.ndarray, batch: tuple[int, ...] = ()) -> st.SearchStrategy[tuple]:
    return one(arr(batch + base.shape, -0.1, 0.1).map(lambda e: base + e))


def _svd_sign_free(a: Any) -> Any:
    u, s, vh = jnp.linalg.svd(a, full_matrices=False)
    return jnp.sin(u @ vh) * jnp.sum(s ** 3, axis=-1)[..., None, None]


def _eig_sign_free(w: Any, v: Any) -> Any:
    """Free of the eigenvectors' signs and of the eigenvalues' order (eig's may change)."""
    return jnp.sum(v * v * w[..., None, :] ** 2, axis=-1) + jnp.sum(jnp.sin(w), axis=-1, keepdims=True)


case("svd", _svd_sign_free, _near(_SEPARATED_TALL), "tall")
case("svd", lambda a: _svd_sign_free(jnp.swapaxes(a, -1, -2)), _near(_SEPARATED_TALL, (2,)), "wide-batch")
case("svd", lambda a: jnp.linalg.svd(a, compute_uv=False), _near(_SEPARATED_TALL), "values")
case("eigh", lambda a: _eig_sign_free(*jnp.linalg.eigh(a)), _near(np.diag([1.0, 2.5, 4.0])), "3x3")
case("eigh", lambda a: _eig_sign_free(*jnp.linalg.eigh(a)), _near(np.diag([1.0, 2.5, 4.0]), (2,)), "batch")
case("eig", lambda a: _eig_sign_free(*jnp.linalg.eig(a)), _near(_SEPARATED_UPPER), "3x3")
case("qr", lambda a: (lambda q, r: (q * jnp.diagonal(r, axis1=-2, axis2=-1)[..., None, :], r * r))(
     *jnp.linalg.qr(a)), _near(_SEPARATED_TALL), "tall")
case("qr", lambda a: (lambda q, r: (q * jnp.diagonal(r, axis1=-2, axis2=-1)[..., None, :]) + r * r)(
     *jnp.linalg.qr(a, mode="complete")), _near(_SEPARATED_UPPER, (2,)), "square-complete-batch")
case("pinv", jnp.linalg.pinv, _near(_SEPARATED_TALL), "tall")
case("pinv", lambda a: jnp.linalg.pinv(a.T), _near(_SEPARATED_TALL), "wide")


# Complex values inside real functions (engine.primitives_fft): z = complex(x, y), and the result
# is read back through real/imag/abs, so finite differences run on real inputs and outputs.
def _z(x: Any, y: Any) -> Any:
    from engine.primitives_fft import complex_p

    return complex_p(x, y)


case("complex", lambda x, y: jnp.abs(_z(x, y)), SHAPES.flatmap(lambda s: tup(signed(s), signed(s))), "abs")
case("complex", lambda x, y: jnp.real(_z(x, y) * _z(y, x)), tup(arr((3, 1)), arr((4,))), "broadcast")
case("real", lambda x, y: jnp.real(_z(x, y) * _z(x, y) * _z(y, 1.0 + x)), tup(arr((2, 3)), arr((2, 3))))
case("imag", lambda x, y: jnp.imag(_z(x, y) * _z(x, y) * _z(y, 1.0 + x)), tup(arr((2, 3)), arr((2, 3))))
case("conj", lambda x, y: jnp.imag(jnp.conj(_z(x, y) * _z(y, y)) * _z(x, x * y)), tup(arr((3,)), arr((3,))))
case("fft", lambda x, y: jnp.real(jnp.fft.fft(_z(x, y), n=5) ** 3), tup(arr((2, 4)), arr((2, 4))), "fft")
case("fft", lambda x, y: jnp.real(jnp.fft.ifft2(_z(x, y), norm="ortho") ** 2), tup(arr((3, 4)), arr((3, 4))),
     "ifft2")
case("fft", lambda x: jnp.imag(jnp.fft.rfft(x, axis=0)) * jnp.real(jnp.fft.rfft(x, axis=0)), one(arr((5, 2))),
     "rfft")
case("fft", lambda x, y: jnp.fft.irfft(_z(x, y), n=6) ** 2, tup(arr((2, 4)), arr((2, 4))), "irfft")
case("fft", lambda x: jnp.sin(jnp.fft.irfftn(jnp.fft.rfftn(x) * jnp.fft.rfftn(x), s=x.shape)),
     one(arr((3, 3, 2))), "rfftn")


# Special functions (engine.primitives_special), inside their domains and away from the kinks of
# the scaled Bessel functions at 0.
case("lgamma", special.gammaln, one(arr(lo=0.3, hi=5.0)))
case("lgamma", special.gammaln, one(off_grid((4,)).map(lambda x: np.where(x < 0, x, x + 0.1))), "negative")
case("digamma", special.digamma, one(arr(lo=0.3, hi=5.0)))
case("polygamma", lambda x: special.polygamma(2, x), one(arr(lo=0.5, hi=5.0)), "n=2")
case("polygamma", lambda x: special.polygamma(np.array([[1], [3]]), x), one(arr((3,), 0.5, 5.0)), "broadcast")
case("igamma", lambda x: special.gammainc(np.array([0.8, 2.5, 4.0]), x), one(arr((3,), 0.3, 6.0)))
case("igammac", lambda x: special.gammaincc(2.5, x), one(arr(lo=0.3, hi=6.0)))
case("erfc", special.erfc, one(arr()))
case("erf_inv", special.erfinv, one(arr(lo=-0.9, hi=0.9)))
case("ndtri", special.ndtri, one(arr(lo=0.05, hi=0.95)))
case("log_ndtr", special.log_ndtr, one(arr(lo=-6.0, hi=6.0)))
case("bessel_i0", special.i0, one(arr(lo=-3.0, hi=3.0)))
case("bessel_i1", special.i1, one(arr(lo=-3.0, hi=3.0)))
case("bessel_i0e", special.i0e, one(signed(lo=0.3, hi=3.0)))
case("bessel_i1e", special.i1e, one(signed(lo=0.3, hi=3.0)))


# custom_vjp: reverse mode only (forward mode through it raises; tested below).
@jax.custom_vjp
def _custom_sin_mul(x: Any, y: Any) -> Any:
    return jnp.sin(x) * y


def _custom_fwd(x: Any, y: Any) -> Any:
    return jnp.sin(x) * y, (x, y)


def _custom_bwd(res: Any, g: Any) -> Any:
    x, y = res
    return g * jnp.cos(x) * y, jnp.sum(g * jnp.sin(x), axis=0)


_custom_sin_mul.defvjp(_custom_fwd, _custom_bwd)
case("custom_vjp_call", lambda x, y: _custom_sin_mul(x, y) ** 2, tup(arr((2, 3)), arr((3,))), "sin-mul",
     modes=("rev",))


# ----------------------------------------------------------------------------- checking machinery


def _engine_arrays(xs: Any) -> tuple[Any, ...]:
    return tuple(jnp.asarray(np.asarray(x, F64), jnp.float64) for x in xs)


def _np_leaves(tree: Any) -> list[np.ndarray]:
    return [np.asarray(leaf, F64) for leaf in tree_leaves(tree)]


def _evaluate(f: Callable[..., Any], args: tuple[np.ndarray, ...]) -> list[np.ndarray]:
    return _np_leaves(f(*_engine_arrays(args)))


def _central_difference(f: Callable[..., Any], args: tuple, tangents: list, h: float) -> list[np.ndarray]:
    plus = _evaluate(f, tuple(a + h * t for a, t in zip(args, tangents)))
    minus = _evaluate(f, tuple(a - h * t for a, t in zip(args, tangents)))
    return [(p - m) / (2 * h) for p, m in zip(plus, minus)]


def _assert_close(actual: list[np.ndarray], expected: list[np.ndarray], rtol: float, atol: float, what: str) -> None:
    assert len(actual) == len(expected), f"{what}: {len(actual)} outputs, expected {len(expected)}"
    for k, (a, e) in enumerate(zip(actual, expected)):
        assert a.shape == e.shape, f"{what}[{k}]: shape {a.shape}, expected {e.shape}"
        assert np.all(np.isfinite(a)), f"{what}[{k}]: non-finite values {a}"
        scale = max(1.0, float(np.max(np.abs(e), initial=0.0)))
        np.testing.assert_allclose(a, e, rtol=rtol, atol=atol * scale, err_msg=what)


def _assert_scalar_close(actual: float, expected: float, scale: float, rtol: float, atol: float, what: str) -> None:
    assert np.isfinite(actual), f"{what}: {actual}"
    assert abs(actual - expected) <= rtol * scale + atol, (
        f"{what}: autodiff {actual!r} vs {expected!r} (scale {scale:.3g}, atol {atol:.3g})")


def _vdot(xs: list[np.ndarray], ys: list[np.ndarray]) -> float:
    return float(sum(np.vdot(x, y) for x, y in zip(xs, ys)))


def check_first_order(f: Callable[..., Any], args: tuple[np.ndarray, ...], rng: np.random.Generator,
                      modes: tuple[str, ...], case: Case, what: str) -> None:
    """f's JVP and VJP at args against central differences along one random direction."""
    xs = _engine_arrays(args)
    tangents = [np.asarray(rng.standard_normal(np.shape(a))) for a in args]
    h = case.eps * max(1.0, *(float(np.max(np.abs(a), initial=0.0)) for a in args))
    numeric = _central_difference(f, args, tangents, h)
    reference = _evaluate(f, args)
    jvp_out = None
    if "fwd" in modes:
        primal, tangent_out = jax.jvp(f, xs, _engine_arrays(tangents))
        _assert_close(_np_leaves(primal), reference, 1e-12, 1e-12, f"{what}: jvp primal output")
        for t in tree_leaves(tangent_out):
            assert t.dtype == F64, f"{what}: jvp tangent of dtype {t.dtype}"
        jvp_out = _np_leaves(tangent_out)
        _assert_close(jvp_out, numeric, case.rtol, case.atol, f"{what}: JVP vs central differences")
    if "rev" in modes:
        primal, pullback = jax.vjp(f, *xs)
        _assert_close(_np_leaves(primal), reference, 1e-12, 1e-12, f"{what}: vjp primal output")
        cts = [np.asarray(rng.standard_normal(r.shape)) for r in reference]
        grads = pullback(tree_unflatten(tree_structure(primal), list(_engine_arrays(cts))))
        assert len(grads) == len(args)
        for k, (g, a) in enumerate(zip(grads, args)):
            assert tuple(g.shape) == np.shape(a), f"{what}: cotangent {k} has shape {g.shape}, input {np.shape(a)}"
            assert g.dtype == F64, f"{what}: cotangent {k} has dtype {g.dtype}"
        grads_np = _np_leaves(grads)
        # <J^T ct, t> from the VJP against <ct, J t> from central differences.
        scale = float(sum(np.sum(np.abs(c) * np.abs(n)) for c, n in zip(cts, numeric)))
        scale += float(sum(np.sum(np.abs(g) * np.abs(t)) for g, t in zip(grads_np, tangents)))
        # The same absolute floor as elementwise (atol per unit of |ct|): the differences'
        # rounding error scales with |f|, not with the derivative, which may be tiny.
        floor = case.atol * float(sum(np.sum(np.abs(c)) for c in cts))
        _assert_scalar_close(_vdot(grads_np, tangents), _vdot(cts, numeric), scale, case.rtol * 2, floor,
                             f"{what}: VJP <J^T ct, t> vs <ct, FD>")
        if jvp_out is not None:  # the two modes agree to rounding
            _assert_scalar_close(_vdot(grads_np, tangents), _vdot(cts, jvp_out), scale, case.mode_rtol,
                                 1e-14 * float(sum(np.sum(np.abs(c)) for c in cts)), f"{what}: VJP vs JVP")


def check_case(case: Case, args: tuple[np.ndarray, ...], seed: int) -> None:
    rng = np.random.default_rng(seed)
    f = case.fn
    check_first_order(f, args, rng, case.modes, case, "order 1")
    # Second order: differentiate the derivative functions themselves, in every mode.
    xs = _engine_arrays(args)
    out = f(*xs)
    for inner in case.modes:
        if inner == "fwd":
            t_in = _engine_arrays([rng.standard_normal(np.shape(a)) for a in args])
            g = lambda *x, t_in=t_in: jax.jvp(f, x, t_in)[1]  # noqa: E731
        else:
            ct_in = tree_unflatten(tree_structure(out),
                                   list(_engine_arrays([rng.standard_normal(np.shape(o)) for o in tree_leaves(out)])))
            g = lambda *x, ct_in=ct_in: jax.vjp(f, *x)[1](ct_in)  # noqa: E731
        check_first_order(g, args, rng, case.modes, case, f"order 2 (derivatives of the {inner}-mode derivative)")


def _primitive_names(f: Callable[..., Any], args: tuple[np.ndarray, ...]) -> set[str]:
    graph = jax.make_graph(f)(*_engine_arrays(args))
    return {eqn.prim.name for eqn in graph.eqns}


def _params(cases: list[Case]) -> list[Any]:
    return [pytest.param(c, id=c.id) for c in cases if not c.xfail]


# ----------------------------------------------------------------------------- the tests


@pytest.mark.parametrize("case", _params(CASES))
@SETTINGS
@given(data=st.data())
def test_derivatives_match_finite_differences(case: Case, data: st.DataObject) -> None:
    args = data.draw(case.args, label="args")
    seed = data.draw(st.integers(0, 2**32 - 1), label="seed")
    assert case.prim in _primitive_names(case.fn, args), f"the function does not use `{case.prim}`"
    check_case(case, args, seed)


@pytest.mark.parametrize(
    "case", [pytest.param(c, id=c.id, marks=pytest.mark.xfail(reason=c.xfail, strict=True)) for c in CASES if c.xfail])
@settings(SETTINGS, phases=(Phase.explicit, Phase.generate))  # a known failure: no time spent shrinking it
@given(data=st.data())
def test_known_failures(case: Case, data: st.DataObject) -> None:
    """Cases whose rules are known to be wrong (strict xfail: fixing the rule makes this fail)."""
    args = data.draw(case.args, label="args")
    seed = data.draw(st.integers(0, 2**32 - 1), label="seed")
    check_case(case, args, seed)


def test_multiply_at_repeated_indices_refuses_the_values_derivative() -> None:
    """x.at[idx].multiply(y) with an element selected twice multiplies it by several entries of y:
    the derivative in y is refused in both modes (formerly a strict xfail: the rule left out the
    other factors and gave a wrong value). The derivative in x, and unique indices, still work."""
    x, y = jnp.ones((4, 5)), jnp.full((4, 5), 2.0)

    def f(x, y):
        return jnp.sum(x.at[_D].multiply(y) ** 2)

    with pytest.raises(DifferentiationError, match=r"cannot be differentiated with respect to y when idx "
                                                   r"selects an element more than once"):
        jax.grad(f, argnums=1)(x, y)
    with pytest.raises(DifferentiationError, match=r"selects an element more than once"):
        jax.jvp(lambda v: x.at[_D].multiply(v), (y,), (y,))
    # rows 1 (three factors of 2), 3 (one), 0 and 2 (none): d/dx sum((x c)^2) = 2 x c^2
    np.testing.assert_allclose(np.asarray(jax.grad(f)(x, y)), np.repeat([[2.0], [128.0], [2.0], [8.0]], 5, axis=1))
    np.testing.assert_allclose(np.asarray(jax.grad(lambda v: jnp.sum(x.at[_U].multiply(v)))(y[:3])), 1.0)


@pytest.mark.parametrize("case", _params(CASES))
@FEW
@given(data=st.data())
def test_check_grads_agrees(case: Case, data: st.DataObject) -> None:
    """engine.test_util.check_grads, second order, on a few inputs per case (a cross-check)."""
    args = data.draw(case.args, label="args")
    tol = max(case.rtol * 5, 1e-5)
    check_grads(case.fn, _engine_arrays(args), order=2, modes=case.modes, atol=tol, rtol=tol,
                eps=None if case.eps == 1e-6 else case.eps)


def _has_rules(prim: P.Primitive) -> bool:
    return prim.vjp is not None or prim.jvp is not None


# Primitives with derivative rules whose derivative is identically zero.
ZERO_DERIVATIVE = {
    "sign": (jnp.sign, arr(SHAPES, -3.0, 3.0)),
    "floor": (jnp.floor, arr(SHAPES, -3.0, 3.0)),
    "ceil": (jnp.ceil, arr(SHAPES, -3.0, 3.0)),
    "round": (jnp.round, arr(SHAPES, -3.0, 3.0)),
    "trunc": (jnp.trunc, arr(SHAPES, -3.0, 3.0)),
    "stop_gradient": (jax.stop_gradient, arr(SHAPES)),
    "det_sign": (lambda a: jnp.linalg.slogdet(a)[0], well_conditioned(3)),
}

# Primitives without derivative rules: their outputs carry no derivative at all.
NO_GRADIENT = {
    "eq": lambda x: (x == 0.5).astype(jnp.float64),
    "ne": lambda x: (x != 0.5).astype(jnp.float64),
    "lt": lambda x: (x < 0.5).astype(jnp.float64),
    "le": lambda x: (x <= 0.5).astype(jnp.float64),
    "gt": lambda x: (x > 0.5).astype(jnp.float64),
    "ge": lambda x: (x >= 0.5).astype(jnp.float64),
    "and": lambda x: jnp.logical_and(x > 0, x < 1).astype(jnp.float64),
    "or": lambda x: jnp.logical_or(x > 0, x < -1).astype(jnp.float64),
    "xor": lambda x: jnp.logical_xor(x > 0, x < 1).astype(jnp.float64),
    "not": lambda x: jnp.logical_not(x > 0).astype(jnp.float64),
    "isfinite": lambda x: jnp.isfinite(x).astype(jnp.float64),
    "isnan": lambda x: jnp.isnan(x).astype(jnp.float64),
    "reduce_and": lambda x: jnp.all(x > 0, axis=-1).astype(jnp.float64),
    "reduce_or": lambda x: jnp.any(x > 0, axis=-1).astype(jnp.float64),
    "argmax": lambda x: jnp.argmax(x).astype(jnp.float64),
    "argmin": lambda x: jnp.argmin(x, axis=-1).astype(jnp.float64),
    "argsort": lambda x: jnp.argsort(x, axis=-1).astype(jnp.float64),
    "floor_divide_int": lambda x: (x.astype(jnp.int64) // 2).astype(jnp.float64),
    "frexp_exponent": lambda x: jnp.frexp(x)[1].astype(jnp.float64),
}


def test_table_covers_every_primitive() -> None:
    """Adding a primitive without a derivative test here fails this test."""
    with_rules = {name for name, prim in P.PRIMITIVES.items() if _has_rules(prim)}
    # stop_gradient's derivative is zero by definition, not that of its value: it is checked by
    # the exact-zero test only; every other primitive with rules has a finite-difference case.
    tested = {c.prim for c in CASES} | set(ZERO_DERIVATIVE)
    assert with_rules - tested == set(), f"primitives with derivative rules but no test case: {with_rules - tested}"
    assert tested - set(P.PRIMITIVES) == set(), f"cases name unknown primitives: {tested - set(P.PRIMITIVES)}"
    assert set(ZERO_DERIVATIVE) <= with_rules
    without = set(P.PRIMITIVES) - with_rules
    assert without - set(NO_GRADIENT) == set(), (
        f"primitives without derivative rules that are not checked to carry no gradient: {without - set(NO_GRADIENT)}")
    assert set(NO_GRADIENT) <= without, f"listed as rule-less but have rules: {set(NO_GRADIENT) - without}"


def _assert_exact_zero(tree: Any, what: str) -> None:
    for leaf in _np_leaves(tree):
        assert np.all(leaf == 0), f"{what}: expected exact zeros, got {leaf}"


@pytest.mark.parametrize("name", sorted(ZERO_DERIVATIVE))
@settings(SETTINGS, max_examples=8)
@given(data=st.data())
def test_piecewise_constant_derivative_is_exactly_zero(name: str, data: st.DataObject) -> None:
    fn, strategy = ZERO_DERIVATIVE[name]
    # Integers included: at the jumps the convention is a zero derivative too (as in JAX).
    x = data.draw(strategy | strategy.map(np.round), label="x")
    (xe,) = _engine_arrays((x,))
    assert name in _primitive_names(fn, (x,))
    t = _engine_arrays((np.ones_like(x),))
    _assert_exact_zero(jax.jvp(fn, (xe,), t)[1], "jvp")
    _assert_exact_zero(jax.vjp(fn, xe)[1](jnp.ones_like(fn(xe))), "vjp")
    _assert_exact_zero(jax.grad(lambda v: jnp.sum(fn(v)))(xe), "grad")
    _assert_exact_zero(jax.grad(lambda v: jnp.sum(jax.grad(lambda w: jnp.sum(fn(w) * w))(v)))(xe), "second")
    # Treated as a constant: d/dx [x * fn(x)] = fn(x) exactly, in both modes and at second order.
    prod = lambda v: v * fn(v)  # noqa: E731
    expect = np.broadcast_to(np.asarray(fn(xe)), np.shape(x))
    np.testing.assert_array_equal(np.asarray(jax.jvp(prod, (xe,), t)[1]), expect)
    np.testing.assert_array_equal(np.asarray(jax.vjp(prod, xe)[1](jnp.ones_like(prod(xe)))[0]), expect)
    _assert_exact_zero(jax.jvp(lambda v: jax.jvp(prod, (v,), t)[1], (xe,), t)[1], "fwd over fwd")
    _assert_exact_zero(jax.grad(lambda v: jnp.sum(jax.grad(lambda w: jnp.sum(prod(w)))(v)))(xe), "rev over rev")


@pytest.mark.parametrize("name", sorted(NO_GRADIENT))
@settings(SETTINGS, max_examples=5)
@given(x=arr((2, 3), -3.0, 3.0))
def test_no_gradient_through_rule_less_primitives(name: str, x: np.ndarray) -> None:
    fn = NO_GRADIENT[name]
    (xe,) = _engine_arrays((x,))
    assert name in _primitive_names(fn, (x,))
    out = fn(xe)
    (t,) = _engine_arrays((np.ones_like(x),))
    _assert_exact_zero(jax.jvp(fn, (xe,), (t,))[1], "jvp")
    _assert_exact_zero(jax.vjp(fn, xe)[1](jnp.ones_like(out)), "vjp")
    _assert_exact_zero(jax.grad(lambda v: jnp.sum(fn(v)))(xe), "grad")
    # Mixed with a differentiable path, only that path contributes.
    mixed = lambda v: jnp.sum(jnp.sin(v) * fn(v))  # noqa: E731
    if np.shape(out) == x.shape:
        np.testing.assert_allclose(np.asarray(jax.grad(mixed)(xe)), np.cos(x) * np.asarray(out), rtol=1e-14)
    _assert_exact_zero(jax.hessian(lambda v: jnp.sum(fn(v)))(xe), "hessian")


def test_custom_vjp_forward_mode_raises() -> None:
    x, y = _engine_arrays((np.ones((2, 3)), np.ones(3)))
    with pytest.raises(DifferentiationError):
        jax.jvp(_custom_sin_mul, (x, y), (x, y))


def test_custom_vjp_uses_its_own_rule() -> None:
    """The custom rule is what reverse mode runs (here a deliberately different one)."""
    @jax.custom_vjp
    def f(x: Any) -> Any:
        return jnp.sin(x)

    f.defvjp(lambda x: (jnp.sin(x), x), lambda x, g: (g * 2.0 * x,))
    x = jnp.asarray(np.array([0.3, -1.2]), jnp.float64)
    np.testing.assert_allclose(np.asarray(jax.grad(lambda v: jnp.sum(f(v)))(x)), 2.0 * np.asarray(x))
