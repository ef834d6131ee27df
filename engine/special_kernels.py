"""NumPy kernels of the special functions that engine.primitives_special declares as primitives.

The engine depends on NumPy alone, so these are written here rather than taken from SciPy: each
works in float64 (a float32 operand is computed in float64 and rounded once at the end) and is
accurate to a few ulp in float64 on the domains the tests cover. Where the C library has the
function to within an ulp or so (`lgamma`, `erfc`), it is called element by element, as `erf` is.

Conventions at poles and outside domains follow JAX's: `lgamma` is +inf at the non-positive
integers, `digamma` and the even orders of `polygamma` are NaN there and its odd orders +inf;
`ndtri(0) = -inf`, `ndtri(1) = inf`, `erfinv(+-1) = +-inf`, NaN outside [0, 1] and [-1, 1].
`polygamma` of order >= 1 is NaN below x = -10^4 (POLYGAMMA_LOWEST_X), where its recurrence
would take too many steps.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from engine.errors import DtypeError

_SQRT2 = math.sqrt(2.0)
_SQRT_PI = math.sqrt(math.pi)
_LOG_SQRT_2PI = 0.5 * math.log(2.0 * math.pi)
# B_2, B_4, ..., B_20: the Bernoulli numbers of the Euler-Maclaurin and Stirling tails.
_BERNOULLI = (1 / 6, -1 / 30, 1 / 42, -1 / 30, 5 / 66, -691 / 2730, 7 / 6, -3617 / 510, 43867 / 798,
              -174611 / 330)


def _in_float64(kernel: Callable[..., np.ndarray]) -> Callable[..., np.ndarray]:
    """Run `kernel` on float64 copies of real floating-point operands; return their dtype."""
    def run(*operands: np.ndarray) -> np.ndarray:
        dtype = np.result_type(*operands)
        if dtype.kind != "f":  # as the primitives' shape rules say (the facade promotes first)
            raise DtypeError(f"`{kernel.__name__}` needs real floating-point operands, got {dtype}")
        wide = [np.asarray(x, dtype=np.float64) for x in operands]
        return np.asarray(kernel(*wide), dtype=np.float64).astype(dtype)
    run.__name__ = kernel.__name__
    return run


def _elementwise_libm(fn: Callable[[float], float], at_error: float) -> Callable[[np.ndarray], np.ndarray]:
    """A C library function applied element by element; a domain error (a pole) gives `at_error`."""
    def scalar(v: float) -> float:
        try:
            return fn(v)
        except (ValueError, OverflowError):
            return at_error
    ufunc = np.frompyfunc(scalar, 1, 1)
    return lambda x: np.asarray(ufunc(x), dtype=np.float64)


_lgamma = _elementwise_libm(math.lgamma, math.inf)
_erfc = _elementwise_libm(math.erfc, math.nan)
_erf = _elementwise_libm(math.erf, math.nan)


def _is_pole(x: np.ndarray) -> np.ndarray:
    return (x <= 0) & (x == np.floor(x))


# ----------------------------------------------------------------------------- gamma family


@_in_float64
def lgamma(x: np.ndarray) -> np.ndarray:
    """log |Gamma(x)|."""
    return _lgamma(x)


def _digamma64(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    reflect = x < 0
    # psi(x) = psi(1 - x) - pi / tan(pi x) brings negative x to the right half-line.
    z = np.where(reflect, 1.0 - x, x)
    shift = np.zeros_like(z)
    # psi(z) = psi(z + 1) - 1 / z until z >= 10, where the asymptotic series is accurate.
    for _ in range(11):
        small = z < 10
        if not small.any():
            break
        with np.errstate(divide="ignore"):
            shift = np.where(small, shift - 1.0 / np.where(small, z, 1.0), shift)
        z = np.where(small, z + 1.0, z)
    with np.errstate(over="ignore"):
        inv2 = 1.0 / (z * z)
    tail = np.zeros_like(z)
    for k in range(7, 0, -1):  # sum of B_2k / (2k z^2k), Horner in 1 / z^2
        tail = (tail + _BERNOULLI[k - 1] / (2 * k)) * inv2
    with np.errstate(divide="ignore", invalid="ignore"):
        value = np.log(z) - 0.5 / z - tail + shift
        # tan has period pi: tan(pi x) = tan(pi (x - round(x))), whose argument is exact.
        value = np.where(reflect, value - math.pi / np.tan(math.pi * (x - np.round(x))), value)
    return np.where(_is_pole(x), np.nan, value)


digamma = _in_float64(_digamma64)
digamma.__name__ = "digamma"


# polygamma of order >= 1 is computed for x above this (NaN below): its recurrence takes one step
# per unit of distance, so the bound bounds the work.
POLYGAMMA_LOWEST_X = -1e4


def _hurwitz_zeta(s: int, q: np.ndarray) -> np.ndarray:
    """zeta(s, q) = sum over k >= 0 of (q + k) ** -s, for an integer s >= 2 and q off the poles:
    the first terms summed directly until q + k >= 20 + 2s, the rest by Euler-Maclaurin."""
    threshold = 20.0 + 2 * min(s, 200)
    total = np.zeros_like(q)
    a = np.where(np.isfinite(q) & (q >= POLYGAMMA_LOWEST_X), q, np.nan)
    lowest = np.nanmin(a, initial=threshold) if a.size else threshold
    steps = int(max(0.0, np.ceil(threshold - lowest))) if np.isfinite(lowest) else 0
    for _ in range(steps):
        low = a < threshold
        if not low.any():
            break
        with np.errstate(divide="ignore"):  # a pole, replaced by the caller
            total = np.where(low, total + np.where(low, a, 1.0) ** -s, total)
        a = np.where(low, a + 1.0, a)
    with np.errstate(over="ignore", invalid="ignore"):
        tail = a ** (1 - s) / (s - 1) + 0.5 * a ** -s
        rising = float(s)  # s (s + 1) ... (s + 2j - 2)
        power = a ** (-s - 1)
        factorial = 2.0  # (2j)!
        for j, bernoulli in enumerate(_BERNOULLI, start=1):
            tail = tail + bernoulli / factorial * rising * power
            rising *= (s + 2 * j - 1) * (s + 2 * j)
            power = power / (a * a)
            factorial *= (2 * j + 1) * (2 * j + 2)
    return total + tail


@_in_float64
def polygamma(n: np.ndarray, x: np.ndarray) -> np.ndarray:
    """The n-th derivative of digamma, for integers n >= 0 (NaN for any other n)."""
    n, x = np.broadcast_arrays(n, x)
    out = np.full(x.shape, np.nan)
    for order in np.unique(n[np.isfinite(n)]):
        chosen = n == order
        if order < 0 or order != np.floor(order):
            continue
        if order == 0:
            out[chosen] = _digamma64(x[chosen])
            continue
        k = int(order)
        # psi^(k)(x) = (-1)^(k+1) k! zeta(k + 1, x)
        zeta = _hurwitz_zeta(k + 1, x[chosen])
        if k <= 170:
            values = (-1.0) ** (k + 1) * float(math.factorial(k)) * zeta
        else:  # k! alone overflows; the product may not
            with np.errstate(divide="ignore", over="ignore"):
                values = (-1.0) ** (k + 1) * np.sign(zeta) * np.exp(math.lgamma(k + 1) + np.log(np.abs(zeta)))
        # At a pole an odd order tends to +inf from both sides; an even order changes sign (NaN).
        values = np.where(x[chosen] == np.inf, 0.0, values)
        out[chosen] = np.where(_is_pole(x[chosen]), np.inf if k % 2 else np.nan, values)
    return out


# ----------------------------------------------------------------------------- error function family


@_in_float64
def erfc(x: np.ndarray) -> np.ndarray:
    """1 - erf(x), without the cancellation for large x."""
    return _erfc(x)


def _ndtri64(p: np.ndarray) -> np.ndarray:
    p = np.asarray(p, dtype=np.float64)
    upper = p > 0.5
    # The lower tail q <= 1/2; 1 - p is exact for p >= 1/2.
    q = np.where(upper, 1.0 - p, p)
    inside = (q > 0) & (q <= 0.5)
    q_safe = np.where(inside, q, 0.25)
    # A rational approximation (Hastings; absolute error under 5e-4) refined by Halley's method on
    # Phi(x) - q, where Phi(x) = erfc(-x / sqrt 2) / 2 is accurate in the lower tail.
    t = np.sqrt(-2.0 * np.log(q_safe))
    x = -(t - (2.515517 + t * (0.802853 + t * 0.010328)) / (1.0 + t * (1.432788 + t * (0.189269 + t * 0.001308))))
    for _ in range(3):
        residual = 0.5 * _erfc(-x / _SQRT2) - q_safe
        with np.errstate(over="ignore", invalid="ignore"):
            u = residual * np.exp(0.5 * x * x + _LOG_SQRT_2PI)
            step = u / (1.0 + 0.5 * x * u)
        x = x - np.where(np.isfinite(step), step, 0.0)
    x = np.where(inside, x, np.where(q == 0, -np.inf, np.nan))
    return np.where(p == 0.5, 0.0, np.where(upper, -x, x))


ndtri = _in_float64(_ndtri64)
ndtri.__name__ = "ndtri"


@_in_float64
def erfinv(y: np.ndarray) -> np.ndarray:
    """The inverse of erf on [-1, 1]."""
    tail = np.abs(y) >= 0.5
    # In the tails, erfinv(y) = -ndtri((1 - |y|) / 2) / sqrt 2 with 1 - |y| exact.
    x_tail = -np.sign(y) * _ndtri64((1.0 - np.abs(y)) / 2.0) / _SQRT2
    # In the middle, Halley's method on erf(x) - y keeps the relative accuracy of small y.
    y_mid = np.where(tail, 0.0, y)
    x = _ndtri64((1.0 + y_mid) / 2.0) / _SQRT2
    for _ in range(2):
        u = (_erf(x) - y_mid) * (0.5 * _SQRT_PI) * np.exp(x * x)
        x = x - u / (1.0 + x * u)
    return np.where(tail, x_tail, x)


def _log_ndtr_asymptotic(x: np.ndarray) -> np.ndarray:
    """log Phi(x) for x <= -20: -x^2/2 - log(-x) - log sqrt(2 pi) + log(1 + sum (-1)^n (2n-1)!! / x^2n)."""
    inv2 = 1.0 / (x * x)
    series = np.zeros_like(x)
    term = np.ones_like(x)
    for n in range(1, 11):
        term = term * -(2 * n - 1) * inv2
        series = series + term
    return -0.5 * x * x - np.log(-x) - _LOG_SQRT_2PI + np.log1p(series)


@_in_float64
def log_ndtr(x: np.ndarray) -> np.ndarray:
    """log of the standard normal CDF, accurate in both tails."""
    far_left = x < -20
    right = x > 0  # log1p(-Phi(-x)) keeps the relative accuracy that log(Phi(x)) near 1 loses
    safe_left = np.where(far_left, x, -30.0)
    with np.errstate(divide="ignore"):
        middle = np.log(0.5 * _erfc(-np.where(far_left | right, 0.0, x) / _SQRT2))
    upper = np.log1p(-0.5 * _erfc(np.where(right, x, 10.0) / _SQRT2))
    return np.where(far_left, _log_ndtr_asymptotic(safe_left), np.where(right, upper, middle))


# ----------------------------------------------------------------------------- modified Bessel functions

_SERIES_LIMIT = 20.0  # below: the power series; above: the asymptotic expansion (error < 1e-16)


def _bessel_series(nu: int, x: np.ndarray) -> np.ndarray:
    """I_nu(x) = (x/2)^nu sum_k (x^2/4)^k / (k! (k + nu)!), all terms positive."""
    quarter = 0.25 * x * x
    term = np.ones_like(x) / math.factorial(nu)
    total = term.copy()
    for k in range(1, 60):
        term = term * quarter / (k * (k + nu))
        total = total + term
    return total * (0.5 * x) ** nu


def _bessel_scaled_asymptotic(nu: int, x: np.ndarray) -> np.ndarray:
    """e^-x I_nu(x) for x >= 20: (2 pi x)^-1/2 sum_k (-1)^k prod_j (4nu^2 - (2j-1)^2) / (k! (8x)^k)."""
    mu = 4.0 * nu * nu
    term = np.ones_like(x)
    total = term.copy()
    for k in range(1, 40):
        term = -term * (mu - (2 * k - 1) ** 2) / (k * 8.0 * x)
        total = total + term
    return total / np.sqrt(2.0 * math.pi * x)


def _bessel_scaled(nu: int, x: np.ndarray) -> np.ndarray:
    """e^-|x| I_nu(x) for nu in (0, 1): even for nu = 0, odd for nu = 1."""
    ax = np.abs(x)
    large = ax > _SERIES_LIMIT
    with np.errstate(invalid="ignore"):
        small_value = np.exp(-np.where(large, 0.0, ax)) * _bessel_series(nu, np.where(large, 0.0, ax))
        large_value = _bessel_scaled_asymptotic(nu, np.where(large, ax, _SERIES_LIMIT + 1))
    value = np.where(large, large_value, small_value)
    value = np.where(np.isinf(ax), 0.0, value)
    return np.sign(x) * value if nu == 1 else value


def _bessel(nu: int, x: np.ndarray) -> np.ndarray:
    ax = np.abs(x)
    large = ax > _SERIES_LIMIT
    small_value = _bessel_series(nu, np.where(large, 0.0, ax))
    with np.errstate(over="ignore"):
        large_value = np.exp(np.where(large, ax, 0.0)) * _bessel_scaled(nu, np.where(large, ax, 1.0))
    value = np.where(large, large_value, small_value)
    return np.sign(x) * value if nu == 1 else value


@_in_float64
def i0(x: np.ndarray) -> np.ndarray:
    return _bessel(0, x)


@_in_float64
def i1(x: np.ndarray) -> np.ndarray:
    return _bessel(1, x)


@_in_float64
def i0e(x: np.ndarray) -> np.ndarray:
    return _bessel_scaled(0, x)


@_in_float64
def i1e(x: np.ndarray) -> np.ndarray:
    return _bessel_scaled(1, x)


# ----------------------------------------------------------------------------- incomplete gamma functions

_EPS = np.finfo(np.float64).eps


def _term_budget(a: np.ndarray) -> int:
    """Terms enough for the series and the continued fraction: both need about 9 sqrt(a) when x is
    near a. Capped, so that a shape past ~10^8 costs at most 10^5 passes (and loses accuracy)."""
    largest = float(np.max(a, initial=1.0))
    return int(min(100_000, 2000 + 10 * math.sqrt(largest)))


def _gamma_series(a: np.ndarray, x: np.ndarray) -> np.ndarray:
    """sum_n x^n / (a (a+1) ... (a+n)) * a: P(a, x) = prefactor / a * this, for x < a + 1."""
    term = np.ones_like(x)
    total = np.ones_like(x)
    denominator = a.copy()
    for _ in range(_term_budget(a)):
        denominator = denominator + 1.0
        term = term * x / denominator
        total = total + term
        if np.all(np.abs(term) <= _EPS * np.abs(total)):
            break
    return total


def _gamma_continued_fraction(a: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Q(a, x) / prefactor for x >= a + 1, by the modified Lentz method on Legendre's continued
    fraction 1 / (x + 1 - a - 1 (1 - a) / (x + 3 - a - 2 (2 - a) / (x + 5 - a - ...)))."""
    tiny = 1e-300
    b = x + 1.0 - a
    c = np.full_like(x, 1.0 / tiny)
    d = 1.0 / np.where(np.abs(b) < tiny, tiny, b)
    h = d.copy()
    for i in range(1, _term_budget(a)):
        an = -i * (i - a)
        b = b + 2.0
        d = an * d + b
        d = 1.0 / np.where(np.abs(d) < tiny, tiny, d)
        c = b + an / c
        c = np.where(np.abs(c) < tiny, tiny, c)
        delta = c * d
        h = h * delta
        if np.all(np.abs(delta - 1.0) <= _EPS):
            break
    return h


