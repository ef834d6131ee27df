"""Building arrays from arrays: pad, roll, rot90, tril/triu, diff, splits, stacks, kron, cross, r_/c_.

Each is composed of slicing, gathering, concatenation, transposition and elementwise operations,
so it is differentiable to any order through theirs: the derivative of a rearrangement puts each
cotangent back where its element came from (summing where an element was used several times, as
`pad` with mode "edge" or "reflect" does), and the masked functions (`tril`, `triu`) pass no
cotangent to the elements they zero.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from engine import primitives as P
from engine.array import Array
from engine.core import Tracer, check_elements, concrete_value
from engine.errors import DtypeError, ShapeError
from engine.numpy._base import ArrayLike, asarray, normalize_axis, promote
from engine.numpy.creation import arange, linspace
from engine.numpy.shapes import (
    atleast_2d,
    broadcast_to,
    concatenate,
    expand_dims,
    flip,
    moveaxis,
    ravel,
    reshape,
    split,
    take,
    transpose,
    vstack,
)

# ----------------------------------------------------------------------------- pad

_INDEX_MODES = ("edge", "reflect", "symmetric", "wrap")


def _pad_widths(pad_width: Any, ndim: int) -> list[tuple[int, int]]:
    widths = np.asarray(pad_width)
    if widths.dtype.kind not in "iu" and not (widths.dtype.kind == "f" and np.all(widths == np.round(widths))):
        raise TypeError(f"pad: pad_width must be integers, got {pad_width!r}")
    try:
        pairs = np.broadcast_to(widths.astype(np.int64), (ndim, 2))
    except ValueError:
        raise ShapeError(f"pad: pad_width {pad_width!r} does not fit an array of {ndim} dimensions; give one "
                         "int, one (before, after) pair, or one pair per axis") from None
    if np.any(pairs < 0):
        raise ValueError(f"pad: pad widths must be non-negative, got {pad_width!r}")
    return [(int(b), int(a)) for b, a in pairs]


def pad(array: ArrayLike, pad_width: Any, mode: str = "constant", *, constant_values: Any = 0,
        reflect_type: str = "even") -> Any:
    """`array` extended along each axis by pad_width[i] = (before, after) elements.

    Modes: "constant" (constant_values, per axis and side if given as pairs; differentiable in
    them too), "edge" (the edge element repeated), "reflect" (mirrored about the edge element,
    which is not repeated), "symmetric" (mirrored including the edge element) and "wrap" (the
    other end continued). Every padded element is a copy of an input element, whose derivative
    receives the sum of the cotangents of all its copies.
    """
    x = asarray(array)
    widths = _pad_widths(pad_width, x.ndim)
    out_shape = tuple(n + b + a for n, (b, a) in zip(x.shape, widths))
    check_elements(out_shape, "the padded array")
    if mode == "constant":
        return _pad_constant(x, widths, constant_values)
    if mode not in _INDEX_MODES:
        modes = ", ".join(repr(m) for m in ("constant", *_INDEX_MODES))
        raise ValueError(f"pad: mode {mode!r} is not supported; use one of {modes}")
    if reflect_type != "even":
        raise NotImplementedError("pad: only reflect_type='even' is supported")
    for axis, (before, after) in enumerate(widths):
        if before == after == 0:
            continue
        n = x.shape[axis]
        if n == 0:
            raise ShapeError(f"pad: cannot pad axis {axis} of length 0 in mode {mode!r} (there is nothing "
                             "to copy); use mode='constant'")
        # Which input element each output position copies: NumPy's own padding of the positions.
        source = np.pad(np.arange(n), (before, after), mode=mode)
        x = take(x, source, axis=axis)
    return x


def _pad_constant(x: Any, widths: list[tuple[int, int]], constant_values: Any) -> Any:
    values = asarray(constant_values)
    if values.dtype != x.dtype:
        values = P.convert(values, x.dtype)
    if values.ndim > 2:
        raise ShapeError(f"pad: constant_values of shape {values.shape} does not fit; give a scalar or pairs")
    if values.ndim:
        try:
            values = broadcast_to(values, (x.ndim, 2))
        except ShapeError:
            raise ShapeError(f"pad: constant_values of shape {values.shape} does not fit an array of {x.ndim} "
                             "dimensions; give a scalar, one (before, after) pair, or one pair per axis") from None
    for axis, (before, after) in enumerate(widths):
        if before == after == 0:
            continue
        parts = []
        for side, width in ((0, before), (1, after)):
            if width:
                shape = list(x.shape)
                shape[axis] = width
                fill = values[axis, side] if values.ndim else values
                parts.append(broadcast_to(fill, tuple(shape)))
        parts.insert(1 if before else 0, x)
        x = concatenate(parts, axis=axis)
    return x


# ----------------------------------------------------------------------------- rearrangements


def roll(a: ArrayLike, shift: int | Sequence[int] | ArrayLike,
         axis: int | Sequence[int] | None = None) -> Any:
    """Elements shifted by `shift` positions along `axis` (cyclically; None: the flattened array,
    reshaped back). A traced shift is accepted too: the result is then a gather by computed
    indices (the derivative in the shift is zero, as in JAX)."""
    x = asarray(a)
    if axis is None:
        return reshape(roll(ravel(x), shift, 0), tuple(x.shape))
    axes = np.atleast_1d(np.asarray(axis, dtype=np.int64))
    known = _known_shifts(shift)
    if known is None:
        return _roll_traced(x, asarray(shift), axes)
    shifts = np.atleast_1d(known.astype(np.int64))
    try:
        shifts, axes = np.broadcast_arrays(shifts, axes)
    except ValueError:
        raise ShapeError(f"roll: {len(shifts)} shifts do not match {len(axes)} axes") from None
    total: dict[int, int] = {}
    for s, ax in zip(shifts.tolist(), axes.tolist()):
        (k,) = normalize_axis(ax, x.ndim, "roll")
        total[k] = total.get(k, 0) + s
    for k, s in total.items():
        n = x.shape[k]
        if n == 0 or s % n == 0:
            continue
        cut = n - s % n
        lead = (slice(None),) * k
        x = concatenate([x[lead + (slice(cut, None),)], x[lead + (slice(0, cut),)]], axis=k)
    return x


def _known_shifts(shift: Any) -> np.ndarray | None:
    """The shifts as NumPy integers, or None when they are traced (known only when the graph runs)."""
    if isinstance(shift, (Array, Tracer)):
        value = concrete_value(shift)
        return None if value is None else np.asarray(value)
    if isinstance(shift, (list, tuple)) and any(isinstance(s, Tracer) and s.value is None for s in shift):
        return None
    value = np.asarray([int(s) for s in shift] if isinstance(shift, (list, tuple)) else shift)
    if value.dtype.kind not in "iu":
        raise DtypeError(f"roll: shifts must be integers, got {shift!r}")
    return value


def _roll_traced(x: Any, shifts: Any, axes: np.ndarray) -> Any:
    if shifts.dtype.kind not in "iu":
        raise DtypeError(f"roll: shifts must be integers, got {shifts.dtype}")
    if shifts.ndim > 1 or (shifts.ndim == 1 and shifts.shape[0] not in (1, len(axes)) and len(axes) != 1):
        raise ShapeError(f"roll: shifts of shape {shifts.shape} do not match {len(axes)} axes")
    count = max(len(axes), shifts.shape[0] if shifts.ndim else 1)
    for i in range(count):
        s = shifts if shifts.ndim == 0 else shifts[i if shifts.shape[0] > 1 else 0]
        (k,) = normalize_axis(int(axes[i if len(axes) > 1 else 0]), x.ndim, "roll")
        n = x.shape[k]
        if n:
            x = take(x, (P.constant(np.arange(n)) - s) % n, axis=k)
    return x


def rot90(m: ArrayLike, k: int = 1, axes: tuple[int, int] = (0, 1)) -> Any:
    """`m` rotated by k quarter turns in the plane of `axes`, from the first axis towards the second."""
    x = asarray(m)
    if len(axes) != 2:
        raise ValueError("rot90: axes must name exactly two axes")
    if x.ndim < 2:
        raise ShapeError(f"rot90 needs an array of at least two dimensions, got {x.ndim}")
    first, second = (normalize_axis(a, x.ndim, "rot90")[0] for a in axes)
    if first == second:
        raise ValueError(f"rot90: the two axes must differ, got {tuple(axes)}")
    k = int(k) % 4
    if k == 0:
        return x
    if k == 2:
        return flip(flip(x, first), second)
    perm = list(range(x.ndim))
    perm[first], perm[second] = perm[second], perm[first]
    if k == 1:
        return transpose(flip(x, second), perm)
    return flip(transpose(x, perm), second)


def fliplr(m: ArrayLike) -> Any:
    """`m` with its second axis reversed."""
    x = asarray(m)
    if x.ndim < 2:
        raise ShapeError(f"fliplr needs an array of at least two dimensions, got {x.ndim}")
    return flip(x, 1)


def flipud(m: ArrayLike) -> Any:
    """`m` with its first axis reversed."""
    x = asarray(m)
    if x.ndim < 1:
        raise ShapeError("flipud needs an array of at least one dimension, got a scalar")
    return flip(x, 0)


def rollaxis(a: ArrayLike, axis: int, start: int = 0) -> Any:
    """NumPy's rollaxis: `axis` moved to stand before position `start` (prefer moveaxis)."""
    x = asarray(a)
    n = x.ndim
    (ax,) = normalize_axis(axis, n, "rollaxis")
    start = int(start)
    if start < 0:
        start += n
    if not 0 <= start <= n:
        raise ShapeError(f"rollaxis: start {start} is out of bounds for an array of {n} dimensions "
                         f"(it must lie in [{-n}, {n}])")
    if ax < start:
        start -= 1
    if ax == start:
        return x
    return moveaxis(x, ax, start)


