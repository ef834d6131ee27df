"""NumPy indexing, described statically so that it can live in a graph.

An index becomes a tuple of items: ("int", i), ("slice", start, stop, step), ("none",),
("ellipsis",) and ("array", k) for the k-th integer index array, which is an operand of the
equation (so it may be traced). Boolean masks are turned into integer arrays up front: their
result's shape depends on their values, so they must be concrete.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from engine.array import Array
from engine.core import Tracer, concrete_value
from engine.errors import ConcretizationError, ShapeError


def _as_int(x: Any) -> int | None:
    if isinstance(x, (bool, np.bool_)):
        return None
    if isinstance(x, (int, np.integer)):
        return int(x)
    return None


def normalize_index(shape: tuple[int, ...], idx: Any) -> tuple[tuple, list[Any]]:
    """Split a user index into its static description and its integer index arrays."""
    if not isinstance(idx, tuple):
        idx = (idx,)
    items: list[tuple] = []
    arrays: list[Any] = []
    n_consumed = sum(
        _index_ndim(i) for i in idx if i is not None and i is not Ellipsis
    )
    if n_consumed > len(shape):
        raise IndexError(f"too many indices for an array of shape {shape}: {n_consumed} dimensions indexed")
    if sum(1 for i in idx if i is Ellipsis) > 1:
        raise IndexError("an index can only have a single ellipsis ('...')")
    dim = 0
    for item in idx:
        as_int = _as_int(item)
        if item is None:
            items.append(("none",))
        elif item is Ellipsis:
            items.append(("ellipsis",))
            dim += len(shape) - n_consumed
        elif as_int is not None:
            n = shape[dim]
            if not -n <= as_int < n:
                raise IndexError(f"index {as_int} is out of bounds for axis {dim} with size {n}")
            items.append(("int", as_int % n))
            dim += 1
        elif isinstance(item, slice):
            bounds = []
            for part, name in ((item.start, "start"), (item.stop, "stop"), (item.step, "step")):
                if part is None:
                    bounds.append(None)
                    continue
                value = _as_int(part)
                if value is None:
                    if isinstance(part, Tracer) and part.value is None:
                        raise ConcretizationError(
                            f"slice {name} is a traced value; slice bounds must be known when the "
                            "function is traced. Use an integer index array or jnp.where instead."
                        )
                    value = int(part)
                bounds.append(value)
            if bounds[2] == 0:
                raise ValueError("slice step cannot be zero")
            items.append(("slice", *bounds))
            dim += 1
        else:
            is_tracer = isinstance(item, Tracer)
            value = item if is_tracer else (item._value if isinstance(item, Array) else np.asarray(item))
            dtype = item.dtype if is_tracer else value.dtype
            if dtype == np.bool_:
                if is_tracer:
                    if item.value is None:
                        raise ConcretizationError(
                            "boolean mask indexing with a traced mask: the result's shape would "
                            "depend on the mask's values, which are unknown while tracing. Use "
                            "`jnp.where(mask, x, 0)` to keep the shape fixed."
                        )
                    value = np.asarray(item.value)
                mask_shape = shape[dim:dim + value.ndim]
                if tuple(value.shape) != tuple(mask_shape):
                    raise IndexError(f"boolean index of shape {value.shape} does not match the indexed "
                                     f"dimensions {tuple(mask_shape)}")
                for nz in np.nonzero(value):
                    items.append(("array", len(arrays)))
                    arrays.append(nz.astype(np.int64))
                dim += value.ndim
            elif dtype.kind in "iu":
                if not is_tracer:
                    _check_bounds(value, shape[dim], dim)
                items.append(("array", len(arrays)))
                arrays.append(item if is_tracer else value)
                dim += 1
            else:
                raise IndexError(
                    f"arrays used as indices must be of integer or boolean dtype, got {dtype}; "
                    "indices may be ints, slices, None, ..., integer arrays or boolean masks"
                )
    return tuple(items), arrays


def _check_bounds(value: np.ndarray, n: int, dim: int) -> None:
    """Integer index arrays are checked here, while they are exact: the engine's default int32
    would turn an index of 2**32 into 0."""
    if value.size and (value.min() < -n or value.max() >= n):
        bad = value.min() if value.min() < -n else value.max()
        raise IndexError(f"index {int(bad)} is out of bounds for axis {dim} with size {n}")


def _index_ndim(item: Any) -> int:
    """How many dimensions of the indexed array an index item consumes."""
    if isinstance(item, (Tracer, Array, np.ndarray)) and getattr(item, "dtype", None) == np.bool_:
        return item.ndim
    if isinstance(item, list):
        arr = np.asarray(item)
        return arr.ndim if arr.dtype == np.bool_ else 1
    return 1


def indexed_shape(shape: tuple[int, ...], index: tuple, array_shapes: list[tuple[int, ...]]) -> tuple[int, ...]:
    """The shape of x[index] by NumPy's rules, computed without touching data."""
    consumed = sum(1 for it in index if it[0] in ("int", "slice", "array"))
    if consumed > len(shape):
        raise ShapeError(f"index consumes {consumed} dimensions of an array of shape {shape}")
    has_arrays = any(it[0] == "array" for it in index)
    out: list[int] = []
    advanced: list[tuple[int, ...]] = []
    advanced_positions: list[int] = []  # positions among index items
    insert_at = None
    dim = 0
    for pos, it in enumerate(index):
        kind = it[0]
        if kind == "int" and not 0 <= it[1] < shape[dim]:  # graphs from JSON are checked here, not in normalize_index
            raise IndexError(f"index {it[1]} is out of bounds for axis {dim} with size {shape[dim]}")
        if kind == "none":
            out.append(1)
        elif kind == "ellipsis":
            rest = len(shape) - consumed
            out.extend(shape[dim:dim + rest])
            dim += rest
        elif kind == "slice":
            out.append(len(range(*slice(it[1], it[2], it[3]).indices(shape[dim]))))
            dim += 1
        elif kind == "int" and not has_arrays:
            dim += 1
        else:  # an integer array, or an int acting as an advanced index beside arrays
            advanced.append(() if kind == "int" else tuple(array_shapes[it[1]]))
            advanced_positions.append(pos)
            if insert_at is None:
                insert_at = len(out)
            dim += 1
    out.extend(shape[dim:])
    if advanced:
        try:
            bshape = tuple(np.broadcast_shapes(*advanced))
        except ValueError:
            raise IndexError(f"index arrays of shapes {advanced} do not broadcast together") from None
        contiguous = advanced_positions == list(range(advanced_positions[0], advanced_positions[-1] + 1))
        at = insert_at if contiguous else 0
        out[at:at] = bshape
    return tuple(out)


