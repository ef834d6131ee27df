"""array_codec: the one JSON form of an array, shared by the engine's graph documents, the
service's bodies and the client (which must not depend on the engine).

An array is nested lists of numbers with NaN and the infinities spelled "NaN", "Infinity",
"-Infinity", or a base64 leaf of its little-endian bytes (binary bodies carry the same leaf with
the bytes themselves). Round trips are exact; malformed data raises the codec's own errors,
which each caller turns into its own with a location.
"""

from __future__ import annotations

import base64
import json

import numpy as np
import orjson
import pytest

from array_codec import (
    DTYPES,
    LENIENT_SPECIAL_FLOATS,
    SPECIAL_FLOATS,
    ByteCountMismatch,
    InvalidBase64,
    NestedTooDeep,
    UnknownSpecialFloat,
    base64_bytes,
    base64_leaf,
    binary_leaf,
    encode_array,
    from_base64,
    from_bytes,
    nested_numbers,
    replace_special_floats,
    special_name,
)
from client import _wire
from engine import serialize
from service import json_trees

SPECIAL = np.array([[1.5, np.nan, -np.inf], [np.inf, -0.0, 2.0**-1074]])


def test_nested_numbers_round_trip_through_strict_json() -> None:
    text = json.dumps(nested_numbers(SPECIAL), allow_nan=False)  # strict JSON: no NaN tokens
    assert json.loads(text) == [[1.5, "NaN", "-Infinity"], ["Infinity", -0.0, 5e-324]]
    back = np.asarray(replace_special_floats(json.loads(text)))
    np.testing.assert_array_equal(back, SPECIAL)
    assert nested_numbers(np.float32(0.25)) == 0.25 and nested_numbers(np.array([True])) == [True]
    assert [special_name(v) for v in (np.nan, np.inf, -np.inf)] == list(SPECIAL_FLOATS)


@pytest.mark.parametrize("dtype", DTYPES)
def test_base64_leaves_round_trip_every_dtype_bit_for_bit(dtype: str) -> None:
    rng = np.random.default_rng(0)
    value = (rng.uniform(-100, 100, (2, 3)) if np.dtype(dtype).kind != "b" else rng.uniform(-1, 1, (2, 3)) > 0)
    value = value.astype(dtype)
    leaf = base64_leaf(value)
    assert set(leaf) == {"$array"} and leaf["$array"]["dtype"] == dtype and leaf["$array"]["shape"] == [2, 3]
    back = from_base64(leaf["$array"]["data"], leaf["$array"]["shape"], leaf["$array"]["dtype"])
    assert back.dtype == value.dtype
    np.testing.assert_array_equal(back, value)
    # the bytes are little-endian whatever the array's own byte order
    swapped = value.astype(value.dtype.newbyteorder(">"))
    assert base64_leaf(swapped) == leaf or value.dtype.itemsize == 1


# Strings the standard library's strict decoder (base64.b64decode(validate=True)) refuses: the
# codec's decoder (pybase64, for speed) refuses these too, and reads every well-formed string as
# the standard library does.
MALFORMED_BASE64 = ["AAA", "AAAAA", "AA=A", "A===", "====", "AA==AA==", "AA AA===", "AAA\nA", " AAAA", "AAAA ",
                    "AA-_", "AA+/\x00", "AAA\u00e9", "AA\tA", "AAA=\n", "=AAA", "AA===", "YWE=="]
# Padding after a complete group, which RFC 4648 does not allow and Python 3.11's decoder ignores:
# refused too.
EXCESS_PADDING = ["AAAA=", "AAAA==", "AAAA===", "AAAA===="]