def _triangle(m: ArrayLike, k: int, name: str, lower: bool) -> Any:
    x = asarray(m)
    if x.ndim < 2:
        raise ShapeError(f"`{name}` needs an array of at least two dimensions, got {x.ndim}")
    rows, cols = x.shape[-2:]
    keep = np.tri(rows, cols, int(k), dtype=bool) if lower else ~np.tri(rows, cols, int(k) - 1, dtype=bool)
    return P.select_p(broadcast_to(P.constant(keep), tuple(x.shape)), x,
                      broadcast_to(P.zeros((), x.dtype), tuple(x.shape)))


def tril(m: ArrayLike, k: int = 0) -> Any:
    """The lower triangle of the last two axes: elements above diagonal k set to zero (they
    receive no cotangent)."""
    return _triangle(m, k, "tril", lower=True)


def triu(m: ArrayLike, k: int = 0) -> Any:
    """The upper triangle of the last two axes: elements below diagonal k set to zero."""
    return _triangle(m, k, "triu", lower=False)


def diff(a: ArrayLike, n: int = 1, axis: int = -1, prepend: ArrayLike | None = None,
         append: ArrayLike | None = None) -> Any:
    """The n-th forward difference along `axis`, after joining `prepend` and `append` to its ends
    (a scalar is broadcast to one slice); booleans differ by `not_equal`."""
    x = asarray(a)
    n = int(n)
    if n < 0:
        raise ValueError(f"diff: order n must be non-negative, got {n}")
    if n == 0:
        return x
    if x.ndim == 0:
        raise ShapeError("diff needs an array of at least one dimension, got a scalar")
    (ax,) = normalize_axis(axis, x.ndim, "diff")
    parts = [x]
    if prepend is not None:
        parts.insert(0, _one_slice(prepend, x.shape, ax))
    if append is not None:
        parts.append(_one_slice(append, x.shape, ax))
    x = concatenate(parts, axis=ax) if len(parts) > 1 else x
    lead = (slice(None),) * ax
    for _ in range(min(n, max(x.shape[ax], 1))):
        later, earlier = x[lead + (slice(1, None),)], x[lead + (slice(None, -1),)]
        x = P.ne_p(later, earlier) if x.dtype == np.bool_ else later - earlier
    return x


