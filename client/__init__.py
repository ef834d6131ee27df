"""Nabla's Python client: the service's transforms, called like engine's (and JAX's).

    from client import Client
    with Client("http://127.0.0.1:8000") as c:
        W_grad, b_grad = c.grad(loss, argnums=(0, 1))(W, b)
"""

from client._client import AsyncClient, Client
from client._exceptions import (
    APIConnectionError,
    APIError,
    APIStatusError,
    APITimeoutError,
    AuthenticationError,
    BadRequestError,
    ConflictError,
    GradientCheckError,
    InternalServerError,
    NablaError,
    NotFoundError,
    PermissionDeniedError,
    RateLimitError,
)
from client._wire import Expr, GraphDoc, Model

__all__ = [
    "APIConnectionError", "APIError", "APIStatusError", "APITimeoutError", "AsyncClient", "AuthenticationError",
    "BadRequestError", "Client", "ConflictError", "Expr", "GradientCheckError", "GraphDoc", "InternalServerError",
    "Model", "NablaError", "NotFoundError", "PermissionDeniedError", "RateLimitError",
]
