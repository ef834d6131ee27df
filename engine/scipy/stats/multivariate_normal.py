"""The multivariate normal distribution: jax.scipy.stats.multivariate_normal's logpdf and pdf."""

from __future__ import annotations

import math
from typing import Any

import engine.numpy as jnp
from engine.errors import ShapeError
from engine.numpy import linalg
from engine.numpy._base import ArrayLike, promote_float

__all__ = ["logpdf", "pdf"]

_LOG_2PI = math.log(2 * math.pi)


def logpdf(x: ArrayLike, mean: ArrayLike, cov: ArrayLike, allow_singular: None = None) -> Any:
    """log of the density of N(mean, cov) at x (the last axis of x and mean is the variable's).

    A scalar `mean` makes it univariate (cov its variance); a scalar `cov` is that variance on
    every axis; a matrix `cov` must be symmetric positive definite (it is factored by Cholesky).
    `allow_singular` exists for JAX's signature and must be None, as in JAX."""
    if allow_singular is not None:
        raise NotImplementedError("multivariate_normal.logpdf does not support allow_singular (as in JAX): "
                                  "leave it None and pass a positive-definite covariance")
    x, mean, cov = promote_float(x, mean, cov)
    if mean.ndim == 0:
        return -0.5 * jnp.square(x - mean) / cov - 0.5 * (_LOG_2PI + jnp.log(cov))
    n = mean.shape[-1]
    y = x - mean
    if cov.ndim == 0:
        return -0.5 * jnp.sum(y * y, axis=-1) / cov - 0.5 * n * (_LOG_2PI + jnp.log(cov))
    if cov.ndim < 2 or tuple(cov.shape[-2:]) != (n, n):
        raise ShapeError(f"multivariate_normal.logpdf: a mean of {n} variables needs a covariance of shape "
                         f"(..., {n}, {n}), got {tuple(cov.shape)}")
    factor = linalg.cholesky(cov)
    whitened = linalg.solve(factor, jnp.expand_dims(y, -1))[..., 0]
    log_det_half = jnp.sum(jnp.log(jnp.diagonal(factor, axis1=-2, axis2=-1)), axis=-1)
    return -0.5 * jnp.sum(whitened * whitened, axis=-1) - 0.5 * n * _LOG_2PI - log_det_half


def pdf(x: ArrayLike, mean: ArrayLike, cov: ArrayLike, allow_singular: None = None) -> Any:
    return jnp.exp(logpdf(x, mean, cov, allow_singular))
