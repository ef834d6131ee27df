"""Complex numbers and the discrete Fourier transform: the primitives engine.numpy.fft is built on.

A complex value's cotangent follows JAX's convention: for z = x + iy it is ct_x - i ct_y, where
ct_x and ct_y are the cotangents of the real and imaginary parts. With it, the transpose of a
complex-linear map (multiplication by a constant, the FFT) is the map's plain transpose, with
no conjugation, so the existing rules of `mul`, `add`, `reduce_sum`, ... are already right for
complex operands; only maps that are linear over the reals alone (`real`, `imag`, `conj`,
`complex`, the real-input and real-output FFTs) need a rule of their own, below. `grad` of a
real-valued function of z then returns df/dx - i df/dy, as JAX's does.

The records are registered when engine.numpy is imported (engine.numpy.fft imports this module):
engine.primitives importing it back would make the engine's import graph cyclic.

Rules are written with primitives only (no complex constants), so derivatives of any order are
graphs of these same records, and a graph whose inputs and outputs are real serialises.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from engine.core import ShapedArray
from engine.errors import DtypeError, ShapeError
from engine.primitive import Algebra, InvalidAttributes, Linear, PerInput, Plan, declare
from engine.primitives import (
    _batch_elementwise,
    _batch_leading,
    _binary_rule,
    _unbroadcast,
    broadcast_to,
    concatenate,
    constant,
    reshape,
    zeros,
)

FFT_TYPES = ("fft", "ifft", "rfft", "irfft")
_REAL_OF = {np.dtype("complex64"): np.dtype("float32"), np.dtype("complex128"): np.dtype("float64")}
_COMPLEX_OF = {v: k for k, v in _REAL_OF.items()}


def real_dtype(dtype: Any) -> np.dtype:
    """The dtype of a complex dtype's parts (float64 for complex128)."""
    return _REAL_OF[np.dtype(dtype)]


def complex_dtype(dtype: Any) -> np.dtype:
    """The complex dtype whose parts have the float dtype `dtype` (complex64 for float32)."""
    dtype = np.dtype(dtype)
    if dtype.kind == "c":
        return dtype
    return _COMPLEX_OF.get(dtype, np.dtype("complex128"))


# ----------------------------------------------------------------------------- complex parts


def _complex_operand(name: str, x: ShapedArray) -> None:
    if x.dtype.kind != "c":
        raise DtypeError(f"`{name}` needs a complex operand, got {x.dtype}")


def _part_abstract(name: str):
    def rule(x: ShapedArray) -> ShapedArray:
        _complex_operand(name, x)
        return ShapedArray(x.shape, real_dtype(x.dtype))
    return rule


def _conj_abstract(x: ShapedArray) -> ShapedArray:
    _complex_operand("conj", x)
    return x


def _complex_abstract(x: ShapedArray, y: ShapedArray) -> ShapedArray:
    if x.dtype.kind != "f" or x.dtype not in _COMPLEX_OF:
        raise DtypeError(f"`complex` needs float32 or float64 parts, got {x.dtype}")
    out = _binary_rule("complex")(x, y)
    return ShapedArray(out.shape, _COMPLEX_OF[x.dtype])


def as_complex(x: Any) -> Any:
    """A real array as a complex one with zero imaginary part. Made with `complex` rather than a
    conversion, so that graphs holding it need no complex dtype or constant to be written down."""
    if x.dtype.kind == "c":
        return x
    return complex_p(x, broadcast_to(zeros((), x.dtype), tuple(x.shape)))


def pad_with_zeros(x: Any, axis: int, count: int) -> Any:
    """x followed by `count` zeros along `axis`. A complex x is padded part by part, so that the
    graph holds real zeros only (see `as_complex`)."""
    shape = list(x.shape)
    shape[axis] = count
    if x.dtype.kind != "c":
        return concatenate([x, zeros(tuple(shape), x.dtype)], axis)
    part = zeros(tuple(shape), real_dtype(x.dtype))
    return complex_p(concatenate([real_p(x), part], axis), concatenate([imag_p(x), part], axis))


# real(z) = x: its cotangent g goes to x alone, so z's is g + 0i.
real_p = declare(
    "real", impl=np.real, abstract=_part_abstract("real"),
    vjp=PerInput(lambda g, ans, z: as_complex(g)), jvp=Linear(), batch=_batch_elementwise,
    plan=Plan(view=True), algebra=Algebra(), arity=1, doc="real part of a complex array",
)
# imag(z) = y: its cotangent g goes to y alone, so z's is 0 - i g.
imag_p = declare(
    "imag", impl=np.imag, abstract=_part_abstract("imag"),
    vjp=PerInput(lambda g, ans, z: complex_p(broadcast_to(zeros((), g.dtype), tuple(g.shape)), -g)),
    jvp=Linear(), batch=_batch_elementwise,
    plan=Plan(view=True), algebra=Algebra(), arity=1, doc="imaginary part of a complex array",
)
conj_p = declare(
    "conj", impl=np.conjugate, abstract=_conj_abstract,
    vjp=PerInput(lambda g, ans, z: conj_p(g)), jvp=Linear(), batch=_batch_elementwise,
    plan=Plan(fresh=True), algebra=Algebra(involution=True), arity=1,
    doc="complex conjugate",
)


