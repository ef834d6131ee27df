"""Reductions of engine.numpy (sum, mean, max, ..., with axis and keepdims)."""

from __future__ import annotations

import builtins
from typing import Any

import numpy as np

from engine import dtypes
from engine import primitives as P
from engine.errors import ShapeError
from engine.numpy._base import ArrayLike, asarray, convert, normalize_axis
from engine.numpy.elementwise import _as_bool, finite_shift, maximum, minimum, sqrt
from engine.numpy.shapes import ravel, reshape


def _reduction_axes(axis: Any, ndim: int, name: str, scalar_int_axis: bool = True) -> tuple[int, ...]:
    """The reduced axes, sorted. A 0-d array has no axis, and NumPy refuses one there, except that
    its ufunc reductions (sum, max, argmax, cumsum, ...) accept a plain 0 or -1 (`scalar_int_axis`);
    mean, var and std refuse those too."""
    if ndim == 0 and axis is not None:
        axes = tuple(axis) if isinstance(axis, (tuple, list)) else None
        if axes or (axes is None and (not scalar_int_axis or int(axis) not in (0, -1))):
            raise ShapeError(f"`{name}`: axis {axis} is out of bounds for an array of 0 dimensions; "
                             "pass axis=None (a 0-d array has no axes)")
    return normalize_axis(axis, ndim, name)


def _keep(result: Any, x_shape: tuple[int, ...], axes: tuple[int, ...], keepdims: bool) -> Any:
    if not keepdims:
        return result
    return reshape(result, tuple(1 if i in axes else n for i, n in enumerate(x_shape)))


def _reduce_prod(x: Any, axes: tuple[int, ...]) -> Any:
    return P.reduce_prod_p(x, axes=tuple(axes)) if axes else x


def _accumulator_dtype(x: Any, dtype: Any) -> np.dtype:
    if dtype is not None:
        return np.dtype(dtype)
    if x.dtype == np.bool_ or (x.dtype.kind in "iu" and x.dtype.itemsize < dtypes.default_int().itemsize):
        return dtypes.default_int() if x.dtype.kind != "u" else np.dtype("uint32")
    return x.dtype


def sum(a: ArrayLike, axis: Any = None, dtype: Any = None, keepdims: bool = False) -> Any:  # noqa: A001
    x = asarray(a)
    axes = _reduction_axes(axis, x.ndim, "sum")
    x = convert(x, _accumulator_dtype(x, dtype))
    return _keep(P.reduce_sum(x, axes), a_shape(x), axes, keepdims)


def a_shape(x: Any) -> tuple[int, ...]:
    return tuple(x.shape)


def prod(a: ArrayLike, axis: Any = None, dtype: Any = None, keepdims: bool = False) -> Any:
    x = asarray(a)
    axes = _reduction_axes(axis, x.ndim, "prod")
    x = convert(x, _accumulator_dtype(x, dtype))
    return _keep(_reduce_prod(x, axes), a_shape(x), axes, keepdims)


def _count(shape: tuple[int, ...], axes: tuple[int, ...]) -> int:
    n = 1
    for a in axes:
        n *= shape[a]
    return n


def mean(a: ArrayLike, axis: Any = None, dtype: Any = None, keepdims: bool = False) -> Any:
    x = asarray(a)
    if x.dtype.kind not in "fc":
        x = convert(x, dtypes.default_float())
    axes = _reduction_axes(axis, x.ndim, "mean", scalar_int_axis=False)
    total = sum(x, axis=axes, dtype=dtype, keepdims=keepdims)
    return total / _count(x.shape, axes)


def var(a: ArrayLike, axis: Any = None, dtype: Any = None, ddof: int = 0, keepdims: bool = False) -> Any:
    x = asarray(a)
    if x.dtype.kind not in "fc":
        x = convert(x, dtypes.default_float())
    axes = _reduction_axes(axis, x.ndim, "var", scalar_int_axis=False)
    centred = x - mean(x, axis=axes, keepdims=True)
    squares = sum(centred * centred, axis=axes, dtype=dtype, keepdims=keepdims)
    return squares / (_count(x.shape, axes) - ddof)


