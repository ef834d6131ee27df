"""Arrays in JSON, as every part of Nabla writes and reads them.

One array travels in one of two forms:

- nested lists of numbers (booleans for bool arrays), with NaN and the infinities written as the
  strings "NaN", "Infinity" and "-Infinity" (strict JSON has no tokens for them);
- a base64 leaf, `{"$array": {"dtype": "float32", "shape": [2, 3], "data": "<base64>"}}`: the
  array's little-endian bytes, exact and fast to decode (and the only form that keeps an
  integer dtype, since plain JSON numbers carry none).

Binary formats (the service's MessagePack bodies) carry the same leaf with the raw bytes as
`data` (`binary_leaf`, `from_bytes`).

This package holds that format and nothing else: the engine's graph documents
(engine.serialize), the service's request and response bodies (service.json_trees) and the
Python client (client._wire) all use it. It depends on NumPy and pybase64 only, so the client,
which must not depend on the engine, can import it as freely as the engine does. pybase64 (SIMD
base64 in C) rather than the standard library's: a million float64 decode, validated, in about
0.7 ms against 26 ms, and encode in 0.4 ms against 8 ms, on the development machine
(benchmarks/codec_bench.py). It refuses what the standard library's strict decoder refuses, and
also padding after a complete group ("AAAA="), which RFC 4648 does not allow. Each caller keeps
its own limits and error types: the errors here say what is wrong with the data, the caller says
where.
"""

from __future__ import annotations

import math
import sys
from typing import Any

import numpy as np
import pybase64

__all__ = [
    "DTYPES", "LENIENT_SPECIAL_FLOATS", "SPECIAL_FLOATS", "ArrayCodecError", "ByteCountMismatch", "ComplexNotSupported",
    "InvalidBase64", "NestedTooDeep", "UnknownSpecialFloat", "base64_bytes", "base64_leaf", "binary_leaf",
    "encode_array", "from_base64", "from_bytes", "little_endian_bytes", "nested_numbers", "replace_special_floats",
    "special_name",
]

# The dtypes an array may have on the wire.
DTYPES = ("float16", "float32", "float64", "int8", "int16", "int32", "int64", "uint8", "uint16",
          "uint32", "uint64", "bool")

# How NaN and the infinities are spelled in nested lists.
SPECIAL_FLOATS: dict[str, float] = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}
# The spellings the service also accepts in requests (as NumPy prints them); it always writes the
# canonical ones.
LENIENT_SPECIAL_FLOATS: dict[str, float] = {**SPECIAL_FLOATS, "nan": math.nan, "inf": math.inf, "-inf": -math.inf}


class ArrayCodecError(ValueError):
    """Data that is not an array in this format."""


class InvalidBase64(ArrayCodecError):
    """The data of a base64 leaf is not a base64 string."""


class ByteCountMismatch(ArrayCodecError):
    """A base64 leaf's data has `actual` bytes where its shape and dtype need `expected`."""

    def __init__(self, actual: int, expected: int) -> None:
        super().__init__(f"{actual} bytes of data where {expected} are needed")
        self.actual = actual
        self.expected = expected


class UnknownSpecialFloat(ArrayCodecError):
    """A string inside nested numbers that names no special float (`value` is the string)."""

    def __init__(self, value: str) -> None:
        super().__init__(f"unexpected string {value[:40]!r} in numeric data")
        self.value = value


class ComplexNotSupported(ArrayCodecError):
    """A complex array: the wire has no complex dtype (send the real and imaginary parts as two
    real arrays)."""

    def __init__(self, dtype: Any) -> None:
        super().__init__(f"an array of dtype {np.dtype(dtype).name} is complex, and arrays on the wire are real: "
                         "send its real and imaginary parts as two arrays")
        self.dtype = np.dtype(dtype)


class NestedTooDeep(ArrayCodecError):
    """Nested lists deeper than the caller allows (`depth` is the first level past it)."""

    def __init__(self, depth: int) -> None:
        super().__init__(f"data nested {depth} levels deep")
        self.depth = depth


def special_name(x: float) -> str:
    """The JSON spelling of a NaN or an infinity."""
    return "NaN" if math.isnan(x) else ("Infinity" if x > 0 else "-Infinity")


