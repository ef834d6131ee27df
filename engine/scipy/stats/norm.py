"""The normal distribution: jax.scipy.stats.norm's logpdf, pdf, cdf, logcdf and ppf."""

from __future__ import annotations

import math
from typing import Any

import engine.numpy as jnp
from engine.numpy._base import ArrayLike, promote_float
from engine.scipy import special

__all__ = ["cdf", "logcdf", "logpdf", "pdf", "ppf"]


def logpdf(x: ArrayLike, loc: ArrayLike = 0, scale: ArrayLike = 1) -> Any:
    """log of the normal density with mean `loc` and standard deviation `scale`."""
    x, loc, scale = promote_float(x, loc, scale)
    z = (x - loc) / scale
    return -0.5 * z * z - jnp.log(scale) - 0.5 * math.log(2 * math.pi)


def pdf(x: ArrayLike, loc: ArrayLike = 0, scale: ArrayLike = 1) -> Any:
    return jnp.exp(logpdf(x, loc, scale))


def cdf(x: ArrayLike, loc: ArrayLike = 0, scale: ArrayLike = 1) -> Any:
    x, loc, scale = promote_float(x, loc, scale)
    return special.ndtr((x - loc) / scale)


def logcdf(x: ArrayLike, loc: ArrayLike = 0, scale: ArrayLike = 1) -> Any:
    x, loc, scale = promote_float(x, loc, scale)
    return special.log_ndtr((x - loc) / scale)


def ppf(q: ArrayLike, loc: ArrayLike = 0, scale: ArrayLike = 1) -> Any:
    """The quantile function, the inverse of cdf."""
    q, loc, scale = promote_float(q, loc, scale)
    return special.ndtri(q) * scale + loc

