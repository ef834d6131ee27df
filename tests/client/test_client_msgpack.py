"""Client(encoding="msgpack"): bodies and answers in MessagePack, large arrays as raw bytes,
end to end against the real server (sync and async). Every result equals the JSON client's to the
last bit; what travels is checked on the wire; errors, retries and the models API behave as with
JSON."""

from __future__ import annotations

import msgpack
import numpy as np
import pytest

import engine.numpy as jnp
from client import BadRequestError, Client, NotFoundError

KINDS = ["sync", "async"]
BASE64_THRESHOLD = 1024
RNG = np.random.default_rng(16)
X32 = RNG.normal(size=3000).astype(np.float32)
X64 = RNG.normal(size=(250, 8))
SMALL = np.array([0.5, -1.5, 2.0])


def loss(w, x):
    return jnp.sum(jnp.tanh(x * w) ** 2)


CALLS = {
    "grad_python_float32": lambda c: c.grad(loss)(X32, X32[::-1].copy()),
    "grad_expression_float64": lambda c: c.grad("sum(sin(x) * x)", params=["x"])(X64),
    "value_and_grad_argnums": lambda c: c.value_and_grad(loss, argnums=(0, 1))(X32, np.float32(0.5)),
    "value_small": lambda c: c.value("x * 3", params=["x"])(SMALL),
    "integers": lambda c: c.value("x * n", params=["x", "n"])(np.float32(2), np.array([1, 2, 3], np.int32)),
    "specials": lambda c: c.value("log(x)", params=["x"])(np.array([0.0, -1.0, 1.0, np.inf], np.float32)),
    "jvp": lambda c: c.jvp(lambda x: jnp.tanh(x), (X64,), (np.ones_like(X64),)),
    "hessian": lambda c: c.hessian("sum(x ** 3)", params=["x"])(SMALL),
    "pytree": lambda c: c.grad(lambda p: jnp.sum(p["w"] ** 2) + p["b"])({"w": X64, "b": 1.0}),
    "model": lambda c: c.grad(c.model("rosenbrock"))(np.array([1.0, 2.0, 0.5])),
}


def assert_same(got, expected, where: str) -> None:
    if isinstance(expected, dict):
        assert got.keys() == expected.keys(), where
        for k in expected:
            assert_same(got[k], expected[k], f"{where}.{k}")
    elif isinstance(expected, (tuple, list)):
        assert type(got) is type(expected) and len(got) == len(expected), where
        for i, (g, e) in enumerate(zip(got, expected)):
            assert_same(g, e, f"{where}[{i}]")
    else:
        got, expected = np.asarray(got), np.asarray(expected)
        assert got.shape == expected.shape, where
        np.testing.assert_array_equal(got, expected, err_msg=where)  # NaN equals NaN; all else to the bit
        assert got.dtype.kind == expected.dtype.kind, where


@pytest.mark.parametrize("kind", KINDS)
def test_every_result_equals_the_json_clients(open_client, server_url, kind) -> None:
    plain, close_plain = open_client(kind, server_url)
    binary, close_binary = open_client(kind, server_url, encoding="msgpack")
    try:
        for name, call in CALLS.items():
            expected, got = call(plain), call(binary)
            assert_same(got, expected, name)
            assert_same(call(binary), got, name)  # cached plans answer the same
    finally:
        close_plain()
        close_binary()


class Recording:
    """httpx's event hooks: every request's body and every answer's content type and body."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, bytes]] = []
        self.answers: list[tuple[str, bytes]] = []


def test_large_arrays_travel_as_bin_and_small_ones_as_numbers(server_url) -> None:
    seen = Recording()
    with Client(server_url, encoding="msgpack", max_retries=0) as c:
        c._http.event_hooks = {"request": [lambda r: seen.requests.append((r.headers["content-type"], r.read()))],
                               "response": [lambda r: seen.answers.append((r.headers["content-type"], r.read()))]}
        g = c.grad("sum(x ** 2) + sum(y)", params=["x", "y"])(X64, SMALL)
    np.testing.assert_array_equal(g, 2 * X64)
    assert g.flags.writeable  # a copy of the answer's bytes, not a read-only view of them
    (content_type, raw), = seen.requests
    body = msgpack.unpackb(raw)
    assert content_type == "application/msgpack"
    large, small = body["args"]
    assert large == {"$array": {"dtype": "float64", "shape": [250, 8], "data": X64.tobytes()}}
    assert small == SMALL.tolist()  # under the threshold: numbers, as in JSON
    (answer_type, answer), = seen.answers
    assert answer_type == "application/msgpack"
    grad = msgpack.unpackb(answer)["grad"]["$array"]
    assert grad["data"] == (2 * X64).tobytes()


@pytest.mark.parametrize("kind", KINDS)
def test_errors_are_the_json_clients_errors(open_client, server_url, kind) -> None:
    c, close = open_client(kind, server_url, encoding="msgpack")
    try:
        with pytest.raises(BadRequestError, match="never closed") as error:
            c.grad("sum(", params=["x"])(1.0)
        assert error.value.status_code == 422 and error.value.type == "invalid_function"
        with pytest.raises(NotFoundError):
            c.models.get("no_such_model")
    finally:
        close()


@pytest.mark.parametrize("kind", KINDS)
def test_the_models_api_speaks_msgpack(open_client, server_url, kind) -> None:
    c, close = open_client(kind, server_url, encoding="msgpack")
    name = f"msgpack_weighted_{kind}"
    try:
        weights = np.arange(1.0, 2001.0)  # a constant large enough to travel as bin
        registered = c.models.register(name, "sum(w * x ** 2)", {"w": weights}, params=["w", "x"])
        assert registered["params"] == ["x"] and registered["constants"] == ["w"]
        assert name in [m["name"] for m in c.models.list()]
        np.testing.assert_array_equal(c.grad(c.model(name))(np.ones(2000)), 2 * weights)
        assert c.models.delete(name)["deleted_versions"] == 1
    finally:
        close()


@pytest.mark.parametrize("kind", KINDS)
def test_retries_read_json_errors_and_msgpack_answers(open_client, fake, kind, sleeps) -> None:
    busy = (503, {}, {"error": {"type": "unavailable", "message": "later", "detail": {}, "request_id": None}})
    fake.reset(responses=[busy], final=(200, {}, {"value": 2.5}))
    c, close = open_client(kind, fake.base_url, max_retries=1, encoding="msgpack")
    try:
        assert c.value("x * 2", params=["x"])(1.25) == 2.5  # the fake server answers JSON: read by content type
    finally:
        close()
    first, second = fake.script.requests
    assert first["body"] == second["body"] and first["headers"]["content-type"] == "application/msgpack"
    assert first["headers"]["accept"] == "application/msgpack"
    assert msgpack.unpackb(first["body"])["args"] == [1.25]


def test_an_unknown_encoding_is_refused() -> None:
    with pytest.raises(ValueError, match="'json' or 'msgpack'"):
        Client("http://127.0.0.1:1", encoding="xml")
