"""MessagePack bodies and answers on /v1 (service.msgpack_codec).

A MessagePack request is the JSON request's tree with `$array` leaves carrying raw bytes; a
MessagePack answer (Accept: application/msgpack) is the `"encoding": "base64"` JSON answer with
raw bytes in place of base64 text. So every answer here is checked against the JSON API's own
answer to the same request, bit for bit; negotiation, the limits a hostile body meets before
anything is built, and the errors (always JSON) are pinned as well.
"""

from __future__ import annotations

import base64
import math
import struct
from typing import Any

import msgpack
import numpy as np
import pytest
from _service_support import assert_error, expr
from fastapi.testclient import TestClient

from service import admission
from service.errors import InvalidRequest, LimitExceededError
from service.msgpack_codec import JSON, MSGPACK, BodyCounts, NotAcceptable, loads, negotiate, scan

BIN = {"content-type": MSGPACK, "accept": MSGPACK}
BUDGET = admission.Budget(10**7, 2**27, 2**29)


def leaf(value: Any, dtype: Any = None) -> dict[str, Any]:
    """A `$array` leaf with the array's little-endian bytes as bin data."""
    arr = np.asarray(value, dtype=dtype)
    data = np.ascontiguousarray(arr, dtype=arr.dtype.newbyteorder("<")).tobytes()
    return {"$array": {"dtype": arr.dtype.name, "shape": list(arr.shape), "data": data}}


def as_base64(tree: Any) -> Any:
    """The tree with every bin leaf's data as base64 text: the JSON form of the same request."""
    if isinstance(tree, dict):
        if "$array" in tree and isinstance(tree["$array"].get("data"), bytes):
            return {"$array": {**tree["$array"], "data": base64.b64encode(tree["$array"]["data"]).decode()}}
        return {k: as_base64(v) for k, v in tree.items()}
    if isinstance(tree, list):
        return [as_base64(v) for v in tree]
    return tree


def post(client: TestClient, path: str, body: Any, headers: dict[str, str] = BIN) -> Any:
    return client.post(path, content=msgpack.packb(body, use_bin_type=True), headers=headers)


def answer(response: Any, status: int = 200) -> Any:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == MSGPACK
    return msgpack.unpackb(response.content, raw=False)


def without_timing(reply: dict[str, Any]) -> dict[str, Any]:
    meta = {k: v for k, v in reply["meta"].items() if k not in ("elapsed_ms", "cache_hit")}
    return {**reply, "meta": meta}


# ----------------------------------------------------------------------------- the same answers as JSON

RNG = np.random.default_rng(16)
X = RNG.normal(size=(3, 4))
V = RNG.normal(size=(3, 4))
SUM_TANH = expr("sum(tanh(x) ** 2 * y)", ["x", "y"])
REQUESTS = {
    "value": ("/v1/value", {"function": expr("tanh(x) * y", ["x", "y"]), "args": [leaf(X), 2.0]}),
    "grad": ("/v1/grad", {"function": SUM_TANH, "args": [leaf(X), leaf(V)], "argnums": [0, 1]}),
    "grad_float32": ("/v1/grad", {"function": SUM_TANH, "args": [leaf(X, np.float32), X.tolist()],
                                  "dtype": "float32"}),
    "value_and_grad": ("/v1/value_and_grad", {"function": SUM_TANH, "args": [leaf(X), 1.5]}),
    "jvp": ("/v1/jvp", {"function": SUM_TANH, "args": [leaf(X), 1.5], "tangents": [leaf(V), 0.0]}),
    "vjp": ("/v1/vjp", {"function": expr("tanh(x)", ["x"]), "args": [leaf(X)], "cotangent": leaf(V)}),
    "jacobian": ("/v1/jacobian", {"function": expr("tanh(x)", ["x"]), "args": [leaf(X[0])]}),
    "hessian": ("/v1/hessian", {"function": SUM_TANH, "args": [leaf(X[0]), 2.0]}),
    "hvp": ("/v1/hvp", {"function": SUM_TANH, "args": [leaf(X), 1.0], "tangents": [leaf(V)]}),
    "in_axes": ("/v1/grad", {"function": SUM_TANH, "args": [leaf(X), 1.0], "in_axes": [0, None]}),
    "pytree": ("/v1/grad", {"function": expr("sum(p['w'] * x[0]) + p['c'] * x[1]", ["p", "x"]),
                            "args": [{"w": leaf(X[0]), "c": 3.0}, [leaf(V[0]), 2.0]], "argnums": [0, 1]}),
    "integers": ("/v1/value", {"function": expr("x * n", ["x", "n"]), "args": [1.5, leaf([1, 2, 3], np.int32)]}),
    "model": ("/v1/models/rosenbrock/grad", {"args": [leaf([1.0, 2.0, 0.5])]}),
    "check_grads": ("/v1/check_grads", {"function": SUM_TANH, "args": [leaf(X[0]), 2.0]}),
}


