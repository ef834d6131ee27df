"""Pytrees and arrays in JSON: plain lists and base64 `$array` leaves in both directions, NaN and
infinities through both encodings, and dict/list/null structures kept as sent."""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
import pytest
from _service_support import arr, b64, expr, from_b64, strict_json
from fastapi.testclient import TestClient

IDENTITY = expr("x", ["x"])


def value_of(client: TestClient, arg: Any, **options: Any) -> Any:
    response = client.post("/v1/value", json={"function": IDENTITY, "args": [arg], **options})
    assert response.status_code == 200, response.text
    return strict_json(response.text)["value"]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_base64_in_json_out_and_json_in_base64_out_keep_the_bits(client: TestClient, dtype: str) -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(size=(3, 4)).astype(dtype)
    # base64 in, json out: every number the same float
    out = value_of(client, b64(x), dtype=dtype)
    assert np.shape(out) == (3, 4)
    np.testing.assert_array_equal(np.asarray(out, dtype=dtype), x)
    # json in, base64 out: bit for bit
    out = value_of(client, x.tolist(), dtype=dtype, encoding="base64")
    assert out["$array"]["dtype"] == dtype and out["$array"]["shape"] == [3, 4]
    got = from_b64(out)
    assert got.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(got.view(np.uint8), x.view(np.uint8))
    # base64 both ways
    np.testing.assert_array_equal(from_b64(value_of(client, b64(x), dtype=dtype, encoding="base64")), x)


def test_a_gradient_in_base64_equals_the_json_one(client: TestClient) -> None:
    rng = np.random.default_rng(2)
    x = rng.normal(size=200).astype(np.float32)
    body = {"function": expr("sum(tanh(x) ** 2)", ["x"])}
    as_json = client.post("/v1/grad", json={**body, "args": [x.tolist()], "dtype": "float32"}).json()["grad"]
    as_b64 = client.post("/v1/grad", json={**body, "args": [b64(x)], "encoding": "base64"}).json()["grad"]
    np.testing.assert_array_equal(from_b64(as_b64), np.asarray(as_json, np.float32))


SPECIALS = [1.5, "NaN", "Infinity", "-Infinity", -0.0]


def _check_specials(values: np.ndarray) -> None:
    assert values[0] == 1.5 and math.isnan(values[1])
    assert values[2] == math.inf and values[3] == -math.inf
    assert values[4] == 0 and math.copysign(1, values[4]) == -1


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_nan_and_infinities_survive_both_encodings(client: TestClient, dtype: str) -> None:
    # json in ("NaN"/"Infinity"/"-Infinity" strings) -> json out: the same strings
    out = value_of(client, SPECIALS, dtype=dtype)
    assert out[1:4] == ["NaN", "Infinity", "-Infinity"]
    _check_specials(arr(out))
    # json in -> base64 out
    out = value_of(client, SPECIALS, dtype=dtype, encoding="base64")
    _check_specials(from_b64(out))
    # base64 in -> json out, and base64 -> base64 bit for bit (a NaN payload included)
    x = np.array([1.5, np.nan, np.inf, -np.inf, -0.0], dtype=dtype)
    _check_specials(arr(value_of(client, b64(x), dtype=dtype)))
    back = from_b64(value_of(client, b64(x), dtype=dtype, encoding="base64"))
    np.testing.assert_array_equal(back.view(np.uint8), x.view(np.uint8))
    # a scalar, a nested array, and the bare JSON tokens Python writes
    assert value_of(client, "NaN", dtype=dtype) == "NaN"
    assert value_of(client, [["Infinity"], [2.0]], dtype=dtype) == [["Infinity"], [2.0]]
    raw = '{"function": {"expr": "x", "params": ["x"]}, "args": [[NaN, Infinity, -Infinity]]}'
    response = client.post("/v1/value", content=raw, headers={"content-type": "application/json"})
    assert strict_json(response.text)["value"] == ["NaN", "Infinity", "-Infinity"]


def test_computed_nan_and_infinities_come_back_as_strict_json(client: TestClient) -> None:
    response = client.post("/v1/value_and_grad", json={"function": expr("sum(log(x))", ["x"]),
                                                        "args": [[-1.0, 0.0, 1.0]]})
    out = strict_json(response.text)
    assert out["value"] == "NaN" and out["grad"] == [-1.0, "Infinity", 1.0]
    out = client.post("/v1/value", json={"function": expr("log(x)", ["x"]), "args": [[-1.0, 0.0]],
                                         "encoding": "base64"}).json()
    values = from_b64(out["value"])
    assert math.isnan(values[0]) and values[1] == -math.inf


def test_pytree_structures_are_kept(client: TestClient) -> None:
    tree = {"a": [1.0, 2.0], "b": None, "c": [1.0, [2.0, 3.0]], "d": {"e": [], "f": [[1.0], [2.0]]},
            "g": [None, {"h": 4.0}], "i": [[], []]}
    assert value_of(client, tree) == tree
    out = value_of(client, tree, encoding="base64")
    assert set(out) == set(tree) and out["b"] is None and out["g"][0] is None and out["d"]["e"] == []
    # [[], []] is rectangular: an array of shape (2, 0) (a bare [] is an empty list node, as in JAX)
    assert out["i"]["$array"]["shape"] == [2, 0]
    np.testing.assert_array_equal(from_b64(out["a"]), [1.0, 2.0])
    assert isinstance(out["c"], list) and from_b64(out["c"][0]).shape == ()  # a list of subtrees
    np.testing.assert_array_equal(from_b64(out["c"][1]), [2.0, 3.0])
    assert from_b64(out["d"]["f"]).shape == (2, 1)  # a rectangular nested list is one array
    assert value_of(client, None) is None
    assert value_of(client, []) == []
    assert value_of(client, [[1.0, 2.0], [3.0]]) == [[1.0, 2.0], [3.0]]  # ragged: a list of arrays


