"""Registrations carry an Idempotency-Key: a fresh UUID4 per registration, the same on every retry
of it, so a retried registration never adds a second version. Compute calls need none (they are
idempotent by nature)."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest

KINDS = ["sync", "async"]
CREATED = (201, {}, {"name": "m", "version": 1, "params": ["x"], "constants": [], "graph_nodes": 1})


def busy(status: int) -> tuple:
    return (status, {}, {"error": {"type": "unavailable", "message": "try later", "detail": {}, "request_id": None}})


def key_of(request: dict[str, Any]) -> str | None:
    return request["headers"].get("idempotency-key")


def assert_uuid4(key: str | None) -> None:
    assert key is not None
    assert uuid.UUID(key).version == 4 and str(uuid.UUID(key)) == key


@pytest.mark.parametrize("kind", KINDS)
def test_every_retry_of_a_registration_sends_the_same_key(open_client, fake, kind, sleeps) -> None:
    fake.reset(responses=[busy(503), busy(502), busy(500)], final=CREATED)
    c, close = open_client(kind, fake.base_url, max_retries=3)
    try:
        assert c.models.register("m", "sum(x)", params=["x"])["version"] == 1
    finally:
        close()
    requests = fake.script.requests
    assert len(requests) == 4 and len(sleeps) == 3
    assert_uuid4(key_of(requests[0]))
    assert {key_of(r) for r in requests} == {key_of(requests[0])}
    assert len({r["body"] for r in requests}) == 1  # the same body too, so the server's request hash matches


@pytest.mark.parametrize("kind", KINDS)
def test_each_registration_has_its_own_key(open_client, fake, kind) -> None:
    fake.reset(responses=[CREATED, CREATED])  # then the default answer, a value
    c, close = open_client(kind, fake.base_url, max_retries=0)
    try:
        c.models.register("m", "sum(x)", params=["x"])
        c.models.register("m", "sum(x)", params=["x"])  # the same request again is a new version
        c.value("x * 2", params=["x"])(1.0)
    finally:
        close()
    first, second, compute = fake.script.requests
    assert_uuid4(key_of(first))
    assert_uuid4(key_of(second))
    assert key_of(first) != key_of(second)
    assert key_of(compute) is None


class _LoseFirstRegistrationAnswer:
    """Forwards every request, but throws away the answer to the first registration (the server
    committed, the client never hears): the situation the key exists for."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.registrations: list[str | None] = []

    def _lose(self, request: httpx.Request) -> bool:
        if request.method == "POST" and request.url.path == "/v1/models":
            self.registrations.append(request.headers.get("idempotency-key"))
            return len(self.registrations) == 1
        return False


class _SyncLosing(_LoseFirstRegistrationAnswer, httpx.BaseTransport):
    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = self.inner.handle_request(request)
        response.read()
        if self._lose(request):
            raise httpx.ReadError("connection reset after the server answered", request=request)
        return response

    def close(self) -> None:
        self.inner.close()


class _AsyncLosing(_LoseFirstRegistrationAnswer, httpx.AsyncBaseTransport):
    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self.inner.handle_async_request(request)
        await response.aread()
        if self._lose(request):
            raise httpx.ReadError("connection reset after the server answered", request=request)
        return response

    async def aclose(self) -> None:
        await self.inner.aclose()


@pytest.mark.parametrize("kind", KINDS)
def test_a_lost_answer_is_retried_with_the_same_key_and_adds_no_version(open_client, fake, kind, sleeps) -> None:
    fake.reset(final=CREATED)
    transport = _SyncLosing(httpx.HTTPTransport()) if kind == "sync" else _AsyncLosing(httpx.AsyncHTTPTransport())
    c, close = open_client(kind, fake.base_url, max_retries=2, transport=transport)
    try:
        assert c.models.register("m", "sum(x)", params=["x"])["version"] == 1
    finally:
        close()
    assert len(transport.registrations) == 2 and len(sleeps) == 1
    assert_uuid4(transport.registrations[0])
    assert transport.registrations[0] == transport.registrations[1]


@pytest.mark.parametrize("kind", KINDS)
def test_on_a_real_server_a_retried_registration_adds_one_version(open_client, server_url, kind, sleeps) -> None:
    name = f"idem_{kind}_{uuid.uuid4().hex[:8]}"
    transport = _SyncLosing(httpx.HTTPTransport()) if kind == "sync" else _AsyncLosing(httpx.AsyncHTTPTransport())
    c, close = open_client(kind, server_url, timeout=30, max_retries=2, transport=transport)
    try:
        info = c.models.register(name, "sum(x ** 2)", params=["x"])
        assert info["version"] == 1
        assert c.models.get(name)["versions"] == [1]  # the first, lost attempt's version: no second one
        assert c.models.register(name, "sum(x ** 2)", params=["x"])["version"] == 2  # a new call: a new key
    finally:
        close()
    assert len(transport.registrations) == 3
    assert transport.registrations[0] == transport.registrations[1] != transport.registrations[2]
