"""Transport: the base64 encoding for large arrays (seen on the wire through a recording transport),
headers, NABLA_BASE_URL / NABLA_API_KEY, context managers, connection reuse and c.batch."""

from __future__ import annotations

import asyncio
import json

import httpx
import numpy as np
import pytest

import engine.numpy as jnp
from client import AsyncClient, AuthenticationError, Client

BASE64_THRESHOLD = 1024


class Recording(httpx.BaseTransport):
    """Forwards to a real transport; keeps every request body and response body (parsed JSON)."""

    def __init__(self) -> None:
        self.inner = httpx.HTTPTransport()
        self.exchanges: list[tuple[httpx.Request, dict, dict]] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = self.inner.handle_request(request)
        response.read()
        self.exchanges.append((request, json.loads(request.content or b"null"), json.loads(response.content)))
        return response

    def close(self) -> None:
        self.inner.close()


class AsyncRecording(httpx.AsyncBaseTransport):
    def __init__(self) -> None:
        self.inner = httpx.AsyncHTTPTransport()
        self.exchanges: list[tuple[httpx.Request, dict, dict]] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self.inner.handle_async_request(request)
        await response.aread()
        self.exchanges.append((request, json.loads(request.content or b"null"), json.loads(response.content)))
        return response

    async def aclose(self) -> None:
        await self.inner.aclose()


def sync_and_async(server_url, make_calls):
    """[(results, exchanges)] of `make_calls(c)` with a recording Client, then a recording AsyncClient
    (whose calls return awaitables, awaited in order)."""
    rec = Recording()
    with Client(server_url, transport=rec, max_retries=0) as c:
        out = [(make_calls(c), rec.exchanges)]

    async def run_async():
        arec = AsyncRecording()
        async with AsyncClient(server_url, transport=arec, max_retries=0) as ac:
            results = [await pending for pending in make_calls(ac)]
        return results, arec.exchanges
    out.append(asyncio.run(run_async()))
    return out


def is_b64(leaf) -> bool:
    return isinstance(leaf, dict) and set(leaf) == {"$array"} and isinstance(leaf["$array"]["data"], str)


