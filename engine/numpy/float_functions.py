"""More elementwise functions of engine.numpy, written with other operations (issue 15).

Each is a composition of engine.numpy operations, so it is differentiable to any order, traceable,
batchable and serialisable with nothing more to declare; only `frexp`'s exponent needs a primitive
of its own (engine.primitives_elementwise). Values, dtypes and derivatives follow JAX.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from engine import primitives as P
from engine.numpy._base import ArrayLike, asarray, promote, promote_float
from engine.numpy.elementwise import (
    abs,
    exp2,
    finite_shift,
    greater,
    isfinite,
    isnan,
    less,
    log2,
    logical_and,
    logical_not,
    logical_or,
    maximum,
    sin,
    where,
)
from engine.numpy.reductions import all as _all
from engine.primitives_elementwise import frexp_exponent_p


def fmax(x1: ArrayLike, x2: ArrayLike) -> Any:
    """The larger of x1 and x2, ignoring a NaN on one side (NaN only when both are NaN).

    As JAX's, a choice between the operands: at ties the whole derivative goes to x2.
    """
    x1, x2 = promote(x1, x2)
    return where(logical_or(greater(x1, x2), isnan(x2)), x1, x2)


def fmin(x1: ArrayLike, x2: ArrayLike) -> Any:
    """The smaller of x1 and x2, ignoring a NaN on one side; at ties the derivative goes to x2."""
    x1, x2 = promote(x1, x2)
    return where(logical_or(less(x1, x2), isnan(x2)), x1, x2)


def fabs(x: ArrayLike) -> Any:
    """|x| as a float (integers are promoted); its derivative at 0 is 0, as abs's."""
    (x,) = promote_float(x)
    if x.dtype.kind == "c":
        raise TypeError("fabs does not take complex numbers (as in NumPy); use abs for their modulus")
    return abs(x)


def deg2rad(x: ArrayLike) -> Any:
    (x,) = promote_float(x)
    return x * (np.pi / 180)


def rad2deg(x: ArrayLike) -> Any:
    (x,) = promote_float(x)
    return x * (180 / np.pi)


radians = deg2rad
degrees = rad2deg


def logaddexp2(x1: ArrayLike, x2: ArrayLike) -> Any:
    """log2(2**x1 + 2**x2) without overflow; derivative 2**(x1 - result) (0.5 each at ties)."""
    x1, x2 = promote_float(x1, x2)
    shift = finite_shift(maximum(x1, x2))
    return shift + log2(exp2(x1 - shift) + exp2(x2 - shift))


# sin(u)/u = sum_k (-1)**k u**(2k) / (2k+1)!, summed to u**16: used where |u| < 1/2, where the
# quotient's derivatives lose their digits to cancellation (its second derivative at x = 1e-9 is
# pure rounding error) and where the series' truncation error is below 1e-22. Its derivatives at
# 0 are the function's up to order 17.
_SINC_TERMS = 9
_SINC_COEFFICIENTS = [(-1) ** k / math.factorial(2 * k + 1) for k in range(_SINC_TERMS)]
_SINC_SERIES_BELOW = 0.5


def sinc(x: ArrayLike) -> Any:
    """sin(pi x) / (pi x), 1 at 0; derivatives exact at 0 up to order 17 and accurate near it."""
    (x,) = promote_float(x)
    pi_x = x * np.pi
    near_zero = abs(pi_x) < _SINC_SERIES_BELOW
    safe = where(near_zero, np.ones((), pi_x.dtype), pi_x)  # the quotient's branch never sees 0/0
    square = pi_x * pi_x
    series = _SINC_COEFFICIENTS[-1]
    for c in reversed(_SINC_COEFFICIENTS[:-1]):
        series = series * square + c
    return where(near_zero, series, sin(safe) / safe)


def nan_to_num(x: ArrayLike, copy: bool = True, nan: float = 0.0, posinf: float | None = None,
               neginf: float | None = None) -> Any:
    """x with NaN replaced by `nan` and the infinities by `posinf`/`neginf` (the dtype's largest
    finite values by default); integers come back unchanged. The derivative is 1 where x is
    finite and 0 where it was replaced. `copy` is accepted for NumPy's signature; arrays are
    immutable here."""
    x = asarray(x)
    if x.dtype.kind not in "fc":
        return x
    if x.dtype.kind == "c":
        raise TypeError("nan_to_num of complex numbers is not supported; apply it to the real and "
                        "imaginary parts")
    info = np.finfo(x.dtype)
    posinf = info.max if posinf is None else posinf
    neginf = info.min if neginf is None else neginf
    out = where(isnan(x), asarray(nan, x.dtype), x)
    out = where(logical_and(logical_not(isfinite(out)), out > 0), asarray(posinf, x.dtype), out)
    return where(logical_and(logical_not(isfinite(out)), out < 0), asarray(neginf, x.dtype), out)


def frexp(x: ArrayLike) -> tuple[Any, Any]:
    """(m, e) with x == m * 2**e, 0.5 <= |m| < 1 and e an int32 (m = x and e = 0 where x is 0,
    infinite or NaN). e carries no derivative; m's derivative is 2**-e, as in JAX."""
    (x,) = promote_float(x)
    if x.dtype.kind == "c":
        raise TypeError("frexp does not take complex numbers; apply it to the real and imaginary parts")
    e = frexp_exponent_p(x)
    # 2**-e in two exact halves: 2**-e alone overflows for subnormal x (e down to -1073).
    first = P.floor_divide_int_p(-e, asarray(2, np.int32))
    second = -e - first
    two = asarray(2.0, x.dtype)
    m = x * P.pow_p(two, P.convert(first, x.dtype)) * P.pow_p(two, P.convert(second, x.dtype))
    return m, e


def isclose(a: ArrayLike, b: ArrayLike, rtol: float = 1e-05, atol: float = 1e-08, equal_nan: bool = False) -> Any:
    """|a - b| <= atol + rtol * |b| elementwise, as JAX has it: equal infinities are close, a
    NaN is close to nothing unless `equal_nan`. A boolean result, without derivative."""
    a, b = promote_float(a, b)
    if a.dtype.kind == "c":
        raise TypeError("isclose of complex numbers is not supported")
    rtol_, atol_ = asarray(rtol, a.dtype), asarray(atol, a.dtype)
    finite_b = isfinite(b)
    b_or_0 = where(finite_b, b, np.zeros((), b.dtype))  # where b is not finite, in_range is not used
    in_range = abs(a - b_or_0) <= atol_ + rtol_ * abs(b_or_0)
    out = logical_or(a == b, logical_and(finite_b, in_range))
    if equal_nan:
        out = logical_or(out, logical_and(isnan(a), isnan(b)))
    return out


def allclose(a: ArrayLike, b: ArrayLike, rtol: float = 1e-05, atol: float = 1e-08, equal_nan: bool = False) -> Any:
    """Whether every element of a is close to b's (see isclose): a 0-d boolean array, as in JAX."""
    return _all(isclose(a, b, rtol, atol, equal_nan))
