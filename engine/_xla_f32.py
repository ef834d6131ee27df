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
``log`` below reproduce that too (glibc 2.36, FMA variant, evaluated in emulated double
precision), chosen by the array's shape.
``sin`` and ``cos`` are always glibc calls in XLA (``sinf``/``cosf``, emulated here the
same way); ``tan`` (glibc's older ``tanf``) is not provided.

The functions take anything convertible to a float32 array (other dtypes are first cast
to float32) and return a new float32 ndarray of the same shape, or a NumPy float32
scalar for a Python/NumPy scalar input.
"""

from __future__ import annotations

from decimal import Decimal, localcontext
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
# glibc expf / logf (used by XLA for odd-width tails of small arrays)
# ---------------------------------------------------------------------------------

_SPLIT = 134217729.0  # 2**27 + 1, Veltkamp splitting constant


def _fma64(a: Any, b: Any, c: Any) -> np.ndarray:
    """Correctly rounded float64 fma, emulated (Boldo & Melquiond's algorithm: exact
    product, exact sum with the high part, round-to-odd of the low parts, then one
    rounding to nearest).  Assumes no overflow or underflow, true where used."""
    a = np.asarray(a, dtype=_F64)
    b = np.asarray(b, dtype=_F64)
    c = np.asarray(c, dtype=_F64)
    ph = a * b
    ta = _SPLIT * a
    ahi = ta - (ta - a)
    alo = a - ahi
    tb = _SPLIT * b
    bhi = tb - (tb - b)
    blo = b - bhi
    pl = ((ahi * bhi - ph) + ahi * blo + alo * bhi) + alo * blo
    sh = c + ph
    sl = _two_sum_err(c, ph, sh)
    v = sl + pl
    v = _round_odd(v, _two_sum_err(sl, pl, v))
    return sh + v


def _glibc_r32(y: np.ndarray) -> np.ndarray:
    """cvtsd2ss under FTZ, returned as float32."""
    out = y.astype(np.float32)
    np.copysign(np.float32(0), out, out=out, where=np.abs(y) < _FTZ_LIMIT)
    return out


# glibc 2.36 expf (Szabolcs Nagy's design): exp(x) = 2**(k/32) * 2**(r/32), table of
# 2**(i/32) and a cubic in r, all in double precision; x86-64 selects the build with
# fused multiply-adds.
def _expf_table() -> np.ndarray:
    """2**(i/32) rounded to double, minus i << 47 in the bit pattern so that adding
    k << 47 for k = 32*q + i yields 2**(k/32) directly."""
    with localcontext() as ctx:
        ctx.prec = 40
        bits = np.array([float(Decimal(2) ** (Decimal(i) / 32)) for i in range(32)]).view(np.uint64)
    return bits - (np.arange(32, dtype=np.uint64) << np.uint64(47))


_EXPF_TAB = _expf_table()
_EXPF_INVLN2N = float.fromhex("0x1.71547652b82fep+0") * 32
_EXPF_SHIFT = float.fromhex("0x1.8p+52")
_EXPF_C = (
    float.fromhex("0x1.c6af84b912394p-5") / 32**3,
    float.fromhex("0x1.ebfce50fac4f3p-3") / 32**2,
    float.fromhex("0x1.62e42ff0c52d6p-1") / 32,
)


def _glibc_expf(x32: np.ndarray) -> np.ndarray:
    xd = _daz(x32)
    kd = _fma64(_EXPF_INVLN2N, xd, _EXPF_SHIFT)
    ki = kd.view(np.uint64)
    kd = kd - _EXPF_SHIFT
    r = _fma64(_EXPF_INVLN2N, xd, -kd)
    t = _EXPF_TAB[(ki % np.uint64(32)).astype(np.intp)] + (ki << np.uint64(47))
    s = t.view(_F64)
    z = _fma64(_EXPF_C[0], r, _EXPF_C[1])
    r2 = r * r
    y = _fma64(_EXPF_C[2], r, 1.0)
    y = _fma64(z, r2, y)
    out = _glibc_r32(y * s)
    # Special cases decided on the raw bits before the main path.
    xb = x32.view(np.uint32)
    big = ((xb >> 20) & 0x7FF) >= 0x42B
    if big.any():
        ob = out.view(np.uint32)
        ob[big & (x32 > _c(0x42B17217))] = np.uint32(0x7F800000)
        ob[big & (x32 < _c(0xC2CFF1B4))] = 0
        ob[big & np.isinf(x32)] = np.where(x32[big & np.isinf(x32)] > 0, 0x7F800000, 0)
    _set_nan(out, x32)
    return out


# glibc 2.36 logf: x = 2**k * z with z near one of 16 centres c, log(x) = k*ln2 +
# log(c) + log1p(z/c - 1) with a cubic for log1p, in double precision (FMA build).
_LOGF_TAB = [
    ("0x1.661ec79f8f3bep+0", "-0x1.57bf7808caadep-2"),
    ("0x1.571ed4aaf883dp+0", "-0x1.2bef0a7c06ddbp-2"),
    ("0x1.49539f0f010bp+0", "-0x1.01eae7f513a67p-2"),
    ("0x1.3c995b0b80385p+0", "-0x1.b31d8a68224e9p-3"),
    ("0x1.30d190c8864a5p+0", "-0x1.6574f0ac07758p-3"),
    ("0x1.25e227b0b8eap+0", "-0x1.1aa2bc79c81p-3"),
    ("0x1.1bb4a4a1a343fp+0", "-0x1.a4e76ce8c0e5ep-4"),
    ("0x1.12358f08ae5bap+0", "-0x1.1973c5a611cccp-4"),
    ("0x1.0953f419900a7p+0", "-0x1.252f438e10c1ep-5"),
    ("0x1p+0", "0x0p+0"),
    ("0x1.e608cfd9a47acp-1", "0x1.aa5aa5df25984p-5"),
    ("0x1.ca4b31f026aap-1", "0x1.c5e53aa362eb4p-4"),
    ("0x1.b2036576afce6p-1", "0x1.526e57720db08p-3"),
    ("0x1.9c2d163a1aa2dp-1", "0x1.bc2860d22477p-3"),
    ("0x1.886e6037841edp-1", "0x1.1058bc8a07ee1p-2"),
    ("0x1.767dcf5534862p-1", "0x1.4043057b6ee09p-2"),
]
_LOGF_INVC = np.array([float.fromhex(a) for a, _ in _LOGF_TAB])
_LOGF_LOGC = np.array([float.fromhex(b) for _, b in _LOGF_TAB])
_LOGF_LN2 = float.fromhex("0x1.62e42fefa39efp-1")
_LOGF_A = (
    float.fromhex("-0x1.00ea348b88334p-2"),
    float.fromhex("0x1.5575b0be00b6ap-2"),
    float.fromhex("-0x1.ffffef20a4123p-2"),
)


def _glibc_logf(x32: np.ndarray) -> np.ndarray:
    ix = x32.view(np.uint32).astype(np.int64)
    # A positive denormal is "normalised" by multiplying by 2**23, which under DAZ
    # gives 0: its bits then become -(23 << 23) and the result is -150*ln2.
    sub = (ix > 0) & (ix < 0x00800000)
    ix = np.where(sub, -(23 << 23), ix) & 0xFFFFFFFF
    tmp = (ix - 0x3F330000) & 0xFFFFFFFF
    i = (tmp >> 19) % 16
    k = ((tmp ^ 0x80000000) - 0x80000000) >> 23  # arithmetic shift of the int32
    iz = (ix - (tmp & 0xFF800000)) & 0xFFFFFFFF
    z = iz.astype(np.uint32).view(np.float32).astype(_F64)
    r = _fma64(z, _LOGF_INVC[i], -1.0)
    y0 = _fma64(k.astype(_F64), _LOGF_LN2, _LOGF_LOGC[i])
    y = _fma64(r, _LOGF_A[1], _LOGF_A[2])
    r2 = r * r
    y = _fma64(r2, _LOGF_A[0], y)
    out = _glibc_r32(_fma64(r2, y, r + y0))
    ob = out.view(np.uint32)
    xb = x32.view(np.uint32)
    ob[xb == 0x3F800000] = 0
    ob[(xb << 1) == 0] = np.uint32(0xFF800000)
    ob[xb == 0x7F800000] = np.uint32(0x7F800000)
    ob[(xb & _SIGN) != 0] = np.uint32(0xFFC00000)  # negative (incl. -inf): default NaN
    ob[((xb & _SIGN) != 0) & ((xb << 1) == 0)] = np.uint32(0xFF800000)  # -0
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
    ``"vector"`` forces XLA's own expansion, ``"libm"`` glibc's logf."""
    x32, kind = _prepare(x)
    with np.errstate(all="ignore"):
        out = _log_vector(_daz(x32))
        lanes = _choose_path(x32, path)
        if lanes is not None:
            flat_in = x32.reshape(-1)
            flat_out = out.reshape(-1)
            flat_out[lanes] = _glibc_logf(flat_in[lanes])
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

    ``path`` as for :func:`log` (glibc's expf for odd tails of small arrays)."""
    x32, kind = _prepare(x)
    with np.errstate(all="ignore"):
        out = _exp_vector(_daz(x32)).astype(np.float32)
        _set_nan(out, x32)
        lanes = _choose_path(x32, path)
        if lanes is not None:
            flat_in = x32.reshape(-1)
            flat_out = out.reshape(-1)
            flat_out[lanes] = _glibc_expf(flat_in[lanes])
    return _finish(out, kind)


# ---------------------------------------------------------------------------------
# sin / cos (always glibc's sinf/cosf in XLA)
# ---------------------------------------------------------------------------------

# XLA leaves sin and cos as LLVM intrinsics with no vector replacement, so every element
# is a call to glibc 2.36's sinf/cosf (Szabolcs Nagy's design, FMA build): |x| < pi/4
# directly, |x| < 120 by one fused multiply-subtract of n*pi/2, larger |x| by exact
# integer reduction with 192 bits of 4/pi; then a degree-7 odd or degree-8 even
# polynomial in double precision, rounded once to float.
_SC_HPI_INV = float.fromhex("0x1.45f306dc9c883p+23")  # 2/pi, scaled by 2**24
_SC_HPI = float.fromhex("0x1.921fb54442d18p+0")
_SC_PI63 = float.fromhex("0x1.921fb54442d18p-62")
_SC_SIGN = np.array([1.0, -1.0, -1.0, 1.0])
_SC_S = tuple(float.fromhex(h) for h in ("-0x1.555545995a603p-3", "0x1.1107605230bc4p-7", "-0x1.994eb3774cf24p-13"))
_SC_C = tuple(
    float.fromhex(h)
    for h in ("0x1p0", "-0x1.ffffffd0c621cp-2", "0x1.55553e1068f19p-5", "-0x1.6c087e89a359dp-10",
              "0x1.99343027bf8c3p-16")
)
# The first 192 bits of 4/pi, as 24 overlapping 32-bit windows advancing 8 bits at a time
# (the first three windows start before the binary point and hold only leading bits).
_FOUR_OVER_PI = 0xA2F9836E4E441529FC2757D1F534DDC0DB6295993C439041
_INV_PIO4 = np.array([(_FOUR_OVER_PI >> (184 - 8 * j)) & 0xFFFFFFFF for j in range(24)], dtype=np.uint64)


def _reduce_large(xb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(r, n) with |x| = (n + r/(pi/2)) * pi/2 modulo 2*pi, from 96 bits of 4/pi chosen by
    the exponent; fixed-point arithmetic on uint64 (wrapping like the C code)."""
    xi = xb.astype(np.uint64)
    idx = ((xi >> np.uint64(26)) & np.uint64(15)).astype(np.intp)
    shift = (xi >> np.uint64(23)) & np.uint64(7)
    m = ((xi & np.uint64(0xFFFFFF)) | np.uint64(0x800000)) << shift
    res0 = (m * _INV_PIO4[idx]) & np.uint64(0xFFFFFFFF)
    res1 = m * _INV_PIO4[idx + 4]
    res2 = m * _INV_PIO4[idx + 8]
    res0 = (res2 >> np.uint64(32)) | (res0 << np.uint64(32))
    res0 = res0 + res1
    n = (res0 + np.uint64(1 << 61)) >> np.uint64(62)
    res0 = res0 - (n << np.uint64(62))
    return res0.view(np.int64).astype(_F64) * _SC_PI63, n.astype(np.int64)


def _glibc_sincosf(x32: np.ndarray, cosine: bool) -> np.ndarray:
    xb = x32.view(np.uint32)
    abstop = (xb >> 20) & 0x7FF
    x = _daz(x32)
    # Reduced argument xr, quadrant n, and m = n adjusted by the sign (large path only).
    medium = (abstop >= 0x3F4) & (abstop < 0x42F)  # pi/4 <= |x| < 120, by the top 12 bits
    large = (abstop >= 0x42F) & (abstop < 0x7F8)  # 120 <= |x| < inf
    xr = x.copy()
    n = np.zeros(x.shape, dtype=np.int64)
    if medium.any():
        xm = x[medium]
        # The quadrant is taken from the top bits of x * 2/pi * 2**24, truncated.
        nm = (np.trunc(xm * _SC_HPI_INV).astype(np.int64) + 0x800000) >> 24
        xr[medium] = _fma64(-nm.astype(_F64), _SC_HPI, xm)
        n[medium] = nm
    m = n.copy()
    if large.any():
        rl, nl = _reduce_large(xb[large])
        xr[large] = rl
        n[large] = nl
        m[large] = nl + (xb[large] >> 31)
    use_cos = (n & 1) == (0 if cosine else 1)
    x2 = xr * xr
    y = np.empty(x.shape, dtype=_F64)
    # Odd polynomial on x*sign for sine-like lanes.
    lanes = ~use_cos
    xs = xr[lanes] * _SC_SIGN[m[lanes] & 3]
    s2 = x2[lanes]
    x3 = s2 * xs
    s1 = _fma64(s2, _SC_S[2], _SC_S[1])
    x7 = x3 * s2
    y[lanes] = _fma64(s1, x7, _fma64(x3, _SC_S[0], xs))
    # Even polynomial for cosine-like lanes, negated in quadrants with m & 2 (glibc keeps
    # a second, negated table for that).
    c2_ = x2[use_cos]
    sgn = np.where((m[use_cos] & 2) != 0, -1.0, 1.0)
    c0, c1, c2, c3, c4 = (sgn * c for c in _SC_C)
    x4 = c2_ * c2_
    cc1 = _fma64(c2_, c1, c0)
    cc2 = _fma64(c2_, c4, c3)
    x6 = c2_ * x4
    y[use_cos] = _fma64(cc2, x6, _fma64(x4, c2, cc1))
    out = _glibc_r32(y)
    tiny = abstop < 0x398  # |x| < 2**-12
    if cosine:
        out[tiny] = np.float32(1.0)
    else:
        out[tiny] = x32[tiny]  # returned unchanged, denormals included
    out.view(np.uint32)[abstop >= 0x7F8] = np.uint32(0xFFC00000)  # inf: invalid, default NaN
    _set_nan(out, x32)
    return out


def sin(x: Any) -> Any:
    """float32 sin as computed by JAX/XLA on CPU: glibc's sinf, emulated (bit exact)."""
    x32, kind = _prepare(x)
    with np.errstate(all="ignore"):
        out = _glibc_sincosf(x32, cosine=False)
    return _finish(out, kind)


def cos(x: Any) -> Any:
    """float32 cos as computed by JAX/XLA on CPU: glibc's cosf, emulated (bit exact)."""
    x32, kind = _prepare(x)
    with np.errstate(all="ignore"):
        out = _glibc_sincosf(x32, cosine=True)
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