@pytest.mark.parametrize("n", [BASE64_THRESHOLD, 5000])
def test_large_arrays_travel_as_base64(server_url, n) -> None:
    rng = np.random.default_rng(n)
    x = rng.normal(size=n).astype(np.float32)
    x64 = rng.normal(size=(n // 8, 8))

    def calls(c):
        return [c.grad(lambda v: jnp.sum(v ** 2))(x), c.grad("sum(v ** 2)", params=["v"])(x64),
                c.value(lambda v: v * 3)(x)]

    for results, exchanges in sync_and_async(server_url, calls):
        g_py, g_expr, v = results
        np.testing.assert_array_equal(g_py, 2 * x)  # exact: base64 carries every bit
        assert g_py.dtype == np.float32 and g_py.shape == (n,)
        np.testing.assert_array_equal(g_expr, 2 * x64)
        assert g_expr.dtype == np.float64 and g_expr.shape == (n // 8, 8)
        np.testing.assert_allclose(v, 3 * x, rtol=1e-7)
        assert len(exchanges) == 3
        for request, body, answer in exchanges:
            assert body["encoding"] == "base64"
            assert is_b64(body["args"][0])
            spec = body["args"][0]["$array"]
            assert spec["dtype"] in ("float32", "float64") and np.prod(spec["shape"]) == n
            assert b'"$array"' in request.content
            result = answer.get("grad", answer.get("value"))
            assert is_b64(result)


def test_small_arrays_travel_as_json_numbers(server_url) -> None:
    x = np.linspace(-1, 1, BASE64_THRESHOLD - 1).astype(np.float32)

    def calls(c):
        return [c.grad(lambda v: jnp.sum(v ** 2))(x), c.grad("sum(v ** 2)", params=["v"])(x)]

    for results, exchanges in sync_and_async(server_url, calls):
        np.testing.assert_array_equal(results[0], 2 * x)
        for _, body, answer in exchanges:
            assert "encoding" not in body
            assert isinstance(body["args"][0], list) and len(body["args"][0]) == BASE64_THRESHOLD - 1
            assert isinstance(answer["grad"], list)


def test_integer_arrays_always_travel_as_base64(server_url) -> None:
    rec = Recording()
    with Client(server_url, transport=rec, max_retries=0) as c:
        out = c.value("x * n", params=["x", "n"])(np.float32(2), np.array([1, 2, 3], np.int32))
    np.testing.assert_array_equal(out, [2, 4, 6])
    body = rec.exchanges[0][1]
    assert is_b64(body["args"][1]) and body["args"][1]["$array"]["dtype"] == "int32"
    assert "encoding" not in body  # small: the answer comes back as JSON numbers


def test_non_finite_values_round_trip(client) -> None:
    out = client.value("log(x)", params=["x"])(np.array([0.0, -1.0, 1.0], np.float32))
    assert out[0] == -np.inf and np.isnan(out[1]) and out[2] == 0
    g = client.grad("sum(x * y)", params=["x", "y"])(np.ones(2, np.float32), np.array([np.inf, np.nan], np.float32))
    assert g[0] == np.inf and np.isnan(g[1])


def test_headers_and_one_pooled_connection(server_url) -> None:
    rec = Recording()
    with Client(server_url, api_key="some-key", transport=rec, max_retries=0) as c:
        for _ in range(3):
            c.grad(jnp.tanh)(1.0)
    requests = [r for r, _, _ in rec.exchanges]
    assert all(r.headers["authorization"] == "Bearer some-key" for r in requests)
    assert all(r.headers["content-type"] == "application/json" for r in requests)
    assert all(r.headers["user-agent"].startswith("nabla-client/") for r in requests)
    assert all(str(r.url).startswith(server_url + "/v1/grad") for r in requests)


def test_connection_pooling(server_url) -> None:
    """Successive calls reuse one keep-alive connection (the server sees one client port)."""
    ports = set()

    def remember(response: httpx.Response) -> None:
        stream = response.extensions.get("network_stream")
        if stream is not None:
            ports.add(stream.get_extra_info("client_addr")[1])

    with Client(server_url, max_retries=0) as c:
        c._http.event_hooks["response"].append(remember)
        for _ in range(4):
            c.grad(jnp.tanh)(0.5)
    assert len(ports) == 1


# ----------------------------------------------------------------------------- settings from the environment


def test_base_url_and_api_key_from_the_environment(keys, monkeypatch, keyed_url) -> None:
    monkeypatch.setenv("NABLA_BASE_URL", keyed_url + "/")
    monkeypatch.setenv("NABLA_API_KEY", keys.user)
    with Client(max_retries=0) as c:
        assert c.base_url == keyed_url and c.api_key == keys.user
        assert c.grad(jnp.tanh)(2.0) == pytest.approx(0.070650816, rel=1e-6)

    async def run() -> float:
        async with AsyncClient(max_retries=0) as ac:
            return await ac.grad(jnp.tanh)(2.0)
    assert asyncio.run(run()) == pytest.approx(0.070650816, rel=1e-6)


def test_arguments_win_over_the_environment(keys, monkeypatch, keyed_url) -> None:
    monkeypatch.setenv("NABLA_BASE_URL", "http://127.0.0.1:9")  # nothing there
    monkeypatch.setenv("NABLA_API_KEY", "wrong")
    with Client(keyed_url, api_key=keys.user, max_retries=0) as c:
        np.testing.assert_allclose(c.grad("sum(x * 2)", params=["x"])(np.ones(2, np.float32)), [2, 2])
    monkeypatch.delenv("NABLA_API_KEY")
    with Client(keyed_url, max_retries=0) as c, pytest.raises(AuthenticationError):
        c.grad(jnp.tanh)(1.0)


def test_default_base_url(monkeypatch) -> None:
    with Client() as c:
        assert c.base_url == "http://127.0.0.1:8000" and c.api_key is None


# ----------------------------------------------------------------------------- context managers


def test_sync_context_manager_closes(server_url) -> None:
    with Client(server_url) as c:
        assert c.grad(jnp.sin)(0.0) == 1.0
        http = c._http
        assert not http.is_closed
    assert http.is_closed


def test_async_context_manager_closes(server_url) -> None:
    async def run():
        async with AsyncClient(server_url) as c:
            assert await c.grad(jnp.sin)(0.0) == 1.0
            http = c._http
            assert not http.is_closed
        return http
    assert asyncio.run(run()).is_closed


def test_close_without_context_manager(server_url) -> None:
    c = Client(server_url)
    c.close()
    assert c._http.is_closed


# ----------------------------------------------------------------------------- batch


def test_batch_sync_with_progress(client, capsys) -> None:
    sets = [(np.array([float(i), 1.0], np.float32),) for i in range(5)]
    f = lambda x: jnp.sum(x ** 3)  # noqa: E731
    results = client.batch(client.grad(f), sets, progress=True)
    assert len(results) == 5
    for (x,), g in zip(sets, results, strict=True):
        np.testing.assert_allclose(g, 3 * x ** 2)
    err = capsys.readouterr().err
    assert "5/5" in err and "1/5" in err and "[" in err and err.endswith("\n")

    assert client.batch(client.value(f), sets) == [pytest.approx(float(np.sum(x ** 3))) for (x,) in sets]
    assert capsys.readouterr().err == ""


def test_batch_async_with_progress(server_url, capsys) -> None:
    sets = [(np.float32(i), np.float32(2.0)) for i in range(12)]

    async def run():
        async with AsyncClient(server_url, max_retries=0) as c:
            g = c.grad(lambda a, b: a * b ** 2, (0, 1))
            return await c.batch(g, sets, progress=True, concurrency=4)

    results = asyncio.run(run())
    assert len(results) == 12
    for (a, b), (ga, gb) in zip(sets, results, strict=True):  # in order
        assert ga == pytest.approx(b ** 2) and gb == pytest.approx(2 * a * b)
    err = capsys.readouterr().err
    assert "12/12" in err and err.endswith("\n")


def test_batch_of_model_calls(client) -> None:
    xs = [(np.array([1.0, 1.0], np.float32),), (np.array([0.0, 0.0], np.float32),)]
    results = client.batch(client.grad(client.model("rosenbrock")), xs)
    np.testing.assert_allclose(results[0], [0, 0], atol=1e-6)
    np.testing.assert_allclose(results[1], [-2, 0], atol=1e-6)
