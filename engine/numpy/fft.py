"""engine.numpy.fft: NumPy's and JAX's discrete Fourier transforms, differentiable to any order.

Every transform is one `fft` primitive (engine.primitives_fft) over at most three trailing
axes, with the transformed axes moved to the end and back, the input cut or zero-padded to the
lengths asked, and the result scaled for `norm`. More than three axes are done a few at a time
(the DFT is separable). Derivatives follow JAX's convention for complex values.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from engine import dtypes
from engine import primitives as P
from engine import primitives_fft as F
from engine.errors import DtypeError, InvalidArgumentError, ShapeError
from engine.numpy._base import ArrayLike, asarray

__all__ = ["fft", "ifft", "rfft", "irfft", "fft2", "ifft2", "rfft2", "irfft2", "fftn", "ifftn", "rfftn", "irfftn",
           "fftshift", "ifftshift"]

_NORMS = (None, "backward", "ortho", "forward")
_MAX_AXES_PER_CALL = 3


def _float_parts(x: Any) -> Any:
    """x as float32 or float64, the precisions the transforms compute in (as JAX: float16 and
    integers go to float32, or to the default float)."""
    if x.dtype == np.float16:
        return P.convert(x, np.float32)
    if x.dtype.kind != "f":
        return P.convert(x, dtypes.default_float())
    return x


def _as_complex(a: ArrayLike) -> Any:
    x = asarray(a)
    if x.dtype.kind == "c":
        return x
    return F.as_complex(_float_parts(x))


def _as_real(a: ArrayLike, name: str) -> Any:
    x = asarray(a)
    if x.dtype.kind == "c":
        raise DtypeError(f"`{name}` takes a real array, got {x.dtype}; use fft/fftn for complex input, "
                         "or pass jnp.real(x)")
    return _float_parts(x)


def _axes_and_lengths(x: Any, s: Sequence[int] | None, axes: Sequence[int] | None, name: str,
                      inverse_real: bool) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """The axes transformed (non-negative, in the order given) and each one's transform length."""
    if axes is None:
        count = x.ndim if s is None else len(s)
        axes = tuple(range(x.ndim - count, x.ndim))
    axes = tuple(int(a) for a in axes)
    for a in axes:
        if not -x.ndim <= a < x.ndim:
            raise ShapeError(f"`{name}`: axis {a} is out of bounds for an array of {x.ndim} dimensions")
    axes = tuple(a % x.ndim for a in axes)
    if len(set(axes)) != len(axes):
        raise ShapeError(f"`{name}`: repeated axis in {axes}; name each axis once")
    if not axes:
        raise ShapeError(f"`{name}` needs at least one axis to transform")
    if s is None:
        lengths = [x.shape[a] for a in axes]
        if inverse_real:
            lengths[-1] = 2 * (x.shape[axes[-1]] - 1)
    else:
        lengths = [int(n) for n in s]
        if len(lengths) != len(axes):
            raise ShapeError(f"`{name}`: s has {len(lengths)} length(s) for {len(axes)} axes; give one per axis")
    for n in lengths:
        if n < 1:
            raise InvalidArgumentError(f"`{name}`: invalid number of FFT data points ({n}); each length must be "
                                       "at least 1")
    return axes, tuple(lengths)


def _resize(x: Any, axis: int, n: int) -> Any:
    """x cut to its first n entries along `axis`, or padded there with zeros to n."""
    have = x.shape[axis]
    if have == n:
        return x
    if have > n:
        return x[(slice(None),) * axis + (slice(0, n),)]
    return F.pad_with_zeros(x, axis, n - have)


def _move_to_end(x: Any, axes: tuple[int, ...]) -> tuple[Any, tuple[int, ...]]:
    perm = tuple(a for a in range(x.ndim) if a not in axes) + axes
    return P.transpose(x, perm), perm


def _transform_trailing(x: Any, fft_type: str, lengths: tuple[int, ...]) -> Any:
    """The transform over the last len(lengths) axes, at most three axes per primitive call."""
    k = len(lengths)
    if k <= _MAX_AXES_PER_CALL:
        return F.fft_p(x, fft_type=fft_type, fft_lengths=lengths)
    # Separable: rfft the last three axes first (and irfft them last), complex FFTs for the rest.
    last = lengths[-_MAX_AXES_PER_CALL:]
    if fft_type == "rfft":
        x = F.fft_p(x, fft_type="rfft", fft_lengths=last)
        return _on_leading(x, k, "fft", lengths[:-_MAX_AXES_PER_CALL])
    if fft_type == "irfft":
        x = _on_leading(x, k, "ifft", lengths[:-_MAX_AXES_PER_CALL])
        return F.fft_p(x, fft_type="irfft", fft_lengths=last)
    x = F.fft_p(x, fft_type=fft_type, fft_lengths=last)
    return _on_leading(x, k, fft_type, lengths[:-_MAX_AXES_PER_CALL])


def _on_leading(x: Any, k: int, fft_type: str, lengths: tuple[int, ...]) -> Any:
    """The transform over the first len(lengths) of the last k axes."""
    first = x.ndim - k
    axes = tuple(range(first, first + len(lengths)))
    moved, perm = _move_to_end(x, axes)
    out = _transform_trailing(moved, fft_type, lengths)
    return P.transpose(out, tuple(np.argsort(perm)))


def _scale(norm: str | None, inverse: bool, size: int) -> float:
    if norm not in _NORMS:
        raise InvalidArgumentError(f"invalid norm {norm!r}; use one of 'backward', 'ortho', 'forward' (or None)")
    if norm in (None, "backward"):
        return 1.0
    if norm == "ortho":
        return math.sqrt(size) if inverse else 1 / math.sqrt(size)
    return float(size) if inverse else 1 / size  # "forward": the 1/n moves to the forward transform