def selects_repeatedly(shape: tuple[int, ...], index: tuple, arrays: list[Any]) -> bool | None:
    """Whether x[index] selects some element of x more than once (None: an index array's values
    are unknown, as while tracing abstractly). Only integer index arrays can repeat an element."""
    dims, sizes, d = [], [], 0
    consumed = sum(1 for it in index if it[0] in ("int", "slice", "array"))
    for item in index:
        if item[0] == "ellipsis":
            d += len(shape) - consumed
        elif item[0] == "array":
            value = arrays[item[1]]
            value = concrete_value(value) if isinstance(value, Tracer) or hasattr(value, "_value") else value
            if value is None:
                return None
            dims.append(np.asarray(value))
            sizes.append(shape[d])
            d += 1
        elif item[0] != "none":
            d += 1
    if not dims:
        return False
    broadcast = np.broadcast_arrays(*dims)
    # mode="wrap" maps negative indices (-n..-1) as NumPy does; out-of-range ones failed earlier.
    flat = np.ravel_multi_index(tuple(b.ravel() for b in broadcast), tuple(sizes), mode="wrap")
    return len(np.unique(flat)) < flat.size


def index_to_numpy(index: tuple, arrays: tuple[np.ndarray, ...]) -> tuple:
    """A static index description as a NumPy index (the k-th array item is arrays[k])."""
    out = []
    for item in index:
        kind = item[0]
        if kind == "int":
            out.append(item[1])
        elif kind == "slice":
            out.append(slice(item[1], item[2], item[3]))
        elif kind == "none":
            out.append(None)
        elif kind == "ellipsis":
            out.append(Ellipsis)
        else:  # ("array", k): the k-th dynamic index operand
            out.append(arrays[item[1]])
    return tuple(out)


def index_dims(index: tuple, shape: tuple[int, ...]) -> list[int]:
    """The size of the dimension each index item applies to (0 for items that consume none)."""
    dims, d = [], 0
    consumed = sum(1 for it in index if it[0] in ("int", "slice", "array"))
    for item in index:
        if item[0] == "ellipsis":
            dims.append(0)
            d += len(shape) - consumed
        elif item[0] == "none":
            dims.append(0)
        else:
            dims.append(shape[d] if d < len(shape) else 0)
            d += 1
    return dims
