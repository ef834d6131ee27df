"""The beta distribution: jax.scipy.stats.beta's logpdf and pdf."""

from __future__ import annotations

from typing import Any

import engine.numpy as jnp
from engine.numpy._base import ArrayLike, promote_float
from engine.scipy import special

__all__ = ["logpdf", "pdf"]


def logpdf(x: ArrayLike, a: ArrayLike, b: ArrayLike, loc: ArrayLike = 0, scale: ArrayLike = 1) -> Any:
    """log of the density of the beta distribution on [loc, loc + scale]; -inf outside it."""
    x, a, b, loc, scale = promote_float(x, a, b, loc, scale)
    y = (x - loc) / scale
    log_probs = special.xlogy(a - 1, y) + special.xlog1py(b - 1, -y) - special.betaln(a, b) - jnp.log(scale)
    return jnp.where((x < loc) | (x > loc + scale), -jnp.inf, log_probs)


def pdf(x: ArrayLike, a: ArrayLike, b: ArrayLike, loc: ArrayLike = 0, scale: ArrayLike = 1) -> Any:
    return jnp.exp(logpdf(x, a, b, loc, scale))
