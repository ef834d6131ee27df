"""The float32 arithmetic of JAX's CPU backend, emulated in NumPy: exactly what the engine uses.

Which results match JAX bit for bit (docs/ENGINE.md, "Numbers: what matches JAX bit for bit",
states the same rule): an operation matches when the engine evaluates the same formula, in the
same dtype, in the same order and with the same fused multiply-adds as the code jaxlib 0.10.2
generates on x86-64 with AVX-512/FMA. This module holds the operations for which the engine does
that, and nothing else:

- `tanh` and `log` of float32 arrays (the `tanh` and `log` primitives): XLA does not call a math
  library for them but expands each into its own polynomial or rational approximation
  (Eigen/Cephes-derived), which NumPy's float32 functions miss by 1-2 ulp on many inputs;
- `fma`, an exact fused multiply-add of float32 or float64 arrays, and `log` again: the
  building blocks with which engine._threefry evaluates XLA's formulas for `erf_inv` and `log1p`
  inside `random.normal` and the scaling inside `random.uniform`.

Every other operation is plain NumPy: within a few ulp of JAX, not bit for bit.

How float32 arithmetic is emulated with NumPy
---------------------------------------------
Inside `tanh` and `log`, every intermediate value is kept as a float64 array holding an exact
float32 value.

* ``a*b``, ``a+b``, ``a/b`` are computed in float64 and rounded once to float32.  For
  float32 operands this double rounding is harmless (53 >= 2*24 + 2), so the result is
  the correctly rounded float32 operation.
* ``_fma(a, b, c)``: the product of two float32 values is exact in float64, but the
  following float64 addition may round, and rounding that sum again to float32 could
  then be wrong (double rounding onto a float32 tie).  Where the float64 sum lands
  exactly on a float32 midpoint, its exact error is recovered with TwoSum and the sum
  is moved one float64 ulp towards the exact value (as rounding *to odd* would);
  rounding that to nearest float32 gives the correctly rounded fma, i.e. exactly what
  the hardware instruction computes.  Fixing midpoints only is enough because of FTZ
  (next point): the float32 subnormal range, whose midpoints sit elsewhere, is flushed.
* XLA runs its CPU kernels with the MXCSR flags FTZ and DAZ set: denormal inputs act as
  signed zeros in arithmetic and comparisons, and results that are tiny *after*
  rounding (|result| < 2**-126 when rounded to 24 bits) are flushed to signed zero.
  Selects and bit operations still move the original bits (e.g. ``tanh`` returns a
  denormal input unchanged).

The public `fma` works on native float32 or float64 arrays, subnormals included (no FTZ:
engine._threefry's formulas never produce them, and the samplers' scaling should not flush
them): it rounds the float64 sum to odd in general (Boldo & Melquiond), which is slower than
the midpoint fix above but right everywhere.

Library calls
-------------
``log`` is an LLVM intrinsic that XLA rewrites into its own approximation only for vector
widths 1, 2, 4 and 8.  For arrays with fewer than 16 elements, the trailing partial vector
(3, 5, 6 or 7 lanes) is left to LLVM, which calls glibc's ``logf`` per element (only for 1-D
arrays; see ``_libm_from``).  ``log`` below takes the same path for the same shapes, but
evaluates those elements in double precision rounded once (``_libm``): libm's functions are
correctly rounded in all but rare cases, so these lanes agree with JAX to within one ulp
rather than bit for bit.

`tanh` and `log` take anything convertible to a float32 array (other dtypes are first cast
to float32) and return a new float32 ndarray of the same shape, or a NumPy float32
scalar for a Python/NumPy scalar input.

Two implementations, one set of bits
------------------------------------
The NumPy emulation below is the specification, and costs about a hundred NumPy calls per
function call.  engine/_f32kernels.c performs the same float32 operations element by element
in C (with ``fmaf`` where the emulation calls `_fma`), which makes `tanh` and `log` about as
fast as ``np.tanh``/``np.log``.  It is an optional extension (setup.py): where it was not
built, `tanh` and `log` run the emulation (`_tanh_numpy`, `_log_numpy`), with the same
results.  `IMPLEMENTATION` names the one in use; tests/test_xla_f32.py checks both against
JAX's stored bits and against each other.
"""

from __future__ import annotations

