"""Products and contractions: dot, matmul, einsum and their relatives."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from engine import primitives as P
from engine.errors import InvalidArgumentError, ShapeError
from engine.numpy import reductions as R
from engine.numpy._base import ArrayLike, asarray, promote
from engine.numpy.creation import zeros
from engine.numpy.shapes import expand_dims, moveaxis, ravel, squeeze

_LETTERS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"


def matmul(a: ArrayLike, b: ArrayLike) -> Any:
    """NumPy's matmul: 1-D operands are promoted to matrices and the added axis removed again."""
    x, y = promote(a, b)
    if x.ndim == 0 or y.ndim == 0:
        raise ShapeError("matmul does not accept scalars; use multiply (*) instead")
    x2 = expand_dims(x, 0) if x.ndim == 1 else x
    y2 = expand_dims(y, -1) if y.ndim == 1 else y
    if x2.shape[-1] != y2.shape[-2]:
        raise ShapeError(
            f"matmul: the contracted dimensions differ: {tuple(x.shape)} @ {tuple(y.shape)} "
            f"({x2.shape[-1]} != {y2.shape[-2]}). Transpose an operand or check the argument order."
        )
    out = P.matmul_p(x2, y2)
    if y.ndim == 1:
        out = squeeze(out, -1)
    if x.ndim == 1:
        out = squeeze(out, -2 if y.ndim > 1 else -1)
    return out


def dot(a: ArrayLike, b: ArrayLike) -> Any:
    x, y = promote(a, b)
    if x.ndim == 0 or y.ndim == 0:
        return x * y
    if y.ndim <= 2:
        return matmul(x, y)
    return tensordot(x, y, axes=([x.ndim - 1], [y.ndim - 2]))


def vdot(a: ArrayLike, b: ArrayLike) -> Any:
    x, y = promote(a, b)
    if x.size != y.size:
        raise ShapeError(f"vdot needs operands with equal numbers of elements, got {x.shape} and {y.shape}")
    return matmul(ravel(x), ravel(y))


def inner(a: ArrayLike, b: ArrayLike) -> Any:
    x, y = promote(a, b)
    if x.ndim == 0 or y.ndim == 0:
        return x * y
    return tensordot(x, y, axes=([x.ndim - 1], [y.ndim - 1]))


def outer(a: ArrayLike, b: ArrayLike) -> Any:
    x, y = promote(a, b)
    return expand_dims(ravel(x), 1) * expand_dims(ravel(y), 0)


def tensordot(a: ArrayLike, b: ArrayLike, axes: int | Sequence[Any] = 2) -> Any:
    x, y = promote(a, b)
    if isinstance(axes, int):
        ax_a = list(range(x.ndim - axes, x.ndim))
        ax_b = list(range(axes))
    else:
        ax_a, ax_b = axes
        ax_a = [ax_a] if isinstance(ax_a, int) else list(ax_a)
        ax_b = [ax_b] if isinstance(ax_b, int) else list(ax_b)
    ax_a = [i % x.ndim for i in ax_a]
    ax_b = [i % y.ndim for i in ax_b]
    if len(ax_a) != len(ax_b):
        raise ShapeError("tensordot: both operands need the same number of contracted axes")
    letters = iter(_LETTERS)
    sa = [next(letters) for _ in range(x.ndim)]
    sb = [next(letters) for _ in range(y.ndim)]
    for i, j in zip(ax_a, ax_b):
        if x.shape[i] != y.shape[j]:
            raise ShapeError(f"tensordot: axis {i} of {x.shape} and axis {j} of {y.shape} differ in size")
        sb[j] = sa[i]
    out = [c for i, c in enumerate(sa) if i not in ax_a] + [c for j, c in enumerate(sb) if j not in ax_b]
    return _einsum("".join(sa) + "," + "".join(sb) + "->" + "".join(out), x, y)


def _einsum(spec: str, *operands: Any) -> Any:
    return P.einsum_p(*operands, spec=spec)