def _one_slice(value: ArrayLike, shape: tuple[int, ...], axis: int) -> Any:
    """diff's prepend/append: a scalar becomes one slice of the array's shape along `axis`."""
    v = asarray(value)
    if v.ndim:
        return v
    one = list(shape)
    one[axis] = 1
    return broadcast_to(v, tuple(one))


def append(arr: ArrayLike, values: ArrayLike, axis: int | None = None) -> Any:
    """`values` joined to the end of `arr` along `axis` (None: both flattened)."""
    if axis is None:
        return concatenate([ravel(asarray(arr)), ravel(asarray(values))], axis=0)
    return concatenate([arr, values], axis=axis)


# ----------------------------------------------------------------------------- splits and stacks


def array_split(ary: ArrayLike, indices_or_sections: int | Sequence[int], axis: int = 0) -> list[Any]:
    """Like `split`, but a number of sections need not divide the axis: the first n % sections
    parts get one element more."""
    x = asarray(ary)
    if not isinstance(indices_or_sections, (int, np.integer)):
        return split(x, indices_or_sections, axis=axis)
    sections = int(indices_or_sections)
    if sections <= 0:
        raise ValueError(f"array_split: the number of sections must be positive, got {sections}")
    check_elements((sections,), "array_split's list of parts")  # one Python object per part
    (ax,) = normalize_axis(axis, x.ndim, "array_split")
    length = x.shape[ax]
    each, extra = divmod(length, sections)
    sizes = [each + 1] * extra + [each] * (sections - extra)
    bounds = np.cumsum(sizes)[:-1].tolist()
    return split(x, bounds, axis=ax)


