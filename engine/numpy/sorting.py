"""Sorting and selection of engine.numpy: sort, argsort, partition, select, nonzero, ...

Every sorting function is the stable argsort primitive followed by a gather
(`take_along_axis`). The derivative of a sort is therefore the gather's: the cotangent is
permuted back to where each element came from. Equal elements keep their original order (the
sort is stable), so at a tie the cotangent of the i-th output goes to the i-th of the equal
inputs in index order, as in JAX; a derivative at a tie is one of the one-sided derivatives.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from engine import dtypes
from engine import primitives as P
from engine.core import concrete_value
from engine.errors import ConcretizationError, DtypeError, ShapeError
from engine.numpy._base import ArrayLike, asarray, normalize_axis, promote
from engine.numpy.shapes import broadcast_to, concatenate, flip, ravel, stack
from engine.primitives_sorting import argsort as _stable_argsort


def take_along_axis(arr: ArrayLike, indices: ArrayLike, axis: int | None) -> Any:
    """arr's elements picked by integer `indices` along `axis` (NumPy's broadcasting of the other
    axes); differentiable in arr, the cotangent added back at the picked positions."""
    x, idx = asarray(arr), asarray(indices)
    if idx.dtype.kind not in "iu":
        raise DtypeError(f"take_along_axis: indices must be integers, got {idx.dtype}")
    if axis is None:
        x, axis = ravel(x), 0
    if idx.ndim != x.ndim:
        raise ShapeError(f"take_along_axis: indices has {idx.ndim} dimensions and the array {x.ndim}: "
                         "they must have the same number")
    (ax,) = normalize_axis(axis, x.ndim, "take_along_axis")
    index = []
    for i in range(x.ndim):
        if i == ax:
            index.append(idx)
        else:
            shape = [1] * x.ndim
            shape[i] = x.shape[i]
            index.append(np.arange(x.shape[i]).reshape(shape))
    return x[tuple(index)]


def _sort_axis(x: Any, axis: int | None, name: str) -> tuple[Any, int]:
    if axis is None:
        return ravel(x), 0
    if x.ndim == 0:
        raise ShapeError(f"`{name}` needs an array of at least one dimension, got a scalar; "
                         "pass axis=None to sort its flattened form")
    (ax,) = normalize_axis(axis, x.ndim, name)
    return x, ax


def _check_sort_options(name: str, kind: Any, order: Any) -> None:
    if kind is not None:
        raise TypeError(f"`{name}`: the 'kind' argument is not supported; use stable=True (the default)")
    if order is not None:
        raise TypeError(f"`{name}`: the 'order' argument (structured arrays) is not supported")


def argsort(a: ArrayLike, axis: int | None = -1, *, kind: Any = None, order: Any = None, stable: bool = True,
            descending: bool = False) -> Any:
    """Indices that sort `a` along `axis` (None: the flattened array). Always stable: equal elements
    keep their order, also when descending (then larger values first, ties in index order)."""
    _check_sort_options("argsort", kind, order)
    x, ax = _sort_axis(asarray(a), axis, "argsort")
    if not descending:
        return _stable_argsort(x, ax)
    # Sort the reversed array and reverse the result: ties keep their original order.
    n = x.shape[ax]
    reversed_order = _stable_argsort(flip(x, ax), ax)
    return (n - 1) - flip(reversed_order, ax)


def sort(a: ArrayLike, axis: int | None = -1, *, kind: Any = None, order: Any = None, stable: bool = True,
         descending: bool = False) -> Any:
    """`a` sorted along `axis` (None: flattened first); NaNs last. Its derivative permutes the
    cotangent back (ties in the stable order). `descending` reverses the ascending result, as JAX
    does, so tied elements then appear (and receive cotangents) in reverse index order."""
    _check_sort_options("sort", kind, order)
    x, ax = _sort_axis(asarray(a), axis, "sort")
    ordered = take_along_axis(x, _stable_argsort(x, ax), ax)
    return flip(ordered, ax) if descending else ordered


def msort(a: ArrayLike) -> Any:
    """`a` sorted along its first axis."""
    return sort(a, axis=0)


def _partition_indices(x: Any, kth: int, ax: int, name: str) -> tuple[Any, Any, int]:
    if x.dtype.kind == "c":
        raise DtypeError(f"`{name}` of complex numbers is not supported")
    n = x.shape[ax]
    k = int(kth)
    if not -n <= k < n:
        raise ShapeError(f"`{name}`: kth={k} is out of bounds for an axis of length {n}")
    k %= n
    lead = (slice(None),) * ax
    ascending = argsort(x, ax)
    return ascending[lead + (slice(0, k + 1),)], ascending, k


def partition(a: ArrayLike, kth: int, axis: int = -1) -> Any:
    """`a` rearranged along `axis` so that position kth holds the value a full sort would put
    there, smaller-or-equal values before it and larger-or-equal after. As JAX computes it: the
    first kth + 1 values in ascending order, the others in descending order (equal values in
    index order in each part)."""
    x, ax = _sort_axis(asarray(a), axis, "partition")
    bottom, _, k = _partition_indices(x, kth, ax, "partition")
    n = x.shape[ax]
    lead = (slice(None),) * ax
    top = argsort(x, ax, descending=True)[lead + (slice(0, n - k - 1),)]
    return concatenate([take_along_axis(x, bottom, ax), take_along_axis(x, top, ax)], axis=ax)


def argpartition(a: ArrayLike, kth: int, axis: int = -1) -> Any:
    """Indices that partition `a` (see `partition`), as JAX orders them: the indices of the kth + 1
    smallest values in ascending order of value, then the remaining indices in increasing order."""
    x, ax = _sort_axis(asarray(a), axis, "argpartition")
    bottom, ascending, k = _partition_indices(x, kth, ax, "argpartition")
    lead = (slice(None),) * ax
    rest = sort(ascending[lead + (slice(k + 1, None),)], axis=ax)
    return concatenate([bottom, rest], axis=ax)


def select(condlist: Sequence[ArrayLike], choicelist: Sequence[ArrayLike], default: ArrayLike = 0) -> Any:
    """Where condlist[0] holds, choicelist[0]; else where condlist[1] holds, choicelist[1]; ...;
    else `default`. Each choice receives the cotangent where it is the one chosen."""
    if len(condlist) != len(choicelist):
        raise ValueError(f"select: condlist has {len(condlist)} entries and choicelist {len(choicelist)}; "
                         "they must have the same length")
    if len(condlist) == 0:
        raise ValueError("select: condlist must not be empty")
    conditions = []
    for cond in condlist:
        c = asarray(cond)
        conditions.append(c if c.dtype == np.bool_ else c != np.zeros((), c.dtype))
    default_and_choices = promote(default, *choicelist)
    result, choices = default_and_choices[0], default_and_choices[1:]
    shape = P.broadcast_shapes(*[tuple(v.shape) for v in [*conditions, *default_and_choices]], op="select")
    result = broadcast_to(result, shape)
    # The first condition that holds wins, so the earlier choices are applied last.
    for cond, choice in zip(reversed(conditions), reversed(choices)):
        result = P.select_p(broadcast_to(cond, shape), broadcast_to(choice, shape), result)
    return result


def _concrete_condition(condition: ArrayLike, name: str) -> np.ndarray:
    value = concrete_value(asarray(condition))
    if value is None:
        raise ConcretizationError(
            f"`{name}` of a traced value: the number of indices depends on the values, which are "
            "unknown while tracing. Pass size=... to get a fixed number of indices, or use "
            "`jnp.where(cond, x, y)` to keep the shape fixed.")
    return np.asarray(value)


def nonzero(a: ArrayLike, *, size: int | None = None, fill_value: Any = None) -> tuple[Any, ...]:
    """The indices of a's non-zero elements, one integer array per axis (C order).

    Without `size` the input must be concrete (its values decide the result's length). With
    `size` the result has exactly that many indices (the first ones, then `fill_value`, 0 by
    default), and traced input is accepted."""
    x = asarray(a)
    if x.ndim == 0:
        raise ShapeError("nonzero of a 0-d array is not defined; use atleast_1d(a) first")
    if size is None:
        value = _concrete_condition(x, "nonzero")
        return tuple(P.constant(i.astype(dtypes.default_int())) for i in np.nonzero(value))
    size = int(size)
    if size < 0:
        raise ValueError(f"nonzero: size must be non-negative, got {size}")
    flat = ravel(x)
    mask = flat if flat.dtype == np.bool_ else flat != np.zeros((), flat.dtype)
    # A stable sort of "is zero" puts the non-zero positions first, in order.
    positions = _stable_argsort(P.not_p(mask), 0)
    count = P.reduce_sum(P.convert(mask, dtypes.default_int()), (0,))
    if size > x.size:
        positions = concatenate([positions, P.zeros((size - x.size,), positions.dtype)])
    positions = positions[:size]
    valid = P.constant(np.arange(size)) < count
    fills = fill_value if isinstance(fill_value, (tuple, list)) else [fill_value] * x.ndim
    if len(fills) != x.ndim:
        raise ValueError(f"nonzero: fill_value has {len(fills)} entries for an array of {x.ndim} dimensions")
    out = []
    for i in range(x.ndim):
        stride = int(np.prod(x.shape[i + 1:], dtype=np.int64))
        index = (positions // stride) % x.shape[i] if x.size else positions
        fill = asarray(0 if fills[i] is None else fills[i], index.dtype)
        out.append(P.select_p(valid, index, broadcast_to(fill, index.shape)))
    return tuple(out)


def flatnonzero(a: ArrayLike, *, size: int | None = None, fill_value: Any = None) -> Any:
    """The indices of the non-zero elements of the flattened array."""
    return nonzero(ravel(asarray(a)), size=size, fill_value=fill_value)[0]


def argwhere(a: ArrayLike, *, size: int | None = None, fill_value: Any = None) -> Any:
    """The indices of the non-zero elements, one row per element (shape (count, ndim))."""
    x = asarray(a)
    if x.ndim == 0:  # one row per true element, each with no coordinates
        rows = size if size is not None else int(np.count_nonzero(_concrete_condition(x, "argwhere")))
        return P.zeros((int(rows), 0), dtypes.default_int())
    return stack(list(nonzero(x, size=size, fill_value=fill_value)), axis=1)