from typing import Any

import numpy as np

try:
    from engine import _f32kernels as _kernels
except ImportError:  # not compiled (optional extension): the NumPy emulation gives the same bits
    _kernels = None

__all__ = ["IMPLEMENTATION", "fma", "log", "tanh"]

IMPLEMENTATION: str = "C (engine._f32kernels)" if _kernels is not None else "NumPy emulation"

_F64 = np.float64
_F32 = np.dtype(np.float32)
# A float32 ndarray input gets a result laid out as _prepare's copy would be (order "K", 0-d stays
# 0-d).  Small arrays are copied and the kernel runs in place: that is the fewest Python-level
# operations.  From this size on, a C-contiguous input is read once into a new empty array instead,
# which saves a pass over memory (a third of the time at 10**6 elements).
_OUT_OF_PLACE_FROM = 2048
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
# Fused multiply-add of native float32/float64 arrays (no FTZ)
# ---------------------------------------------------------------------------------


def _two_sum(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """s + e == a + b exactly, with s the rounded sum (Knuth)."""
    s = a + b
    bb = s - a
    return s, (a - (s - bb)) + (b - bb)


def _add_round_to_odd(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """float64 a + b rounded to odd: inexact results get an odd last bit."""
    s, e = _two_sum(a, b)
    even = (s.view(np.int64) & 1) == 0
    # If inexact and the nearest value is even, the exact sum lies between it
    # and the neighbour on e's side, and that neighbour is odd.  Infinite or
    # NaN sums are already right (and their e is meaningless).
    step = (e != 0) & even & np.isfinite(s)
    return np.where(step, np.nextafter(s, np.copysign(np.inf, e)), s)


def _two_prod(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """p + e == a * b exactly for float64 (Dekker, with Veltkamp splitting)."""
    split = 134217729.0  # 2**27 + 1 cuts a double into two 26-bit halves.
    ca, cb = split * a, split * b
    a_hi, b_hi = ca - (ca - a), cb - (cb - b)
    a_lo, b_lo = a - a_hi, b - b_hi
    p = a * b
    e = ((a_hi * b_hi - p) + a_hi * b_lo + a_lo * b_hi) + a_lo * b_lo
    return p, e


def fma(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
    """a * b + c with a single rounding, for float32 or float64 operands."""
    dtype = np.result_type(a, b, c)
    # Infinite or NaN operands make the error terms NaN; those lanes fall back
    # to the plain result, which is then the right one.
    with np.errstate(invalid="ignore", over="ignore"):
        if dtype == np.float32:
            # A float32 product is exact in float64; an odd-rounded float64 sum
            # then rounds to float32 exactly as the true fma would.
            a64, b64, c64 = (np.asarray(v, np.float64) for v in (a, b, c))
            return _add_round_to_odd(a64 * b64, c64).astype(np.float32)
        if dtype == np.float64:
            # Boldo & Melquiond, "Emulation of FMA and correctly rounded sums:
            # proved algorithms using rounding to odd" (IEEE TC, 2008).
            a, b, c = (np.asarray(v, np.float64) for v in (a, b, c))
            p_hi, p_lo = _two_prod(a, b)
            s_hi, s_lo = _two_sum(c, p_hi)
            fused = s_hi + _add_round_to_odd(s_lo, p_lo)
            return np.where(np.isfinite(s_hi), fused, p_hi + c)
    raise TypeError(f"fma emulation supports float32 and float64, not {dtype}")


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
    if _kernels is None:
        return _tanh_numpy(x)
    if type(x) is np.ndarray and x.dtype == _F32:
        # The common case, in as few Python operations as possible (see `_OUT_OF_PLACE_FROM`).
        if x.size >= _OUT_OF_PLACE_FROM and x.flags.c_contiguous:
            out = np.empty(x.shape, _F32)
            _kernels.tanh(x, out)
        else:
            out = x.copy("K")
            _kernels.tanh(out, out)
        return out
    x32, kind = _prepare(x)
    _kernels.tanh(x32, x32)
    return _finish(x32, kind)


def _tanh_numpy(x: Any) -> Any:
    """`tanh` by the NumPy emulation (the specification of engine/_f32kernels.c's tanh)."""
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
# libm's logf (XLA calls it for odd-width tails of small arrays)
# ---------------------------------------------------------------------------------


def _libm(fn: Any, x32: np.ndarray) -> np.ndarray:
    """A C library float32 function as XLA's CPU code sees it: denormal inputs read as zero,
    evaluated here in double precision and rounded once, denormal results flushed to zero.

    glibc's logf is correctly rounded in all but rare cases, so this agrees with it to within
    one ulp, and almost always bit for bit; we do not reproduce its internals."""
    with np.errstate(all="ignore"):
        y = fn(_daz(x32))
    out = y.astype(np.float32)
    np.copysign(np.float32(0), out, out=out, where=np.abs(y) < _FTZ_LIMIT)
    _set_nan(out, x32)
    return out


def _libm_from(shape: tuple[int, ...], path: str) -> int | None:
    """Flat position from which XLA hands the items of an elementwise exp/log of this shape to
    libm (None: it never does).

    XLA's CPU kernel processes a small 1-D array as one 16-element tile: a full 8-wide
    vector and a remainder vector.  XLA only replaces exp/log intrinsics of width 1, 2, 4
    or 8, so a remainder of 3, 5, 6 or 7 lanes is scalarised into libm calls.  1-D arrays
    of 16 or more elements, and arrays of two or more dimensions (even (1, 3)), never
    take that path (found by probing JAX 0.10.2 with inputs where the two disagree).
    ``path`` "vector" and "libm" override that choice: no item, or all of them."""
    if path == "vector":
        return None
    if path == "libm":
        return 0
    if path != "auto":
        raise ValueError(f"path must be 'auto', 'vector' or 'libm', not {path!r}")
    if len(shape) != 1 or shape[0] >= 16:
        return None
    n = shape[0]
    start = 8 if n >= 8 else 0
    return start if n - start in (3, 5, 6, 7) else None


# _libm_from(shape, "auto") for the shapes where it is not None, looked up faster.
_AUTO_LIBM_FROM = {(n,): start for n in range(16) if (start := _libm_from((n,), "auto")) is not None}


def log(x: Any, *, path: str = "auto") -> Any:
    """float32 natural log as computed by JAX/XLA on CPU (bit exact; engine._threefry uses the
    expansion alone, ``path="vector"``).

    ``path="auto"`` mimics XLA's choice for an array of this shape (see module doc);
    ``"vector"`` forces XLA's own expansion, ``"libm"`` the library path (to one ulp)."""
    if _kernels is None:
        return _log_numpy(x, path=path)
    if type(x) is np.ndarray and x.dtype == _F32:
        # As in `tanh`; a 0-d array takes the path of a 1-element one: the vector expansion.
        start = _AUTO_LIBM_FROM.get(x.shape) if path == "auto" else _libm_from(x.shape, path)
        if x.size >= _OUT_OF_PLACE_FROM and x.flags.c_contiguous:
            out = np.empty(x.shape, _F32)
            _kernels.log(x, out, start)
        else:
            out = x.copy("K")
            _kernels.log(out, out, start)
        return out
    x32, kind = _prepare(x)
    _kernels.log(x32, x32, _libm_from(x32.shape, path))
    return _finish(x32, kind)


def _log_numpy(x: Any, *, path: str = "auto") -> Any:
    """`log` by the NumPy emulation (the specification of engine/_f32kernels.c's log)."""
    x32, kind = _prepare(x)
    with np.errstate(all="ignore"):
        out = _log_vector(_daz(x32))
        start = _libm_from(x32.shape, path)
        if start is not None:
            # start > 0 only for 1-D arrays; start == 0 slices nothing off any array.
            tail = x32[start:]
            logs = _libm(np.log, tail)
            # Under DAZ the library scales a positive denormal by 2**23 and gets zero bits,
            # which it reads as the exponent -150: log of a positive denormal is -150*ln2.
            logs[(tail > 0) & (tail < _FLT_MIN)] = np.float32(-150 * np.log(2.0))
            # An invalid operation on x86 gives the "default NaN", sign bit set (0xffc00000), as
            # glibc's logf does for x < 0; NumPy's own SIMD log (2.4+) returns the positive one.
            logs.view(np.uint32)[tail < 0] = np.uint32(0xFFC00000)
            out[start:] = logs
    return _finish(out, kind)
