"""The exception hierarchy: each class raised for what it stands for, carrying the server's error
(status, type, message, detail, request id); real servers for 4xx, fake ones for 429, 5xx, refused
connections and timeouts. Sync and async alike."""

from __future__ import annotations

import re
import time

import numpy as np
import pytest

import client
from client import (
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

KINDS = ["sync", "async"]
x = np.array([1.0, 2.0], np.float32)
REQUEST_ID = re.compile(r"^[0-9a-f]{32}$")


def test_hierarchy_and_exports() -> None:
    for cls in (BadRequestError, AuthenticationError, PermissionDeniedError, NotFoundError, ConflictError,
                RateLimitError, InternalServerError):
        assert issubclass(cls, APIStatusError) and issubclass(cls, APIError) and issubclass(cls, NablaError)
    assert issubclass(APITimeoutError, APIConnectionError) and issubclass(APIConnectionError, APIError)
    assert not issubclass(APIConnectionError, APIStatusError)
    assert issubclass(GradientCheckError, NablaError) and issubclass(GradientCheckError, AssertionError)
    assert issubclass(NablaError, Exception)
    for name in ("Client", "AsyncClient", "NablaError", "APIError", "BadRequestError", "AuthenticationError",
                 "PermissionDeniedError", "NotFoundError", "RateLimitError", "InternalServerError",
                 "APIConnectionError", "APITimeoutError", "GradientCheckError"):
        assert name in client.__all__ and hasattr(client, name)


def assert_carries(e: APIError, status: int, kind: str | None, message: str | None = None) -> None:
    assert e.status_code == status
    assert e.type == kind
    assert isinstance(e.message, str) and e.message
    if message is not None:
        assert message in e.message
    assert isinstance(e.detail, dict)
    assert f"[{status} {kind}]" in str(e) if kind else True


# ----------------------------------------------------------------------------- real servers


@pytest.mark.parametrize("kind", KINDS)
def test_bad_request_for_a_bad_function(open_client, server_url, kind) -> None:
    c, close = open_client(kind, server_url, max_retries=0)
    try:
        with pytest.raises(BadRequestError) as info:
            c.grad("sum(x **", params=["x"])(x)
        e = info.value
        assert_carries(e, 422, "invalid_function")
        assert e.detail.get("line") == 1 and "column" in e.detail
        assert REQUEST_ID.match(e.request_id) and e.request_id in str(e)

        with pytest.raises(BadRequestError) as info:  # a graph document that is not one
            c.grad({"format": "nabla.graph/1", "params": ["x"], "nodes": [{"id": "n0", "op": "no_such_op",
                                                                           "inputs": ["x"]}], "outputs": ["n0"]})(x)
        assert info.value.status_code == 422 and info.value.type == "invalid_function"

        with pytest.raises(BadRequestError) as info:  # shapes that do not fit
            c.grad("sum(x @ y)", params=["x", "y"])(np.ones(2, np.float32), np.ones(3, np.float32))
        assert info.value.status_code == 422 and info.value.type == "shape_error"
    finally:
        close()


@pytest.mark.parametrize("kind", KINDS)
def test_bad_request_for_bad_options_and_limits(open_client, server_url, kind) -> None:
    c, close = open_client(kind, server_url, max_retries=3)
    try:
        with pytest.raises(BadRequestError) as info:  # two arguments for one parameter
            c.grad("sum(x)", params=["x"])(x, x)
        assert_carries(info.value, 400, "invalid_request", "argument")
        with pytest.raises(BadRequestError) as info:
            c.grad("sum(x * y)", argnums=5, params=["x", "y"])(x, x)
        assert info.value.status_code == 400 and info.value.detail["argnums"] == 5
        with pytest.raises(BadRequestError) as info:  # above NABLA_MAX_ORDER
            c.grad("sum(x)", order=9, params=["x"])(x)
        assert_carries(info.value, 413, "limit_exceeded", "order")
    finally:
        close()


@pytest.mark.parametrize("kind", KINDS)
def test_not_found(open_client, server_url, kind) -> None:
    c, close = open_client(kind, server_url, max_retries=3)
    try:
        with pytest.raises(NotFoundError) as info:
            c.grad(c.model("no_such_model"))(x)
        assert_carries(info.value, 404, "not_found", "no_such_model")
        assert info.value.detail == {"model": "no_such_model"}
        assert REQUEST_ID.match(info.value.request_id)
        with pytest.raises(NotFoundError):
            c.models.get("no_such_model")
        with pytest.raises(NotFoundError):
            c.models.delete("no_such_model")
    finally:
        close()


@pytest.mark.parametrize("kind", KINDS)
def test_conflict_is_not_retried(open_client, server_url, kind, sleeps) -> None:
    c, close = open_client(kind, server_url, max_retries=3)
    try:
        with pytest.raises(ConflictError) as info:
            c.models.delete("rosenbrock")
        assert_carries(info.value, 409, "conflict", "built-in")
        with pytest.raises(ConflictError):
            c.models.register("rosenbrock", "sum(x)", params=["x"])
        assert sleeps == []
    finally:
        close()


@pytest.mark.parametrize("kind", KINDS)
def test_authentication_error(open_client, keyed_url, kind, sleeps) -> None:
    for key, message in ((None, "requires an API key"), ("not-a-key", "not valid")):
        c, close = open_client(kind, keyed_url, api_key=key, max_retries=3)
        try:
            with pytest.raises(AuthenticationError) as info:
                c.grad("sum(x)", params=["x"])(x)
            assert_carries(info.value, 401, "unauthorized", message)
            assert REQUEST_ID.match(info.value.request_id)
            with pytest.raises(AuthenticationError):
                c.models.list()
        finally:
            close()
    assert sleeps == []  # 401 is final


@pytest.mark.parametrize("kind", KINDS)
def test_permission_denied_and_what_each_key_may_do(keys, open_client, keyed_url, kind) -> None:
    name = f"perm_{kind}"
    user, close_user = open_client(kind, keyed_url, api_key=keys.user, max_retries=0)
    admin, close_admin = open_client(kind, keyed_url, api_key=keys.admin, max_retries=0)
    try:
        np.testing.assert_allclose(user.grad("sum(x ** 2)", params=["x"])(x), 2 * x)
        assert "rosenbrock" in {m["name"] for m in user.models.list()}
        with pytest.raises(PermissionDeniedError) as info:
            user.models.register(name, "sum(x)", params=["x"])
        assert_carries(info.value, 403, "forbidden", "admin key")
        assert admin.models.register(name, "sum(x * 3)", params=["x"])["version"] == 1
        np.testing.assert_allclose(user.grad(user.model(name))(x), [3, 3])
        with pytest.raises(PermissionDeniedError):
            user.models.delete(name)
        assert admin.models.delete(name)["deleted_versions"] == 1
    finally:
        close_user()
        close_admin()


# ----------------------------------------------------------------------------- fake servers


def error_body(kind: str, message: str, detail: dict | None = None, request_id: str | None = "req-1") -> dict:
    return {"error": {"type": kind, "message": message, "detail": detail or {}, "request_id": request_id}}


@pytest.mark.parametrize("kind", KINDS)
def test_rate_limit_error(open_client, fake, kind, sleeps) -> None:
    fake.reset(final=(429, {"Retry-After": "0"}, error_body("rate_limited", "slow down", {"limit": 10})))
    c, close = open_client(kind, fake.base_url, max_retries=2)
    try:
        with pytest.raises(RateLimitError) as info:
            c.grad("sum(x)", params=["x"])(x)
    finally:
        close()
    e = info.value
    assert (e.status_code, e.type, e.message, e.detail, e.request_id) == (429, "rate_limited", "slow down",
                                                                          {"limit": 10}, "req-1")
    assert str(e) == "[429 rate_limited] slow down (request id req-1)"
    assert len(fake.script.requests) == 3 and sleeps == [0.0, 0.0]


@pytest.mark.parametrize("kind", KINDS)
def test_internal_server_error(open_client, fake, kind, sleeps) -> None:
    fake.reset(final=(500, {}, error_body("internal_error", "an internal error occurred", request_id=None)))
    c, close = open_client(kind, fake.base_url, max_retries=0)
    try:
        with pytest.raises(InternalServerError) as info:
            c.value("x", params=["x"])(x)
        e = info.value
        assert (e.status_code, e.type, e.message) == (500, "internal_error", "an internal error occurred")
        assert e.request_id is None and e.detail == {}

        # A 502 from a proxy: no JSON body; the request id comes from the header.
        fake.reset(final=(502, {"x-request-id": "hdr-7"}, "Bad Gateway"))
        with pytest.raises(InternalServerError) as info:
            c.value("x", params=["x"])(x)
        e = info.value
        assert (e.status_code, e.type, e.message, e.request_id) == (502, None, "HTTP 502", "hdr-7")
    finally:
        close()
    assert sleeps == []  # max_retries=0


@pytest.mark.parametrize("kind", KINDS)
def test_connection_error(dead_url, open_client, kind, sleeps) -> None:
    url = dead_url
    c, close = open_client(kind, url, max_retries=2)
    try:
        with pytest.raises(APIConnectionError) as info:
            c.grad("sum(x)", params=["x"])(x)
    finally:
        close()
    e = info.value
    assert not isinstance(e, APITimeoutError) and not isinstance(e, APIStatusError)
    assert e.status_code is None and e.type is None and e.request_id is None
    assert url in e.message
    assert len(sleeps) == 2  # retried twice


@pytest.mark.parametrize("kind", KINDS)
def test_timeout_error(open_client, fake, kind) -> None:
    fake.reset(sleep=1.5)
    c, close = open_client(kind, fake.base_url, timeout=0.2, max_retries=0)
    start = time.monotonic()
    try:
        with pytest.raises(APITimeoutError) as info:
            c.grad("sum(x)", params=["x"])(x)
    finally:
        close()
    assert time.monotonic() - start < 1.2
    assert isinstance(info.value, APIConnectionError)
    assert "timed out" in info.value.message
    assert len(fake.script.requests) == 1


@pytest.mark.parametrize("kind", KINDS)
def test_timeouts_are_retried(open_client, fake, kind, sleeps) -> None:
    fake.reset(sleep=1.0)
    c, close = open_client(kind, fake.base_url, timeout=0.15, max_retries=1)
    try:
        with pytest.raises(APITimeoutError):
            c.value("x", params=["x"])(x)
    finally:
        close()
    assert len(sleeps) == 1
    deadline = time.monotonic() + 2
    while len(fake.script.requests) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert len(fake.script.requests) == 2
