"""Student's t distribution: jax.scipy.stats.t's logpdf and pdf."""

from __future__ import annotations

import math
from typing import Any

import engine.numpy as jnp
from engine.numpy._base import ArrayLike, promote_float
from engine.scipy import special

__all__ = ["logpdf", "pdf"]


def logpdf(x: ArrayLike, df: ArrayLike, loc: ArrayLike = 0, scale: ArrayLike = 1) -> Any:
    """log of the density of Student's t with `df` degrees of freedom, shifted by `loc` and scaled by `scale`."""
    x, df, loc, scale = promote_float(x, df, loc, scale)
    z = (x - loc) / scale
    half_df = 0.5 * df
    normaliser = (special.gammaln(half_df) - special.gammaln(half_df + 0.5)
                  + 0.5 * jnp.log(df * math.pi * scale * scale))
    return -(normaliser + (half_df + 0.5) * jnp.log1p(z * z / df))


def pdf(x: ArrayLike, df: ArrayLike, loc: ArrayLike = 0, scale: ArrayLike = 1) -> Any:
    return jnp.exp(logpdf(x, df, loc, scale))
