"""engine.scipy.special: expit, logit, logsumexp, erf."""

from __future__ import annotations

from typing import Any

import engine.numpy as jnp
from engine.nn import sigmoid as expit
from engine.numpy._base import ArrayLike
from engine.numpy.elementwise import erf
from engine.numpy.reductions import logsumexp

__all__ = ["erf", "expit", "logit", "logsumexp"]


def logit(x: ArrayLike) -> Any:
    """log(x / (1 - x)), the inverse of expit."""
    return jnp.log(x) - jnp.log1p(-jnp.asarray(x))