def parse_einsum(subscripts: Any, ndims: Sequence[int]) -> tuple[list[str], str]:
    """The operand terms and the output of an einsum spec, checked against the operands' ranks.

    Raises InvalidArgumentError for a malformed spec and ShapeError for one that does not fit the
    operands, so no malformed spec reaches NumPy.
    """
    if not isinstance(subscripts, str):
        raise InvalidArgumentError(f"einsum: the subscripts must be a string like 'ij,jk->ik', got "
                                   f"{type(subscripts).__name__}")
    spec = subscripts.replace(" ", "")
    if "..." in spec or "." in spec:
        raise InvalidArgumentError(f"einsum {subscripts!r}: an ellipsis ('...') is not supported; name every "
                                   "axis with a letter (e.g. 'bij,bjk->bik')")
    lhs, arrow, out = spec.partition("->")
    bad = sorted(set(c for c in lhs if c not in _LETTERS and c != ",") | set(c for c in out if c not in _LETTERS))
    if bad:
        raise InvalidArgumentError(f"einsum {subscripts!r}: {''.join(bad)!r} cannot appear; subscripts are "
                                   "letters a-z and A-Z, with ',' between operands and at most one '->'")
    terms = lhs.split(",")
    if len(terms) != len(ndims):
        raise ShapeError(f"einsum {subscripts!r} names {len(terms)} operand(s), but got {len(ndims)}")
    for k, (term, ndim) in enumerate(zip(terms, ndims)):
        if len(term) != ndim:
            raise ShapeError(f"einsum {subscripts!r}: operand {k} has {ndim} dimension(s) but its subscripts "
                             f"{term!r} name {len(term)}")
    letters = "".join(terms)
    if not arrow:
        return terms, "".join(sorted(c for c in set(letters) if letters.count(c) == 1))
    repeated = sorted(set(c for c in out if out.count(c) > 1))
    if repeated:
        raise InvalidArgumentError(f"einsum {subscripts!r}: output subscript(s) {''.join(repeated)!r} appear more "
                                   "than once; each output letter names one axis")
    unknown = sorted(set(out) - set(letters))
    if unknown:
        raise InvalidArgumentError(f"einsum {subscripts!r}: output subscript(s) {''.join(unknown)!r} name no axis "
                                   "of any operand")
    return terms, out


def _sublist_spec(args: Sequence[Any]) -> tuple[str, list[Any]]:
    """einsum(op0, sublist0, op1, sublist1, ..., [output sublist]) as a subscript string and the
    operands. Axis numbers 0-51 become letters in order (A-Z, then a-z), so the implicit output's
    alphabetical order is their numeric order, as in NumPy; Ellipsis becomes '...'."""
    def letters(sublist: Any) -> str:
        if not isinstance(sublist, (list, tuple)):
            raise InvalidArgumentError(f"einsum: in the sublist form every operand is followed by a list of axis "
                                       f"numbers, got {type(sublist).__name__}")
        out = []
        for axis in sublist:
            if axis is Ellipsis:
                out.append("...")
            elif isinstance(axis, (int, np.integer)) and not isinstance(axis, bool) and 0 <= axis < len(_LETTERS):
                out.append(chr(ord("A") + axis) if axis < 26 else chr(ord("a") + axis - 26))
            else:
                raise InvalidArgumentError(f"einsum: sublist entries are axis numbers 0-{len(_LETTERS) - 1} or "
                                           f"Ellipsis, got {axis!r}")
        return "".join(out)

    pairs = len(args) // 2
    operands = [args[2 * k] for k in range(pairs)]
    spec = ",".join(letters(args[2 * k + 1]) for k in range(pairs))
    if len(args) % 2:
        spec += "->" + letters(args[-1])
    return spec, operands


def _expand_ellipsis(subscripts: str, ndims: Sequence[int]) -> str:
    """A spec with '...' rewritten with letters of its own for the broadcast axes (aligned from the
    right, as in NumPy); the output is made explicit. Without '->', the broadcast axes come first
    in the output; with an output that has no '...', they are summed over (as JAX does)."""
    spec = subscripts.replace(" ", "")
    if "." not in spec:
        return spec
    lhs, arrow, out = spec.partition("->")
    terms = lhs.split(",")
    for part in terms + [out]:
        if part.replace("...", "", 1).count("."):
            raise InvalidArgumentError(f"einsum {subscripts!r}: '.' appears only as one '...' per operand and output")
    if len(terms) != len(ndims):
        raise ShapeError(f"einsum {subscripts!r} names {len(terms)} operand(s), but got {len(ndims)}")
    ranks = []
    for k, (term, ndim) in enumerate(zip(terms, ndims)):
        named = len(term.replace("...", ""))
        if "..." in term and ndim < named:
            raise ShapeError(f"einsum {subscripts!r}: operand {k} has {ndim} dimension(s), fewer than the "
                             f"{named} its subscripts {term!r} name")
        ranks.append(ndim - named if "..." in term else 0)
    free = [c for c in _LETTERS if c not in spec]
    broadcast = max(ranks)
    if broadcast > len(free):
        raise InvalidArgumentError(f"einsum {subscripts!r}: too many axes to name with letters")
    ell = "".join(free[:broadcast])
    terms = [t.replace("...", ell[broadcast - r:]) for t, r in zip(terms, ranks)]
    if not arrow:
        named = "".join(t.replace("...", "") for t in lhs.split(","))
        out = ell + "".join(sorted(c for c in set(named) if named.count(c) == 1))
    else:
        out = out.replace("...", ell)
    return ",".join(terms) + "->" + out