def _fft_core(a: ArrayLike, fft_type: str, s: Sequence[int] | None, axes: Sequence[int] | None,
              norm: str | None, name: str) -> Any:
    _scale(norm, False, 1)  # an unknown norm is refused before anything is computed
    x = _as_real(a, name) if fft_type == "rfft" else _as_complex(a)
    axes_t, lengths = _axes_and_lengths(x, s, axes, name, fft_type == "irfft")
    for axis, n in zip(axes_t, lengths):
        x = _resize(x, axis, n // 2 + 1 if fft_type == "irfft" and axis == axes_t[-1] else n)
    moved, perm = _move_to_end(x, axes_t)
    out = _transform_trailing(moved, fft_type, lengths)
    out = P.transpose(out, tuple(np.argsort(perm)))
    factor = _scale(norm, fft_type in ("ifft", "irfft"), math.prod(lengths))
    return out if factor == 1.0 else out * factor


# ----------------------------------------------------------------------------- one dimension


def fft(a: ArrayLike, n: int | None = None, axis: int = -1, norm: str | None = None) -> Any:
    """The discrete Fourier transform along `axis`, cut or zero-padded to n points."""
    return _fft_core(a, "fft", None if n is None else (n,), (axis,), norm, "fft")


def ifft(a: ArrayLike, n: int | None = None, axis: int = -1, norm: str | None = None) -> Any:
    """The inverse discrete Fourier transform along `axis`."""
    return _fft_core(a, "ifft", None if n is None else (n,), (axis,), norm, "ifft")


def rfft(a: ArrayLike, n: int | None = None, axis: int = -1, norm: str | None = None) -> Any:
    """The DFT of a real array along `axis`: the n // 2 + 1 non-negative frequencies."""
    return _fft_core(a, "rfft", None if n is None else (n,), (axis,), norm, "rfft")


def irfft(a: ArrayLike, n: int | None = None, axis: int = -1, norm: str | None = None) -> Any:
    """The real array of n points (2 * (m - 1) by default) whose rfft is a along `axis`."""
    return _fft_core(a, "irfft", None if n is None else (n,), (axis,), norm, "irfft")


# ----------------------------------------------------------------------------- two and n dimensions


def fft2(a: ArrayLike, s: Sequence[int] | None = None, axes: Sequence[int] = (-2, -1), norm: str | None = None) -> Any:
    return _fft_core(a, "fft", s, axes, norm, "fft2")


def ifft2(a: ArrayLike, s: Sequence[int] | None = None, axes: Sequence[int] = (-2, -1), norm: str | None = None) -> Any:
    return _fft_core(a, "ifft", s, axes, norm, "ifft2")


def rfft2(a: ArrayLike, s: Sequence[int] | None = None, axes: Sequence[int] = (-2, -1), norm: str | None = None) -> Any:
    return _fft_core(a, "rfft", s, axes, norm, "rfft2")


def irfft2(a: ArrayLike, s: Sequence[int] | None = None, axes: Sequence[int] = (-2, -1),
           norm: str | None = None) -> Any:
    return _fft_core(a, "irfft", s, axes, norm, "irfft2")


def fftn(a: ArrayLike, s: Sequence[int] | None = None, axes: Sequence[int] | None = None,
         norm: str | None = None) -> Any:
    return _fft_core(a, "fft", s, axes, norm, "fftn")


def ifftn(a: ArrayLike, s: Sequence[int] | None = None, axes: Sequence[int] | None = None,
          norm: str | None = None) -> Any:
    return _fft_core(a, "ifft", s, axes, norm, "ifftn")


def rfftn(a: ArrayLike, s: Sequence[int] | None = None, axes: Sequence[int] | None = None,
          norm: str | None = None) -> Any:
    return _fft_core(a, "rfft", s, axes, norm, "rfftn")


def irfftn(a: ArrayLike, s: Sequence[int] | None = None, axes: Sequence[int] | None = None,
           norm: str | None = None) -> Any:
    return _fft_core(a, "irfft", s, axes, norm, "irfftn")


# ----------------------------------------------------------------------------- shifts


def _roll_halves(x: ArrayLike, axes: int | Sequence[int] | None, inverse: bool, name: str) -> Any:
    x = asarray(x)
    if axes is None:
        axes = tuple(range(x.ndim))
    elif isinstance(axes, (int, np.integer)):
        axes = (int(axes),)
    for a in axes:
        a = int(a)
        if not -x.ndim <= a < x.ndim:
            raise ShapeError(f"`{name}`: axis {a} is out of bounds for an array of {x.ndim} dimensions")
        axis = a % x.ndim
        n = x.shape[axis]
        shift = -(n // 2) if inverse else n // 2  # a roll by `shift`: entry i moves to i + shift
        cut = (n - shift) % n if n else 0
        if cut:
            head = x[(slice(None),) * axis + (slice(0, cut),)]
            tail = x[(slice(None),) * axis + (slice(cut, n),)]
            x = P.concatenate([tail, head], axis)
    return x


def fftshift(x: ArrayLike, axes: int | Sequence[int] | None = None) -> Any:
    """The zero frequency moved to the centre: a roll by n // 2 along each axis (all by default)."""
    return _roll_halves(x, axes, False, "fftshift")


def ifftshift(x: ArrayLike, axes: int | Sequence[int] | None = None) -> Any:
    """fftshift undone: a roll by -(n // 2) along each axis."""
    return _roll_halves(x, axes, True, "ifftshift")
