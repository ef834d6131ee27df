"""Pytrees in JSON.

Request side: a number, a boolean or a rectangular nested list of them is an array leaf; an
object is a dict; any other list is a list; null is None; `{"$array": {"dtype", "shape",
"data": "<base64 of little-endian bytes>"}}` is an array leaf of an explicit dtype (the fast
path for large arrays, and the way to send integers). JSON numbers become the request's float
dtype. NaN and infinities are the strings "NaN", "Infinity" and "-Infinity" inside numeric
arrays; base64 carries them bit for bit. A MessagePack body (service.msgpack_codec) decodes to
the same trees, with a leaf's data as bytes: those are viewed in place, not copied.

A large list of numbers costs no Python step per number: the depth check collects its
elements' types at C speed, or converts it to an array outright (which decoding then takes),
and answers write float arrays with orjson, a block at a time.

Both directions work in chunks with a deadline check between them: a large array is converted
(or written) a block of rows at a time, so one request never holds the interpreter for long and
a request past its deadline stops inside decoding or encoding, not after it.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import orjson

from array_codec import (
    DTYPES,
    LENIENT_SPECIAL_FLOATS,
    ArrayCodecError,
    ByteCountMismatch,
    InvalidBase64,
    base64_bytes,
    encode_array,
    from_base64,
    from_bytes,
    little_endian_bytes,
    replace_special_floats,
    special_name,
)
from engine.array import Array
from engine.core import check_deadline
from engine.plan import errors_ignored
from service.errors import InvalidArgument, LimitExceededError
from service.model_schema import is_leaf, join

# Elements converted or written between two deadline checks (a few milliseconds of work).
CHUNK_ELEMENTS = 1 << 16
MAX_DIMENSIONS = 32


class TreeBudget:
    """Counts array elements, leaves and bytes across one request."""

    def __init__(self, max_array_elements: int, max_total_elements: int, max_depth: int,
                 total_setting: str = "NABLA_MAX_TOTAL_ELEMENTS", max_leaves: int = 10_000,
                 max_dimensions: int = MAX_DIMENSIONS) -> None:
        self.max_array = max_array_elements
        self.max_total = max_total_elements
        self.total_setting = total_setting  # the setting named when the total is over
        self.max_depth = max_depth
        self.max_leaves = max_leaves
        self.max_dimensions = max_dimensions
        self.total = 0
        self.leaves = 0
        self.bytes = 0
        # Large numeric lists already converted by the depth check, by id, for decoding to take.
        self.converted: dict[int, np.ndarray] = {}

    def take(self, size: int, where: str) -> None:
        if size > self.max_array:
            raise LimitExceededError(f"{where}: an array of {size} elements is over the limit of "
                                     f"{self.max_array} (NABLA_MAX_ARRAY_ELEMENTS)",
                                     {"path": where, "limit": "NABLA_MAX_ARRAY_ELEMENTS", "requested": size,
                                      "maximum": self.max_array})
        self.total += size
        if self.total > self.max_total:
            raise LimitExceededError(f"{where}: the request's arrays hold {self.total} elements, over the limit "
                                     f"of {self.max_total} ({self.total_setting})",
                                     {"path": where, "limit": self.total_setting, "requested": self.total,
                                      "maximum": self.max_total})
        self.node(where)
        self.bytes += 8 * size

    def node(self, where: str) -> None:
        """One pytree node: an array leaf, or a null, an object or an empty list (no data, but each
        costs tracing time all the same)."""
        self.leaves += 1
        if self.leaves > self.max_leaves:
            raise LimitExceededError(f"{where}: the request has more than {self.max_leaves} pytree nodes "
                                     "(NABLA_MAX_LEAVES); send large data as arrays, not as many small values",
                                     {"path": where, "limit": "NABLA_MAX_LEAVES", "requested": self.leaves,
                                      "maximum": self.max_leaves})


def _depth_ok(obj: Any, max_depth: int, where: str, converted: dict[int, np.ndarray]) -> None:
    stack = [(obj, 0)]
    while stack:
        node, depth = stack.pop()
        if depth > max_depth:
            raise LimitExceededError(f"{where}: nested more than {max_depth} levels deep (NABLA_MAX_DEPTH)",
                                     {"path": where, "limit": "NABLA_MAX_DEPTH", "requested": depth,
                                      "maximum": max_depth})
        if isinstance(node, list) and len(node) >= _CONVERT_FIRST:
            # A large list is most likely an array: converted now, it needs no walk (a rectangular
            # list of k dimensions nests k - 1 lists deeper), and decoding takes the array.
            arr = _numeric_array(node)
            if arr is not None and depth + arr.ndim - 1 <= max_depth:
                converted[id(node)] = arr
                continue
        # Only descend into containers. The types are collected at C speed first: a list of
        # numbers has none to descend into.
        children = node if isinstance(node, list) else node.values() if isinstance(node, dict) else ()
        if not _CONTAINER_TYPES.isdisjoint(map(type, children)):
            stack.extend((child, depth + 1) for child in children if isinstance(child, (list, dict)))


# What a parsed body's containers are (json and msgpack build exactly these types).
_CONTAINER_TYPES = frozenset({list, dict})
# Lists at least this long are converted to arrays by the depth check.
_CONVERT_FIRST = 1024


def _numeric_array(obj: list[Any]) -> np.ndarray | None:
    """A list as an array of numbers or booleans (any number of dimensions), or None: a list
    holding anything else (objects, strings, ragged lists) is not one."""
    try:
        arr = _as_array(obj)
    except (ValueError, TypeError, RecursionError):
        return None
    return arr if arr.dtype.kind in "biuf" else None


def decode_array(spec: Any, where: str, budget: TreeBudget) -> np.ndarray:
    if not isinstance(spec, dict) or set(spec) != {"dtype", "shape", "data"}:
        raise InvalidArgument(f"{where}: a $array leaf has exactly dtype, shape and data" + (
            f" (not {sorted(set(spec) - {'dtype', 'shape', 'data'})})" if isinstance(spec, dict) else ""),
            {"path": where})
    dtype_name, shape, data = spec["dtype"], spec["shape"], spec["data"]
    if dtype_name not in DTYPES:
        raise InvalidArgument(f"{where}: unsupported dtype {dtype_name!r}; use one of {', '.join(DTYPES)}",
                              {"path": where, "dtype": dtype_name})
    if not isinstance(shape, list) or not all(isinstance(n, int) and not isinstance(n, bool) and 0 <= n < 2**62
                                              for n in shape):
        raise InvalidArgument(f"{where}: shape must be a list of non-negative integers below 2**62; {shape!r:.80} "
                              "is not a valid array shape", {"path": where})
    if len(shape) > budget.max_dimensions:
        raise LimitExceededError(f"{where}: {len(shape)} dimensions, over the limit of {budget.max_dimensions} "
                                 "(NABLA_MAX_DIMENSIONS)", {"path": where, "limit": "NABLA_MAX_DIMENSIONS",
                                                            "requested": len(shape), "maximum": budget.max_dimensions})
    size = math.prod(shape)  # exact: np.prod in int64 wraps around for shapes like [2**32, 2**32]
    budget.take(size, where)
    binary = isinstance(data, (bytes, bytearray, memoryview))  # a binary (MessagePack) body's bin
    if not binary and not isinstance(data, str):
        raise InvalidArgument(f"{where}: $array data must be a base64 string (or bin bytes in a MessagePack body)",
                              {"path": where})
    try:
        # bin data is viewed in place: a read-only array, which the engine never writes to
        return from_bytes(data, shape, dtype_name) if binary else from_base64(data, shape, dtype_name)
    except InvalidBase64:
        raise InvalidArgument(f"{where}: data is not valid base64", {"path": where}) from None
    except ByteCountMismatch as e:
        raise InvalidArgument(f"{where}: {e.actual} bytes of data, but shape {shape} of {dtype_name} needs "
                              f"{e.expected}", {"path": where}) from None
    except ValueError as e:  # an empty array with a dimension NumPy cannot index ([2**62, 4, 0])
        raise InvalidArgument(f"{where}: shape {shape} is not a valid array shape: {e}", {"path": where}) from None


def _numeric_leaf(obj: Any, float_dtype: np.dtype, where: str, budget: TreeBudget) -> np.ndarray | None:
    """obj as an array if it is a number, a bool or a rectangular nested list of them; else None."""
    if isinstance(obj, bool):
        budget.take(1, where)
        return np.asarray(obj)
    if isinstance(obj, (int, float)):
        budget.take(1, where)
        if isinstance(obj, int) and abs(obj) >= 2**63:  # beyond int64: as a double, if it is one
            value = np.asarray(float(obj)) if obj.bit_length() < 1024 else _too_large(obj, float_dtype, where)
        else:
            value = np.asarray(obj)
        return as_dtype(value, float_dtype, where)
    if isinstance(obj, str) and obj in LENIENT_SPECIAL_FLOATS:
        return np.asarray(LENIENT_SPECIAL_FLOATS[obj], dtype=float_dtype)
    if not isinstance(obj, list):
        return None
    try:
        arr = budget.converted.pop(id(obj), None)
        if arr is None:
            arr = _as_array(obj)
    except (ValueError, TypeError, RecursionError):
        return None  # ragged: a list of subtrees
    if arr.ndim > budget.max_dimensions:
        raise LimitExceededError(f"{where}: {arr.ndim} dimensions, over the limit of {budget.max_dimensions} "
                                 "(NABLA_MAX_DIMENSIONS)", {"path": where, "limit": "NABLA_MAX_DIMENSIONS",
                                                            "requested": arr.ndim, "maximum": budget.max_dimensions})
    if arr.dtype == object:
        return None
    if arr.dtype.kind == "U":
        arr = _with_specials(obj)
        if arr is None:
            return None
    budget.take(arr.size, where)
    if arr.dtype == np.bool_:
        return arr
    if arr.dtype.kind not in "fiu":
        return None
    if arr.size == 0 and arr.ndim == 1 and not obj:
        return None  # [] is an empty list node, as in JAX
    return as_dtype(arr, float_dtype, where)


def _too_large(obj: Any, dtype: np.dtype, where: str) -> Any:
    raise InvalidArgument(f"{where}: the number {str(obj)[:24]}... is too large for {dtype.name}",
                          {"path": where})


def as_dtype(arr: np.ndarray, dtype: np.dtype, where: str) -> np.ndarray:
    """JSON numbers as `dtype`: into an integer type only when integral and in range; into a
    float type only when finite numbers stay finite (no silent overflow to infinity)."""
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        if arr.dtype.kind == "f" and not np.all(np.isfinite(arr) & (np.floor(arr) == arr)):
            raise InvalidArgument(f"{where}: expected integers for {dtype.name}, got fractional or non-finite "
                                  "numbers", {"path": where})
        if arr.size and (arr.min() < info.min or arr.max() > info.max):
            raise InvalidArgument(f"{where}: a number is outside {dtype.name}'s range [{info.min}, {info.max}]",
                                  {"path": where})
        return arr.astype(dtype)
    if arr.dtype == dtype:
        return arr  # built from the body for this request: nothing else holds it
    out = _astype_quietly(arr, dtype)
    # (the result is checked first: it is almost always finite, which settles the question)
    if dtype.kind == "f" and arr.dtype.kind in "fiu" and not np.isfinite(out).all() and np.isfinite(arr).all():
        raise InvalidArgument(f"{where}: a number is too large for {dtype.name}", {"path": where})
    return out


# arr.astype(dtype) with NumPy's floating-point warnings off (overflow to infinity is checked
# just after): engine.plan sets that state directly, which np.errstate does at several times the
# cost of converting a small array.
_astype_quietly = errors_ignored(np.ndarray.astype)


def _as_array(obj: list[Any]) -> np.ndarray:
    """np.asarray of a nested list, a block of rows at a time with a deadline check between
    blocks; refuses ragged lists (ValueError) as np.asarray would."""
    if len(obj) <= 1 or not isinstance(obj[0], list) and len(obj) <= CHUNK_ELEMENTS:
        return np.asarray(obj)
    first = np.asarray(obj[0])
    rows = max(1, CHUNK_ELEMENTS // max(1, first.size))
    blocks = []
    for start in range(0, len(obj), rows):
        check_deadline()
        block = np.asarray(obj[start:start + rows])
        if block.shape[1:] != first.shape or block.dtype == object:
            raise ValueError("ragged")
        blocks.append(block)
    return np.concatenate(blocks) if len(blocks) > 1 else blocks[0]


def _with_specials(obj: Any) -> np.ndarray | None:
    try:
        return np.asarray(replace_special_floats(obj, LENIENT_SPECIAL_FLOATS), dtype=np.float64)
    except (ArrayCodecError, ValueError, TypeError):
        return None


def decode_tree(obj: Any, float_dtype: np.dtype, where: str, budget: TreeBudget, spec: Any = None,
                override: bool = False) -> Any:
    """A JSON value as a pytree of NumPy arrays (see the module docstring for the rules).

    Plain numbers become `float_dtype`, or, under a leaf of `spec` (service.model_schema), the
    dtype it declares (`override`: a float leaf takes `float_dtype` anyway, when the caller asked
    for a precision). `$array` leaves always keep their own dtype.
    """
    _depth_ok(obj, budget.max_depth, where, budget.converted)
    try:
        return _decode(obj, np.dtype(float_dtype), where, budget, spec, override)
    finally:
        budget.converted.clear()  # ids are only meaningful while `obj` is alive


def _decode(obj: Any, float_dtype: np.dtype, where: str, budget: TreeBudget, spec: Any, override: bool) -> Any:
    if obj is None or (isinstance(obj, dict) and "$array" not in obj) or isinstance(obj, list) and not obj:
        budget.node(where)  # nulls and containers cost tracing time too, though they hold no data
    if obj is None:
        return None
    typed = is_leaf(spec)
    if typed:
        declared = np.dtype(spec["dtype"])
        if not (override and declared.kind == "f"):
            float_dtype = declared
        spec = None
    if isinstance(obj, dict):
        if "$array" in obj:
            if len(obj) != 1:
                raise InvalidArgument(f"{where}: a $array leaf must be the object's only key", {"path": where})
            return decode_array(obj["$array"], where, budget)
        return {k: _decode(v, float_dtype, join(where, k), budget, spec.get(k) if isinstance(spec, dict) else None,
                           override) for k, v in obj.items()}
    leaf = _numeric_leaf(obj, float_dtype, where, budget)
    if leaf is not None:
        # JSON booleans where a number is declared (0/1 targets) take the declared dtype
        return leaf.astype(float_dtype) if typed and leaf.dtype == np.bool_ and float_dtype.kind != "b" else leaf
    if isinstance(obj, list):
        specs = spec if isinstance(spec, list) and len(spec) == len(obj) else [None] * len(obj)
        return [_decode(v, float_dtype, join(where, i), budget, s, override)
                for i, (v, s) in enumerate(zip(obj, specs))]
    if isinstance(obj, str):
        raise InvalidArgument(f"{where}: unexpected string {obj[:40]!r}; arrays hold numbers and booleans "
                              "(NaN and infinities as \"NaN\", \"Infinity\", \"-Infinity\")", {"path": where})
    raise InvalidArgument(f"{where}: unsupported JSON value of type {type(obj).__name__}", {"path": where})


def encode_tree(tree: Any, encoding: str) -> Any:
    """A pytree of arrays as JSON: tuples become lists, namedtuples and dataclasses dicts."""
    from engine.array import Array

    if tree is None:
        return None
    if isinstance(tree, (Array, np.ndarray, np.generic)):
        return encode_array(tree, encoding)
    if isinstance(tree, dict):
        return {str(k): encode_tree(v, encoding) for k, v in tree.items()}
    if isinstance(tree, tuple) and hasattr(tree, "_fields"):
        return {k: encode_tree(v, encoding) for k, v in zip(tree._fields, tree)}
    if isinstance(tree, (list, tuple)):
        return [encode_tree(v, encoding) for v in tree]
    if isinstance(tree, (bool, int, float, str)):
        return tree
    if hasattr(tree, "__dataclass_fields__"):
        return {k: encode_tree(getattr(tree, k), encoding) for k in tree.__dataclass_fields__}
    return encode_array(np.asarray(tree), encoding)


# ----------------------------------------------------------------------------- response writer


# An answer of finite numbers with at most this many array elements and list nodes (about 80 ms
# of orjson) is written by one orjson call: no pieces to join, nor a deadline check to miss.
ONE_CALL_ELEMENTS = 1 << 22


def dumps(tree: Any, encoding: str = "json") -> bytes:
    """A response pytree as JSON bytes: in one orjson call when every float in it is finite and
    it is not too large, else arrays written a block of rows at a time.

    JSON numbers: float arrays are written in float64's shortest round-trip form (a float32 value
    reads back exactly as a double); NaN and infinities become "NaN", "Infinity", "-Infinity",
    never bare tokens (strict JSON parsers refuse them).
    """
    if encoding == "json":
        try:
            return orjson.dumps(_finite_plain(tree, [0]), option=orjson.OPT_SERIALIZE_NUMPY)
        except (_NeedsBlocks, TypeError, orjson.JSONEncodeError):
            pass  # NaN or infinities to spell, too large, or a value orjson refuses (a lone surrogate)
    parts: list[bytes] = []
    _write(tree, encoding, parts)
    return b"".join(parts)


class _NeedsBlocks(Exception):
    """The answer needs the block writer (see `dumps`)."""


class Verbatim(dict):
    """A JSON object the service writes itself, of strings, finite numbers, booleans, None and
    such objects only (an answer's `meta`): the writer passes it to orjson as it is, without
    checking each value (orjson writes dict subclasses as objects)."""


_AS_THEY_ARE = frozenset({str, bool, type(None), Verbatim})


def _finite_plain(node: Any, size: list[int]) -> Any:
    """The tree as orjson writes it the way `_write` would (float arrays as float64, 0-d arrays
    as numbers, namedtuples and dataclasses as objects, keys as strings); _NeedsBlocks if a float
    is not finite, an integer does not fit 64 bits, or the arrays pass ONE_CALL_ELEMENTS."""
    # The exact types of an answer's usual nodes first (a meta block is a dozen of them); their
    # subclasses (np.float64 is a float) take the general checks below.
    kind = type(node)
    if kind in _AS_THEY_ARE:
        return node
    if kind is float:
        if not math.isfinite(node):
            raise _NeedsBlocks
        return node
    if kind is int:
        if not -(2**63) <= node < 2**64:
            raise _NeedsBlocks
        return node
    if kind is dict:
        return {k if type(k) is str else str(k): _finite_plain(v, size) for k, v in node.items()}
    if kind is list:
        return [_finite_plain(v, size) for v in node]
    if kind is Array:
        node = node._value
        kind = type(node)
    if kind is np.ndarray:
        return _finite_array(node, size)
    if isinstance(node, Array):
        node = node._value
    if isinstance(node, dict):
        return {str(k): _finite_plain(v, size) for k, v in node.items()}
    if isinstance(node, tuple) and hasattr(node, "_fields"):
        return {k: _finite_plain(v, size) for k, v in zip(node._fields, node)}
    if isinstance(node, (list, tuple)):
        return [_finite_plain(v, size) for v in node]
    if hasattr(node, "__dataclass_fields__"):
        return {k: _finite_plain(getattr(node, k), size) for k in node.__dataclass_fields__}
    if node is None or isinstance(node, (bool, str)):
        return node
    if isinstance(node, int):
        if not -(2**63) <= node < 2**64:
            raise _NeedsBlocks
        return node
    if isinstance(node, float):
        if not math.isfinite(node):
            raise _NeedsBlocks
        return node
    return _finite_array(np.asarray(node), size)


# Arrays this small are written through Python numbers (`tolist`): fewer NumPy calls than
# converting, checking and passing the array to orjson, and the same bytes.
_SMALL_ARRAY = 64


def _finite_array(arr: np.ndarray, size: list[int]) -> Any:
    kind = arr.dtype.kind
    if kind not in "fiub":
        raise _NeedsBlocks
    size[0] += arr.size + math.prod(arr.shape[:-1])  # numbers and the lists holding them
    if size[0] > ONE_CALL_ELEMENTS:
        raise _NeedsBlocks
    if arr.size <= _SMALL_ARRAY:
        values = arr.tolist()  # float32 becomes the same doubles as astype(float64)
        if kind == "f" and not all(map(math.isfinite, arr.ravel().tolist())):
            raise _NeedsBlocks
        return values
    if kind == "f":
        arr = arr.astype(np.float64, copy=False)
        if not np.isfinite(arr).all():
            raise _NeedsBlocks
    return np.ascontiguousarray(arr)


def _write(node: Any, encoding: str, parts: list[bytes]) -> None:
    from engine.array import Array

    if isinstance(node, Array):
        node = np.asarray(node._value)
    if isinstance(node, (np.ndarray, np.generic)):
        _write_array(np.asarray(node), encoding, parts)
    elif isinstance(node, dict):
        _write_items([(str(k), v) for k, v in node.items()], encoding, parts)
    elif isinstance(node, tuple) and hasattr(node, "_fields"):
        _write_items(list(zip(node._fields, node)), encoding, parts)
    elif isinstance(node, (list, tuple)):
        parts.append(b"[")
        for i, v in enumerate(node):
            if i:
                parts.append(b",")
            _write(v, encoding, parts)
        parts.append(b"]")
    elif hasattr(node, "__dataclass_fields__"):
        _write_items([(k, getattr(node, k)) for k in node.__dataclass_fields__], encoding, parts)
    elif isinstance(node, float) and not math.isfinite(node):
        parts.append(orjson.dumps(special_name(node)))
    elif node is None or isinstance(node, (bool, int, float, str)):
        parts.append(orjson.dumps(node))
    else:
        _write_array(np.asarray(node), encoding, parts)


def _write_items(items: list[tuple[str, Any]], encoding: str, parts: list[bytes]) -> None:
    parts.append(b"{")
    for i, (k, v) in enumerate(items):
        if i:
            parts.append(b",")
        parts.append(orjson.dumps(k))
        parts.append(b":")
        _write(v, encoding, parts)
    parts.append(b"}")


def _write_array(arr: np.ndarray, encoding: str, parts: list[bytes]) -> None:
    if encoding == "base64":
        _write_base64(arr, parts)
        return
    if arr.dtype.kind == "f":
        arr = arr.astype(np.float64, copy=False)
    if arr.ndim == 0:
        _write(arr.item(), encoding, parts)
        return
    rows = max(1, CHUNK_ELEMENTS // max(1, arr[0].size)) if len(arr) else 1
    parts.append(b"[")
    for start in range(0, len(arr), rows):
        check_deadline()
        block = np.ascontiguousarray(arr[start:start + rows])
        if start:
            parts.append(b",")
        parts.append(memoryview(_block_json(block))[1:-1])  # the block's numbers without its brackets, uncopied
    parts.append(b"]")


def _block_json(block: np.ndarray) -> bytes:
    if block.dtype.kind == "f" and not np.isfinite(block).all():
        return orjson.dumps(encode_array(block, "json"))
    if block.dtype.kind in "fiub":
        return orjson.dumps(block, option=orjson.OPT_SERIALIZE_NUMPY)
    return orjson.dumps(block.tolist())


def _write_base64(arr: np.ndarray, parts: list[bytes]) -> None:
    data = little_endian_bytes(arr)  # (base64_bytes of these uint8 takes them as they are)
    parts.append(b'{"$array":{"dtype":' + orjson.dumps(arr.dtype.name) + b',"shape":'
                 + orjson.dumps([int(n) for n in arr.shape]) + b',"data":"')
    step = 3 * CHUNK_ELEMENTS * 8  # a multiple of 3: the pieces' base64 concatenates cleanly
    for start in range(0, len(data), step):
        check_deadline()
        parts.append(base64_bytes(data, start, start + step))
    parts.append(b'"}}')
