"""engine.nn: activations and normalisers, written with differentiable engine.numpy operations."""

from __future__ import annotations

from typing import Any

import numpy as np

import engine.numpy as jnp
from engine import primitives as P
from engine.numpy._base import ArrayLike, asarray, promote_float
from engine.numpy.reductions import logsumexp  # noqa: F401  (re-exported, as jax.nn has it)


def sigmoid(x: ArrayLike) -> Any:
    """1 / (1 + exp(-x)), computed without overflow."""
    (x,) = promote_float(x)
    return P.logistic_p(x)


def relu(x: ArrayLike) -> Any:
    """max(x, 0); its derivative at 0 is 0 (JAX's convention)."""
    x = asarray(x)
    return jnp.where(x > 0, x, np.zeros((), x.dtype))


def softplus(x: ArrayLike) -> Any:
    """log(1 + exp(x)) without overflow."""
    return jnp.logaddexp(x, 0.0)


def log_sigmoid(x: ArrayLike) -> Any:
    return -softplus(-asarray(x))


def softmax(x: ArrayLike, axis: int | tuple[int, ...] = -1) -> Any:
    (x,) = promote_float(x)
    shifted = x - jnp.stop_gradient(jnp.max(x, axis=axis, keepdims=True))
    e = jnp.exp(shifted)
    return e / jnp.sum(e, axis=axis, keepdims=True)


def log_softmax(x: ArrayLike, axis: int | tuple[int, ...] = -1) -> Any:
    (x,) = promote_float(x)
    return x - logsumexp(x, axis=axis, keepdims=True)


def tanh(x: ArrayLike) -> Any:
    return jnp.tanh(x)


def one_hot(x: ArrayLike, num_classes: int, dtype: Any = None) -> Any:
    labels = asarray(x)
    classes = jnp.arange(num_classes)
    out = jnp.expand_dims(labels, -1) == classes
    return out.astype(dtype if dtype is not None else jnp.float32)