def test_integer_and_boolean_leaves_keep_their_dtype(client: TestClient) -> None:
    ints = np.array([[1, -2], [3, 2**31 - 1]], np.int32)
    out = value_of(client, b64(ints), encoding="base64")
    assert out["$array"]["dtype"] == "int32"
    np.testing.assert_array_equal(from_b64(out), ints)
    assert value_of(client, b64(ints)) == ints.tolist()
    for dtype in ("int64", "uint8", "int8", "bool"):
        x = np.array([1, 0, 1], dtype=dtype)
        assert from_b64(value_of(client, b64(x), encoding="base64")).dtype == np.dtype(dtype)
    # an explicit $array keeps its float width whatever the request's dtype (it applies to plain numbers)
    half = np.array([0.5, 2.0], np.float16)
    for dtype in (None, "float32", "float64"):
        options = {"dtype": dtype} if dtype else {}
        assert from_b64(value_of(client, b64(half), encoding="base64", **options)).dtype == np.float16
    assert value_of(client, [True, False]) == [True, False]
    # JSON numbers are doubles, unless the request asks for float32
    assert value_of(client, [1, 2], encoding="base64")["$array"]["dtype"] == "float64"
    assert value_of(client, [1, 2], encoding="base64", dtype="float32")["$array"]["dtype"] == "float32"


def test_empty_and_zero_dimensional_arrays(client: TestClient) -> None:
    empty = np.zeros((0, 3), np.float32)
    out = value_of(client, b64(empty), encoding="base64")
    assert out["$array"]["shape"] == [0, 3] and out["$array"]["data"] == ""
    assert value_of(client, b64(np.float32(2.5))) == 2.5
    assert value_of(client, 7) == 7.0


def test_a_large_array_round_trips_in_base64(client: TestClient) -> None:
    x = np.arange(200_000, dtype=np.float32).reshape(400, 500) / 7
    response = client.post("/v1/grad", json={"function": expr("sum(x * x) / 2", ["x"]), "args": [b64(x)],
                                             "encoding": "base64"})
    np.testing.assert_array_equal(from_b64(response.json()["grad"]), x)
    assert len(response.content) < 1.5 * x.nbytes  # base64 plus a little JSON


def test_responses_are_compact_strict_json(client: TestClient) -> None:
    response = client.post("/v1/value", json={"function": IDENTITY, "args": [[1.0, "NaN"]]})
    assert response.headers["content-type"].startswith("application/json")
    strict_json(response.text)
    assert json.dumps(response.json(), separators=(",", ":"), allow_nan=False) == response.text


# ----------------------------------------------------------------------------- the response writer

_SPECIALS = [np.nan, np.inf, -np.inf, -0.0, 0.0, 5e-324, 1.7976931348623157e308, 1e16, 1e-7, 0.1, 1 / 3]


def _random_tree(rng: np.random.Generator, depth: int = 0) -> Any:
    kind = rng.integers(0, 9 if depth < 3 else 6)
    if kind == 0:
        shape = tuple(int(n) for n in rng.integers(0, 4, size=rng.integers(0, 3)))
        dtype = rng.choice(["float32", "float64", "int32", "int64", "bool", "uint8"])
        values = rng.choice(_SPECIALS, size=shape) if rng.random() < 0.5 else rng.normal(size=shape) * 1e3
        with np.errstate(invalid="ignore", over="ignore"):  # NaN and huge values cast to integers
            return np.asarray(values).astype(dtype) if dtype != "bool" else np.asarray(values) > 0
    if kind == 1:
        return rng.choice(_SPECIALS).item() if rng.random() < 0.7 else float(rng.normal())
    if kind == 2:
        return int(rng.integers(-2**62, 2**62))
    if kind == 3:
        return [None, True, False, "text", "ünïcödé"][int(rng.integers(0, 5))]
    if kind == 4:
        return np.float32(rng.choice(_SPECIALS))
    if kind == 5:
        return np.int64(rng.integers(-100, 100))
    if kind == 6:
        return [_random_tree(rng, depth + 1) for _ in range(rng.integers(0, 4))]
    if kind == 7:
        return tuple(_random_tree(rng, depth + 1) for _ in range(rng.integers(0, 4)))
    return {f"k{i}": _random_tree(rng, depth + 1) for i in range(rng.integers(0, 4))}


def test_small_responses_are_written_in_the_same_bytes_as_the_chunked_writer() -> None:
    from collections import namedtuple

    from service import json_trees

    def chunked(tree: Any) -> bytes:
        parts: list[bytes] = []
        json_trees._write(tree, "json", parts)
        return b"".join(parts)

    rng = np.random.default_rng(7)
    for _ in range(3000):
        tree = {"result": _random_tree(rng), "meta": {"elapsed_ms": 0.25}}
        assert json_trees.dumps(tree) == chunked(tree), tree
    # trees the one-call writer leaves to the chunked one give the same bytes too
    Pair = namedtuple("Pair", "a b")
    for tree in ({"p": Pair(np.float32(1.5), [1.0])}, {"x": np.arange(5000.0)}, {"i": 2**64 + 1},
                 {"s": np.array(["a", "b"])}):
        try:
            expected = chunked(tree)
        except TypeError:
            with pytest.raises(TypeError):
                json_trees.dumps(tree)
            continue
        assert json_trees.dumps(tree) == expected
