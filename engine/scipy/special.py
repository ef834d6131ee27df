"""engine.scipy.special: jax.scipy.special's functions, differentiable to any order.

The functions that no composition computes accurately are primitives (engine.primitives_special,
NumPy kernels in engine.special_kernels; the engine depends on NumPy alone, not SciPy); the rest
are compositions of engine operations. Conventions at poles and non-differentiable points are
listed in docs/ENGINE.md ("Derivatives at non-differentiable points").
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

import engine.numpy as jnp
from engine import primitives as P
from engine.core import check_elements
from engine.nn import sigmoid as expit
from engine.numpy._base import ArrayLike, asarray, promote_float
from engine.numpy.elementwise import erf
from engine.numpy.reductions import logsumexp
from engine.primitives_special import (
    bessel_i0_p,
    bessel_i0e_p,
    bessel_i1_p,
    bessel_i1e_p,
    digamma_p,
    erf_inv_p,
    erfc_p,
    igamma_p,
    igammac_p,
    lgamma_p,
    log_ndtr_p,
    ndtri_p,
    polygamma_p,
)

__all__ = ["beta", "betaln", "digamma", "entr", "erf", "erfc", "erfcinv", "erfinv", "expit", "gamma", "gammainc",
           "gammaincc", "gammaln", "i0", "i0e", "i1", "i1e", "log_ndtr", "logit", "logsumexp", "multigammaln", "ndtr",
           "ndtri", "polygamma", "psi", "xlog1py", "xlogy"]

_SQRT2 = math.sqrt(2.0)


def logit(x: ArrayLike) -> Any:
    """log(x / (1 - x)), the inverse of expit."""
    return jnp.log(x) - jnp.log1p(-jnp.asarray(x))


# ----------------------------------------------------------------------------- gamma family


def gammaln(x: ArrayLike) -> Any:
    """log |Gamma(x)| (+inf at the non-positive integers)."""
    return lgamma_p(*promote_float(x))


def digamma(x: ArrayLike) -> Any:
    """Gamma'(x) / Gamma(x), the derivative of gammaln (NaN at the non-positive integers)."""
    return digamma_p(*promote_float(x))


psi = digamma


def polygamma(n: ArrayLike, x: ArrayLike) -> Any:
    """The n-th derivative of digamma; n an integer (array) >= 0, as in JAX."""
    order = asarray(n)
    if order.dtype.kind not in "iu":
        raise TypeError(f"polygamma's order n must be an integer or an integer array, got dtype {order.dtype}: "
                        "pass n as an int (polygamma(1, x) is digamma's derivative)")
    (x,) = promote_float(x)
    return polygamma_p(P.convert(order, x.dtype), x)


def _gamma_sign(x: Any) -> Any:
    """The sign of Gamma(x): -1 on (-1, 0), (-3, -2), ... and +1 elsewhere."""
    floor = jnp.floor(x)
    return jnp.where((x < 0) & (jnp.remainder(floor, 2.0) != 0), -1.0, 1.0)


def gamma(x: ArrayLike) -> Any:
    """Gamma(x) = sign * exp(gammaln(x)) (+inf at 0, NaN at the negative integers)."""
    (x,) = promote_float(x)
    value = _gamma_sign(x) * jnp.exp(lgamma_p(x))
    return jnp.where((x < 0) & (x == jnp.floor(x)), jnp.nan, value)


def betaln(a: ArrayLike, b: ArrayLike) -> Any:
    """log |B(a, b)| = gammaln(a) + gammaln(b) - gammaln(a + b)."""
    a, b = promote_float(a, b)
    return lgamma_p(a) + lgamma_p(b) - lgamma_p(a + b)


def beta(a: ArrayLike, b: ArrayLike) -> Any:
    """The beta function B(a, b) = Gamma(a) Gamma(b) / Gamma(a + b), through betaln."""
    a, b = promote_float(a, b)
    return _gamma_sign(a) * _gamma_sign(b) * _gamma_sign(a + b) * jnp.exp(betaln(a, b))


def multigammaln(a: ArrayLike, d: int) -> Any:
    """The log of the multivariate gamma function of dimension d (a static positive integer)."""
    if isinstance(d, bool) or not isinstance(d, (int, np.integer)) or d < 1:
        raise TypeError(f"multigammaln's dimension d must be a positive Python integer, got {d!r}")
    (a,) = promote_float(a)
    check_elements(tuple(a.shape) + (int(d),), "multigammaln's terms")
    halves = P.constant((np.arange(int(d)) / 2.0).astype(a.dtype))
    terms = lgamma_p(jnp.expand_dims(a, -1) - halves)
    return jnp.sum(terms, axis=-1) + (d * (d - 1) / 4.0) * math.log(math.pi)