@pytest.mark.parametrize("name", list(REQUESTS))
def test_every_transform_answers_as_the_json_api_does_bit_for_bit(client: TestClient, name: str) -> None:
    path, body = REQUESTS[name]
    # the JSON API's answer to the same request, arrays as base64 leaves
    reference = client.post(path, json={**as_base64(body), "encoding": "base64"})
    assert reference.status_code == 200, reference.text
    expected = without_timing(reference.json())
    got = without_timing(answer(post(client, path, body)))
    assert as_base64(got) == expected
    # and the JSON answer to the MessagePack request is the JSON answer to the JSON request
    plain = post(client, path, body, {"content-type": MSGPACK})
    assert plain.headers["content-type"] == JSON
    assert without_timing(plain.json()) == without_timing(client.post(path, json=as_base64(body)).json())


@pytest.mark.parametrize("dtype", ["float16", "float32", "float64", "int8", "int16", "int32", "int64", "uint8",
                                   "uint16", "uint32", "uint64", "bool"])
def test_a_bin_leaf_keeps_its_dtype_shape_and_bits(client: TestClient, dtype: str) -> None:
    rng = np.random.default_rng(3)
    x = rng.integers(0, 2, size=(2, 3, 2)).astype(dtype) if dtype != "float64" else rng.normal(size=(2, 3, 2))
    out = answer(post(client, "/v1/value", {"function": expr("x", ["x"]), "args": [leaf(x)]}))["value"]["$array"]
    assert (out["dtype"], out["shape"]) == (dtype, [2, 3, 2])
    assert out["data"] == x.astype(x.dtype.newbyteorder("<")).tobytes()


def test_nan_and_infinities_are_plain_floats_both_ways(client: TestClient) -> None:
    x = [1.5, math.nan, math.inf, -math.inf, -0.0]
    for arg in (x, leaf(x)):
        reply = answer(post(client, "/v1/value", {"function": expr("x * 1.0", ["x"]), "args": [arg]}))
        got = np.frombuffer(reply["value"]["$array"]["data"], "<f8")
        np.testing.assert_array_equal(got, x)
        assert math.copysign(1, got[4]) == -1
    report = answer(post(client, "/v1/value", {"function": expr("x", ["x"]), "args": [math.nan]}))
    assert math.isnan(np.frombuffer(report["value"]["$array"]["data"], "<f8")[0])


def test_a_zero_d_result_is_a_leaf_of_shape_nothing(client: TestClient) -> None:
    reply = answer(post(client, "/v1/value", {"function": expr("sum(x ** 2)", ["x"]), "args": [leaf([3.0, 4.0])]}))
    assert reply["value"] == {"$array": {"dtype": "float64", "shape": [], "data": struct.pack("<d", 25.0)}}


def test_shapes_and_registration_take_messagepack_bodies(client: TestClient) -> None:
    shapes = answer(post(client, "/v1/shapes", {"function": expr("sum(x, axis=1)", ["x"]),
                                                "args": [{"shape": [3, 5], "dtype": "float32"}]}))
    assert shapes["output"] == {"shape": [3], "dtype": "float32"}
    registered = answer(post(client, "/v1/models", {"name": "scaled", "function": expr("sum(c * x ** 2)", ["c", "x"]),
                                                     "constants": {"c": leaf([1.0, 2.0, 3.0])}}), 201)
    assert registered["params"] == ["x"] and registered["constants"] == ["c"]
    grad = answer(post(client, "/v1/models/scaled/grad", {"args": [leaf([1.0, 1.0, 1.0])]}))["grad"]["$array"]
    np.testing.assert_array_equal(np.frombuffer(grad["data"], "<f8"), [2.0, 4.0, 6.0])
    listed = client.get("/v1/models", headers={"accept": MSGPACK})
    assert "scaled" in [m["name"] for m in answer(listed)["models"]]


def test_the_graph_route_takes_json_only(client: TestClient) -> None:
    response = post(client, "/v1/graph", {"function": expr("sin(x)", ["x"]), "args": [1.0]})
    assert_error(response, 415, "unsupported_media_type", "takes a JSON body")


