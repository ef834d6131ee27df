"""The Poisson distribution: jax.scipy.stats.poisson's logpmf and pmf."""

from __future__ import annotations

from typing import Any

import engine.numpy as jnp
from engine.numpy._base import ArrayLike, promote_float
from engine.scipy import special

__all__ = ["logpmf", "pmf"]


def logpmf(k: ArrayLike, mu: ArrayLike, loc: ArrayLike = 0) -> Any:
    """log P(K = k) for a Poisson variable of mean `mu` shifted by `loc`; -inf where k - loc is
    negative or k is not an integer. Differentiable in mu."""
    k, mu, loc = promote_float(k, mu, loc)
    count = k - loc
    log_probs = special.xlogy(count, mu) - special.gammaln(count + 1) - mu
    return jnp.where((count < 0) | (jnp.round(k) != k), -jnp.inf, log_probs)


def pmf(k: ArrayLike, mu: ArrayLike, loc: ArrayLike = 0) -> Any:
    return jnp.exp(logpmf(k, mu, loc))
