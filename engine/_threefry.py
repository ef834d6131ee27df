"""JAX's default PRNG (threefry2x32) reproduced in pure NumPy.

Everything here works on raw key data: uint32 arrays whose trailing
dimension is 2, exactly what `jax.random.key_data` returns.  The aim is to
give the same numbers as JAX on CPU, bit for bit for keys and random bits,
and for floats as close as we can get to what XLA's CPU kernels compute.

Two global switches change the results, as in JAX:

* `config.jax_threefry_partitionable` chooses how counters are laid out for
  `split` and `random_bits`.  False is JAX's original scheme (counters are
  one flat iota hashed in pairs); True is the newer scheme where element i
  hashes the 64-bit counter i split into (high, low) words.
* `config.jax_enable_x64` changes how integer seeds become keys and which
  float dtype is the default.

On the float side, XLA lowers `erf_inv` (used by `normal`) to Giles'
polynomial approximations and `log1p` to a Cephes-style formula whose log is
XLA's own polynomial in float32 and the C library's `log` in float64.  Its
CPU backend then fuses every multiply whose only use is an add into one fused
multiply-add.  We evaluate the same formulas in the same dtype, in the same
order, and emulate those fused multiply-adds exactly, which reproduces jaxlib
0.10.2 on x86-64 with FMA bit for bit (all 2**23 float32 normal draws were
checked, and millions of float64 ones).  A CPU without FMA would make JAX
itself round differently.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Sequence

import numpy as np
from numpy.typing import DTypeLike

from engine._config import config
from engine._xla_f32 import fma
from engine._xla_f32 import log as log_f32

__all__ = [
    "threefry2x32",
    "seed_to_key_data",
    "split_data",
    "fold_in_data",
    "random_bits_data",
    "uniform_data",
    "normal_data",
]

_MASK32 = 0xFFFFFFFF

# Rotation amounts of Threefry-2x32; the two groups alternate every four rounds.
_ROTATIONS = ((13, 15, 26, 6), (17, 29, 16, 24))
# Threefry's key-schedule parity constant.
_KEY_PARITY = 0x1BD11BDA

# The original scheme hashes at most this many counters under one key; longer
# streams are cut into blocks, each under its own subkey, as JAX does.
_MAX_COUNTERS_PER_KEY = _MASK32

_UINT_DTYPES = {8: np.uint8, 16: np.uint16, 32: np.uint32, 64: np.uint64}


# --------------------------------------------------------------------------
# The hash


def _check_key(key_data: np.ndarray) -> np.ndarray:
    key = np.asarray(key_data)
    if key.shape != (2,) or key.dtype != np.uint32:
        raise TypeError(
            f"expected raw threefry key data of shape (2,) and dtype uint32, "
            f"got shape {key.shape} and dtype {key.dtype}"
        )
    return key


def _rotate_left(v: np.ndarray, r: int) -> np.ndarray:
    return (v << np.uint32(r)) | (v >> np.uint32(32 - r))


def threefry2x32(
    key: np.ndarray, x0: np.ndarray, x1: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Threefry-2x32 with 20 rounds: hash the counter pairs (x0, x1) under `key`.

    `x0` and `x1` broadcast against each other; both outputs have that shape.
    """
    k0, k1 = (int(k) for k in _check_key(key))
    schedule = (k0, k1, k0 ^ k1 ^ _KEY_PARITY)
    a, b = np.broadcast_arrays(np.asarray(x0, np.uint32), np.asarray(x1, np.uint32))
    shape = a.shape
    # Work on 1-d copies: uint32 arithmetic on 0-d arrays falls back to NumPy
    # scalars, which warn on the wrap-around that the hash relies on.
    a = a.reshape(-1) + np.uint32(schedule[0])
    b = b.reshape(-1) + np.uint32(schedule[1])
    for block in range(5):
        for r in _ROTATIONS[block % 2]:
            a = a + b
            b = _rotate_left(b, r) ^ a
        # Key injection: the next schedule words, plus the block number on b.
        a = a + np.uint32(schedule[(block + 1) % 3])
        b = b + np.uint32((schedule[(block + 2) % 3] + block + 1) & _MASK32)
    return a.reshape(shape), b.reshape(shape)


