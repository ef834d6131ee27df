"""Float32 transcendental functions that reproduce JAX's CPU results bit for bit.

NumPy's float32 ``np.tanh``/``np.log``/... differ from what JAX computes on CPU by
1-2 ulp on many inputs, because XLA's CPU backend does not call a math library for
most of them: it expands each op into its own polynomial or rational approximation
(mostly Eigen/Cephes-derived), which LLVM then compiles with fused multiply-adds
wherever a multiply feeds an add.  This module replays those expansions operation by
operation, in float32, in the order and with the fusions found in the machine code
that jaxlib 0.10.2 generates on x86-64 with AVX-512/FMA.

How float32 arithmetic is emulated with NumPy
---------------------------------------------
Every intermediate value is kept as a float64 array holding an exact float32 value.

* ``a*b``, ``a+b``, ``a/b`` are computed in float64 and rounded once to float32.  For
  float32 operands this double rounding is harmless (53 >= 2*24 + 2), so the result is
  the correctly rounded float32 operation.
* ``fma(a, b, c)``: the product of two float32 values is exact in float64, but the
  following float64 addition may round, and rounding that sum again to float32 could
  then be wrong (double rounding onto a float32 tie).  Where the float64 sum lands
  exactly on a float32 midpoint, its exact error is recovered with TwoSum and the sum
  is moved one float64 ulp towards the exact value (as rounding *to odd* would);
  rounding that to nearest float32 gives the correctly rounded fma, i.e. exactly what
  the hardware instruction computes.
* XLA runs its CPU kernels with the MXCSR flags FTZ and DAZ set: denormal inputs act as
  signed zeros in arithmetic and comparisons, and results that are tiny *after*
  rounding (|result| < 2**-126 when rounded to 24 bits) are flushed to signed zero.
  Selects and bit operations still move the original bits (e.g. ``tanh`` returns a
  denormal input unchanged).

Library calls
-------------
``exp`` and ``log`` are LLVM intrinsics that XLA rewrites into its own approximation
only for vector widths 1, 2, 4 and 8.  For arrays with fewer than 16 elements, the
trailing partial vector (3, 5, 6 or 7 lanes) is left to LLVM, which calls glibc's
``expf``/``logf`` per element (only for 1-D arrays; see ``_libm_lanes``).  ``exp`` and
``log`` below take the same path for the same shapes, but evaluate those elements in double
precision rounded once (``_libm``): libm's functions are correctly rounded in all but rare
cases, so these lanes agree with JAX to within one ulp rather than bit for bit.
``sin`` and ``cos`` are always libm calls in XLA and are computed the same way here;
``tan`` is not provided.

The functions take anything convertible to a float32 array (other dtypes are first cast
to float32) and return a new float32 ndarray of the same shape, or a NumPy float32
scalar for a Python/NumPy scalar input.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["tanh", "log", "exp", "log1p", "expm1", "logistic", "sigmoid", "erf", "sin", "cos"]

_F64 = np.float64
_FLT_MIN = 2.0**-126
# Smallest magnitude that rounds (to 24 bits, unbounded exponent) to 2**-126 or more:
# x86 detects tininess after rounding, so only values below this are flushed by FTZ.
_FTZ_LIMIT = 2.0**-126 - 2.0**-151
_QUIET = np.uint32(0x00400000)
_SIGN = np.uint32(0x80000000)


def _c(bits: int) -> float:
    """A float32 constant given by its bit pattern, as an exact Python float."""
    return float(np.array(bits, dtype=np.uint32).view(np.float32)[()])


# ---------------------------------------------------------------------------------
# Emulated float32 machine (values carried in float64 arrays)
# ---------------------------------------------------------------------------------


def _prepare(x: Any) -> tuple[np.ndarray, str]:
    """Input as a fresh float32 array of at least one dimension, and what to give back:
    "array", "array0d" (a 0-d ndarray) or "scalar" (a Python or NumPy scalar)."""
    if isinstance(x, np.ndarray):
        kind = "array0d" if x.ndim == 0 else "array"
    else:
        kind = "scalar" if np.ndim(x) == 0 else "array"
    return np.array(x, dtype=np.float32, ndmin=1, copy=True), kind


def _finish(out: np.ndarray, kind: str) -> Any:
    if kind == "scalar":
        return out[0]
    if kind == "array0d":
        return out.reshape(())
    return out


def _daz(x32: np.ndarray) -> np.ndarray:
    """float32 -> float64 with denormals read as signed zeros (MXCSR.DAZ)."""
    v = x32.astype(_F64)
    np.copysign(0.0, v, out=v, where=np.abs(v) < _FLT_MIN)
    return v


def _r32(v: np.ndarray) -> np.ndarray:
    """Round float64 values to float32 (nearest-even, then FTZ); keep them as float64."""
    y = v.astype(np.float32)
    tiny = np.abs(v) < _FTZ_LIMIT
    if tiny.any():
        y[tiny] = np.copysign(np.float32(0), y[tiny])
    return y.astype(_F64)


def _mul(a: Any, b: Any) -> np.ndarray:
    return _r32(np.multiply(a, b, dtype=_F64))


def _add(a: Any, b: Any) -> np.ndarray:
    return _r32(np.add(a, b, dtype=_F64))


def _div(a: Any, b: Any) -> np.ndarray:
    return _r32(np.divide(a, b, dtype=_F64))


def _round_odd(s: np.ndarray, err: np.ndarray) -> np.ndarray:
    """Turn s = RN(exact) with exact = s + err into round-to-odd(exact), in place."""
    bits = s.view(np.int64)
    fix = (err != 0) & ((bits & 1) == 0) & np.isfinite(s)
    if fix.any():
        # The exact value lies beyond s in the direction of err; its odd neighbour
        # there is one unit away in magnitude.
        away = (err > 0) == (s > 0)
        bits += np.where(fix, np.where(away, 1, -1), 0)
    return s


def _two_sum_err(a: np.ndarray, b: np.ndarray, s: np.ndarray) -> np.ndarray:
    """Exact rounding error of s = RN(a + b) (Knuth's TwoSum)."""
    bb = s - a
    return (a - (s - bb)) + (b - bb)


def _fma(a: Any, b: Any, c: Any) -> np.ndarray:
    """float32 fused multiply-add of float32 values: a*b + c rounded once.

    a*b is exact in float64 and s = a*b + c is rounded once there.  Rounding s again to
    float32 is only wrong when s sits exactly on a float32 rounding midpoint (low 29 bits
    of the float64 significand 1000...0) while a*b + c does not: then s is moved one
    float64 ulp towards the exact value (recovered with TwoSum), which is what
    round-to-odd would give.  The FTZ threshold is such a midpoint too."""
    s = np.multiply(a, b, dtype=_F64)
    s += c
    mid = (s.view(np.int64) & 0x1FFFFFFF) == 0x10000000
    if mid.any():
        p = np.broadcast_to(np.multiply(a, b, dtype=_F64), s.shape)[mid]
        cm = np.broadcast_to(np.asarray(c, dtype=_F64), s.shape)[mid]
        sm = s[mid]
        s[mid] = _round_odd(sm, _two_sum_err(p, cm, sm))
    return _r32(s)


def _bits(v: np.ndarray) -> np.ndarray:
    """float32 bit patterns of float64 arrays holding float32 values."""
    return v.astype(np.float32).view(np.uint32)


def _from_bits(u: Any) -> np.ndarray:
    return np.asarray(u, dtype=np.uint32).view(np.float32).astype(_F64)


def _pow2(n: np.ndarray) -> np.ndarray:
    """2**n for integral float n in [-127, 127] built from exponent bits, as XLA does:
    n = -127 gives bits 0, i.e. 0.0, not a denormal.  NaN n (cvttps2dq gives
    0x80000000, and the shift drops it) gives 1.0."""
    ni = np.where(np.isnan(n), 0, n).astype(np.int64)
    u = ((ni << 23) + 0x3F800000) & 0xFFFFFFFF
    return _from_bits(u)


def _set_nan(out32: np.ndarray, x32: np.ndarray, negate: bool = False) -> None:
    """Give NaN inputs the output bits x86 produces: the input NaN, quieted (of -x when
    the expansion starts by negating x)."""
    isnan = np.isnan(x32)
    if isnan.any():
        xb = x32.view(np.uint32)[isnan]
        if negate:
            xb = xb ^ _SIGN
        out32.view(np.uint32)[isnan] = xb | _QUIET


# ---------------------------------------------------------------------------------
# tanh
# ---------------------------------------------------------------------------------

# XLA's tanh expansion: Eigen's float rational approximation x*P(x^2)/Q(x^2)
# (P of degree 6 in x^2, Q of degree 3), with x clamped to +-7.99881172, the identity
# for |x| < 4e-4 and +-1 for |x| >= 20.
_TANH_CLAMP = _c(0x40FFF644)
_TANH_SMALL = _c(0x39D1B717)  # 4e-4
_TANH_P = [_c(b) for b in (0xA59F25C0, 0x2A61337E, 0xAEBD37FF, 0x335C0041, 0x3779434A, 0x3A270DED, 0x3BA059DC)]
_TANH_Q = [_c(b) for b in (0x35A0D3D8, 0x38F895D6, 0x3B14AA05, 0x3BA059DD)]


def _tanh_core(xd: np.ndarray) -> np.ndarray:
    """tanh of DAZ'd float32 values; the small/huge selections return xd itself."""
    xc = np.clip(xd, -_TANH_CLAMP, _TANH_CLAMP)
    x2 = _mul(xc, xc)
    p = _fma(x2, _TANH_P[0], _TANH_P[1])
    for coef in _TANH_P[2:]:
        p = _fma(x2, p, coef)
    p = _mul(xc, p)
    q = _fma(x2, _TANH_Q[0], _TANH_Q[1])
    for coef in _TANH_Q[2:]:
        q = _fma(x2, q, coef)
    r = _div(p, q)
    a = np.abs(xd)
    r = np.where(a < _TANH_SMALL, xd, r)
    return np.where(a >= 20.0, np.copysign(1.0, xd), r)


def tanh(x: Any) -> Any:
    """float32 tanh as computed by JAX/XLA on CPU (bit exact)."""
    x32, kind = _prepare(x)
    with np.errstate(all="ignore"):
        xd = _daz(x32)
        out = _tanh_core(xd).astype(np.float32)
        # Tiny inputs are returned by a select, i.e. with their original bits.
        small = np.abs(xd) < _TANH_SMALL
        out[small] = x32[small]
        _set_nan(out, x32)
    return _finish(out, kind)


# ---------------------------------------------------------------------------------
# log (XLA's vector expansion)
# ---------------------------------------------------------------------------------

# Eigen's plog_float (Cephes logf): x = m * 2**e with m in [sqrt(1/2), sqrt(2)),
# log(m) = f - f^2/2 + f^3 * P(f) with f = m - 1 and P of degree 8 evaluated as three
# interleaved Horner chains, plus e*ln2 with ln2 split in two (Cody-Waite).
_LOG_A = [_c(b) for b in (0x3D9021BB, 0xBDEBD1B8, 0x3DEF251A)]
_LOG_B = [_c(b) for b in (0xBDFE5D4F, 0x3E11E9BF, 0xBE2AAE50)]
_LOG_C = [_c(b) for b in (0x3E4CCEAC, 0xBE7FFFFC, 0x3EAAAAAA)]
_LN2_HI = _c(0x3F318000)  # 0.693359375
_LN2_LO = _c(0xB95E8083)  # -2.12194440e-4
_SQRT_HALF = _c(0x3F3504F3)


def _log_core(u: np.ndarray) -> np.ndarray:
    """Eigen/XLA log polynomial for float32 values u (finite results for u > 0 only)."""
    m = np.where(u > _FLT_MIN, u, _FLT_MIN)  # also replaces NaN
    mb = _bits(m)
    e = ((mb >> 23).astype(np.int64) - 127).astype(_F64) + 1.0
    mant = _from_bits((mb & np.uint32(0x807FFFFF)) | np.uint32(0x3F000000))  # in [0.5, 1)
    lt = mant < _SQRT_HALF
    f = _add(mant, -1.0)
    f = _add(f, np.where(lt, mant, 0.0))
    e = e - lt
    f2 = _mul(f, f)
    f3 = _mul(f2, f)
    a = _fma(f, _LOG_A[0], _LOG_A[1])
    b = _fma(f, _LOG_B[0], _LOG_B[1])
    c = _fma(f, _LOG_C[0], _LOG_C[1])
    a = _fma(f, a, _LOG_A[2])
    b = _fma(f, b, _LOG_B[2])
    c = _fma(f, c, _LOG_C[2])
    b = _fma(a, f3, b)
    b = _fma(f3, b, c)
    t = _mul(e, _LN2_LO)
    t = _fma(b, f3, t)
    s = _fma(-0.5, f2, f)
    s = _add(s, t)
    return _fma(e, _LN2_HI, s)


def _log_vector(xd: np.ndarray) -> np.ndarray:
    """log of DAZ'd values through XLA's expansion, as float32."""
    out = _log_core(xd).astype(np.float32)
    ob = out.view(np.uint32)
    ob[~(xd > 0)] = np.uint32(0xFFFFFFFF)  # x <= 0 or NaN: all-ones NaN
    ob[xd == 0] = np.uint32(0xFF800000)
    ob[xd == np.inf] = np.uint32(0x7F800000)
    return out


# ---------------------------------------------------------------------------------
# libm's float32 functions (XLA calls them for odd-width tails of small arrays, and for sin/cos)
# ---------------------------------------------------------------------------------


def _libm(fn: Any, x32: np.ndarray) -> np.ndarray:
    """A C library float32 function as XLA's CPU code sees it: denormal inputs read as zero,
    evaluated here in double precision and rounded once, denormal results flushed to zero.

    glibc's expf, logf, sinf and cosf are correctly rounded in all but rare cases, so this
    agrees with them to within one ulp, and almost always bit for bit; we do not reproduce
    their internals."""
    with np.errstate(all="ignore"):
        y = fn(_daz(x32))
    out = y.astype(np.float32)
    np.copysign(np.float32(0), out, out=out, where=np.abs(y) < _FTZ_LIMIT)
    _set_nan(out, x32)
    return out


def _libm_lanes(shape: tuple[int, ...]) -> np.ndarray | None:
    """Flat positions that XLA hands to libm for an elementwise exp/log of this shape.

    XLA's CPU kernel processes a small 1-D array as one 16-element tile: a full 8-wide
    vector and a remainder vector.  XLA only replaces exp/log intrinsics of width 1, 2, 4
    or 8, so a remainder of 3, 5, 6 or 7 lanes is scalarised into libm calls.  1-D arrays
    of 16 or more elements, and arrays of two or more dimensions (even (1, 3)), never
    take that path (found by probing JAX 0.10.2 with inputs where the two disagree)."""
    if len(shape) != 1 or shape[0] >= 16:
        return None
    n = shape[0]
    start = 8 if n >= 8 else 0
    if n - start in (3, 5, 6, 7):
        lanes = np.zeros(n, dtype=bool)
        lanes[start:] = True
        return lanes
    return None


def _choose_path(x32: np.ndarray, path: str) -> np.ndarray | None:
    if path == "vector":
        return None
    if path == "libm":
        return np.ones(x32.size, dtype=bool)
    if path != "auto":
        raise ValueError(f"path must be 'auto', 'vector' or 'libm', not {path!r}")
    return _libm_lanes(x32.shape)


def log(x: Any, *, path: str = "auto") -> Any:
    """float32 natural log as computed by JAX/XLA on CPU (bit exact).

    ``path="auto"`` mimics XLA's choice for an array of this shape (see module doc);
    ``"vector"`` forces XLA's own expansion, ``"libm"`` the library path (to one ulp)."""
    x32, kind = _prepare(x)
    with np.errstate(all="ignore"):
        out = _log_vector(_daz(x32))
        lanes = _choose_path(x32, path)
        if lanes is not None:
            flat_in = x32.reshape(-1)
            flat_out = out.reshape(-1)
            tail = flat_in[lanes]
            logs = _libm(np.log, tail)
            # Under DAZ the library scales a positive denormal by 2**23 and gets zero bits,
            # which it reads as the exponent -150: log of a positive denormal is -150*ln2.
            logs[(tail > 0) & (tail < _FLT_MIN)] = np.float32(-150 * np.log(2.0))
            # An invalid operation on x86 gives the "default NaN", sign bit set (0xffc00000), as
            # glibc's logf does for x < 0; NumPy's own SIMD log (2.4+) returns the positive one.
            logs.view(np.uint32)[tail < 0] = np.uint32(0xFFC00000)
            flat_out[lanes] = logs
    return _finish(out, kind)


# ---------------------------------------------------------------------------------
# exp
# ---------------------------------------------------------------------------------

# XLA's exp expansion (Cephes expf): x clamped to [-87.8, 88.8],
# n = floor(x*log2(e) + 0.5) clamped to [-127, 127], r = x - n*ln2 (two-step
# Cody-Waite), exp(r) ~ 1 + r + r^2*P(r) with P of degree 5, times 2**n built from
# exponent bits (so results below ~2**-126 become 0 rather than denormals).
_EXP_LO = _c(0xC2AF999A)  # -87.8
_EXP_HI = _c(0x42B1999A)  # 88.8
_LOG2E = _c(0x3FB8AA3B)
_EXP_P = [_c(b) for b in (0x39506967, 0x3AB743CE, 0x3C088908, 0x3D2AA9C1, 0x3E2AAAAA, 0x3F000000)]


def _exp_parts(xd: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(y, 2**n) with exp(x) = y * 2**n, as XLA evaluates them."""
    xc = np.clip(xd, _EXP_LO, _EXP_HI)
    n = np.floor(_fma(xc, _LOG2E, 0.5))
    n = np.clip(n, -127.0, 127.0)
    r = _fma(-n, _LN2_HI, xc)
    r = _fma(-n, _LN2_LO, r)
    p = _fma(r, _EXP_P[0], _EXP_P[1])
    for coef in _EXP_P[2:]:
        p = _fma(r, p, coef)
    r2 = _mul(r, r)
    y = _fma(p, r2, r)
    y = _add(y, 1.0)
    return y, _pow2(n)


def _exp_vector(xd: np.ndarray) -> np.ndarray:
    y, scale = _exp_parts(xd)
    return _mul(y, scale)


def exp(x: Any, *, path: str = "auto") -> Any:
    """float32 exp as computed by JAX/XLA on CPU (bit exact).

    ``path`` as for :func:`log` (the library path for odd tails of small arrays, to one ulp)."""
    x32, kind = _prepare(x)
    with np.errstate(all="ignore"):
        out = _exp_vector(_daz(x32)).astype(np.float32)
        _set_nan(out, x32)
        lanes = _choose_path(x32, path)
        if lanes is not None:
            flat_in = x32.reshape(-1)
            flat_out = out.reshape(-1)
            flat_out[lanes] = _libm(np.exp, flat_in[lanes])
    return _finish(out, kind)


# ---------------------------------------------------------------------------------
# sin / cos (always libm calls in XLA)
# ---------------------------------------------------------------------------------


def sin(x: Any) -> Any:
    """float32 sin as JAX/XLA computes it on CPU (libm's sinf), to within one ulp."""
    x32, kind = _prepare(x)
    with np.errstate(all="ignore"):
        out = _libm(np.sin, x32)
        tiny = np.abs(x32) < np.float32(2.0**-12)
        out[tiny] = x32[tiny]  # the library returns tiny arguments unchanged, denormals included
    return _finish(out, kind)


def cos(x: Any) -> Any:
    """float32 cos as JAX/XLA computes it on CPU (libm's cosf), to within one ulp."""
    x32, kind = _prepare(x)
    with np.errstate(all="ignore"):
        out = _libm(np.cos, x32)
    return _finish(out, kind)


# ---------------------------------------------------------------------------------
# expm1
# ---------------------------------------------------------------------------------


def expm1(x: Any) -> Any:
    """float32 expm1 as computed by JAX/XLA on CPU (bit exact).

    XLA's expansion: exp(x) - 1 for |x| > 0.5, otherwise tanh(x/2) * (exp(x) + 1),
    which avoids the cancellation; x itself when x/2 == 0.  exp and tanh are the
    expansions above."""
    x32, kind = _prepare(x)
    with np.errstate(all="ignore"):
        xd = _daz(x32)
        y, scale = _exp_parts(xd)
        em = _mul(y, scale)
        big = np.abs(xd) > 0.5
        res = _add(em, -1.0)
        h = _mul(xd[~big], 0.5)
        res[~big] = _mul(_add(em[~big], 1.0), _tanh_core(h))
        out = res.astype(np.float32)
        zero = _mul(xd, 0.5) == 0  # x itself where x/2 is zero (DAZ/FTZ included)
        out[zero] = x32[zero]
        _set_nan(out, x32)
    return _finish(out, kind)


# ---------------------------------------------------------------------------------
# log1p
# ---------------------------------------------------------------------------------

# XLA's log1p expansion: for |x| < sqrt(2) - 1 a Cephes-style rational
# x - x^2/2 + x^3 * N(x)/D(x) (degree 6 over 6), otherwise the log expansion of 1 + x.
_LOG1P_SMALL = _c(0x3ED413CD)
_LOG1P_N = [_c(b) for b in (0x383DE04B, 0x3EFF40C5, 0x40D284FA, 0x41EF4B9C, 0x4273CC76, 0x426473AD, 0x41A05101)]
_LOG1P_D = [_c(b) for b in (0x417101AD, 0x42A6185B, 0x435DC32D, 0x439A8CA3, 0x43586D8A, 0x42707982)]


def log1p(x: Any) -> Any:
    """float32 log1p as computed by JAX/XLA on CPU (bit exact)."""
    x32, kind = _prepare(x)
    with np.errstate(all="ignore"):
        xd = _daz(x32)
        out = np.empty(xd.shape, dtype=np.float32)
        small = np.abs(xd) < _LOG1P_SMALL  # NaN goes to the log branch
        # log branch: XLA's log of 1 + x.
        u = _add(xd[~small], 1.0)
        big = _log_core(u).astype(np.float32)
        bb = big.view(np.uint32)
        bb[~(u > 0)] = np.uint32(0xFFFFFFFF)  # 1 + x <= 0 or NaN
        bb[u == 0] = np.uint32(0xFF800000)
        bb[u == np.inf] = np.uint32(0x7F800000)
        out[~small] = big
        # Rational branch; its polynomials start from x*0 + c (not folded away by XLA).
        xs = xd[small]
        x0 = _mul(xs, 0.0)
        d = _add(x0, 1.0)
        for coef in _LOG1P_D:
            d = _fma(xs, d, coef)
        num = _add(x0, _LOG1P_N[0])
        for coef in _LOG1P_N[1:]:
            num = _fma(xs, num, coef)
        ratio = _div(num, d)
        x2 = _mul(xs, xs)
        w = _mul(_mul(xs, x2), ratio)
        w = _fma(-0.5, x2, w)
        out[small] = _add(xs, w)
    return _finish(out, kind)


# ---------------------------------------------------------------------------------
# logistic (jax.nn.sigmoid / lax.logistic)
# ---------------------------------------------------------------------------------


def logistic(x: Any) -> Any:
    """float32 logistic sigmoid as computed by JAX/XLA on CPU (bit exact).

    XLA rewrites logistic(x) as 1 / (1 + exp(-x)) with the exp expansion above; in
    that fused kernel the final scaling by 2**n and the + 1 become one fma."""
    x32, kind = _prepare(x)
    with np.errstate(all="ignore"):
        xd = _daz(x32)
        y, scale = _exp_parts(-xd)
        out = _div(1.0, _fma(y, scale, 1.0)).astype(np.float32)
        _set_nan(out, x32, negate=True)
    return _finish(out, kind)


sigmoid = logistic


# ---------------------------------------------------------------------------------
# erf
# ---------------------------------------------------------------------------------

# XLA's erf expansion for float32: x*P(x^2)/Q(x^2) (degrees 4 and 6) and +-1 for
# |x| >= 3.8325069.
_ERF_BIG = _c(0x407547CB)
_ERF_P = [_c(b) for b in (0x39702D51, 0x3B5F5DA2, 0x3D50B6EB, 0x3E3DA740, 0x3F906EBA)]
_ERF_Q = [_c(b) for b in (0xB3FD3906, 0x37C588DF, 0x3A856D28, 0x3C6687D4, 0x3DE34C21, 0x3EFEB44A, 0x3F800000)]


def erf(x: Any) -> Any:
    """float32 erf as computed by JAX/XLA on CPU (jax.scipy.special.erf, bit exact)."""
    x32, kind = _prepare(x)
    with np.errstate(all="ignore"):
        xd = _daz(x32)
        x2 = _mul(xd, xd)
        p = _fma(x2, _ERF_P[0], _ERF_P[1])
        for coef in _ERF_P[2:]:
            p = _fma(x2, p, coef)
        p = _mul(xd, p)
        q = _fma(x2, _ERF_Q[0], _ERF_Q[1])
        for coef in _ERF_Q[2:]:
            q = _fma(x2, q, coef)
        out = _div(p, q)
        out = np.where(np.abs(xd) >= _ERF_BIG, np.copysign(1.0, x32), out).astype(np.float32)
        _set_nan(out, x32)
    return _finish(out, kind)