def test_the_other_names_of_messagepack_are_read(client: TestClient) -> None:
    body = {"function": expr("x * 2", ["x"]), "args": [leaf([1.0])]}
    for name in ("application/x-msgpack", "application/vnd.msgpack", "Application/MsgPack; charset=binary"):
        reply = answer(post(client, "/v1/value", body, {"content-type": name, "accept": name.split(";")[0]}))
        assert reply["value"]["$array"]["data"] == struct.pack("<d", 2.0)


# ----------------------------------------------------------------------------- negotiation


@pytest.mark.parametrize(("accept", "expected"), [
    (None, JSON), ("", JSON), ("*/*", JSON), ("application/*", JSON), ("application/json", JSON),
    ("application/msgpack", MSGPACK), ("application/x-msgpack", MSGPACK), ("application/vnd.msgpack", MSGPACK),
    ("application/msgpack, application/json", MSGPACK), ("application/json, application/msgpack", JSON),
    ("application/json;q=0.5, application/msgpack", MSGPACK), ("application/msgpack;q=0.2, */*;q=0.1", MSGPACK),
    ("application/msgpack;q=0.2, application/json;q=0.9", JSON), ("text/html, */*;q=0.8", JSON),
    ("application/msgpack, */*", MSGPACK), ("*/*, application/msgpack;q=0.5", JSON),
    ("APPLICATION/MSGPACK", MSGPACK), ("application/msgpack;q=oops", MSGPACK),
    ("*/*;q=0, application/msgpack", MSGPACK), ("application/msgpack;q=0, */*", JSON),
    ("application/json;q=0.1, application/json;q=0.9, application/msgpack;q=0.5", JSON),
])
def test_accept_picks_the_answers_format(accept: str | None, expected: str) -> None:
    assert negotiate(accept) == expected


@pytest.mark.parametrize("accept", ["text/html", "application/xml, text/*", "application/json;q=0",
                                    "application/msgpack;q=0, application/json;q=0", "*/*;q=0", "image/*"])
def test_an_accept_that_takes_neither_format_is_refused(client: TestClient, accept: str) -> None:
    with pytest.raises(NotAcceptable):
        negotiate(accept)
    for response in (client.post("/v1/grad", json={"function": expr("x ** 2", ["x"]), "args": [1.0]},
                                 headers={"accept": accept}),
                     client.get("/v1/models", headers={"accept": accept})):
        error = assert_error(response, 406, "not_acceptable", "application/msgpack")
        assert error["detail"]["available"] == [JSON, MSGPACK]


@pytest.mark.parametrize("accept", [None, JSON, MSGPACK])
def test_answers_say_they_vary_with_accept(client: TestClient, accept: str | None) -> None:
    # A shared cache keys a stored answer by the headers Vary names: without it, a cache in front
    # of the service would hand a JSON client the MessagePack answer it stored for another.
    headers = {} if accept is None else {"accept": accept}
    by_name = client.post("/v1/models/tutorial_logreg/grad", json={"args": [[0.1, 0.2, 0.3], 0.5]}, headers=headers)
    listed = client.get("/v1/models", headers=headers)
    for response in (by_name, listed):
        assert response.status_code == 200, response.text
        assert response.headers["vary"] == "Accept"
        assert response.headers["content-type"] == (accept or JSON)


def test_errors_stay_json_whatever_accept_asks(client: TestClient) -> None:
    response = post(client, "/v1/grad", {"function": expr("sum(", ["x"]), "args": [1.0]})
    assert response.headers["content-type"] == JSON
    assert_error(response, 422, "invalid_function", "never closed")
    response = client.get("/v1/models/nothing_here", headers={"accept": MSGPACK})
    assert_error(response, 404, "not_found")


# ----------------------------------------------------------------------------- bad leaves, as in JSON


def test_bad_bin_leaves_get_the_base64_leaves_errors(client: TestClient) -> None:
    f = expr("x", ["x"])
    short = {"$array": {"dtype": "float64", "shape": [3], "data": b"\0" * 16}}
    json_short = {"$array": {"dtype": "float64", "shape": [3], "data": base64.b64encode(b"\0" * 16).decode()}}
    for body in ({"function": f, "args": [short]}, {"function": f, "args": [json_short]}):
        assert_error(post(client, "/v1/value", body), 422, "invalid_argument",
                     "x: 16 bytes of data, but shape [3] of float64 needs 24", {"path": "x"})
    unknown = {"$array": {"dtype": "complex128", "shape": [1], "data": b"\0" * 16}}
    assert_error(post(client, "/v1/value", {"function": f, "args": [unknown]}), 422, "invalid_argument",
                 "unsupported dtype 'complex128'", {"path": "x"})
    integer_data = {"$array": {"dtype": "float64", "shape": [1], "data": 7}}
    assert_error(post(client, "/v1/value", {"function": f, "args": [integer_data]}), 422, "invalid_argument",
                 "base64 string (or bin bytes", {"path": "x"})


