"""engine.numpy.linalg: solve, inv, det, slogdet, cholesky, norm."""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from engine import primitives as P
from engine.numpy import elementwise as E
from engine.numpy import reductions as R
from engine.numpy._base import ArrayLike, promote_float
from engine.numpy.shapes import expand_dims, squeeze


def _float_matrix(a: ArrayLike) -> Any:
    (x,) = promote_float(a)
    return x


def solve(a: ArrayLike, b: ArrayLike) -> Any:
    """Solve a @ x = b for x; b may be a vector or a (batch of) matrix."""
    x, y = promote_float(a, b)
    if y.ndim == x.ndim - 1:  # a vector right-hand side (per batch)
        return squeeze(P.solve_p(x, expand_dims(y, -1)), -1)
    return P.solve_p(x, y)


def inv(a: ArrayLike) -> Any:
    return P.inv_p(_float_matrix(a))


def det(a: ArrayLike) -> Any:
    return P.det_p(_float_matrix(a))


class SlogdetResult(NamedTuple):
    sign: Any
    logabsdet: Any


def slogdet(a: ArrayLike) -> SlogdetResult:
    x = _float_matrix(a)
    return SlogdetResult(P.detsign_p(x), P.logabsdet_p(x))


def cholesky(a: ArrayLike) -> Any:
    return P.cholesky_p(_float_matrix(a))


def norm(x: ArrayLike, ord: Any = None, axis: Any = None, keepdims: bool = False) -> Any:  # noqa: A002
    """Vector norms (ord None/2, 1, inf, -inf, p) and matrix norms ('fro', 1, inf, 'nuc' excluded)."""
    v = _float_matrix(x)
    if axis is None:
        if ord is None or (ord in ("fro", "f") and v.ndim == 2):
            return E.sqrt(R.sum(v * v, keepdims=keepdims))
        if v.ndim == 1:
            axis = 0
        elif v.ndim == 2:
            axis = (0, 1)
        else:
            raise ValueError("norm with an ord needs a 1-D or 2-D array, or an explicit axis")
    axes = axis if isinstance(axis, tuple) else (axis,)
    if len(axes) == 1:
        if ord is None or ord == 2:
            return E.sqrt(R.sum(v * v, axis=axes, keepdims=keepdims))
        if ord == np.inf:
            return R.max(E.abs(v), axis=axes, keepdims=keepdims)
        if ord == -np.inf:
            return R.min(E.abs(v), axis=axes, keepdims=keepdims)
        if ord == 1:
            return R.sum(E.abs(v), axis=axes, keepdims=keepdims)
        if ord == 0:
            return R.sum((v != 0).astype(v.dtype), axis=axes, keepdims=keepdims)
        return E.power(R.sum(E.power(E.abs(v), ord), axis=axes, keepdims=keepdims), 1.0 / ord)
    if len(axes) == 2:
        r, c = axes
        if ord is None or ord in ("fro", "f"):
            return E.sqrt(R.sum(v * v, axis=axes, keepdims=keepdims))
        if ord == 1:
            col = R.sum(E.abs(v), axis=r, keepdims=True)
            out = R.max(col, axis=c, keepdims=True)
        elif ord == np.inf:
            row = R.sum(E.abs(v), axis=c, keepdims=True)
            out = R.max(row, axis=r, keepdims=True)
        else:
            raise NotImplementedError(f"matrix norm of order {ord!r} is not supported")
        if keepdims:
            return out
        return squeeze(out, axis=axes)
    raise ValueError(f"norm over {len(axes)} axes is undefined")
