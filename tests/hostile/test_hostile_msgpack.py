"""Hostile MessagePack bodies (Content-Type: application/msgpack, service.msgpack_codec).

MessagePack declares every length before its data, and a decoder that trusts them allocates
first: a few bytes can declare an array of 2**32 items, a thousand times nested. Every body here
must be refused before anything it declares is built, by the same rules as a JSON body: malformed
data (truncated, lengths the body does not back, extension types, non-string map keys, bytes
after the object, invalid UTF-8) is a 400; nesting, values, map entries and array sizes meet the
JSON limits (413 naming the setting); a `$array` leaf whose bin data does not fit its shape and
dtype is a 422 at its path, as its base64 form is. Answers in MessagePack (Accept) are checked
too, and an Accept the server cannot satisfy is a 406.

The server accepts bodies up to 12 MiB (the default) and the suite's other limits
(`_hostile.BASE_ENV`: 128 MiB predicted memory per request, 16 MiB answers, 5 s)."""

from __future__ import annotations

from typing import Any

import msgpack
import numpy as np
import pytest
from _hostile import (
    ARRAY,
    BAD_ARGUMENT,
    BAD_REQUEST,
    BODY,
    DEPTH,
    LEAVES,
    REQUEST,
    RESPONSE,
    TIMEOUT,
    Case,
    E,
    Expect,
    HostileServer,
    MiB,
    cases,
    limit,
    ok,
    req,
    value_is,
)

pytestmark = pytest.mark.slow

SERVER_ENV = {"NABLA_MAX_BODY_BYTES": str(12 * MiB)}
MSGPACK = "application/msgpack"
SENT_AS_MSGPACK = {"content-type": MSGPACK}
NOT_ACCEPTABLE = Expect(errors=frozenset({(406, "not_acceptable")}))
X = E("sum(x ** 2)")


def mp(obj: Any) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)


def leaf(dtype: str, shape: list[int], data: Any) -> dict[str, Any]:
    return {"$array": {"dtype": dtype, "shape": shape, "data": data}}


def case(case_id: str, body: Any, expect: Expect, path: str = "/v1/value", **headers: str) -> Case:
    return Case(f"msgpack_{case_id}", path, body if isinstance(body, bytes) or callable(body) else mp(body), expect,
                headers={**SENT_AS_MSGPACK, **headers})


GOOD = mp(req(X, leaf("float64", [2], np.array([1.0, 2.0]).tobytes())))
MAP_A = b"\x81\xa1a"  # {"a": ...}: a one-entry map whose value follows