def std(a: ArrayLike, axis: Any = None, dtype: Any = None, ddof: int = 0, keepdims: bool = False) -> Any:
    return sqrt(var(a, axis=axis, dtype=dtype, ddof=ddof, keepdims=keepdims))


def _minmax(prim: P.Primitive, name: str):
    def fn(a: ArrayLike, axis: Any = None, keepdims: bool = False, initial: Any = None) -> Any:
        x = asarray(a)
        axes = _reduction_axes(axis, x.ndim, name)
        if builtins.any(x.shape[i] == 0 for i in axes) and initial is None:
            raise ValueError(f"`{name}` of an empty array has no identity; pass `initial=`")
        result = prim(x, axes=axes) if axes else x
        if initial is not None:
            result = (maximum if name == "max" else minimum)(result, initial)
        return _keep(result, x.shape, axes, keepdims)

    fn.__name__ = name
    return fn


max = _minmax(P.reduce_max_p, "max")  # noqa: A001
min = _minmax(P.reduce_min_p, "min")  # noqa: A001
amax = max
amin = min


def _bool_reduce(prim: P.Primitive, name: str):
    def fn(a: ArrayLike, axis: Any = None, keepdims: bool = False) -> Any:
        x = _as_bool(a)
        axes = _reduction_axes(axis, x.ndim, name)
        return _keep(prim(x, axes=axes) if axes else x, x.shape, axes, keepdims)

    fn.__name__ = name
    return fn


all = _bool_reduce(P.reduce_and_p, "all")  # noqa: A001
any = _bool_reduce(P.reduce_or_p, "any")  # noqa: A001


def _arg(prim: P.Primitive, name: str):
    def fn(a: ArrayLike, axis: int | None = None, keepdims: bool = False) -> Any:
        x = asarray(a)
        if axis is None or x.ndim == 0:
            _reduction_axes(axis, x.ndim, name)
            out = prim(ravel(x), axis=0)
            return reshape(out, (1,) * x.ndim) if keepdims else out
        (ax,) = normalize_axis(axis, x.ndim, name)
        return _keep(prim(x, axis=ax), x.shape, (ax,), keepdims)

    fn.__name__ = name
    return fn


argmax = _arg(P.argmax_p, "argmax")
argmin = _arg(P.argmin_p, "argmin")


def cumsum(a: ArrayLike, axis: int | None = None, dtype: Any = None) -> Any:
    """Running sums; a 0-d array's is 1-D, as in NumPy. Unlike sum, small integers keep their dtype
    (booleans count in the default integer), as in JAX."""
    x = asarray(a)
    if axis is None or x.ndim == 0:
        _reduction_axes(axis, x.ndim, "cumsum")
        x, axis = ravel(x), 0
    (ax,) = normalize_axis(axis, x.ndim, "cumsum")
    target = np.dtype(dtype) if dtype is not None else dtypes.default_int() if x.dtype == np.bool_ else x.dtype
    return P.cumsum_p(convert(x, target), axis=ax, reverse=False)


def logsumexp(a: ArrayLike, axis: Any = None, keepdims: bool = False, b: ArrayLike | None = None) -> Any:
    """log(sum(exp(a))) over axis without overflow; its gradient is softmax(a)."""
    x = asarray(a)
    if x.dtype.kind not in "fc":
        x = convert(x, dtypes.default_float())
    axes = _reduction_axes(axis, x.ndim, "logsumexp")
    shift = finite_shift(max(x, axis=axes, keepdims=True)) if axes else finite_shift(x)
    terms = P.exp_p(x - shift)
    if b is not None:
        terms = terms * b
    out = P.log_p(sum(terms, axis=axes, keepdims=True)) + shift
    return out if keepdims else _keep_off(out, axes)


def _keep_off(x: Any, axes: tuple[int, ...]) -> Any:
    return reshape(x, tuple(n for i, n in enumerate(x.shape) if i not in axes))
