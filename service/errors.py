"""API errors: every bad input becomes a 4xx with {"error": {"type", "message", "detail"}}."""

from __future__ import annotations

from typing import Any


class APIError(Exception):
    status = 400
    type = "invalid_request"

    def __init__(self, message: str, detail: dict[str, Any] | None = None, *, status: int | None = None,
                 type: str | None = None, headers: dict[str, str] | None = None) -> None:  # noqa: A002
        super().__init__(message)
        self.message = message
        self.detail = detail or {}
        if status is not None:
            self.status = status
        if type is not None:
            self.type = type
        self.headers = headers or {}

    def body(self, request_id: str | None) -> dict[str, Any]:
        return {"error": {"type": self.type, "message": self.message, "detail": self.detail,
                          "request_id": request_id}}


class InvalidRequest(APIError):
    status, type = 400, "invalid_request"


class InvalidFunction(APIError):
    status, type = 422, "invalid_function"


class InvalidArgument(APIError):
    status, type = 422, "invalid_argument"


class ShapeMismatch(APIError):
    status, type = 422, "shape_error"


class DtypeMismatch(APIError):
    status, type = 422, "dtype_error"


class NotDifferentiable(APIError):
    status, type = 422, "not_differentiable"


class LimitExceededError(APIError):
    status, type = 413, "limit_exceeded"


class ComputeTimeout(APIError):
    status, type = 408, "timeout"


class Unauthorized(APIError):
    status, type = 401, "unauthorized"


class Forbidden(APIError):
    status, type = 403, "forbidden"


class NotFound(APIError):
    status, type = 404, "not_found"


class Conflict(APIError):
    status, type = 409, "conflict"


class ComputeError(APIError):
    status, type = 422, "compute_error"


class UnsupportedMediaType(APIError):
    status, type = 415, "unsupported_media_type"


class Overloaded(APIError):
    status, type = 503, "overloaded"


class RegistryUnavailableError(APIError):
    status, type = 503, "registry_unavailable"


class NotReady(APIError):
    status, type = 503, "not_ready"


class InternalError(APIError):
    status, type = 500, "internal_error"


def retry_after(error: APIError, seconds: float) -> APIError:
    error.headers = {**error.headers, "Retry-After": str(max(1, round(seconds)))}
    return error