def _hash_counters(key: np.ndarray, counters: np.ndarray) -> np.ndarray:
    """JAX's `threefry_2x32(key, count)`: one flat counter array in, same shape out.

    The flattened counters are zero-padded to even length; the first half
    feeds x0 and the second half x1, and the two outputs are concatenated.
    """
    flat = np.asarray(counters, np.uint32).reshape(-1)
    n = flat.size
    if n % 2:
        flat = np.concatenate([flat, np.zeros(1, np.uint32)])
    half = flat.size // 2
    y0, y1 = threefry2x32(key, flat[:half], flat[half:])
    return np.concatenate([y0, y1])[:n].reshape(np.shape(counters))


def _iota_2x32(shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """Row-major element index over `shape` as a 64-bit count split in (high, low) words."""
    if not shape:
        zero = np.zeros((), np.uint32)
        return zero, zero
    counts = np.arange(math.prod(shape), dtype=np.uint64).reshape(shape)
    return (counts >> np.uint64(32)).astype(np.uint32), counts.astype(np.uint32)


def _as_shape(shape: int | Sequence[int]) -> tuple[int, ...]:
    if isinstance(shape, Sequence):
        dims = tuple(operator.index(d) for d in shape)
    else:
        dims = (operator.index(shape),)
    if any(d < 0 for d in dims):
        raise ValueError(f"shape dimensions must be non-negative, got {dims}")
    return dims


# --------------------------------------------------------------------------
# Keys


def seed_to_key_data(seed: int) -> np.ndarray:
    """Key data of `jax.random.key(seed)` / `jax.random.PRNGKey(seed)`.

    Like JAX, the seed must fit in int64.  With x64 enabled the key is the
    seed's two's-complement 64 bits as (high, low) words; without it JAX first
    narrows the seed to int32, so only the low 32 bits survive and the high
    word is 0 (even for negative seeds).
    """
    seed = operator.index(seed)
    if not -(2**63) <= seed < 2**63:
        raise OverflowError(f"seed {seed} does not fit in a 64-bit signed integer")
    bits = seed & 0xFFFF_FFFF_FFFF_FFFF
    if not config.jax_enable_x64:
        bits &= _MASK32
    return np.array([bits >> 32, bits & _MASK32], dtype=np.uint32)


def split_data(key_data: np.ndarray, num: int | Sequence[int] = 2) -> np.ndarray:
    """Key data of `jax.random.split(key, num)`: shape (*num, 2)."""
    key = _check_key(key_data)
    shape = _as_shape(num)
    if config.jax_threefry_partitionable:
        hi, lo = _iota_2x32(shape)
        y0, y1 = threefry2x32(key, hi, lo)
        return np.stack([y0, y1], axis=-1)
    count = math.prod(shape)
    return _hash_counters(key, np.arange(2 * count, dtype=np.uint32)).reshape(*shape, 2)


def fold_in_data(key_data: np.ndarray, data: int) -> np.ndarray:
    """Key data of `jax.random.fold_in(key, data)`; `data` must fit in uint32."""
    key = _check_key(key_data)
    data = operator.index(data)
    if not 0 <= data <= _MASK32:
        raise OverflowError(f"fold_in data {data} is out of bounds for uint32")
    # JAX turns `data` into a key with the 32-bit seeding rule ([0, data])
    # and hashes that pair as counters; both schemes agree here.
    return _hash_counters(key, np.array([0, data], dtype=np.uint32))


# --------------------------------------------------------------------------
# Random bits


def _counter_stream(key: np.ndarray, n_words: int) -> np.ndarray:
    """`n_words` uint32 words of the original scheme: hash of iota(n_words)."""
    if n_words < _MAX_COUNTERS_PER_KEY:
        return _hash_counters(key, np.arange(n_words, dtype=np.uint32))
    # Too many counters for one key: JAX splits the key and hashes a full
    # block of counters under each subkey, then the remainder under the last.
    n_blocks, rest = divmod(n_words, _MAX_COUNTERS_PER_KEY)
    keys = split_data(key, n_blocks + 1)
    full_block = np.arange(_MAX_COUNTERS_PER_KEY, dtype=np.uint32)
    parts = [_hash_counters(k, full_block) for k in keys[:-1]]
    parts.append(_hash_counters(keys[-1], np.arange(rest, dtype=np.uint32)))
    return np.concatenate(parts)


def random_bits_data(
    key_data: np.ndarray, bit_width: int, shape: int | Sequence[int] = ()
) -> np.ndarray:
    """`jax.random.bits` with a uint{bit_width} dtype: uniformly random unsigned ints."""
    key = _check_key(key_data)
    if bit_width not in _UINT_DTYPES:
        raise TypeError(f"bit_width must be 8, 16, 32 or 64, got {bit_width}")
    shape = _as_shape(shape)
    dtype = _UINT_DTYPES[bit_width]
    size = math.prod(shape)

    if config.jax_threefry_partitionable:
        if size > 2**64:
            raise NotImplementedError("random bits array of size exceeding 2 ** 64")
        hi, lo = _iota_2x32(shape)
        y0, y1 = threefry2x32(key, hi, lo)
        if bit_width == 64:
            bits = (y0.astype(np.uint64) << np.uint64(32)) | y1.astype(np.uint64)
        else:
            # Narrower widths keep the low bits of the xor, as a C cast would.
            bits = (y0 ^ y1).astype(dtype)
        return np.asarray(bits, dtype).reshape(shape)

    n_words = -(-bit_width * size // 32)
    words = _counter_stream(key, n_words)
    if bit_width == 64:
        # The first half of the stream gives the high words, the second the low.
        bits = (words[:size].astype(np.uint64) << np.uint64(32)) | words[size:].astype(
            np.uint64
        )
    elif bit_width == 32:
        bits = words
    else:
        # Each word is cut into 32 // bit_width pieces, least significant first
        # (a little-endian view of the words), and the excess is dropped.
        shifts = np.arange(0, 32, bit_width, dtype=np.uint32)
        pieces = (words[:, None] >> shifts) & np.uint32((1 << bit_width) - 1)
        bits = pieces.reshape(-1)[:size].astype(dtype)
    return bits.reshape(shape)


# --------------------------------------------------------------------------
# log, log1p and erf_inv as XLA evaluates them on CPU
#
# NumPy has no fma ufunc, and XLA's CPU code uses one wherever a product feeds
# only an addition: `fma` and XLA's float32 `log` come from engine._xla_f32.


def _horner_fma(coeffs: Sequence[float], t: np.ndarray) -> np.ndarray:
    """Polynomial in t, highest coefficient first, one fma per step as XLA does."""
    p = np.full_like(t, coeffs[0])
    for c in coeffs[1:]:
        p = fma(p, t, t.dtype.type(c))
    return p


# math.log is the C library's log, the very function XLA's CPU code calls for
# float64.  NumPy's vectorized float64 log is a different implementation (SIMD
# code on many CPUs) that disagrees in the last bit now and then, and erfinv
# can stretch that into a few ulps, so we pay for a call per element instead.
_libm_log = np.frompyfunc(math.log, 1, 1)


def _log_f64(v: np.ndarray) -> np.ndarray:
    """Natural log in float64 of a 1-d array, exactly as the C library computes it."""
    regular = (v > 0) & (v < np.inf)
    out = np.where(v == 0, -np.inf, np.where(v == np.inf, np.inf, np.nan))
    out[regular] = _libm_log(v[regular]).astype(np.float64)
    return out


# Cephes log1p rational approximation on |x| < sqrt(2) - 1:
# log1p(x) ~ x - x**2/2 + x**3 * P(x) / Q(x), coefficients highest first.
_LOG1P_P = (
    4.5270000862445199635215e-5, 4.9854102823193375972212e-1,
    6.5787325942061044846969e0, 2.9911919328553073277375e1,
    6.0949667980987787057556e1, 5.7112963590585538103336e1,
    2.0039553499201281259648e1,
)
_LOG1P_Q = (
    1.0, 1.5062909083469192043167e1,
    8.3047565967967209469434e1, 2.2176239823732856465394e2,
    3.0909872225312059774938e2, 2.1642788614495947685003e2,
    6.0118660497603843919306e1,
)


def _log1p(x: np.ndarray) -> np.ndarray:
    """XLA's log1p of a 1-d array: a rational approximation near 0, else log(1 + x)."""
    dt = x.dtype.type
    near = np.abs(x) < dt(0.41421356237309504880)
    out = np.empty_like(x)
    xn = x[near]
    x2 = xn * xn
    ratio = _horner_fma(_LOG1P_P, xn) / _horner_fma(_LOG1P_Q, xn)
    out[near] = xn + (x2 * dt(-0.5) + (xn * x2) * ratio)
    one_plus = x[~near] + dt(1)
    out[~near] = log_f32(one_plus, path="vector") if dt is np.float32 else _log_f64(one_plus)
    return out


# Giles, "Approximating the erfinv function" (GPU Computing Gems, 2011).
# Each region maps w = -log(1 - x**2) to a shifted variable t and evaluates
# erfinv(x) / x as a polynomial in t.  A region is
# (upper bound on w, whether t uses sqrt(w), shift, coefficients highest first).
_ERFINV_F32 = (
    (5.0, False, 2.5, (
        2.81022636e-08, 3.43273939e-07, -3.5233877e-06, -4.39150654e-06,
        0.00021858087, -0.00125372503, -0.00417768164, 0.246640727, 1.50140941,
    )),
    (np.inf, True, 3.0, (
        -0.000200214257, 0.000100950558, 0.00134934322, -0.00367342844,
        0.00573950773, -0.0076224613, 0.00943887047, 1.00167406, 2.83297682,
    )),
)
_ERFINV_F64 = (
    (6.25, False, 3.125, (
        -3.6444120640178196996e-21, -1.685059138182016589e-19,
        1.2858480715256400167e-18, 1.115787767802518096e-17,
        -1.333171662854620906e-16, 2.0972767875968561637e-17,
        6.6376381343583238325e-15, -4.0545662729752068639e-14,
        -8.1519341976054721522e-14, 2.6335093153082322977e-12,
        -1.2975133253453532498e-11, -5.4154120542946279317e-11,
        1.051212273321532285e-09, -4.1126339803469836976e-09,
        -2.9070369957882005086e-08, 4.2347877827932403518e-07,
        -1.3654692000834678645e-06, -1.3882523362786468719e-05,
        0.0001867342080340571352, -0.00074070253416626697512,
        -0.0060336708714301490533, 0.24015818242558961693,
        1.6536545626831027356,
    )),
    (16.0, True, 3.25, (
        2.2137376921775787049e-09, 9.0756561938885390979e-08,
        -2.7517406297064545428e-07, 1.8239629214389227755e-08,
        1.5027403968909827627e-06, -4.013867526981545969e-06,
        2.9234449089955446044e-06, 1.2475304481671778723e-05,
        -4.7318229009055733981e-05, 6.8284851459573175448e-05,
        2.4031110387097893999e-05, -0.0003550375203628474796,
        0.00095328937973738049703, -0.0016882755560235047313,
        0.0024914420961078508066, -0.0037512085075692412107,
        0.005370914553590063617, 1.0052589676941592334,
        3.0838856104922207635,
    )),
    (np.inf, True, 5.0, (
        -2.7109920616438573243e-11, -2.5556418169965252055e-10,
        1.5076572693500548083e-09, -3.7894654401267369937e-09,
        7.6157012080783393804e-09, -1.4960026627149240478e-08,
        2.9147953450901080826e-08, -6.7711997758452339498e-08,
        2.2900482228026654717e-07, -9.9298272942317002539e-07,
        4.5260625972231537039e-06, -1.9681778105531670567e-05,
        7.5995277030017761139e-05, -0.00021503011930044477347,
        -0.00013871931833623122026, 1.0103004648645343977,
        4.8499064014085844221,
    )),
)


def _erf_inv(x: np.ndarray) -> np.ndarray:
    """Inverse error function of a 1-d array, following XLA's float32/float64 expansions."""
    dt = x.dtype.type
    w = -_log1p(x * -x)
    p = np.empty_like(x)
    done = np.zeros(x.shape, bool)
    for upper, use_sqrt, shift, coeffs in _ERFINV_F32 if dt is np.float32 else _ERFINV_F64:
        # Regions are tried in order; the last one also takes a NaN w, as
        # XLA's chain of selects does.
        mask = ~done if upper == np.inf else ~done & (w < dt(upper))
        done |= mask
        wr = w[mask]
        t = (np.sqrt(wr) if use_sqrt else wr) - dt(shift)
        p[mask] = _horner_fma(coeffs, t)
    # erfinv(+-1) is +-inf, which the polynomial would not reach.
    return x * np.where(np.abs(x) == dt(1), dt(np.inf), p)


# --------------------------------------------------------------------------
# Samplers


def _float_dtype(dtype: DTypeLike | None) -> np.dtype:
    if dtype is None:
        return np.dtype(np.float64 if config.jax_enable_x64 else np.float32)
    dtype = np.dtype(dtype)
    if dtype not in (np.float32, np.float64):
        raise TypeError(f"only float32 and float64 are supported, got {dtype}")
    return dtype


def uniform_data(
    key_data: np.ndarray,
    shape: int | Sequence[int] = (),
    dtype: DTypeLike | None = None,
    minval: float | np.ndarray = 0.0,
    maxval: float | np.ndarray = 1.0,
) -> np.ndarray:
    """`jax.random.uniform`: floats in [minval, maxval) of the given shape.

    `dtype` None means float64 with x64 enabled, else float32.  A dtype that
    is given is used as is (JAX would narrow float64 without x64; doing that
    is the caller's business).  As in JAX, results are clamped to minval only,
    so rounding can occasionally produce maxval itself.
    """
    dtype = _float_dtype(dtype)
    shape = _as_shape(shape)
    lo = np.asarray(minval, dtype)
    hi = np.asarray(maxval, dtype)
    if np.broadcast_shapes(shape, lo.shape, hi.shape) != shape:
        raise ValueError(
            f"minval {lo.shape} and maxval {hi.shape} must broadcast to shape {shape}"
        )
    finfo = np.finfo(dtype)
    uint = _UINT_DTYPES[finfo.bits]
    # Work on flat arrays; 0-d NumPy arithmetic would hand back scalars.
    bits = random_bits_data(key_data, finfo.bits, shape).reshape(-1)
    # Keep the top `nmant` random bits as the mantissa of a float in [1, 2).
    one_bits = np.array(1.0, dtype).view(uint)
    floats = ((bits >> uint(finfo.bits - finfo.nmant)) | one_bits).view(dtype) - dtype.type(1)
    floats = floats.reshape(shape)
    # XLA fuses this multiply and add into one fma on CPU.
    scaled = fma(floats, hi - lo, lo)
    return np.asarray(np.maximum(lo, scaled), dtype).reshape(shape)


def normal_data(
    key_data: np.ndarray,
    shape: int | Sequence[int] = (),
    dtype: DTypeLike | None = None,
) -> np.ndarray:
    """`jax.random.normal`: standard normal floats via sqrt(2) * erfinv(u)."""
    dtype = _float_dtype(dtype)
    # u lives in the open interval (-1, 1) so that erfinv stays finite.
    lo = np.nextafter(dtype.type(-1), dtype.type(0))
    u = uniform_data(key_data, shape, dtype, lo, 1.0)
    out = _erf_inv(u.reshape(-1)) * dtype.type(np.sqrt(2))
    return out.reshape(u.shape)