@pytest.mark.parametrize("text", MALFORMED_BASE64)
def test_base64_the_standard_library_refuses_is_refused(text: str) -> None:
    with pytest.raises(ValueError):
        base64.b64decode(text, validate=True)
    with pytest.raises(InvalidBase64):
        from_base64(text, [len(text) * 3 // 4], "uint8")


@pytest.mark.parametrize("text", EXCESS_PADDING)
def test_base64_with_padding_after_a_complete_group_is_refused(text: str) -> None:
    with pytest.raises(InvalidBase64):
        from_base64(text, [3], "uint8")


def test_base64_reads_and_writes_as_the_standard_library_does() -> None:
    rng = np.random.default_rng(7)
    for size in [0, 1, 2, 3, 4, 5, 63, 64, 65, 1000, 3 * 65536 + 2]:
        data = rng.integers(0, 256, size, dtype=np.uint8)
        text = base64.b64encode(data.tobytes())
        assert base64_bytes(data) == text
        assert base64_leaf(data)["$array"]["data"] == text.decode()
        np.testing.assert_array_equal(from_base64(text.decode(), [size], "uint8"), data)
        # pieces a multiple of 3 bytes long concatenate to the whole (service.json_trees writes so)
        pieces = b"".join(base64_bytes(data, start, start + 3 * 4096) for start in range(0, size, 3 * 4096))
        assert pieces == text


def test_a_base64_answer_of_many_pieces_is_the_arrays_base64() -> None:
    # over one piece (CHUNK_ELEMENTS float64 values) the service writes the data in several
    value = np.random.default_rng(3).standard_normal(json_trees.CHUNK_ELEMENTS * 3 + 5)
    leaf = orjson.loads(json_trees.dumps({"grad": value}, "base64"))["grad"]["$array"]
    assert leaf["data"] == base64.b64encode(value.astype("<f8").tobytes()).decode()
    np.testing.assert_array_equal(from_base64(leaf["data"], leaf["shape"], leaf["dtype"]), value)


def test_malformed_data_raises_the_codecs_errors() -> None:
    with pytest.raises(InvalidBase64):
        from_base64("not base64!", [1], "float32")
    with pytest.raises(InvalidBase64):
        from_base64(12, [1], "float32")
    with pytest.raises(ByteCountMismatch) as info:
        from_base64(base64_leaf(np.zeros(2, np.float32))["$array"]["data"], [3], "float32")
    assert (info.value.actual, info.value.expected) == (8, 12)
    with pytest.raises(UnknownSpecialFloat) as unknown:
        replace_special_floats([1.0, "nan"])
    assert unknown.value.value == "nan"
    assert np.isnan(replace_special_floats([1.0, "nan"], LENIENT_SPECIAL_FLOATS)[1])
    with pytest.raises(NestedTooDeep) as deep:
        replace_special_floats([[[1.0]]], max_depth=2)
    assert deep.value.depth == 3
    for error in (InvalidBase64, ByteCountMismatch, UnknownSpecialFloat, NestedTooDeep):
        assert issubclass(error, ValueError)


def test_engine_service_and_client_write_and_read_the_same_forms() -> None:
    ints = np.arange(6, dtype=np.int16).reshape(2, 3)
    assert serialize.encode_array is encode_array
    # the service's streaming writer produces exactly the codec's forms
    assert json.loads(json_trees.dumps({"a": SPECIAL, "b": ints})) == {"a": nested_numbers(SPECIAL),
                                                                       "b": nested_numbers(ints)}
    assert orjson.loads(json_trees.dumps(ints, "base64")) == base64_leaf(ints)
    # the client sends small float arrays as nested numbers, integers as base64 leaves
    assert _wire.encode_leaf(SPECIAL) == nested_numbers(SPECIAL)
    assert _wire.encode_leaf(ints) == base64_leaf(ints)
    for form in (nested_numbers(SPECIAL), base64_leaf(SPECIAL)):
        np.testing.assert_array_equal(_wire.decode_leaf(form), SPECIAL)
    # and the engine reads both in a graph document's constants
    for form in ({"dtype": "float64", "shape": [2, 3], "data": nested_numbers(SPECIAL)}, base64_leaf(SPECIAL)):
        np.testing.assert_array_equal(serialize.decode_array(form, "constants.c"), SPECIAL)


@pytest.mark.parametrize("dtype", DTYPES)
def test_binary_leaves_are_the_base64_leaves_with_raw_bytes(dtype: str) -> None:
    rng = np.random.default_rng(1)
    value = (rng.uniform(-100, 100, (3, 2)) if np.dtype(dtype).kind != "b" else rng.uniform(-1, 1, (3, 2)) > 0)
    value = value.astype(dtype).astype(np.dtype(dtype).newbyteorder(">"))[::-1]  # big-endian, not contiguous
    leaf = binary_leaf(value)["$array"]
    assert (leaf["dtype"], leaf["shape"]) == (dtype, [3, 2])
    assert bytes(leaf["data"]) == base64.b64decode(base64_leaf(value)["$array"]["data"])
    back = from_bytes(bytes(leaf["data"]), [3, 2], dtype)
    np.testing.assert_array_equal(back, value)
    # a view of the bytes, in the native dtype (C code reading the buffer sees its plain format)
    assert not back.flags.writeable and back.dtype == np.dtype(dtype) and back.dtype.isnative
    with pytest.raises(ByteCountMismatch) as info:
        from_bytes(bytes(leaf["data"])[:-1], [3, 2], dtype)
    assert (info.value.actual, info.value.expected) == (6 * np.dtype(dtype).itemsize - 1, 6 * np.dtype(dtype).itemsize)


def test_the_client_sends_binary_leaves_when_asked_and_reads_them_back() -> None:
    big = np.arange(2000, dtype=np.float32)
    assert _wire.encode_leaf(big) == base64_leaf(big)
    with _wire.binary_arrays(True):
        leaf = _wire.encode_leaf(big)
        assert _wire.encode_leaf(SPECIAL) == nested_numbers(SPECIAL)  # small floats stay numbers
    assert bytes(leaf["$array"]["data"]) == big.tobytes()
    assert _wire.encode_leaf(big) == base64_leaf(big)  # only inside the block
    back = _wire.decode_leaf({"$array": {**leaf["$array"], "data": bytes(leaf["$array"]["data"])}})
    assert back.flags.writeable  # handed to the caller: a copy, not a view of the answer
    np.testing.assert_array_equal(back, big)