def _regularized_gamma(a: np.ndarray, x: np.ndarray, upper: bool) -> np.ndarray:
    a, x = np.broadcast_arrays(np.asarray(a, dtype=np.float64), np.asarray(x, dtype=np.float64))
    valid = (a > 0) & (x >= 0) & np.isfinite(a)
    use_series = valid & (x < a + 1.0)
    use_fraction = valid & ~use_series & np.isfinite(x)
    out = np.full(a.shape, np.nan)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        log_prefactor = a * np.log(x) - x - _lgamma(a)
        if use_series.any():
            aa, xx = a[use_series], x[use_series]
            p = np.exp(log_prefactor[use_series]) / aa * _gamma_series(aa, xx)
            out[use_series] = 1.0 - p if upper else p
        if use_fraction.any():
            aa, xx = a[use_fraction], x[use_fraction]
            q = np.exp(log_prefactor[use_fraction]) * _gamma_continued_fraction(aa, xx)
            out[use_fraction] = q if upper else 1.0 - q
    at_infinity = valid & np.isposinf(x)
    out[at_infinity] = 0.0 if upper else 1.0
    # a -> 0 puts all of the distribution's mass at 0: P(0, x) = 1 for every x > 0.
    degenerate = (a == 0) & (x > 0)
    out[degenerate] = 0.0 if upper else 1.0
    return out


@_in_float64
def gammainc(a: np.ndarray, x: np.ndarray) -> np.ndarray:
    return _regularized_gamma(a, x, upper=False)


@_in_float64
def gammaincc(a: np.ndarray, x: np.ndarray) -> np.ndarray:
    return _regularized_gamma(a, x, upper=True)
