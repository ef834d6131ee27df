"""Conversion into the engine and JAX's dtype promotion, shared by every facade function."""

from __future__ import annotations

from typing import Any

import numpy as np

from engine import dtypes
from engine import primitives as P
from engine.array import Array
from engine.core import Tracer
from engine.errors import ShapeError
from engine.primitives import convert

ArrayLike = Any  # Array, Tracer, NumPy array or scalar, Python scalar, nested list


def is_array(x: Any) -> bool:
    return isinstance(x, (Array, Tracer))


def asarray(x: ArrayLike, dtype: Any = None) -> Any:
    """Bring a value into the engine: Arrays and tracers pass through, everything else is copied in.

    Without an explicit dtype, Python floats and float64 NumPy data become float32 (float64 under
    `jax_enable_x64`), as in JAX. An explicit dtype is kept as asked.
    """
    if isinstance(x, (Array, Tracer)):
        if dtype is None or x.dtype == np.dtype(dtype):
            return x
        return convert(x, np.dtype(dtype))
    if isinstance(x, (list, tuple)) and _contains_traced(x):
        return P.stack([asarray(e, dtype) for e in x])
    if dtypes.is_weak(x):
        target = np.dtype(dtype) if dtype is not None else dtypes.python_scalar_dtype(x)
        return Array(np.asarray(x, dtype=target)[()])
    if isinstance(x, (list, tuple)):
        value = np.asarray([np.asarray(e) if isinstance(e, Array) else e for e in x])
    else:
        value = np.asarray(x)
    if value.dtype == object or value.dtype.kind in "US":  # objects, strings, bytes
        raise TypeError(f"cannot convert {type(x).__name__} to an array of numbers")
    target = np.dtype(dtype) if dtype is not None else dtypes.canonicalize(value.dtype)
    if value.dtype != target:
        value = value.astype(target)
    elif not value.flags.writeable or value.base is not None or isinstance(x, np.ndarray):
        value = value.copy()  # our arrays are immutable: never alias the caller's buffer
    value.flags.writeable = False
    return Array(value)


array = asarray


def _contains_traced(seq: Any) -> bool:
    for e in seq:
        if isinstance(e, Tracer) or (isinstance(e, (list, tuple)) and _contains_traced(e)):
            return True
    return False


def promote(*args: ArrayLike) -> list[Any]:
    """Operands converted to one dtype by JAX's rules (Python scalars adapt to arrays)."""
    if len(args) == 2:  # the common case, without building a list
        a, b = args
        if isinstance(a, (Array, Tracer)) and isinstance(b, (Array, Tracer)) and a.dtype == b.dtype:
            return [a, b]
    return P.promote(*[a if isinstance(a, (Array, Tracer)) or dtypes.is_weak(a) else asarray(a) for a in args])


def promote_float(*args: ArrayLike) -> list[Any]:
    """Like `promote`, then integers and booleans become the default float (as jnp.sin(1) does)."""
    out = promote(*args)
    if out[0].dtype.kind not in "fc":
        target = dtypes.default_float()
        out = [convert(a, target) for a in out]
    return out


def normalize_axis(axis: Any, ndim: int, name: str) -> tuple[int, ...]:
    """Axes as a sorted tuple of non-negative ints; None means every axis."""
    if axis is None:
        return tuple(range(ndim))
    axes = axis if isinstance(axis, (tuple, list)) else (axis,)
    out = []
    for a in axes:
        a = int(a)
        if not -ndim <= a < ndim and not (ndim == 0 and a in (0, -1)):
            raise ShapeError(f"`{name}`: axis {a} is out of bounds for an array of {ndim} dimensions")
        out.append(a % ndim if ndim else 0)
    if len(set(out)) != len(out):
        raise ShapeError(f"`{name}`: repeated axis in {tuple(axes)}")
    return tuple(sorted(out)) if ndim else ()
