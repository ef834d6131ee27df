"""Retries: connection errors, 429 and 5xx are retried with exponential backoff and jitter, honouring
Retry-After; other errors are final. A fake loopback server scripts the failures; the backoff delays
are recorded instead of slept (the `sleeps` fixture)."""

from __future__ import annotations

import email.utils
import time

import numpy as np
import pytest

from client import InternalServerError, RateLimitError

KINDS = ["sync", "async"]
OK = (200, {}, {"value": 2.5})


def busy(status: int = 503, headers: dict | None = None) -> tuple:
    return (status, headers or {}, {"error": {"type": "unavailable", "message": "try later", "detail": {},
                                              "request_id": None}})


def call(c):
    return c.value("x * 2", params=["x"])(1.25)


@pytest.mark.parametrize("kind", KINDS)
def test_fails_twice_then_succeeds(open_client, fake, kind, sleeps) -> None:
    fake.reset(responses=[busy(503), busy(503)], final=OK)
    c, close = open_client(kind, fake.base_url, max_retries=2)
    try:
        result = call(c)
    finally:
        close()
    assert result == 2.5 and isinstance(result, np.ndarray) and result.dtype == np.float32
    assert len(fake.script.requests) == 3
    # Every attempt is the same request (compute calls are idempotent).
    assert len({r["body"] for r in fake.script.requests}) == 1
    assert all(r["path"] == "/v1/value" and r["method"] == "POST" for r in fake.script.requests)
    assert len(sleeps) == 2
    assert 0.5 * 0.75 <= sleeps[0] <= 0.5 * 1.25
    assert 1.0 * 0.75 <= sleeps[1] <= 1.0 * 1.25


@pytest.mark.parametrize("kind", KINDS)
def test_mixed_failures_honour_retry_after(open_client, fake, kind, sleeps) -> None:
    fake.reset(responses=[busy(503), busy(429, {"Retry-After": "0"}), busy(500)], final=OK)
    c, close = open_client(kind, fake.base_url, max_retries=3)
    try:
        assert call(c) == 2.5
    finally:
        close()
    assert len(fake.script.requests) == 4
    assert len(sleeps) == 3
    assert 0.375 <= sleeps[0] <= 0.625
    assert sleeps[1] == 0.0  # Retry-After: 0, not the backoff of ~1 s
    assert 1.5 <= sleeps[2] <= 2.5  # the third attempt's backoff: 0.5 * 2**2 with jitter


@pytest.mark.parametrize("kind", KINDS)
def test_retry_after_seconds_and_http_date(open_client, fake, kind, sleeps) -> None:
    date = email.utils.formatdate(time.time() + 30, usegmt=True)
    fake.reset(responses=[busy(429, {"Retry-After": "7"}), busy(503, {"Retry-After": date}),
                          busy(503, {"Retry-After": "3600"})], final=OK)
    c, close = open_client(kind, fake.base_url, max_retries=3)
    try:
        assert call(c) == 2.5
    finally:
        close()
    assert sleeps[0] == 7.0
    assert 28 <= sleeps[1] <= 30.5
    assert sleeps[2] == 60.0  # capped


@pytest.mark.parametrize("kind", KINDS)
def test_backoff_grows_exponentially_with_jitter(open_client, fake, kind, sleeps) -> None:
    fake.reset(responses=[busy(502)] * 6, final=OK)
    c, close = open_client(kind, fake.base_url, max_retries=6)
    try:
        assert call(c) == 2.5
    finally:
        close()
    assert len(fake.script.requests) == 7
    bases = [min(8.0, 0.5 * 2 ** k) for k in range(6)]  # 0.5, 1, 2, 4, 8, 8 (capped)
    ratios = [s / b for s, b in zip(sleeps, bases, strict=True)]
    assert all(0.75 <= r <= 1.25 for r in ratios), sleeps
    assert len(set(ratios)) > 1, "no jitter: every delay is the same multiple of its base"
    assert sleeps[3] > sleeps[0] * 2  # grows (even with the worst jitter: 4*0.75 > 0.5*1.25*2)


@pytest.mark.parametrize("kind", KINDS)
def test_gives_up_after_max_retries(open_client, fake, kind, sleeps) -> None:
    fake.reset(final=busy(503))
    c, close = open_client(kind, fake.base_url, max_retries=2)
    try:
        with pytest.raises(InternalServerError) as info:
            call(c)
    finally:
        close()
    assert info.value.status_code == 503 and info.value.message == "try later"
    assert len(fake.script.requests) == 3 and len(sleeps) == 2

    fake.reset(final=busy(429))
    c, close = open_client(kind, fake.base_url, max_retries=0)
    try:
        with pytest.raises(RateLimitError):
            call(c)
    finally:
        close()
    assert len(fake.script.requests) == 1 and len(sleeps) == 2


@pytest.mark.parametrize("status", [400, 401, 403, 404, 408, 409, 413, 422])
def test_client_errors_are_not_retried(open_client, fake, sleeps, status) -> None:
    fake.reset(final=busy(status))
    c, close = open_client("sync", fake.base_url, max_retries=3)
    try:
        with pytest.raises(Exception) as info:
            call(c)
    finally:
        close()
    assert info.value.status_code == status
    assert len(fake.script.requests) == 1 and sleeps == []


def test_default_max_retries_is_two(fake, sleeps) -> None:
    from client import Client

    fake.reset(responses=[busy(503), busy(503)], final=OK)
    with Client(fake.base_url) as c:
        assert call(c) == 2.5
    assert len(fake.script.requests) == 3