def test_an_array_over_the_element_limit_is_refused_before_its_bytes_are_read(make_client: Any) -> None:
    client = make_client(max_array_elements=1000)
    body = {"function": expr("x", ["x"]), "args": [leaf(np.zeros(1001))]}
    error = assert_error(post(client, "/v1/value", body), 413, "limit_exceeded", "NABLA_MAX_ARRAY_ELEMENTS")
    assert (error["detail"]["requested"], error["detail"]["maximum"]) == (1001, 1000)


# ----------------------------------------------------------------------------- the scan


def body_of(obj: Any) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)


def test_the_scan_counts_values_and_members_and_bin_bytes() -> None:
    raw = body_of({"a": [1, 2.5, None, True, "s"], "b": leaf(np.frombuffer(b"xyz", np.uint8)), "d": list(range(100))})
    # the map, its 3 keys, the 5-item list and its items, the leaf (10 values: {"$array": {dtype,
    # shape: [3], data}}), the 100-item list
    assert scan(raw, 64) == BodyCounts(1 + 3 + 6 + 10 + 101, 3 + 1 + 3, 3)


@pytest.mark.parametrize(("items", "single_floats"), [
    ([1.5] * 40, False), ([1.5] * 40, True), (list(range(40)), False), (list(range(-32, 8)), False),
    ([True, None, False, 3] * 10, False), ([2**40] * 40, False), ([-(2**40)] * 40, False), ([200] * 40, False),
    ([40000] * 40, False), ([-200] * 40, False), ([1.5, 1] * 20, False), (["x", "y"] * 20, False),
])
def test_a_run_of_scalars_scans_as_one_by_one_would(items: list[Any], single_floats: bool) -> None:
    # the same values in one array (scanned as a run when they share a size) and one per array
    raw = msgpack.packb({"x": items, "y": [[v] for v in items]}, use_bin_type=True, use_single_float=single_floats)
    assert scan(raw, 64).values == 1 + 2 + 1 + len(items) + 1 + 2 * len(items)
    assert loads(raw, 32, 32, BUDGET) == msgpack.unpackb(raw)
    with pytest.raises(InvalidRequest):
        loads(raw[:-1], 32, 32, BUDGET)


def test_every_truncation_of_a_body_is_a_bad_request() -> None:
    raw = body_of({"function": {"expr": "sum(x)", "params": ["x"]},
                   "args": [leaf(np.arange(4.0)), [1.5] * 20, {"k": [1, -2, 3.0, "NaN"]}], "dtype": None})
    assert loads(raw, 32, 32, BUDGET)["dtype"] is None
    for cut in range(len(raw)):
        with pytest.raises(InvalidRequest):
            loads(raw[:cut], 32, 32, BUDGET)


BIN_ELSEWHERE = {
    "in_an_argument": {"function": expr("x", ["x"]), "args": [{"w": b"\x01\x02"}]},
    "in_a_list": {"function": expr("x", ["x"]), "args": [[1.0, b"\x01"]]},
    "as_an_option": {"function": expr("x", ["x"]), "args": [1.0], "dtype": b"float64"},
    "as_the_expression": {"function": {"expr": b"x", "params": ["x"]}, "args": [1.0]},
    "in_a_graph_constant": {"function": {"graph": {"constants": {"c": leaf([1.0])["$array"]}}}, "args": [1.0]},
    "in_a_graph_leaf": {"function": {"graph": {"constants": {"c": leaf([1.0])}}}, "args": [1.0]},
    "data_of_a_plain_map": {"function": expr("x", ["x"]), "args": [{"data": b"\x00" * 8}]},
    "the_body": b"\x00" * 8,
}


@pytest.mark.parametrize("name", list(BIN_ELSEWHERE))
def test_bin_data_is_only_an_array_leafs_data(client: TestClient, name: str) -> None:
    error = assert_error(post(client, "/v1/value", BIN_ELSEWHERE[name]), 400, "invalid_request",
                         "where no array takes it")
    assert isinstance(error["detail"]["position"], int)


