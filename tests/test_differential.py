"""Differential test: random programs over the whole engine.numpy surface, jit against eager
evaluation and first and second derivatives against finite differences.

Every program maps a 3x3 float64 matrix x to a scalar, sum(W * node), where node is a random tree
of the operations in OPS below (leaves: x itself and a constant matrix). A binary node may take
the same child twice, which produces the cancelling terms ((a - a) ** 2, a * 0 + b) that once
crashed the optimiser's canonical sums. For each program, at a random point and direction v:

- jit(f)(x) equals f(x), and jit(grad f)(x) equals grad f(x);
- <grad f(x), v> equals the central difference (f(x + h v) - f(x - h v)) / 2h and the forward-mode
  derivative jvp(f)(x; v) (the records' JVP rules, where grad uses their VJP rules);
- the Hessian-vector product jvp(grad f)(x; v), eager and jitted, equals grad of jvp(f)(x; v)
  (reverse over forward) and the central difference of grad f along v.

OPS is a table of operations by their public path (`"sort"`, `"linalg.svd"`, `"fft.rfft"`,
`"scipy.special.gammaln"`); an entry whose function the engine does not have is skipped, so the
table can name functions before they exist. Each entry feeds its function inputs in its domain
(log gets x*x + 0.5, arcsin gets 0.9 tanh(x)) and brings the result back to a 3x3 matrix.
`test_every_function_of_the_api_is_in_the_table` keeps the table in step with the API.

Operations marked `kinked` are not differentiable everywhere (abs, floor, sort, maximum, ...):
a mismatch in a program using one is checked again at a nearby point, since a kink between
x - h v and x + h v spoils the finite difference there and nowhere else; a wrong derivative
fails at both points.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

import engine
import engine.numpy as jnp
import engine.scipy.special  # noqa: F401 - makes engine.scipy.special reachable by path
import engine.scipy.stats  # noqa: F401 - and engine.scipy.stats

pytestmark = pytest.mark.usefixtures("x64")  # every test computes in float64 (tests/conftest.py)

SHAPE = (3, 3)
PROGRAMS = 200
SEED = 20261202
TIME_BUDGET_SECONDS = 25.0  # the generator stops early rather than run past this

# ----------------------------------------------------------------------------- the operation table


@dataclasses.dataclass(frozen=True)
class Op:
    """One operation: `path` names the function under test (resolved from engine.numpy, or from
    engine for paths starting "scipy."), `apply(f, *children)` uses it on 3x3 inputs and returns
    a 3x3 float array; `arity` is the number of children; `kinked`: not differentiable everywhere."""

    path: str
    arity: int
    apply: Callable[..., Any]
    kinked: bool = False


def _pos(x: Any) -> Any:  # a positive input, away from 0
    return x * x + 0.5


def _unit(x: Any) -> Any:  # an input inside (-0.9, 0.9)
    return 0.9 * jnp.tanh(x)


def _small(x: Any) -> Any:  # an input inside (-1, 1), for functions that grow fast
    return jnp.tanh(x)


def _spd(x: Any) -> Any:  # a symmetric positive definite matrix, with distinct eigenvalues even for x = 0
    return x @ x.T + jnp.diag(jnp.array([1.0, 2.5, 4.0]))


def _distinct(x: Any) -> Any:  # distinct singular values even for x = 0 (repeated ones have no derivative)
    return x + jnp.diag(jnp.array([1.0, 2.5, 4.0]))


def _well_conditioned(x: Any) -> Any:
    return 0.3 * x + 3.0 * jnp.eye(3)


def _row(v: Any) -> Any:  # a vector of 3 broadcast to the 3x3 shape
    return jnp.broadcast_to(v, SHAPE)


def _u(path: str, apply: Callable[..., Any] | None = None, kinked: bool = False) -> Op:
    return Op(path, 1, apply or (lambda f, a: f(a)), kinked)


def _b(path: str, apply: Callable[..., Any] | None = None, kinked: bool = False) -> Op:
    return Op(path, 2, apply or (lambda f, a, b: f(a, b)), kinked)


def _cube(x: Any) -> Any:  # a 3x3x3 array from a 3x3 one, for 3-D functions
    return jnp.stack([x, 2 * x, x * x], axis=2)


OPS: list[Op] = [
    # arithmetic, including integer powers (the optimiser's canonical sums)
    _b("add"), _b("subtract"), _b("multiply"), _b("divide", lambda f, a, b: f(a, 1 + b * b)),
    _b("true_divide", lambda f, a, b: f(a, 2 + jnp.sin(b))),
    _u("negative"), _u("positive"), _u("square"), _u("reciprocal", lambda f, a: f(1 + a * a)),
    _u("power", lambda f, a: f(a, 2)), _u("power", lambda f, a: f(a, 3)),
    _b("power", lambda f, a, b: f(_pos(a), _small(b))), _b("float_power", lambda f, a, b: f(_pos(a), _small(b))),
    _u("sqrt", lambda f, a: f(_pos(a))),
    _u("abs", kinked=True), _u("absolute", kinked=True), _u("fabs", kinked=True),
    _u("sign", lambda f, a: f(a) * a, kinked=True),
    _b("maximum", kinked=True), _b("minimum", kinked=True), _b("fmax", kinked=True), _b("fmin", kinked=True),
    _u("clip", lambda f, a: f(a, -0.5, 0.5), kinked=True),
    # steps, used in continuous combinations (a jump between x - h v and x + h v would spoil the
    # finite difference): x mod c + c floor(x / c) == x, sin(pi floor(x)) == 0, m 2**e == x
    _b("mod", lambda f, a, b: f(a, 1.7) + 1.7 * jnp.floor(a / 1.7) + b, kinked=True),
    _b("remainder", lambda f, a, b: f(a, -1.3) - 1.3 * jnp.floor(a / -1.3) + b, kinked=True),
    _u("fmod", lambda f, a: f(a, 0.8) + 0.8 * jnp.trunc(a / 0.8), kinked=True),
    _u("floor_divide", lambda f, a: 0.7 * f(a, 0.7) + jnp.mod(a, 0.7), kinked=True),
    _u("floor", lambda f, a: jnp.sin(np.pi * f(a)) + a, kinked=True),
    _u("ceil", lambda f, a: jnp.sin(np.pi * f(a)) * a, kinked=True),
    _u("round", lambda f, a: jnp.sin(10 * np.pi * f(a, 1)) + a, kinked=True),
    _u("around", lambda f, a: jnp.sin(np.pi * f(a)) + a, kinked=True),
    _u("trunc", lambda f, a: jnp.sin(np.pi * f(a)) - a, kinked=True),
    # transcendental
    _u("exp", lambda f, a: f(_small(a))), _u("expm1", lambda f, a: f(_small(a))),
    _u("exp2", lambda f, a: f(_small(a))), _u("log", lambda f, a: f(_pos(a))),
    _u("log1p", lambda f, a: f(a * a)), _u("log2", lambda f, a: f(_pos(a))), _u("log10", lambda f, a: f(_pos(a))),
    _u("sin"), _u("cos"), _u("tan", lambda f, a: f(_unit(a))), _u("arcsin", lambda f, a: f(_unit(a))),
    _u("arccos", lambda f, a: f(_unit(a))), _u("arctan"), _b("arctan2", lambda f, a, b: f(a, 2 + b * b)),
    _u("sinh", lambda f, a: f(_small(a))), _u("cosh", lambda f, a: f(_small(a))), _u("tanh"),
    _u("arcsinh"), _u("arccosh", lambda f, a: f(1.5 + a * a)), _u("arctanh", lambda f, a: f(_unit(a))),
    _b("hypot"), _b("logaddexp"), _b("logaddexp2"), _u("erf"), _u("sinc"),
    _u("deg2rad"), _u("rad2deg"), _u("radians"), _u("degrees"),
    _u("nan_to_num"),  # on finite numbers: the identity
    _u("frexp", lambda f, a: (lambda m, e: m * 2.0 ** e)(*f(a)), kinked=True),
    # selection and comparison: the branches meet where the condition changes, so the result is
    # continuous (a jump would spoil the finite differences of every program using it)
    _b("where", lambda f, a, b: f(a > b, a, b), kinked=True),
    _b("select", lambda f, a, b: f([a > 0, b > 0], [a * b, 2 * a * b], -a * b), kinked=True),
    _b("isclose", lambda f, a, b: jnp.where(f(a, b, rtol=0.5), a + b, b + a)),
    _b("allclose", lambda f, a, b: jnp.where(f(a, a), a, b)),
    _b("equal", lambda f, a, b: jnp.where(f(a, a), a, b)),
    _b("less", lambda f, a, b: jnp.where(f(a, b), a, b), kinked=True),
    _b("greater_equal", lambda f, a, b: jnp.where(f(a, b), a, b), kinked=True),
    _u("isnan", lambda f, a: jnp.where(f(a), 0.0, a)), _u("isfinite", lambda f, a: jnp.where(f(a), a, 0.0)),
    _u("isinf", lambda f, a: jnp.where(f(a), 0.0, a)),
    _b("logical_and", lambda f, a, b: jnp.where(f(a > 0, b > 0), a * b, -a * b), kinked=True),
    _b("logical_or", lambda f, a, b: jnp.where(f(a > 0, b > 0), a * b, -a * b), kinked=True),
    _b("logical_xor", lambda f, a, b: jnp.where(f(a > 0, b > 0), a * b, -a * b), kinked=True),
    _u("logical_not", lambda f, a: jnp.where(f(a > 0), -a, a), kinked=True),
    # reductions, brought back to the matrix's shape
    _u("sum", lambda f, a: a * f(a, axis=0)), _u("sum", lambda f, a: a - f(a, axis=1, keepdims=True) / 3),
    _u("mean", lambda f, a: a - f(a)), _u("prod", lambda f, a: a * f(_small(a), axis=1, keepdims=True)),
    _u("max", lambda f, a: a * f(a, axis=0), kinked=True), _u("min", lambda f, a: a - f(a), kinked=True),
    _u("amax", lambda f, a: a + f(a, axis=1, keepdims=True), kinked=True),
    _u("amin", lambda f, a: a * f(a, axis=0), kinked=True),
    _u("std", lambda f, a: a * f(a, axis=0)), _u("var", lambda f, a: a + f(a, axis=1, keepdims=True)),
    _u("logsumexp", lambda f, a: a - f(a, axis=1, keepdims=True)), _u("cumsum", lambda f, a: f(a, axis=1)),
    _u("cumsum", lambda f, a: jnp.reshape(f(a), SHAPE)),
    _u("argmax", lambda f, a: a * jnp.take_along_axis(a, f(a, axis=1)[:, None], axis=1), kinked=True),
    _u("argmin", lambda f, a: a * jnp.reshape(jnp.ravel(a)[f(a)], ()), kinked=True),
    _u("all", lambda f, a: jnp.where(f(a > -10), a, 0.0)), _u("any", lambda f, a: jnp.where(f(a > 10), 0.0, a)),
    # products and contractions
    _b("matmul"), _b("dot"), _b("tensordot", lambda f, a, b: f(a, b, axes=1)),
    _b("einsum", lambda f, a, b: f("ij,kj->ik", a, b)), _b("einsum", lambda f, a, b: f("...j,...j->...", a, b) * a),
    _b("einsum", lambda f, a, b: f(a, [0, 1], b, [1, 2], [2, 0])), _u("einsum", lambda f, a: f("ii->i", a) * a),
    _b("inner"), _b("outer", lambda f, a, b: f(a[0], b[1])), _b("vdot", lambda f, a, b: f(a, b) * a),
    _b("kron", lambda f, a, b: f(a[:1, :], b[:, :1])),
    _b("cross", lambda f, a, b: f(a, b)),
    _u("trace", lambda f, a: f(a) * a), _u("diagonal", lambda f, a: a + f(a)), _u("diag", lambda f, a: f(f(a)) + a),
    # shapes and construction
    _u("transpose"), _u("swapaxes", lambda f, a: f(a, 0, 1)), _u("moveaxis", lambda f, a: f(a, 0, 1)),
    _u("rollaxis", lambda f, a: f(a, 1)),
    _u("reshape", lambda f, a: f(f(a, (9,))[::-1], SHAPE)), _u("ravel", lambda f, a: jnp.reshape(f(a.T), SHAPE)),
    _u("flip", lambda f, a: f(a, 0)), _u("fliplr"), _u("flipud"), _u("rot90"), _u("roll", lambda f, a: f(a, 1, axis=0)),
    _u("tril", lambda f, a: f(a) + a), _u("triu", lambda f, a: f(a, 1) + a),
    _u("diff", lambda f, a: jnp.concatenate([a[:, :1], f(a, axis=1)], axis=1)),
    _b("append", lambda f, a, b: f(a, b, axis=0)[2:5]),
    _b("concatenate", lambda f, a, b: f([a, b], axis=1)[:, 1:4]), _b("stack", lambda f, a, b: f([a, b])[1] * a),
    _b("hstack", lambda f, a, b: f([a, b])[:, 2:5]), _b("vstack", lambda f, a, b: f([a, b])[1:4]),
    _b("column_stack", lambda f, a, b: f([a[0], b[1], a[2]])), _b("row_stack", lambda f, a, b: f([a, b])[2:5]),
    _u("split", lambda f, a: jnp.concatenate(f(a, 3, axis=1)[::-1], axis=1)),
    _u("array_split", lambda f, a: jnp.concatenate(f(a, 2, axis=0)[::-1], axis=0)),
    _u("hsplit", lambda f, a: jnp.hstack(f(a, 3)[::-1])), _u("vsplit", lambda f, a: jnp.vstack(f(a, 3)[::-1])),
    _u("dsplit", lambda f, a: f(_cube(a), 3)[2][..., 0]),
    _u("atleast_1d"), _u("atleast_2d"), _u("atleast_3d", lambda f, a: f(a)[..., 0]),
    _u("expand_dims", lambda f, a: f(a, 0)[0]), _u("squeeze", lambda f, a: f(a[None])),
    _u("broadcast_to", lambda f, a: f(a[1], SHAPE) * a), _b("broadcast_arrays", lambda f, a, b: f(a[0], b)[0] * b),
    _u("tile", lambda f, a: f(a, (2, 1))[1:4]), _u("repeat", lambda f, a: f(a, 2, axis=0)[1:4]),
    _u("take", lambda f, a: f(a, np.array([2, 0, 1]), axis=0)),
    _u("take_along_axis", lambda f, a: f(a, jnp.argsort(a, axis=1), axis=1), kinked=True),
    _u("pad", lambda f, a: f(a, 1)[1:4, 0:3]), _u("pad", lambda f, a: f(a, 1, mode="edge")[0:3, 1:4]),
    _u("pad", lambda f, a: f(a, 2, mode="reflect")[0:3, 2:5]), _u("pad", lambda f, a: f(a, 1, mode="wrap")[1:4, 2:5]),
    _u("linspace", lambda f, a: f(a[:, 0], a[:, 1], 3, axis=1)),
    _u("zeros_like", lambda f, a: f(a) + a), _u("ones_like", lambda f, a: f(a) * a),
    _u("full_like", lambda f, a: f(a, 2.0) * a),
    # sorting and selection
    _u("sort", lambda f, a: f(a, axis=1), kinked=True), _u("sort", lambda f, a: f(a, axis=0), kinked=True),
    _u("msort", kinked=True), _u("argsort", lambda f, a: jnp.take_along_axis(a, f(a, axis=0), axis=0), kinked=True),
    _u("partition", lambda f, a: jnp.sort(f(a, 1, axis=1), axis=1), kinked=True),
    _u("argpartition", lambda f, a: jnp.sort(jnp.take_along_axis(a, f(a, 1, axis=1), axis=1), axis=1), kinked=True),
    # complex parts (through the FFT)
    _u("real", lambda f, a: f(jnp.fft.fft(a))), _u("imag", lambda f, a: f(jnp.fft.fft(a))),
    _u("conj", lambda f, a: jnp.real(f(jnp.fft.fft(a)) * jnp.fft.fft(a))),
    _u("conjugate", lambda f, a: jnp.imag(f(jnp.fft.fft(a)))),
    # linear algebra
    _u("linalg.inv", lambda f, a: f(_well_conditioned(a))),
    _b("linalg.solve", lambda f, a, b: f(_well_conditioned(a), b)),
    _u("linalg.det", lambda f, a: f(_well_conditioned(a)) * a),
    _u("linalg.slogdet", lambda f, a: f(_well_conditioned(a))[1] * a),
    _u("linalg.cholesky", lambda f, a: f(_spd(a))),
    _u("linalg.norm", lambda f, a: f(a) * a), _u("linalg.norm", lambda f, a: f(a, axis=1, keepdims=True) + a),
    _u("linalg.norm", lambda f, a: f(_distinct(a), "nuc") * a),
    _u("linalg.norm", lambda f, a: f(_distinct(a), 2) + a),
    _u("linalg.norm", lambda f, a: f(_well_conditioned(a), -2) * a),
    _u("linalg.svd", lambda f, a: f(_distinct(a), compute_uv=False) * a),
    _u("linalg.svd", lambda f, a: (lambda u, s, vt: (u * s) @ vt + s)(*f(_distinct(a), full_matrices=False))),
    _u("linalg.eigh", lambda f, a: (lambda w, v: (v * w) @ v.T + w)(*f(_spd(a)))),
    _u("linalg.eigvalsh", lambda f, a: f(_spd(a)) * a),
    _u("linalg.eig", lambda f, a: jnp.sum(jnp.real(f(_spd(a))[0]) ** 2) * a),
    _u("linalg.eigvals", lambda f, a: jnp.sum(jnp.real(f(_spd(a))) ** 2) * a),
    _u("linalg.pinv", lambda f, a: f(_well_conditioned(a))),
    _u("linalg.qr", lambda f, a: (lambda q, r: q @ r + r)(*f(_well_conditioned(a)))),
    _b("linalg.lstsq", lambda f, a, b: f(_well_conditioned(a), b)[0]),
    _u("linalg.matrix_power", lambda f, a: f(0.5 * a, 3)),
    # FFT
    _u("fft.fft", lambda f, a: jnp.real(f(a)) + jnp.imag(f(a, axis=0))),
    _u("fft.ifft", lambda f, a: jnp.real(f(a)) - jnp.imag(f(a))),
    _u("fft.rfft", lambda f, a: jnp.real(f(a, n=4)) + jnp.imag(f(a, n=5))),
    _u("fft.irfft", lambda f, a: f(jnp.fft.rfft(a), n=3)), _u("fft.irfft", lambda f, a: f(a)[:, :3]),
    _u("fft.fft2", lambda f, a: jnp.real(f(a))), _u("fft.ifft2", lambda f, a: jnp.imag(f(a))),
    _u("fft.fftn", lambda f, a: jnp.imag(f(a))), _u("fft.ifftn", lambda f, a: jnp.real(f(a))),
    _u("fft.rfft2", lambda f, a: jnp.real(f(a, s=(3, 4)))[:, :3]), _u("fft.irfft2", lambda f, a: f(a, s=(3, 3))),
    _u("fft.rfftn", lambda f, a: jnp.imag(f(a, s=(3, 4)))[:, :3]), _u("fft.irfftn", lambda f, a: f(a, s=(3, 3))),
    _u("fft.fftshift"), _u("fft.ifftshift", lambda f, a: f(a, axes=0)),
    # special functions and log-densities
    _u("scipy.special.gammaln", lambda f, a: f(_pos(a))), _u("scipy.special.digamma", lambda f, a: f(_pos(a))),
    _u("scipy.special.psi", lambda f, a: f(_pos(a))),
    _u("scipy.special.polygamma", lambda f, a: f(1, _pos(a))), _u("scipy.special.gamma", lambda f, a: f(_pos(a))),
    _b("scipy.special.beta", lambda f, a, b: f(_pos(a), _pos(b))),
    _b("scipy.special.betaln", lambda f, a, b: f(_pos(a), _pos(b))),
    _u("scipy.special.erf"), _u("scipy.special.erfc"), _u("scipy.special.erfinv", lambda f, a: f(_unit(a))),
    _u("scipy.special.erfcinv", lambda f, a: f(1 + _unit(a))),
    _b("scipy.special.xlogy", lambda f, a, b: f(a, _pos(b))), _b("scipy.special.xlog1py", lambda f, a, b: f(a, b * b)),
    _u("scipy.special.entr", lambda f, a: f(_pos(a))),
    _u("scipy.special.i0"), _u("scipy.special.i1"), _u("scipy.special.i0e", kinked=True),
    _u("scipy.special.i1e", kinked=True),
    _u("scipy.special.ndtr"), _u("scipy.special.ndtri", lambda f, a: f(0.5 + 0.4 * jnp.tanh(a))),
    _u("scipy.special.log_ndtr"), _u("scipy.special.expit"),
    _u("scipy.special.logit", lambda f, a: f(0.5 + 0.4 * jnp.tanh(a))),
    _u("scipy.special.logsumexp", lambda f, a: a - f(a, axis=0)),
    _b("scipy.special.gammainc", lambda f, a, b: f(2.0, _pos(b)) + a),
    _b("scipy.special.gammaincc", lambda f, a, b: f(1.5, _pos(b)) * a),
    _u("scipy.special.multigammaln", lambda f, a: f(2.0 + a * a, 2)),
    _b("scipy.stats.norm.logpdf", lambda f, a, b: f(a, b, 1.0 + b * b)),
    _b("scipy.stats.t.logpdf", lambda f, a, b: f(a, 3.0 + b * b)),
    _b("scipy.stats.gamma.logpdf", lambda f, a, b: f(_pos(a), _pos(b))),
    _b("scipy.stats.beta.logpdf", lambda f, a, b: f(0.5 + 0.4 * jnp.tanh(a), _pos(b), 2.0)),
    _u("scipy.stats.poisson.logpmf", lambda f, a: f(3.0, _pos(a))),
    _u("scipy.stats.poisson.pmf", lambda f, a: f(2.0, _pos(a))),
    _b("scipy.stats.multivariate_normal.logpdf", lambda f, a, b: f(a, b[0], _spd(b)) * a),
    _b("scipy.stats.multivariate_normal.pdf", lambda f, a, b: f(_small(a), b[0] * 0.1, _spd(b)) * a),
    _b("scipy.stats.norm.pdf", lambda f, a, b: f(a, b, 1.0 + b * b)), _u("scipy.stats.norm.cdf"),
    _u("scipy.stats.norm.logcdf"), _u("scipy.stats.norm.ppf", lambda f, a: f(0.5 + 0.4 * jnp.tanh(a), 1.0, 2.0)),
    _b("scipy.stats.t.pdf", lambda f, a, b: f(a, 3.0 + b * b)),
    _b("scipy.stats.gamma.pdf", lambda f, a, b: f(_pos(a), _pos(b))),
    _b("scipy.stats.beta.pdf", lambda f, a, b: f(0.5 + 0.4 * jnp.tanh(a), _pos(b), 2.0)),
]

# Functions of engine.numpy that the programs leave out, and why.
NOT_IN_PROGRAMS = {
    # conversion and introspection
    "array", "asarray", "ndim", "shape", "size",
    # a derivative of zero by definition, which finite differences cannot agree with
    "stop_gradient",
    # constant arrays that take no input
    "zeros", "ones", "empty", "full", "eye", "identity", "arange",
    # results whose shape depends on the values: defined on concrete arrays only, never traced
    "nonzero", "argwhere", "flatnonzero",
    # comparisons and logical operations not listed above: the same primitives as those listed
    "not_equal", "less_equal", "greater",
}

# ----------------------------------------------------------------------------- programs


def _squash(y: Any) -> Any:
    """y where |y| is small, bounded by 50 smoothly: nested determinants and powers otherwise grow
    past where a finite difference means anything."""
    return y / jnp.sqrt(1 + (y / 50) ** 2)


def _resolve(path: str) -> Callable[..., Any] | None:
    obj: Any = engine if path.startswith("scipy.") else jnp
    for part in path.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            return None
    return obj


def available_ops() -> list[tuple[Op, Callable[..., Any]]]:
    return [(op, fn) for op in OPS if (fn := _resolve(op.path)) is not None]


def random_program(rng: np.random.Generator, ops: list[tuple[Op, Callable[..., Any]]], depth: int) -> Any:
    """A tree: ("x",), ("const", matrix) or (op index, child, ...)."""
    if depth == 0 or rng.random() < 0.15:
        return ("x",) if rng.random() < 0.8 else ("const", rng.standard_normal(SHAPE))
    k = int(rng.integers(len(ops)))
    child = random_program(rng, ops, depth - 1)
    if ops[k][0].arity == 1:
        return (k, child)
    other = child if rng.random() < 0.25 else random_program(rng, ops, depth - 1)  # a - a, a * a, ...
    return (k, child, other)


def describe(tree: Any, ops: list[tuple[Op, Callable[..., Any]]]) -> str:
    if tree[0] == "x":
        return "x"
    if tree[0] == "const":
        return "C"
    return f"{ops[tree[0]][0].path}({', '.join(describe(c, ops) for c in tree[1:])})"


def uses_kinked(tree: Any, ops: list[tuple[Op, Callable[..., Any]]]) -> bool:
    if tree[0] in ("x", "const"):
        return False
    return ops[tree[0]][0].kinked or any(uses_kinked(c, ops) for c in tree[1:])


def build(tree: Any, ops: list[tuple[Op, Callable[..., Any]]], weights: np.ndarray) -> Callable[[Any], Any]:
    def node(t: Any, x: Any) -> Any:
        if t[0] == "x":
            return x
        if t[0] == "const":
            return jnp.asarray(t[1])
        op, fn = ops[t[0]]
        out = op.apply(fn, *[node(c, x) for c in t[1:]])
        assert tuple(out.shape) == SHAPE, f"{op.path} gave shape {out.shape}"
        return _squash(out)

    return lambda x: jnp.sum(node(tree, x) * weights)


# ----------------------------------------------------------------------------- checks

STEP = 1e-5
JIT_RTOL = 1e-8
FD_RTOL = 2e-5


def _close(actual: Any, expected: Any, rtol: float) -> bool:
    actual, expected = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
    scale = 1.0 + np.max(np.abs(expected), initial=0.0)
    return bool(np.all(np.abs(actual - expected) <= rtol * scale))


def discrepancies(f: Callable[[Any], Any], x: np.ndarray, v: np.ndarray) -> list[str]:
    """What differs at x along v (empty when everything agrees). Where f, its gradient or its
    Hessian-vector product is not finite, the checks of what follows from it are skipped."""
    value = float(f(x))
    if not np.isfinite(value):
        return []
    found = []
    if not _close(engine.jit(f)(x), value, JIT_RTOL):
        found.append(f"jit value {float(engine.jit(f)(x))!r} != eager {value!r}")
    grad_f = engine.grad(f)
    g = np.asarray(grad_f(x))
    if not np.all(np.isfinite(g)):
        return found
    if not _close(engine.jit(grad_f)(x), g, JIT_RTOL):
        found.append("jit(grad) != grad")
    fd1 = (float(f(x + STEP * v)) - float(f(x - STEP * v))) / (2 * STEP)
    if not _close(np.vdot(g, v), fd1, FD_RTOL):
        found.append(f"<grad, v> = {np.vdot(g, v)!r} but the finite difference is {fd1!r}")

    def directional(y: Any) -> Any:  # forward mode: the records' JVP rules, not their VJP rules
        return engine.jvp(f, (y,), (jnp.asarray(v),))[1]

    forward = float(directional(x))
    # Where a zero tangent meets an infinite derivative (sqrt at 0 behind a where), forward mode
    # gives 0 * inf = NaN and reverse mode does not, in JAX too: only finite results are compared.
    if np.isfinite(forward) and not _close(forward, np.vdot(g, v), JIT_RTOL):
        found.append(f"forward mode gives {forward!r} but <grad, v> = {np.vdot(g, v)!r}")

    def hvp(y: Any) -> Any:
        return engine.jvp(grad_f, (y,), (jnp.asarray(v),))[1]

    hv = np.asarray(hvp(x))
    if not np.all(np.isfinite(hv)):
        return found
    if not _close(engine.jit(hvp)(x), hv, JIT_RTOL):
        found.append("jit(Hessian-vector product) != eager")
    reverse_over_forward = np.asarray(engine.grad(directional)(x))
    if np.all(np.isfinite(reverse_over_forward)) and not _close(reverse_over_forward, hv, JIT_RTOL * 100):
        found.append("reverse over forward mode != forward over reverse mode (the Hessian-vector product)")
    fd2 = (np.asarray(grad_f(x + STEP * v)) - np.asarray(grad_f(x - STEP * v))) / (2 * STEP)
    if np.all(np.isfinite(fd2)) and not _close(hv, fd2, 50 * FD_RTOL):
        found.append(f"Hessian-vector product differs from the finite difference of grad by "
                     f"{np.max(np.abs(hv - fd2)):.3g}")
    return found


def check_program(tree: Any, ops: list[tuple[Op, Callable[..., Any]]], rng: np.random.Generator) -> list[str]:
    weights = rng.standard_normal(SHAPE)
    f = build(tree, ops, weights)
    x = rng.standard_normal(SHAPE)
    v = rng.standard_normal(SHAPE)
    found = discrepancies(f, x, v)
    if found and uses_kinked(tree, ops):
        # A kink near x spoils the finite difference and can flip a rounding-sensitive choice
        # (floor, a comparison) between jit and eager: look again a little way off.
        found = discrepancies(f, x + 1e-2 * rng.standard_normal(SHAPE), v)
    return found


def test_the_table_resolves_the_core_api() -> None:
    missing = [op.path for op in OPS if "." not in op.path and op.path not in _LATER and _resolve(op.path) is None]
    assert not missing, f"engine.numpy lacks {missing}"


# Names of the table that other parts of issue 15 add; the programs use them once they exist.
_LATER = {"sort", "argsort", "msort", "partition", "argpartition", "take_along_axis", "select", "pad", "roll",
          "rot90", "fliplr", "flipud", "tril", "triu", "diff", "append", "array_split", "hsplit", "vsplit",
          "dsplit", "column_stack", "row_stack", "atleast_3d", "kron", "cross", "rollaxis", "real", "imag",
          "conj", "conjugate"}


def _is_function(module: Any, name: str) -> bool:
    """A public function (not a class, a dtype or a module) of a module."""
    obj = getattr(module, name)
    return not name.startswith("_") and callable(obj) and not isinstance(obj, type) and hasattr(obj, "__module__")


def test_every_function_of_the_api_is_in_the_table() -> None:
    """A function added to engine.numpy (its linalg and fft modules), engine.scipy.special or a law of
    engine.scipy.stats joins OPS or NOT_IN_PROGRAMS."""
    in_table = {op.path for op in OPS}
    public = {name for name in dir(jnp) if _is_function(jnp, name)}
    for module in ("linalg", "fft"):
        sub = getattr(jnp, module, None)
        if sub is not None:
            public |= {f"{module}.{name}" for name in dir(sub)
                       if _is_function(sub, name) and getattr(sub, name).__module__ == sub.__name__}
    special = getattr(getattr(engine, "scipy", None), "special", None)
    if special is not None:
        public |= {f"scipy.special.{name}" for name in dir(special)
                   if _is_function(special, name) and getattr(special, name).__module__.startswith("engine.scipy")}
    stats = getattr(getattr(engine, "scipy", None), "stats", None)
    for law in dir(stats) if stats is not None else []:
        module = getattr(stats, law)
        if not law.startswith("_") and isinstance(module, type(stats)):
            public |= {f"scipy.stats.{law}.{name}" for name in dir(module)
                       if _is_function(module, name) and getattr(module, name).__module__.startswith("engine.scipy")}
    missing = sorted(public - in_table - NOT_IN_PROGRAMS)
    assert not missing, f"add these to OPS (or NOT_IN_PROGRAMS, with the reason): {missing}"


@pytest.mark.slow
def test_random_programs_agree_under_jit_and_with_finite_differences() -> None:
    ops = available_ops()
    rng = np.random.default_rng(SEED)
    start = time.monotonic()
    failures, checked = [], 0
    while checked < PROGRAMS and time.monotonic() - start < TIME_BUDGET_SECONDS:
        tree = random_program(rng, ops, depth=3)
        found = check_program(tree, ops, rng)
        checked += 1
        failures += [f"{describe(tree, ops)}: {problem}" for problem in found]
    assert checked >= PROGRAMS // 4, f"only {checked} programs ran within the time budget"
    assert not failures, "\n".join(failures)


def test_cancelling_terms_compile(  # the optimiser's canonical sums once crashed on a zero polynomial
) -> None:
    programs = [
        lambda x: (x - x) ** 2,
        lambda x: (x - x) ** 3 + x,
        lambda x: jnp.sin(x) * (x - x) + x * x,
        lambda x: (x * x - x * x) ** 2 * x,
        lambda x: ((x + 1) - (x + 1)) * ((x + 2) - (x + 2)) + jnp.exp(x * (x - x)),
        lambda x: jnp.sum((jnp.ones(3) * x - x) ** 2),
    ]
    for f in programs:
        for g in (f, engine.grad(f), engine.grad(engine.grad(f))):
            assert float(engine.jit(g)(1.5)) == pytest.approx(float(g(1.5)), abs=1e-12)
    assert float(engine.jit(lambda x: (x - x) ** 2)(1.0)) == 0.0
    assert float(engine.jit(engine.grad(lambda x: (x - x) ** 2 + 3 * x))(1.0)) == 3.0


def test_jit_agrees_with_eager_evaluation_on_infinite_and_nan_inputs() -> None:
    """Cancelled terms keep their NaN: (x - x) is NaN for x = inf under jit too, as evaluated as
    written (and in JAX), not the 0 of real arithmetic."""
    programs = [
        lambda x: (x - x) ** 2,
        lambda x: (x - x) + 1.0,
        lambda x: x * 2.0 - 2.0 * x + 3.0,
        lambda x: (x + 1) * x - x * (x + 1),
        lambda x: jnp.sin(x) * (x - x) + 1.0,
    ]
    for f in programs:
        for x in (np.inf, -np.inf, np.nan, 1.5, -0.25):
            with np.errstate(all="ignore"):
                eager, jitted = float(f(x)), float(engine.jit(f)(x))
            assert (math.isnan(eager) and math.isnan(jitted)) or eager == jitted, (x, eager, jitted)


def test_the_checks_catch_a_wrong_derivative_and_a_wrong_second_derivative() -> None:
    """The comparisons can fail: a function whose declared derivative is off is reported."""
    @engine.custom_jvp
    def off_by_ten_percent(x):
        return jnp.sin(x)

    @off_by_ten_percent.defjvp
    def _(primals, tangents):
        (x,), (t,) = primals, tangents
        return jnp.sin(x), 1.1 * jnp.cos(x) * t

    @engine.custom_jvp
    def wrong_curvature(x):
        return x * x

    @wrong_curvature.defjvp
    def _(primals, tangents):
        (x,), (t,) = primals, tangents
        return x * x, 2 * jnp.stop_gradient(x) * t  # the right slope, but a slope that never changes

    rng = np.random.default_rng(0)
    x, v = rng.standard_normal(SHAPE), rng.standard_normal(SHAPE)
    first = discrepancies(lambda y: jnp.sum(off_by_ten_percent(y)), x, v)
    assert any("finite difference is" in problem for problem in first)
    second = discrepancies(lambda y: jnp.sum(wrong_curvature(y)), x, v)
    assert not any("finite difference is" in problem for problem in second)
    assert any("Hessian-vector product differs" in problem for problem in second)
