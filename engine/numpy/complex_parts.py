"""Complex parts for engine.numpy: real, imag, conj (conjugate), angle-free and JAX-compatible.

On a real array each returns what NumPy and JAX return: the array itself (real, conj) or zeros
(imag). Derivatives follow JAX's convention for complex cotangents (engine.primitives_fft).
"""

from __future__ import annotations

from typing import Any

from engine import primitives as P
from engine import primitives_fft as F
from engine.numpy._base import ArrayLike, asarray


def real(x: ArrayLike) -> Any:
    """The real part (x itself for a real array)."""
    x = asarray(x)
    return F.real_p(x) if x.dtype.kind == "c" else x


def imag(x: ArrayLike) -> Any:
    """The imaginary part (zeros of x's dtype for a real array, with a zero derivative)."""
    x = asarray(x)
    if x.dtype.kind == "c":
        return F.imag_p(x)
    return P.broadcast_to(P.zeros((), x.dtype), tuple(x.shape))


def conj(x: ArrayLike) -> Any:
    """The complex conjugate (x itself for a real array)."""
    x = asarray(x)
    return F.conj_p(x) if x.dtype.kind == "c" else x


conjugate = conj


def complex_abs(z: Any) -> Any:
    """|z| of a complex array, as hypot(real, imag): no overflow, and derivative 0 at z == 0 as JAX's."""
    return P.hypot_p(F.real_p(z), F.imag_p(z))
