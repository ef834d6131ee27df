"""The gamma distribution: jax.scipy.stats.gamma's logpdf and pdf."""

from __future__ import annotations

from typing import Any

import engine.numpy as jnp
from engine.numpy._base import ArrayLike, promote_float
from engine.scipy import special

__all__ = ["logpdf", "pdf"]


def logpdf(x: ArrayLike, a: ArrayLike, loc: ArrayLike = 0, scale: ArrayLike = 1) -> Any:
    """log of the density of the gamma distribution of shape `a`; -inf below `loc`."""
    x, a, loc, scale = promote_float(x, a, loc, scale)
    y = (x - loc) / scale
    log_probs = special.xlogy(a - 1, y) - y - special.gammaln(a) - jnp.log(scale)
    return jnp.where(x < loc, -jnp.inf, log_probs)


def pdf(x: ArrayLike, a: ArrayLike, loc: ArrayLike = 0, scale: ArrayLike = 1) -> Any:
    return jnp.exp(logpdf(x, a, loc, scale))
