"""Large arrays as JSON lists: the fast paths of parsing, decoding and writing keep every bit.

A million float64 values printed in full have 17 significant digits, and often 19 or more digits
after the decimal point ("0.0072113596587564995"); such bodies are parsed by orjson, which rounds
decimals of any length correctly, and only integers that may not fit 64 bits (and numbers with
19-digit integer parts or exponents) take the standard library's exact parser. Lists of numbers
are checked for nesting and converted without a Python step per number; answers are written
by orjson in float64's shortest round-trip form, NaN and infinities as strings.
"""

from __future__ import annotations

import json
import math

import numpy as np
import orjson
import pytest

from service import admission, pipeline
from service.errors import LimitExceededError
from service.json_trees import TreeBudget, decode_tree, dumps
from service.pipeline import parse_json

BUDGET = admission.Budget(10**7, 2**27, 2**29)


@pytest.fixture
def exact_parser_calls(monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    """The bodies handed to the standard library's parser (the slow, exact path)."""
    calls: list[bytes] = []
    slow = pipeline._parse_slowly

    def recorded(raw: bytes, *args: object) -> object:
        calls.append(raw)
        return slow(raw, *args)

    monkeypatch.setattr(pipeline, "_parse_slowly", recorded)
    return calls


def test_full_precision_doubles_take_the_fast_parser_and_keep_every_bit(exact_parser_calls: list[bytes]) -> None:
    rng = np.random.default_rng(16)
    x = np.concatenate([rng.normal(size=20_000), rng.normal(size=5_000) * 1e-9, rng.normal(size=5_000) * 1e300,
                        [5e-324, -2.2250738585072014e-308, 1.7976931348623157e308, 0.1, 1 / 3]])
    text = orjson.dumps({"args": [x]}, option=orjson.OPT_SERIALIZE_NUMPY)
    assert b"0" * 19 in text.translate(bytes(48 if chr(i).isdigit() else 32 for i in range(256)))
    parsed = parse_json(text)
    assert not exact_parser_calls
    np.testing.assert_array_equal(np.asarray(parsed["args"][0]), x)
    # longer decimals than any double prints are rounded correctly too
    for digits in ("0.1000000000000000055511151231257827021181583404541015625", "2.47032822920623272e-324",
                   "0.00000000000000000000000000001234567890123456789012345678901"):
        assert parse_json(f"[{digits}]".encode()) == [float(digits)]
    assert not exact_parser_calls


@pytest.mark.parametrize("text", ["18446744073709551616", "-9223372036854775809", "123456789012345678901234",
                                  "12345678901234567890.5", "1e0000000000000000000005", "2.5E-00000000000000000001"])
def test_numbers_with_19_digits_outside_a_fraction_take_the_exact_parser(exact_parser_calls: list[bytes],
                                                                          text: str) -> None:
    for body in (f"[{text}]", f'{{"a": [1, {text}]}}', text):
        value = parse_json(body.encode())
        assert json.dumps(value) == json.dumps(json.loads(body))  # integers stay exact integers
    assert len(exact_parser_calls) == 3


def test_values_and_members_are_counted_only_when_a_body_could_be_over_the_bound() -> None:
    small = admission.Budget(10**7, 2**27, 40 * 100, max_json_members=100)
    body = b'{"a": [' + b",".join([b"1"] * 300) + b'], "b": {"c": 1}}'
    assert pipeline._json_counts(body, small) == (body.count(b",") + 3 + 1, 3)
    assert pipeline._json_counts(body, BUDGET) == (0, 0)  # 600 bytes cannot hold 100,000 members
    with pytest.raises(LimitExceededError):
        admission.check_parse(*pipeline._json_counts(b"[" + b"1," * 2000 + b"1]", small), 4003, small)


def test_a_million_numbers_decode_into_one_float64_array() -> None:
    x = np.random.default_rng(1).normal(size=1_000_000)
    body = parse_json(orjson.dumps({"args": [x]}, option=orjson.OPT_SERIALIZE_NUMPY))
    arr = decode_tree(body["args"][0], np.dtype("float64"), "x", TreeBudget(10**7, 2 * 10**7, 32))
    assert arr.dtype == np.float64 and arr.shape == x.shape
    np.testing.assert_array_equal(arr, x)


def test_nesting_hidden_behind_numbers_is_still_found() -> None:
    deep: object = [1.0]
    for _ in range(40):
        deep = [deep]
    with pytest.raises(LimitExceededError) as refused:
        decode_tree([1.0] * 10_000 + [deep], np.dtype("float64"), "x", TreeBudget(10**7, 2 * 10**7, 32))
    assert refused.value.detail["limit"] == "NABLA_MAX_DEPTH"


def test_answers_are_shortest_round_trip_numbers_with_special_floats_spelled() -> None:
    x = np.random.default_rng(2).normal(size=200_000)
    x[150_000] = math.nan
    x[150_001] = -math.inf
    written = json.loads(dumps({"grad": x, "f32": np.float32([1 / 3, 2.5])}))
    assert written["grad"][150_000:150_002] == ["NaN", "-Infinity"]
    finite = np.delete(np.arange(x.size), [150_000, 150_001])
    np.testing.assert_array_equal(np.asarray(written["grad"], dtype=object)[finite].astype(float), x[finite])
    assert written["f32"] == [float(np.float32(1 / 3)), 2.5]
    assert dumps({"g": x[:1000]}) == orjson.dumps({"g": x[:1000]}, option=orjson.OPT_SERIALIZE_NUMPY)
