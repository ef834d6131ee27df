"""Shape manipulation and indexing of engine.numpy."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from engine import primitives as P
from engine.errors import ShapeError
from engine.indexing import indexed_shape, normalize_index
from engine.numpy._base import ArrayLike, asarray, convert, normalize_axis, promote


def reshape(a: ArrayLike, newshape: Any = None, *, shape: Any = None, order: str = "C") -> Any:
    if order != "C":
        raise NotImplementedError("only C-order reshape is supported")
    x = asarray(a)
    target = shape if shape is not None else newshape
    if isinstance(target, (int, np.integer)):
        target = (int(target),)
    target = tuple(int(n) for n in target)
    if target.count(-1) > 1:
        raise ShapeError(f"can only specify one unknown dimension (-1) in a reshape, got {target}")
    if -1 in target:
        known = int(np.prod([n for n in target if n != -1], dtype=np.int64))
        if known == 0 or x.size % known:
            raise ShapeError(f"cannot reshape an array of shape {x.shape} into {target}")
        target = tuple(x.size // known if n == -1 else n for n in target)
    return P.reshape(x, target)


def ravel(a: ArrayLike) -> Any:
    x = asarray(a)
    return reshape(x, (x.size,))


def transpose(a: ArrayLike, axes: Sequence[int] | None = None) -> Any:
    x = asarray(a)
    perm = tuple(reversed(range(x.ndim))) if axes is None else tuple(int(i) % x.ndim for i in axes)
    if perm == tuple(range(x.ndim)):
        return x
    return P.transpose_p(x, perm=perm)


def swapaxes(a: ArrayLike, axis1: int, axis2: int) -> Any:
    x = asarray(a)
    perm = list(range(x.ndim))
    i, j = normalize_axis(axis1, x.ndim, "swapaxes")[0], normalize_axis(axis2, x.ndim, "swapaxes")[0]
    perm[i], perm[j] = perm[j], perm[i]
    return transpose(x, perm)


def moveaxis(a: ArrayLike, source: int | Sequence[int], destination: int | Sequence[int]) -> Any:
    x = asarray(a)
    src = [source] if isinstance(source, int) else list(source)
    dst = [destination] if isinstance(destination, int) else list(destination)
    src = [s % x.ndim for s in src]
    dst = [d % x.ndim for d in dst]
    order = [i for i in range(x.ndim) if i not in src]
    for d, s in sorted(zip(dst, src)):
        order.insert(d, s)
    return transpose(x, order)


def expand_dims(a: ArrayLike, axis: int | Sequence[int]) -> Any:
    x = asarray(a)
    axes = [axis] if isinstance(axis, (int, np.integer)) else list(axis)
    ndim = x.ndim + len(axes)
    axes = sorted(int(ax) % ndim for ax in axes)
    shape = list(x.shape)
    for ax in axes:
        shape.insert(ax, 1)
    return reshape(x, tuple(shape))


def squeeze(a: ArrayLike, axis: int | Sequence[int] | None = None) -> Any:
    x = asarray(a)
    if axis is None:
        axes = tuple(i for i, n in enumerate(x.shape) if n == 1)
    else:
        axes = normalize_axis(axis, x.ndim, "squeeze")
        for ax in axes:
            if x.shape[ax] != 1:
                raise ShapeError(f"cannot squeeze axis {ax} of shape {x.shape}: its size is not 1")
    return reshape(x, tuple(n for i, n in enumerate(x.shape) if i not in axes))


def broadcast_to(a: ArrayLike, shape: Sequence[int]) -> Any:
    x = asarray(a)
    shape = (int(shape),) if isinstance(shape, (int, np.integer)) else tuple(int(n) for n in shape)
    return P.broadcast_to(x, shape)


def broadcast_arrays(*args: ArrayLike) -> list[Any]:
    xs = [asarray(a) for a in args]
    shape = P.broadcast_shapes(*[x.shape for x in xs], op="broadcast_arrays")
    return [broadcast_to(x, shape) for x in xs]


def atleast_1d(a: ArrayLike) -> Any:
    x = asarray(a)
    return reshape(x, (1,)) if x.ndim == 0 else x


def atleast_2d(a: ArrayLike) -> Any:
    x = asarray(a)
    return reshape(x, (1,) * (2 - x.ndim) + tuple(x.shape)) if x.ndim < 2 else x


def concatenate(arrays: Sequence[ArrayLike], axis: int | None = 0) -> Any:
    xs = promote(*arrays)
    if axis is None:
        xs, axis = [ravel(x) for x in xs], 0
    if len(xs) == 1:
        return xs[0]
    return P.concatenate_p(*xs, axis=int(axis) % builtins_max(xs[0].ndim, 1))


def builtins_max(a: int, b: int) -> int:
    return a if a > b else b


def stack(arrays: Sequence[ArrayLike], axis: int = 0) -> Any:
    xs = promote(*arrays)
    if not xs:
        raise ValueError("need at least one array to stack")
    return P.stack(xs, axis)


def hstack(arrays: Sequence[ArrayLike]) -> Any:
    xs = [atleast_1d(a) for a in arrays]
    return concatenate(xs, axis=0 if xs[0].ndim == 1 else 1)


def vstack(arrays: Sequence[ArrayLike]) -> Any:
    return concatenate([atleast_2d(a) for a in arrays], axis=0)


def split(a: ArrayLike, indices_or_sections: int | Sequence[int], axis: int = 0) -> list[Any]:
    x = asarray(a)
    (ax,) = normalize_axis(axis, x.ndim, "split")
    n = x.shape[ax]
    if isinstance(indices_or_sections, (int, np.integer)):
        sections = int(indices_or_sections)
        if sections <= 0 or n % sections:
            raise ShapeError(f"array split does not result in an equal division: {n} elements "
                             f"along axis {ax} into {sections} sections")
        bounds = [i * (n // sections) for i in range(sections + 1)]
    else:
        bounds = [0] + [int(i) for i in indices_or_sections] + [n]
    lead = (slice(None),) * ax
    return [x[lead + (slice(lo, builtins_max(lo, hi)),)] for lo, hi in zip(bounds[:-1], bounds[1:])]


def tile(a: ArrayLike, reps: int | Sequence[int]) -> Any:
    x = asarray(a)
    reps = (int(reps),) if isinstance(reps, (int, np.integer)) else tuple(int(r) for r in reps)
    ndim = builtins_max(x.ndim, len(reps))
    reps = (1,) * (ndim - len(reps)) + reps
    x = reshape(x, (1,) * (ndim - x.ndim) + tuple(x.shape))
    # Interleave a repeat axis before each axis, broadcast along it, and merge the pairs.
    expanded = reshape(x, tuple(v for n in x.shape for v in (1, n)))
    full = broadcast_to(expanded, tuple(v for r, n in zip(reps, x.shape) for v in (r, n)))
    return reshape(full, tuple(r * n for r, n in zip(reps, x.shape)))


def repeat(a: ArrayLike, repeats: int | ArrayLike, axis: int | None = None) -> Any:
    x = asarray(a)
    if axis is None:
        x, axis = ravel(x), 0
    (ax,) = normalize_axis(axis, x.ndim, "repeat")
    if isinstance(repeats, (int, np.integer)):
        r = int(repeats)
        if r < 0:
            raise ValueError("repeats may not be negative")
        expanded = expand_dims(x, ax + 1)
        shape = list(expanded.shape)
        shape[ax + 1] = r
        merged = list(x.shape)
        merged[ax] *= r
        return reshape(broadcast_to(expanded, tuple(shape)), tuple(merged))
    counts = np.asarray(repeats)
    source = np.repeat(np.arange(x.shape[ax]), counts)
    return take(x, source, axis=ax)


def flip(a: ArrayLike, axis: int | Sequence[int] | None = None) -> Any:
    x = asarray(a)
    axes = normalize_axis(axis, x.ndim, "flip")
    return x[tuple(slice(None, None, -1) if i in axes else slice(None) for i in range(x.ndim))]


def take(a: ArrayLike, indices: ArrayLike, axis: int | None = None) -> Any:
    x = asarray(a)
    if axis is None:
        x, axis = ravel(x), 0
    (ax,) = normalize_axis(axis, x.ndim, "take")
    idx = indices if isinstance(indices, (int, np.integer)) else asarray(indices)
    return x[(slice(None),) * ax + (idx,)]


def getitem(x: Any, idx: Any) -> Any:
    index, arrays = normalize_index(tuple(x.shape), idx)
    if not arrays and builtins_all_full(index, x.shape):
        return x
    return P.gather_p(x, *[asarray(a) for a in arrays], index=index)


def builtins_all_full(index: tuple, shape: tuple[int, ...]) -> bool:
    """Whether an index selects the whole array unchanged (x[:], x[...])."""
    for item in index:
        if item[0] == "ellipsis":
            continue
        if item[0] != "slice" or item[1:] not in ((None, None, None), (0, None, None), (None, None, 1)):
            return False
    return True


def index_update(x: Any, idx: Any, values: ArrayLike, mode: str) -> Any:
    index, arrays = normalize_index(tuple(x.shape), idx)
    arrays = [asarray(a) for a in arrays]
    y = asarray(values)
    if y.dtype != x.dtype:
        y = convert(y, x.dtype)
    target = indexed_shape(tuple(x.shape), index, [tuple(a.shape) for a in arrays])
    extra = y.ndim - len(target)
    if extra > 0 and all(n == 1 for n in y.shape[:extra]):
        y = reshape(y, tuple(y.shape)[extra:])  # NumPy lets values carry leading unit axes
    return P.index_update_p(x, y, *arrays, index=index, mode=mode)


class _IndexUpdateRef:
    """`x.at[idx]`: functional updates that return a new array."""

    __slots__ = ("array", "index")

    def __init__(self, array: Any, index: Any) -> None:
        self.array = array
        self.index = index

    def get(self) -> Any:
        return getitem(self.array, self.index)

    def set(self, values: ArrayLike) -> Any:
        return index_update(self.array, self.index, values, "set")

    def add(self, values: ArrayLike) -> Any:
        return index_update(self.array, self.index, values, "add")

    def multiply(self, values: ArrayLike) -> Any:
        return index_update(self.array, self.index, values, "mul")

    mul = multiply

    def subtract(self, values: ArrayLike) -> Any:
        return index_update(self.array, self.index, -asarray(values), "add")

    def divide(self, values: ArrayLike) -> Any:
        return index_update(self.array, self.index, 1 / asarray(values), "mul")


class _IndexUpdateHelper:
    __slots__ = ("array",)

    def __init__(self, array: Any) -> None:
        self.array = array

    def __getitem__(self, index: Any) -> _IndexUpdateRef:
        return _IndexUpdateRef(self.array, index)