def _complex_impl(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    out = np.empty(np.broadcast_shapes(np.shape(x), np.shape(y)), dtype=_COMPLEX_OF[np.result_type(x)])
    out.real = x
    out.imag = y
    return out


# complex(x, y) = x + iy: a cotangent c_r - i c_i gives x the cotangent c_r and y the cotangent c_i.
complex_p = declare(
    "complex", impl=_complex_impl, abstract=_complex_abstract,
    vjp=PerInput(lambda g, ans, x, y: _unbroadcast(real_p(g), x.shape),
                 lambda g, ans, x, y: _unbroadcast(-imag_p(g), y.shape)),
    jvp=Linear(), batch=_batch_elementwise, plan=Plan(fresh=True), algebra=Algebra(), arity=2,
    doc="x + iy from real arrays x and y of one dtype",
)


# ----------------------------------------------------------------------------- the DFT


def _check_fft_attrs(attrs: dict[str, Any], n_operands: int) -> None:
    if attrs["fft_type"] not in FFT_TYPES:
        raise InvalidAttributes("fft_type", f"fft_type must be one of {', '.join(FFT_TYPES)}, "
                                            f"got {attrs['fft_type']!r}")
    lengths = attrs["fft_lengths"]
    if not 1 <= len(lengths) <= 3 or any(int(n) < 1 for n in lengths):
        raise InvalidAttributes("fft_lengths", f"fft_lengths must be 1 to 3 positive lengths, got {list(lengths)}")


def _fft_abstract(x: ShapedArray, *, fft_type: str, fft_lengths: tuple[int, ...]) -> ShapedArray:
    _check_fft_attrs({"fft_type": fft_type, "fft_lengths": fft_lengths}, 1)
    k = len(fft_lengths)
    if x.ndim < k:
        raise ShapeError(f"`fft` over {k} axes needs an operand of at least {k} dimensions, got shape {x.shape}")
    lead, last = tuple(x.shape[:-k]), tuple(x.shape[-k:])
    lengths = tuple(int(n) for n in fft_lengths)
    expected = lengths[:-1] + (lengths[-1] // 2 + 1,) if fft_type == "irfft" else lengths
    if last != expected:
        raise ShapeError(f"`{fft_type}` with lengths {list(lengths)} needs trailing dimensions {list(expected)}, "
                         f"got {list(last)}")
    if fft_type == "rfft":
        if x.dtype not in _COMPLEX_OF:
            raise DtypeError(f"`rfft` needs a float32 or float64 operand, got {x.dtype}")
        return ShapedArray(lead + lengths[:-1] + (lengths[-1] // 2 + 1,), _COMPLEX_OF[x.dtype])
    _complex_operand(fft_type, x)
    if fft_type == "irfft":
        return ShapedArray(lead + lengths, real_dtype(x.dtype))
    return x


def _fft_impl(x: np.ndarray, *, fft_type: str, fft_lengths: tuple[int, ...]) -> np.ndarray:
    axes = tuple(range(-len(fft_lengths), 0))
    if fft_type == "fft":
        out = np.fft.fftn(x, axes=axes)
    elif fft_type == "ifft":
        out = np.fft.ifftn(x, axes=axes)
    elif fft_type == "rfft":
        out = np.fft.rfftn(x, axes=axes)
    else:
        return np.fft.irfftn(x, s=fft_lengths, axes=axes).astype(real_dtype(x.dtype), copy=False)
    # NumPy computes in double precision; the result keeps the operand's precision, as JAX's does.
    return out.astype(complex_dtype(x.dtype), copy=False)


def _rfft_vjp(g: Any, lengths: tuple[int, ...]) -> Any:
    # rfft is the full FFT of x (as complex) cut to the first n//2 + 1 frequencies of the last
    # axis: its transpose pads with zeros, applies the (symmetric) FFT and keeps the real part.
    n = lengths[-1]
    missing = n - g.shape[-1]
    if missing:
        g = pad_with_zeros(g, g.ndim - 1, missing)
    return real_p(fft_p(g, fft_type="fft", fft_lengths=lengths))


def _irfft_vjp(g: Any, lengths: tuple[int, ...]) -> Any:
    # irfft reads each frequency strictly between 0 and the Nyquist frequency twice (itself and
    # its mirror image): its transpose is the rfft weighted 1, 2, ..., 2, 1 and divided by the
    # size, conjugated because irfft is linear over the reals only (JAX's rule).
    x = fft_p(g, fft_type="rfft", fft_lengths=lengths)
    m = x.shape[-1]
    weights = np.full(m, 2.0)
    weights[0] = 1.0
    if lengths[-1] % 2 == 0:
        weights[-1] = 1.0
    weights /= float(np.prod(lengths))
    w = reshape(constant(weights.astype(g.dtype)), (1,) * (x.ndim - 1) + (m,))
    return complex_p(real_p(x) * w, -(imag_p(x) * w))


def _fft_vjp(g: Any, ans: Any, x: Any, *, fft_type: str, fft_lengths: tuple[int, ...]) -> Any:
    lengths = tuple(int(n) for n in fft_lengths)
    if fft_type == "rfft":
        return _rfft_vjp(g, lengths)
    if fft_type == "irfft":
        return _irfft_vjp(g, lengths)
    return fft_p(g, fft_type=fft_type, fft_lengths=lengths)  # the DFT matrix is symmetric


fft_p = declare(
    "fft", impl=_fft_impl, abstract=_fft_abstract, vjp=PerInput(_fft_vjp), jvp=Linear(), batch=_batch_leading,
    plan=Plan(fresh=True, superlinear=True), algebra=Algebra(), arity=1, attrs=("fft_type", "fft_lengths"),
    check_attrs=_check_fft_attrs,
    doc="discrete Fourier transform over the trailing len(fft_lengths) axes: fft, ifft, rfft or irfft",
)