def _squeeze_broadcast(terms: list[str], xs: list[Any]) -> tuple[list[str], list[Any]]:
    """Operands' axes of size 1 that broadcast against a longer axis of the same letter, removed
    (with their letter): the primitive needs each letter to have one size."""
    sizes: dict[str, int] = {}
    for term, x in zip(terms, xs):
        for c, n in zip(term, x.shape):
            if n != 1:
                sizes[c] = n
    for k, (term, x) in enumerate(zip(terms, xs)):
        drop = [i for i, c in enumerate(term) if x.shape[i] == 1 and sizes.get(c, 1) != 1]
        if drop:
            xs[k] = squeeze(x, tuple(drop))
            terms[k] = "".join(c for i, c in enumerate(term) if i not in drop)
    return terms, xs


def einsum(subscripts: Any, *operands: ArrayLike, optimize: Any = "optimal", precision: Any = None) -> Any:
    """Einstein summation with explicit or implicit output, '...' for broadcast axes, and NumPy's
    sublist form `einsum(x, [0, 1], y, [1, 2], [0, 2])`. `optimize` and `precision` are accepted
    for JAX's signature and change nothing: NumPy chooses the contraction order."""
    if not isinstance(subscripts, str):
        subscripts, operands = _sublist_spec((subscripts, *operands))
    if not operands:
        raise ShapeError("einsum needs at least one operand after the subscripts")
    xs = promote(*operands)
    if "." in subscripts:
        expanded = _expand_ellipsis(subscripts, [x.ndim for x in xs])
        lhs, _, out = expanded.partition("->")
        terms, xs = _squeeze_broadcast(lhs.split(","), xs)
        subscripts = ",".join(terms) + "->" + out
    terms, out = parse_einsum(subscripts, [x.ndim for x in xs])
    # A letter repeated within one operand takes a diagonal; do that first, so the primitive
    # only ever sees distinct letters per operand.
    for k, term in enumerate(terms):
        while len(set(term)) != len(term):
            letter = next(c for c in term if term.count(c) > 1)
            i = term.index(letter)
            j = term.index(letter, i + 1)
            xs[k] = diagonal(xs[k], 0, i, j)
            term = "".join(c for n, c in enumerate(term) if n not in (i, j)) + letter
        terms[k] = term
    return _einsum(",".join(terms) + "->" + out, *xs)


def diagonal(a: ArrayLike, offset: int = 0, axis1: int = 0, axis2: int = 1) -> Any:
    """The diagonal, moved to the last axis (as numpy.diagonal)."""
    x = asarray(a)
    x = moveaxis(x, (axis1, axis2), (-2, -1))
    n, m = x.shape[-2], x.shape[-1]
    rows = np.arange(max(0, -offset), min(n, m - offset) if offset >= 0 else min(n, m - offset))
    rows = rows[rows < n]
    cols = rows + offset
    keep = (cols >= 0) & (cols < m)
    rows, cols = rows[keep], cols[keep]
    return x[..., rows, cols]


def trace(a: ArrayLike, offset: int = 0, axis1: int = 0, axis2: int = 1) -> Any:
    return R.sum(diagonal(a, offset, axis1, axis2), axis=-1)


def diag(v: ArrayLike, k: int = 0) -> Any:
    x = asarray(v)
    if x.ndim == 2:
        return diagonal(x, k)
    if x.ndim != 1:
        raise ShapeError(f"diag needs a 1-D or 2-D array, got shape {x.shape}")
    n = x.shape[0] + abs(k)
    rows = np.arange(x.shape[0]) + max(0, -k)
    cols = np.arange(x.shape[0]) + max(0, k)
    return zeros((n, n), x.dtype).at[rows, cols].set(x)
