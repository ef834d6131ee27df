"""Array creation: zeros, ones, arange, linspace, eye, ... (concrete constants; linspace follows traced bounds)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from engine import dtypes
from engine import primitives as P
from engine.array import Array
from engine.core import Tracer, check_elements
from engine.numpy._base import ArrayLike, asarray, promote_float
from engine.numpy.shapes import broadcast_arrays, broadcast_to, concatenate, expand_dims


def _shape(shape: int | Sequence[int]) -> tuple[int, ...]:
    if isinstance(shape, (int, np.integer)) or getattr(shape, "ndim", None) == 0:
        dims = (int(shape),)  # a traced scalar raises ConcretizationError here
    else:
        dims = tuple(int(n) for n in shape)
    if any(n < 0 for n in dims):
        raise ValueError(f"negative dimensions are not allowed: {dims}")
    check_elements(dims, "a new array")
    return dims


def _const(value: np.ndarray) -> Array:
    value.flags.writeable = False
    return Array(value)


def zeros(shape: int | Sequence[int], dtype: Any = None) -> Array:
    return _const(np.zeros(_shape(shape), dtype=np.dtype(dtype) if dtype is not None else dtypes.default_float()))


def ones(shape: int | Sequence[int], dtype: Any = None) -> Array:
    return _const(np.ones(_shape(shape), dtype=np.dtype(dtype) if dtype is not None else dtypes.default_float()))


def empty(shape: int | Sequence[int], dtype: Any = None) -> Array:
    return zeros(shape, dtype)


def full(shape: int | Sequence[int], fill_value: ArrayLike, dtype: Any = None) -> Any:
    return broadcast_to(asarray(fill_value, dtype), _shape(shape))


def zeros_like(a: ArrayLike, dtype: Any = None, shape: Any = None) -> Array:
    return zeros(shape if shape is not None else np.shape(a) if not hasattr(a, "shape") else a.shape,
                 dtype if dtype is not None else _dtype_of(a))


def ones_like(a: ArrayLike, dtype: Any = None, shape: Any = None) -> Array:
    return ones(shape if shape is not None else np.shape(a) if not hasattr(a, "shape") else a.shape,
                dtype if dtype is not None else _dtype_of(a))


def full_like(a: ArrayLike, fill_value: ArrayLike, dtype: Any = None, shape: Any = None) -> Any:
    return full(shape if shape is not None else a.shape, fill_value, dtype if dtype is not None else _dtype_of(a))


def _dtype_of(a: ArrayLike) -> np.dtype:
    return a.dtype if hasattr(a, "dtype") else asarray(a).dtype


def arange(start: Any, stop: Any = None, step: Any = None, dtype: Any = None) -> Array:
    lo, hi, by = (0, start, 1 if step is None else step) if stop is None else (start, stop, 1 if step is None else step)
    if by == 0:
        raise ValueError("arange: step cannot be zero")
    check_elements((max(0, int(np.ceil((float(hi) - float(lo)) / float(by)))),), "arange")
    values = np.arange(lo, hi, by)
    target = np.dtype(dtype) if dtype is not None else dtypes.canonicalize(values.dtype)
    return _const(values.astype(target))


def linspace(start: Any, stop: Any, num: int = 50, endpoint: bool = True, retstep: bool = False,
             dtype: Any = None, axis: int = 0) -> Any:
    """`num` evenly spaced values from start to stop, along a new `axis` when they are arrays.

    Concrete bounds give NumPy's values; traced ones (under grad, jit, vmap) give
    start * (1 - t) + stop * t for t = i / (num - 1), as JAX computes it, so the result is
    differentiable in start and stop.
    """
    if int(num) < 0:
        raise ValueError(f"linspace: the number of samples must be non-negative, got {num}")
    check_elements((int(num),), "linspace")
    if isinstance(start, Tracer) or isinstance(stop, Tracer):
        return _traced_linspace(start, stop, int(num), endpoint, retstep, dtype, axis)
    values, step = np.linspace(np.asarray(start), np.asarray(stop), num, endpoint=endpoint, retstep=True, axis=axis)
    target = np.dtype(dtype) if dtype is not None else dtypes.default_float()
    if target.kind in "iu":
        values = np.floor(values)  # integers round down, as in NumPy and JAX
    out = _const(values.astype(target))
    return (out, step) if retstep else out


def _traced_linspace(start: Any, stop: Any, num: int, endpoint: bool, retstep: bool, dtype: Any, axis: int) -> Any:
    lo, hi = promote_float(start, stop)
    lo, hi = broadcast_arrays(lo, hi)
    axis = int(axis) % (lo.ndim + 1)
    divisions = num - 1 if endpoint else num
    if num == 0:
        out = expand_dims(lo, axis)[tuple(slice(0, 0) if i == axis else slice(None) for i in range(lo.ndim + 1))]
    elif divisions == 0:
        out = expand_dims(lo, axis)
    else:
        shape = [1] * (lo.ndim + 1)
        shape[axis] = divisions
        fraction = _const((np.arange(divisions) / divisions).astype(lo.dtype).reshape(shape))
        out = expand_dims(lo, axis) * (1 - fraction) + expand_dims(hi, axis) * fraction
        if endpoint:
            out = concatenate([out, expand_dims(hi, axis)], axis)
    step = (hi - lo) / divisions if divisions else hi * np.nan
    target = np.dtype(dtype) if dtype is not None else lo.dtype
    if target.kind in "iu":
        out = P.floor_p(out)  # integers round down, as in NumPy and JAX
    out = out if out.dtype == target else asarray(out, target)
    return (out, step) if retstep else out


def eye(N: int, M: int | None = None, k: int = 0, dtype: Any = None) -> Array:  # noqa: N803
    check_elements((int(N), int(N if M is None else M)), "eye")
    return _const(np.eye(N, M, k, dtype=np.dtype(dtype) if dtype is not None else dtypes.default_float()))


def identity(n: int, dtype: Any = None) -> Array:
    return eye(n, dtype=dtype)