HOSTILE = {
    "trailing_bytes": (body_of({"a": 1}) + b"\x00", "1 byte(s) after the body's one object"),
    "two_objects": (body_of({"a": 1}) * 2, "after the body's one object"),
    "unused_type_byte": (b"\x81\xa1a\xc1", "type byte 0xc1, which MessagePack does not define"),
    "ext_fixext": (b"\x81\xa1a\xd4\x01\x00", "an extension type"),
    "ext_timestamp": (body_of({"a": 0})[:-1] + b"\xd6\xff\x00\x00\x00\x00", "an extension type"),
    "integer_key": (b"\x81\x01\x02", "a map key of type byte 0x01; keys must be strings"),
    "bin_key": (b"\x81\xc4\x01a\x02", "keys must be strings"),
    "nil_key": (b"\x81\xc0\x02", "keys must be strings"),
    "array_key": (b"\x81\x90\x02", "keys must be strings"),
    "array32_of_4e9_items": (b"\x81\xa1a\xdd\xff\xff\xff\xff\x00", "an array of 4294967295 items in the 1 bytes left"),
    "map32_of_4e9_entries": (b"\xdf\xff\xff\xff\xff", "a map of 4294967295 entries in the 0 bytes left"),
    "bin32_of_4_gib": (b"\x81\xa6$array\x81\xa4data\xc6\xff\xff\xff\xff", "ends in the middle of a string or bin"),
    "bin_elsewhere": (b"\x81\xa1a\xc4\x01\x00", "bin data (1 bytes) where no array takes it"),
    "str32_of_4_gib": (b"\x81\xa1a\xdb\xff\xff\xff\xff", "ends in the middle of a string or bin"),
    "length_cut_short": (b"\x81\xa1a\xdc\x00", "ends in the middle of a length"),
    "float_cut_short": (b"\x81\xa1a\xcb\x00\x00", "ends in the middle of a number"),
    "nested_huge_arrays": (b"\x91" + b"\xdd\x00\x00\xff\xff" * 1000, "an array of 65535 items"),
    "invalid_utf8": (b"\x81\xa1a\xa2\xff\xfe", "not valid UTF-8"),
    "lone_surrogate": (b"\x81\xa1a\xa3\xed\xa0\x80", "not valid UTF-8"),
    "empty": (b"", "the request body is empty"),
}


@pytest.mark.parametrize("name", list(HOSTILE))
def test_hostile_structures_are_refused_before_anything_is_built(name: str) -> None:
    raw, fragment = HOSTILE[name]
    with pytest.raises(InvalidRequest, match=None) as refused:
        loads(raw, 32, 32, BUDGET)
    assert fragment in str(refused.value)


def test_nesting_is_bounded_by_the_depth_and_dimension_limits() -> None:
    limit = 8 + 4 + 16  # max_depth + max_dimensions + the request's own levels
    assert loads(b"\x91" * (limit - 1) + b"\x90", 8, 4, BUDGET) is not None  # `limit` containers deep
    assert loads(b"\x91" * limit + b"\xc0", 8, 4, BUDGET) is not None
    for deepest in (b"\x90", b"\x80", b"\xdc\x00\x10" + b"\x01" * 16):  # empty ones, a run of numbers
        with pytest.raises(LimitExceededError) as refused:
            loads(b"\x91" * limit + deepest, 8, 4, BUDGET)
        assert refused.value.detail == {"limit": "NABLA_MAX_DEPTH", "requested": limit + 1, "maximum": limit}
    with pytest.raises(LimitExceededError):
        loads(b"\x91" * 100_000 + b"\xc0", 32, 32, BUDGET)  # iterative: no recursion, however deep


def test_many_tiny_values_are_refused_by_the_json_admission_rule() -> None:
    tiny = admission.Budget(10**7, 2**27, 40 * 10_000)  # room for 10,000 parsed values
    ok_body = body_of({"args": [[[]] * 9_000]})
    assert len(loads(ok_body, 32, 32, tiny)["args"][0]) == 9_000
    with pytest.raises(LimitExceededError) as refused:
        loads(body_of({"args": [[[]] * 10_000]}), 32, 32, tiny)
    assert refused.value.detail["limit"] == "NABLA_MAX_REQUEST_BYTES"
    assert "the MessagePack body" in str(refused.value) and "bin data" in str(refused.value)
    members = admission.Budget(10**7, 2**27, 2**29, max_json_members=100)
    with pytest.raises(LimitExceededError) as refused:
        loads(body_of({str(i): 0 for i in range(101)}), 32, 32, members)
    assert refused.value.detail["limit"] == "NABLA_MAX_LEAVES"


def test_a_body_of_many_tiny_values_is_a_413_over_http(make_client: Any) -> None:
    client = make_client(max_request_bytes=40 * 100_000)
    response = post(client, "/v1/value", {"function": expr("x", ["x"]), "args": [[0] * 200_000]})
    assert_error(response, 413, "limit_exceeded", "NABLA_MAX_REQUEST_BYTES")
