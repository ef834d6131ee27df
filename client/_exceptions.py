"""The client's exceptions: one class per kind of failure, carrying the server's error."""

from __future__ import annotations

from typing import Any


class NablaError(Exception):
    """Base class of every error the client raises."""


class APIError(NablaError):
    """The server answered with an error (or could not be reached: see the subclasses)."""

    def __init__(self, message: str, *, status_code: int | None = None, type: str | None = None,  # noqa: A002
                 detail: dict[str, Any] | None = None, request_id: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.status_code = status_code
        self.type = type
        self.detail = detail or {}
        self.request_id = request_id

    def __str__(self) -> str:
        parts = [self.message]
        if self.type:
            parts.insert(0, f"[{self.status_code} {self.type}]")
        if self.request_id:
            parts.append(f"(request id {self.request_id})")
        return " ".join(parts)


class APIConnectionError(APIError):
    """The server could not be reached."""


class APITimeoutError(APIConnectionError):
    """The request took longer than the client's timeout."""


class APIStatusError(APIError):
    """The server answered with a 4xx or 5xx status."""


class BadRequestError(APIStatusError):
    """400, 408, 413, 422: the request was refused (bad function, arguments, options or limits)."""


class AuthenticationError(APIStatusError):
    """401: no API key, or not a valid one."""


class PermissionDeniedError(APIStatusError):
    """403: the key may not do this (registering and deleting models need an admin key)."""


class NotFoundError(APIStatusError):
    """404: no such model (or route)."""


class ConflictError(APIStatusError):
    """409: e.g. replacing a built-in model, or an Idempotency-Key reused for a different request."""


class RateLimitError(APIStatusError):
    """429: too many requests."""


class InternalServerError(APIStatusError):
    """5xx: a failure on the server's side."""


class GradientCheckError(NablaError, AssertionError):
    """check_grads found a derivative that disagrees with finite differences."""


def error_for_status(status: int, body: Any, request_id: str | None) -> APIStatusError:
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict):
        message = str(error.get("message", ""))
        kind = error.get("type")
        detail = error.get("detail") if isinstance(error.get("detail"), dict) else {}
        request_id = error.get("request_id") or request_id
    else:
        message, kind, detail = f"HTTP {status}", None, {}
    cls: type[APIStatusError]
    if status == 401:
        cls = AuthenticationError
    elif status == 403:
        cls = PermissionDeniedError
    elif status == 404:
        cls = NotFoundError
    elif status == 409:
        cls = ConflictError
    elif status == 429:
        cls = RateLimitError
    elif status >= 500:
        cls = InternalServerError
    else:
        cls = BadRequestError
    return cls(message, status_code=status, type=kind, detail=detail, request_id=request_id)