def gammainc(a: ArrayLike, x: ArrayLike) -> Any:
    """The regularised lower incomplete gamma function P(a, x); differentiable in x only."""
    return igamma_p(*promote_float(a, x))


def gammaincc(a: ArrayLike, x: ArrayLike) -> Any:
    """The regularised upper incomplete gamma function Q(a, x) = 1 - P(a, x); differentiable in x only."""
    return igammac_p(*promote_float(a, x))


# ----------------------------------------------------------------------------- error function family


def erfc(x: ArrayLike) -> Any:
    """1 - erf(x), accurate where erf(x) is near 1."""
    return erfc_p(*promote_float(x))


def erfinv(x: ArrayLike) -> Any:
    """The inverse of erf on [-1, 1]."""
    return erf_inv_p(*promote_float(x))


def erfcinv(x: ArrayLike) -> Any:
    """The inverse of erfc on [0, 2] (not in jax.scipy.special; SciPy's function)."""
    (z,) = promote_float(x)
    # Each branch gets an argument it computes exactly (1 - z for z in [1/2, 3/2], 2 - z above),
    # and values from its own range only, so no branch's derivative is NaN where it is not taken.
    middle = (z >= 0.5) & (z <= 1.5)
    low = z < 0.5
    high = ~middle & ~low
    middle_value = erf_inv_p(1.0 - jnp.where(middle, z, 1.0))
    low_value = -ndtri_p(jnp.where(low, z, 0.25) * 0.5) / _SQRT2
    high_value = ndtri_p((2.0 - jnp.where(high, z, 1.75)) * 0.5) / _SQRT2
    return jnp.where(middle, middle_value, jnp.where(low, low_value, high_value))


def ndtr(x: ArrayLike) -> Any:
    """The standard normal CDF, erfc(-x / sqrt 2) / 2 (accurate in both tails)."""
    (x,) = promote_float(x)
    return 0.5 * erfc_p(-x / _SQRT2)


def ndtri(p: ArrayLike) -> Any:
    """The inverse of ndtr on [0, 1]."""
    return ndtri_p(*promote_float(p))


def log_ndtr(x: ArrayLike) -> Any:
    """log(ndtr(x)), accurate in both tails."""
    return log_ndtr_p(*promote_float(x))


# ----------------------------------------------------------------------------- logarithmic products


def xlogy(x: ArrayLike, y: ArrayLike) -> Any:
    """x * log(y), 0 where x == 0 whatever y is."""
    x, y = promote_float(x, y)
    # Only where x == 0 and log(y) is not finite is y replaced (by 1): elsewhere with x == 0 the
    # product is 0 already and its derivative in x is log(y), as JAX's.
    replaced = (x == 0) & ~((y > 0) & (y < jnp.inf))
    return x * jnp.log(jnp.where(replaced, 1.0, y))


def xlog1py(x: ArrayLike, y: ArrayLike) -> Any:
    """x * log1p(y), 0 where x == 0 whatever y is."""
    x, y = promote_float(x, y)
    replaced = (x == 0) & ~((y > -1) & (y < jnp.inf))
    return x * jnp.log1p(jnp.where(replaced, 0.0, y))


def entr(x: ArrayLike) -> Any:
    """-x log(x) for x > 0, 0 at 0, -inf for x < 0."""
    (x,) = promote_float(x)
    inside = ~(x <= 0)  # NaN stays NaN
    safe = jnp.where(inside, x, 1.0)
    return jnp.where(inside, -safe * jnp.log(safe), jnp.where(x == 0, 0.0, -jnp.inf))


# ----------------------------------------------------------------------------- modified Bessel functions


def i0(x: ArrayLike) -> Any:
    """The modified Bessel function of the first kind of order 0."""
    return bessel_i0_p(*promote_float(x))


def i1(x: ArrayLike) -> Any:
    """The modified Bessel function of the first kind of order 1."""
    return bessel_i1_p(*promote_float(x))


def i0e(x: ArrayLike) -> Any:
    """exp(-|x|) i0(x)."""
    return bessel_i0e_p(*promote_float(x))


def i1e(x: ArrayLike) -> Any:
    """exp(-|x|) i1(x)."""
    return bessel_i1e_p(*promote_float(x))