def nested_numbers(value: Any) -> Any:
    """An array as nested lists (a number for a 0-d array), special floats as their names."""
    value = np.asarray(value)
    if value.dtype.kind == "c":
        raise ComplexNotSupported(value.dtype)
    if value.dtype.kind == "f" and not np.all(np.isfinite(value)):
        # Vectorised: the special values become strings in an object array, then one tolist().
        obj = value.astype(object)
        obj[np.isnan(value)] = "NaN"
        obj[np.isposinf(value)] = "Infinity"
        obj[np.isneginf(value)] = "-Infinity"
        return obj.tolist()
    return value.tolist()


def little_endian_bytes(value: Any) -> np.ndarray:
    """The array's data as the flat little-endian bytes a base64 leaf carries (a uint8 view)."""
    value = np.asarray(value)
    return np.ascontiguousarray(value, dtype=value.dtype.newbyteorder("<")).reshape(-1).view(np.uint8)


def base64_bytes(value: Any, start: int = 0, stop: int | None = None) -> bytes:
    """The base64 (ASCII bytes) of the array's little-endian bytes `start:stop`, all of them by
    default. A writer that checks a deadline between pieces takes them a multiple of 3 bytes at a
    time, so that the pieces concatenate to the whole."""
    return pybase64.b64encode(little_endian_bytes(value)[start:stop])


def base64_leaf(value: Any) -> dict[str, Any]:
    """An array as a `{"$array": {dtype, shape, data}}` leaf."""
    value = np.asarray(value)
    if value.dtype.kind == "c":
        raise ComplexNotSupported(value.dtype)
    return {"$array": {"dtype": value.dtype.name, "shape": list(value.shape),
                       "data": base64_bytes(value).decode("ascii")}}


def binary_leaf(value: Any) -> dict[str, Any]:
    """An array as a `{"$array": {dtype, shape, data}}` leaf whose data is its little-endian bytes
    themselves (a memoryview: no copy for a contiguous array on a little-endian machine), for
    binary formats."""
    value = np.asarray(value)
    if value.dtype.kind == "c":
        raise ComplexNotSupported(value.dtype)
    return {"$array": {"dtype": value.dtype.name, "shape": [int(n) for n in value.shape],
                       "data": memoryview(little_endian_bytes(value))}}


def encode_array(value: Any, encoding: str = "json") -> Any:
    """An array in either form: `encoding` "json" (nested lists) or "base64" (a leaf)."""
    return base64_leaf(value) if encoding == "base64" else nested_numbers(value)


def from_base64(data: Any, shape: list[int], dtype: Any) -> np.ndarray:
    """The array a base64 leaf describes. Raises InvalidBase64 or ByteCountMismatch; NumPy's own
    ValueError for a shape it cannot build (the caller has checked the shape's size)."""
    dtype = np.dtype(dtype)
    try:
        raw = pybase64.b64decode(data, validate=True)
    except (ValueError, TypeError):
        raise InvalidBase64("data is not valid base64") from None
    expected = math.prod(shape) * dtype.itemsize  # exact: np.prod in int64 wraps around
    if len(raw) != expected:
        raise ByteCountMismatch(len(raw), expected)
    return np.frombuffer(raw, dtype=dtype.newbyteorder("<")).astype(dtype).reshape(shape)


def from_bytes(data: Any, shape: list[int], dtype: Any) -> np.ndarray:
    """The array a binary leaf describes, a read-only view of `data` (bytes or any buffer; no copy
    on a little-endian machine). Raises ByteCountMismatch; NumPy's own ValueError for a shape it
    cannot build (the caller has checked the shape's size)."""
    dtype = np.dtype(dtype)
    actual = memoryview(data).nbytes
    expected = math.prod(shape) * dtype.itemsize  # exact: np.prod in int64 wraps around
    if actual != expected:
        raise ByteCountMismatch(actual, expected)
    little = np.frombuffer(data, dtype=dtype.newbyteorder("<"))
    # The native dtype, not "<f4": equal, but C code reading the buffer's format sees "<f", not "f".
    native = little.view(dtype) if sys.byteorder == "little" else little.astype(dtype)
    return native.reshape(shape)


def replace_special_floats(data: Any, names: dict[str, float] = SPECIAL_FLOATS, max_depth: int | None = None,
                           depth: int = 0) -> Any:
    """Nested lists with the special floats' names replaced by their values. Raises
    UnknownSpecialFloat for any other string, NestedTooDeep for lists nested past `max_depth`."""
    if isinstance(data, str):
        if data in names:
            return names[data]
        raise UnknownSpecialFloat(data)
    if isinstance(data, list):
        if max_depth is not None and depth >= max_depth:
            raise NestedTooDeep(depth + 1)
        return [replace_special_floats(d, names, max_depth, depth + 1) for d in data]
    return data