def hsplit(ary: ArrayLike, indices_or_sections: int | Sequence[int]) -> list[Any]:
    """Split along the second axis (the first for 1-D arrays)."""
    x = asarray(ary)
    if x.ndim == 0:
        raise ShapeError("hsplit needs an array of at least one dimension, got a scalar")
    return split(x, indices_or_sections, axis=1 if x.ndim > 1 else 0)


def vsplit(ary: ArrayLike, indices_or_sections: int | Sequence[int]) -> list[Any]:
    """Split along the first axis (arrays of two or more dimensions)."""
    x = asarray(ary)
    if x.ndim < 2:
        raise ShapeError(f"vsplit needs an array of at least two dimensions, got {x.ndim}")
    return split(x, indices_or_sections, axis=0)


def dsplit(ary: ArrayLike, indices_or_sections: int | Sequence[int]) -> list[Any]:
    """Split along the third axis (arrays of three or more dimensions)."""
    x = asarray(ary)
    if x.ndim < 3:
        raise ShapeError(f"dsplit needs an array of at least three dimensions, got {x.ndim}")
    return split(x, indices_or_sections, axis=2)


def atleast_3d(*arys: ArrayLike) -> Any:
    """Each array with at least three dimensions: (N,) becomes (1, N, 1) and (M, N) becomes
    (M, N, 1). One array for one argument, else a list."""
    out = []
    for a in arys:
        x = asarray(a)
        if x.ndim == 0:
            x = reshape(x, (1, 1, 1))
        elif x.ndim == 1:
            x = reshape(x, (1, x.shape[0], 1))
        elif x.ndim == 2:
            x = reshape(x, (*x.shape, 1))
        out.append(x)
    return out[0] if len(out) == 1 else out


def column_stack(tup: Sequence[ArrayLike]) -> Any:
    """1-D arrays as the columns of a 2-D array (higher ones joined along their second axis)."""
    columns = []
    for a in tup:
        x = asarray(a)
        columns.append(transpose(atleast_2d(x)) if x.ndim < 2 else x)
    return concatenate(columns, axis=1)


def row_stack(tup: Sequence[ArrayLike]) -> Any:
    """The arrays as rows: `vstack`."""
    return vstack(tup)


# ----------------------------------------------------------------------------- products


def kron(a: ArrayLike, b: ArrayLike) -> Any:
    """The Kronecker product: block (i, j, ...) is a[i, j, ...] * b (the smaller operand gains
    leading unit axes)."""
    x, y = promote(a, b)
    if x.ndim < y.ndim:
        x = reshape(x, (1,) * (y.ndim - x.ndim) + tuple(x.shape))
    elif y.ndim < x.ndim:
        y = reshape(y, (1,) * (x.ndim - y.ndim) + tuple(y.shape))
    out_shape = tuple(m * n for m, n in zip(x.shape, y.shape))
    check_elements(out_shape, "the Kronecker product")
    if x.ndim == 0:
        return x * y
    interleaved_x = reshape(x, tuple(v for n in x.shape for v in (n, 1)))
    interleaved_y = reshape(y, tuple(v for n in y.shape for v in (1, n)))
    return reshape(interleaved_x * interleaved_y, out_shape)