def malformed_cases() -> list[Case]:
    bodies = {
        "empty": b"",
        "trailing_byte": GOOD + b"\x00",
        "two_documents": GOOD + GOOD,
        "unused_type_byte": MAP_A + b"\xc1",
        "fixext": MAP_A + b"\xd4\x01\x00",
        "ext8": MAP_A + b"\xc7\x02\x05ab",
        "timestamp": MAP_A + b"\xd6\xff\x00\x00\x00\x00",
        "integer_key": b"\x81\x01\xa1x",
        "negative_key": b"\x81\xff\xa1x",
        "bin_key": b"\x81\xc4\x01a\xa1x",
        "nil_key": b"\x81\xc0\xa1x",
        "map_key": b"\x81\x80\xa1x",
        "float_key": b"\x81\xcb" + b"\x00" * 8 + b"\xa1x",
        "invalid_utf8_value": MAP_A + b"\xa2\xff\xfe",
        "invalid_utf8_key": b"\x81\xa2\xc3\x28\x01",
        "lone_surrogate": MAP_A + b"\xa3\xed\xa0\x80",
        "top_level_array": mp([1, 2]),
        "top_level_nil": b"\xc0",
        "top_level_bin": mp(b"{}"),
        "a_json_body": b'{"function": {"expr": "x", "params": ["x"]}, "args": [1.0]}',
        # lengths the body does not back: refused by the scan, before msgpack reserves anything
        "array32_of_4e9": b"\xdd\xff\xff\xff\xff",
        "map32_of_4e9": b"\xdf\xff\xff\xff\xff",
        "array32_of_4e9_in_a_map": MAP_A + b"\xdd\xff\xff\xff\xff" + b"\x00" * 64,
        "bin32_of_4_gib": MAP_A + b"\xc6\xff\xff\xff\xff" + b"\x00" * 64,
        "str32_of_4_gib": MAP_A + b"\xdb\xff\xff\xff\xff",
        "bin_longer_than_the_body": mp(req(X, leaf("float64", [2], b"\x00" * 16)))[:-4],
        "nested_arrays_of_65535": b"\x91" + b"\xdd\x00\x00\xff\xff" * 2000,
        "nested_arrays_of_4e9": MAP_A + b"\xdd\xff\xff\xff\xff" * 10_000,
        "length_cut_short": MAP_A + b"\xdc\x00",
        "double_cut_short": MAP_A + b"\xcb\x00\x00\x00",
    }
    out = [case(k, v, BAD_REQUEST) for k, v in bodies.items()]
    out += [case(f"truncated_at_{n}", GOOD[:n], BAD_REQUEST) for n in (1, 2, 10, len(GOOD) // 2, len(GOOD) - 1)]
    return out


def leaf_cases() -> list[Case]:
    bad = {
        "short_data": leaf("float64", [3], b"\x00" * 16),
        "long_data": leaf("float64", [3], b"\x00" * 32),
        "odd_byte_count": leaf("float32", [2], b"\x00" * 7),
        "unknown_dtype": leaf("complex128", [1], b"\x00" * 16),
        "object_dtype": leaf("object", [1], b"\x00" * 8),
        "shape_not_a_list": leaf("float64", 3, b"\x00" * 24),
        "negative_shape": leaf("float64", [-1], b""),
        "float_shape": leaf("float64", [2.0], b"\x00" * 16),
        "data_an_integer": leaf("float64", [1], 7),
        "data_a_map": leaf("float64", [1], {"a": 1}),
        "extra_key": {"$array": {"dtype": "float64", "shape": [1], "data": b"\x00" * 8, "more": 1}},
    }
    out = [case(f"leaf_{k}", req(X, v), BAD_ARGUMENT) for k, v in bad.items()]
    # bin anywhere else is refused by the scan: it could reach code that expects JSON's types
    elsewhere = {
        "bin_outside_a_leaf": req(X, {"w": b"\x00" * 8}),
        "bin_in_a_list": req(X, [1.0, b"\x00"]),
        "bin_expression": req({"expr": b"sum(x ** 2)", "params": ["x"]}, 1.0),
        "bin_param_name": req({"expr": "sum(x ** 2)", "params": [b"x"]}, 1.0),
        "bin_graph_constant": req({"graph": {"params": ["x"], "constants": {"c": leaf("float64", [1], bytes(8))}}},
                                  1.0),
        "bin_option": {**req(X, 1.0), "dtype": b"float64"},
        "bin_model_name": {"name": b"m", "function": X},
    }
    out += [case(k, v, BAD_REQUEST, "/v1/models" if k == "bin_model_name" else "/v1/value")
            for k, v in elsewhere.items()]
    return out


def limit_cases() -> list[Case]:
    def many(count: int, item: bytes) -> Any:
        return lambda: MAP_A[:1] + b"\xa4args\x91\xdd" + count.to_bytes(4, "big") + item * count

    return [
        case("nested_100k", lambda: b"\x81\xa4args" + b"\x91" * 100_000 + b"\xc0", limit(DEPTH)),
        case("nested_in_a_run", lambda: b"\x81\xa4args" + b"\x91" * 200 + b"\xdc\x00\x10" + b"\x01" * 16,
             limit(DEPTH)),
        case("map_of_1e6_keys", lambda: b"\x81\xa4args\x91\xdf" + (10**6).to_bytes(4, "big")
             + b"".join(b"\xa7k%06d\xc0" % i for i in range(10**6)), limit(LEAVES)),
        case("12e6_small_integers", many(12_000_000, b"\x01"), limit(REQUEST)),
        case("10e6_empty_arrays", many(10_000_000, b"\x90"), limit(REQUEST)),
        case("10e6_empty_maps", many(10_000_000, b"\x80"), limit(REQUEST)),
        case("leaf_over_the_element_limit", req(X, leaf("float64", [20_000_000], b"\x00" * 8)), limit(ARRAY)),
        case("leaf_of_2_80_elements", req(X, leaf("float32", [2**40, 2**40], b"")), limit(ARRAY)),
        case("body_over_12_mib", lambda: mp(req(X, leaf("uint8", [13 * MiB], bytes(13 * MiB)))), limit(BODY)),
        # a list of mixed scalars is scanned one value at a time: 3e6 of them still answer in time
        case("3e6_mixed_numbers", lambda: mp(req(E("sum(x)"), [1, 300] * 1_500_000)),
             ok(value_is(451_500_000.0)) | TIMEOUT | limit(REQUEST)),
    ]


def accept_cases() -> list[Case]:
    grad = req(X, [1.0, 2.0])
    return [
        case("accept_html", grad, NOT_ACCEPTABLE, "/v1/grad", accept="text/html"),
        case("accept_msgpack_q0", grad, NOT_ACCEPTABLE, "/v1/grad", accept="application/msgpack;q=0"),
        case("accept_long", grad, NOT_ACCEPTABLE | Expect(errors=frozenset({(400, None), (431, None)}), protocol=True),
             "/v1/grad", accept="text/plain, " * 500 + "text/csv"),
        case("accept_many_q", grad, ok(value_is([2.0, 4.0], "grad")), "/v1/grad",
             accept=", ".join(f"application/json;q=0.{i % 10}" for i in range(500))),
        case("accept_garbage_q", grad, ok(value_is([2.0, 4.0], "grad")), "/v1/grad", accept="*/*;q=NaN;q=;;,"),
        case("graph_route", grad, Expect(errors=frozenset({(415, "unsupported_media_type")})), "/v1/graph"),
        # a large bin leaf answered as JSON: base64 fits the answer limit, JSON numbers do not
        case("million_as_base64", lambda: mp({**req(X, leaf("float64", [10**6], bytes(8 * 10**6))),
                                              "encoding": "base64"}), ok(), "/v1/grad"),
        case("million_as_json", lambda: mp(req(X, leaf("float64", [10**6], bytes(8 * 10**6)))), limit(RESPONSE),
             "/v1/grad"),
    ]


CASES = cases(malformed_cases(), leaf_cases(), limit_cases(), accept_cases())


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_hostile_msgpack_body(server: HostileServer, case: Case) -> None:
    server.check(case)


@pytest.mark.parametrize("dtype", ["float64", "float32", "int32", "bool"])
def test_a_million_values_travel_as_bin_both_ways(server: HostileServer, dtype: str) -> None:
    """A MessagePack answer (not the JSON contract `judge` checks): the gradient's exact bytes."""
    x = (np.random.default_rng(7).normal(size=10**6) * 10).astype(dtype)
    body = mp(req(E("x * 2" if dtype != "bool" else "x"), leaf(dtype, [10**6], x.tobytes())))
    reply = server.send(Case(f"msgpack_million_{dtype}", "/v1/value", body, ok(),
                             headers={**SENT_AS_MSGPACK, "accept": MSGPACK}))
    assert reply.status == 200 and reply.headers["content-type"] == MSGPACK, reply.summary()
    value = msgpack.unpackb(reply.content)["value"]["$array"]
    expected = x * 2 if dtype != "bool" else x
    assert (value["dtype"], value["shape"]) == (expected.dtype.name, [10**6])
    assert value["data"] == expected.tobytes()


def test_server_stayed_healthy(server: HostileServer, assert_healthy: Any) -> None:
    assert_healthy(server)