def cross(a: ArrayLike, b: ArrayLike, axisa: int = -1, axisb: int = -1, axisc: int = -1,
          axis: int | None = None) -> Any:
    """The cross product of 3-vectors (a 2-vector has a zero third component) along axisa/axisb,
    the result's vector axis at axisc; two 2-vectors give the scalar z component."""
    if axis is not None:
        axisa = axisb = axisc = axis
    x, y = promote(a, b)
    if x.ndim == 0 or y.ndim == 0:
        raise ShapeError("cross needs vectors, got a scalar")
    x = moveaxis(x, normalize_axis(axisa, x.ndim, "cross")[0], -1)
    y = moveaxis(y, normalize_axis(axisb, y.ndim, "cross")[0], -1)
    if x.shape[-1] not in (2, 3) or y.shape[-1] not in (2, 3):
        raise ShapeError(f"cross: vectors must have 2 or 3 components, got {x.shape[-1]} and {y.shape[-1]}")
    a0, a1 = x[..., 0], x[..., 1]
    b0, b1 = y[..., 0], y[..., 1]
    z = a0 * b1 - a1 * b0
    if x.shape[-1] == 2 and y.shape[-1] == 2:
        return z
    if x.shape[-1] == 3 and y.shape[-1] == 3:
        a2, b2 = x[..., 2], y[..., 2]
        components = [a1 * b2 - a2 * b1, a2 * b0 - a0 * b2, z]
    elif x.shape[-1] == 3:
        a2 = x[..., 2]
        components = [-(a2 * b1), a2 * b0, z]
    else:
        b2 = y[..., 2]
        components = [a1 * b2, -(a0 * b2), z]
    shape = P.broadcast_shapes(*[tuple(c.shape) for c in components], op="cross")
    result = concatenate([expand_dims(broadcast_to(c, shape), -1) for c in components], axis=-1)
    (out_axis,) = normalize_axis(axisc, result.ndim, "cross")
    return moveaxis(result, -1, out_axis)


# ----------------------------------------------------------------------------- index helpers

s_ = np.s_
index_exp = np.index_exp


class _AxisConcatenator:
    """`r_[...]` and `c_[...]`: arrays, scalars and slices (a:b:step as arange, a:b:nj as linspace
    with n points) joined along an axis. A leading string "axis[,ndmin[,trans1d]]" sets the
    axis, the minimum number of dimensions of each piece, and where a piece's own axes go when it
    gains dimensions, as in NumPy. Matrix directives ("r", "c") are not supported."""

    def __init__(self, name: str, axis: int, ndmin: int, trans1d: int) -> None:
        self._name, self._axis, self._ndmin, self._trans1d = name, axis, ndmin, trans1d

    def __getitem__(self, key: Any) -> Any:
        items = list(key) if isinstance(key, tuple) else [key]
        axis, ndmin, trans1d = self._axis, self._ndmin, self._trans1d
        if items and isinstance(items[0], str):
            directive = items.pop(0)
            try:
                numbers = [int(part) for part in directive.split(",")]
            except ValueError:
                raise ValueError(f"{self._name}: directive {directive!r} is not supported; give "
                                 "'axis', 'axis,ndmin' or 'axis,ndmin,trans1d' (integers)") from None
            if not 1 <= len(numbers) <= 3:
                raise ValueError(f"{self._name}: directive {directive!r} has {len(numbers)} numbers; give 1 to 3")
            axis = numbers[0]
            ndmin = numbers[1] if len(numbers) > 1 else ndmin
            trans1d = numbers[2] if len(numbers) > 2 else trans1d
        pieces = []
        for item in items:
            if isinstance(item, str):
                raise ValueError(f"{self._name}: a string may only come first, as the directive")
            if isinstance(item, slice):
                start = 0 if item.start is None else item.start
                step = 1 if item.step is None else item.step
                if isinstance(step, complex):
                    piece = linspace(start, item.stop, int(abs(step)))
                else:
                    piece = arange(start, item.stop, step)
            else:
                piece = asarray(item)
            pieces.append(self._with_ndmin(piece, ndmin, trans1d))
        if not pieces:
            raise ValueError(f"{self._name}: nothing to join")
        return concatenate(pieces, axis=axis)

    @staticmethod
    def _with_ndmin(x: Any, ndmin: int, trans1d: int) -> Any:
        if x.ndim >= ndmin:
            return x
        own = x.ndim
        x = reshape(x, (1,) * (ndmin - own) + tuple(x.shape))
        if trans1d == -1 or own == 0:
            return x
        # NumPy moves the piece's own axes (now last) to start at position trans1d.
        k1 = trans1d + (ndmin - own) + 1 if trans1d < 0 else trans1d
        k2 = ndmin - own
        order = list(range(ndmin))
        return transpose(x, order[:k1] + order[k2:] + order[k1:k2])


r_ = _AxisConcatenator("r_", axis=0, ndmin=1, trans1d=-1)
c_ = _AxisConcatenator("c_", axis=-1, ndmin=2, trans1d=0)
