"""MessagePack bodies on /v1: the JSON API's trees, with arrays as raw bytes.

A request body sent with `Content-Type: application/msgpack` is the JSON body's tree written in
MessagePack (maps with string keys, arrays, strings, numbers, booleans, nil), where an array leaf
may be `{"$array": {"dtype", "shape", "data": <bin>}}`: the base64 leaf of the JSON API with the
array's little-endian bytes in a bin instead of base64 text, decoded without a copy
(np.frombuffer of the body itself; the engine takes the read-only array as it is). Plain MessagePack numbers and
arrays of them follow the JSON rules (they take the request's float dtype); NaN and the
infinities are floats like any other.

A response is MessagePack when the request's Accept header prefers it (`negotiate`; JSON stays
the default): the JSON answer's tree, every array a bin leaf whatever the request's `encoding`
says (MessagePack has no use for nested lists of numbers). Errors are always JSON, with their
`application/json` content type, so one error parser serves every client.

Decoding a hostile body. MessagePack declares lengths up front, and msgpack allocates a list of
a declared length before reading its items, so a few bytes declaring many 2**32-item arrays
nested a thousand deep would reserve terabytes before the body ran out. `scan` therefore walks
the body's structure first, without building anything: every declared length must be backed by
the bytes that follow it, the nesting is bounded, maps have string keys, bin data is only an
`$array` leaf's `data` (outside `function`, whose graphs stay JSON's), and no extension types
are allowed; it counts the values as it goes, so that the admission check of JSON bodies (about
40 bytes of Python objects per value, service.admission.check_parse) refuses a body of millions
of tiny values before any is built. Only then is the tree built: by msgpack, under the limits
of a body of that size, or here for a body of a few values around its bin data, each bin a view
of the body (`_build`). Arrays of fixed-size scalars (floats, integers) are checked in one
vectorised step, so scanning costs little next to building.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import msgpack
import numpy as np

from array_codec import binary_leaf
from engine.core import check_deadline
from service import admission
from service.errors import APIError, InvalidRequest, LimitExceededError

JSON = "application/json"
MSGPACK = "application/msgpack"
# Names MessagePack goes by: the registered vnd. type and the historical x- type read the same.
MSGPACK_ALIASES = frozenset({MSGPACK, "application/x-msgpack", "application/vnd.msgpack"})
# Levels of the request's own objects around its pytrees (body, function, graph, node, attrs...).
ENVELOPE_DEPTH = 16
# Items scanned between two deadline checks.
_CHUNK = 1 << 16


def media_type(content_type: str | None) -> str | None:
    """JSON or MSGPACK for a Content-Type header (parameters such as charset ignored); None for
    any other type."""
    name = (content_type or "").split(";")[0].strip().lower()
    if name == JSON:
        return JSON
    return MSGPACK if name in MSGPACK_ALIASES else None


def call_formats(content_type: str | None, accept: str | None) -> dict[str, str]:
    """The `Call` fields for a request's Content-Type and Accept headers: its body's media type
    (JSON for any other, which the adapter has refused already if the route takes a body) and
    the answer's, negotiated (NotAcceptable, 406, when Accept takes neither)."""
    return {"content_type": media_type(content_type) or JSON, "accept": negotiate(accept)}


class NotAcceptable(APIError):
    status, type = 406, "not_acceptable"


def negotiate(accept: str | None) -> str:
    """The response's media type for an Accept header: the one of JSON and MessagePack the header
    rates higher (q), the more specific match winning a tie, then the one named first; JSON when
    the header is absent or rates them equally through wildcards. A type's rating is that of its
    most specific range (the highest q among equally specific ones): `application/msgpack;q=0,
    */*` refuses MessagePack. NotAcceptable (406) when it accepts neither."""
    if accept is None or not accept.strip():
        return JSON
    ranked = []
    for offered in (JSON, MSGPACK):
        best: tuple[int, float, int] | None = None  # (specificity, q, -position)
        for position, item in enumerate(accept.split(",")):
            name, *params = (part.strip() for part in item.split(";"))
            specificity = _specificity(name.lower(), offered)
            if specificity:
                best = max(best or (0, 0.0, 0), (specificity, _quality(params), -position))
        if best is not None and best[1] > 0:
            ranked.append((best[1], best[0], best[2], offered == JSON, offered))
    if not ranked:
        raise NotAcceptable(f"cannot answer in {accept[:100]!r}: this API answers {JSON} or {MSGPACK} "
                            "(errors are always JSON)", {"accept": accept[:200], "available": [JSON, MSGPACK]})
    return max(ranked)[-1]


def _specificity(name: str, offered: str) -> int:
    if name == offered or (offered == MSGPACK and name in MSGPACK_ALIASES):
        return 3
    if name == "application/*":
        return 2
    return 1 if name == "*/*" else 0


def _quality(params: list[str]) -> float:
    for param in params:
        key, _, value = param.partition("=")
        if key.strip().lower() == "q":
            try:
                q = float(value.strip())
            except ValueError:
                return 1.0  # a malformed weight is ignored, as if absent
            return min(max(q, 0.0), 1.0) if math.isfinite(q) else 1.0
    return 1.0


# ----------------------------------------------------------------------------- the scan

# Per first byte: the whole size of a fixed-size scalar (type byte included), or 0.
_SCALAR_SIZE = [0] * 256
for _b in [*range(0x00, 0x80), *range(0xE0, 0x100), 0xC0, 0xC2, 0xC3]:  # fixints, nil, false, true
    _SCALAR_SIZE[_b] = 1
for _b, _size in {0xCA: 5, 0xCB: 9, 0xCC: 2, 0xCD: 3, 0xCE: 5, 0xCF: 9, 0xD0: 2, 0xD1: 3, 0xD2: 5, 0xD3: 9}.items():
    _SCALAR_SIZE[_b] = _size
_ONE_BYTE = np.array([s == 1 for s in _SCALAR_SIZE])
# Variable-length types: (width of the length field) for str and bin.
_STR_WIDTH = {0xD9: 1, 0xDA: 2, 0xDB: 4}
_BIN_WIDTH = {0xC4: 1, 0xC5: 2, 0xC6: 4}
_ARRAY_WIDTH = {0xDC: 2, 0xDD: 4}
_MAP_WIDTH = {0xDE: 2, 0xDF: 4}
_EXT = frozenset({0xC7, 0xC8, 0xC9, 0xD4, 0xD5, 0xD6, 0xD7, 0xD8})
# An array of at least this many items is first tried as one run of same-size scalars.
_VECTOR_MIN = 16


@dataclass(frozen=True)
class BodyCounts:
    """What a scanned body holds: its values (containers and scalars), map entries, and bytes of
    bin data."""

    values: int
    members: int
    bin_bytes: int


def _invalid(why: str, position: int) -> InvalidRequest:
    return InvalidRequest(f"the body is not valid MessagePack for this API: {why} (at byte {position})",
                          {"position": position})


def scan(raw: bytes, max_nesting: int, budget: admission.Budget | None = None) -> BodyCounts:
    """Check a MessagePack body's structure without building it (see the module docstring).
    Raises InvalidRequest (truncated data, a length its bytes do not back, extension types,
    non-string map keys, bytes after the one object) or LimitExceededError (nesting; with a
    `budget`, the values and map entries admission.check_parse allows, checked as the counts
    grow, so a body of a million map entries is refused at the map's header)."""
    end = len(raw)
    view = memoryview(raw)
    pos = values = members = bin_bytes = 0
    # One frame per open container: items still to read, whether it is a map (whose items
    # alternate key, value: a key is read while an even number of items is left), and the map's
    # key being read (short keys only: the ones that place bin data).
    left: list[int] = [1]
    is_map: list[bool] = [False]
    keys: list[bytes | None] = [None]
    steps = 0
    while left:
        if left[-1] == 0:
            left.pop()
            is_map.pop()
            keys.pop()
            continue
        left[-1] -= 1
        steps += 1
        if steps % _CHUNK == 0:
            check_deadline()
            if budget is not None:
                admission.check_parse(values, members, end, budget, form="MessagePack")
        if pos >= end:
            raise _invalid("the data ends in the middle of a value", pos)
        first = raw[pos]
        is_key = is_map[-1] and left[-1] % 2 == 1
        if is_key and not (0xA0 <= first <= 0xBF or first in _STR_WIDTH):
            raise _invalid(f"a map key of type byte 0x{first:02x}; keys must be strings, as in JSON", pos)
        values += 1
        size = _SCALAR_SIZE[first]
        if size:
            pos += size
            if pos > end:
                raise _invalid("the data ends in the middle of a number", pos - size)
            continue
        if 0xA0 <= first <= 0xBF or first in _STR_WIDTH or first in _BIN_WIDTH:
            if 0xA0 <= first <= 0xBF:
                width, length = 0, first & 0x1F
            else:
                width = _STR_WIDTH.get(first) or _BIN_WIDTH[first]
                length = _length(raw, pos, width, end)
            if is_key:
                keys[-1] = raw[pos + 1 + width:pos + 1 + width + length] if length <= 8 else None
            elif first in _BIN_WIDTH:
                if not (is_map[-1] and keys[-1] == b"data" and is_map[-2] and keys[-2] == b"$array"
                        and not (is_map[1] and keys[1] == b"function")):
                    raise _invalid(f"bin data ({length} bytes) where no array takes it: bin is only the \"data\" "
                                   "of an $array leaf, {\"$array\": {\"dtype\", \"shape\", \"data\": <bin>}}, "
                                   "outside `function`", pos)
                bin_bytes += length
            pos += 1 + width + length
        elif first <= 0x9F or first in _ARRAY_WIDTH or first in _MAP_WIDTH:  # 0x80-0x9f: fixmap, fixarray
            mapping = first <= 0x8F or first in _MAP_WIDTH
            if first <= 0x9F:
                count, pos = first & 0x0F, pos + 1
            else:
                width = _ARRAY_WIDTH.get(first) or _MAP_WIDTH[first]
                count = _length(raw, pos, width, end)
                pos += 1 + width
            items = 2 * count if mapping else count
            if items > end - pos:  # every item takes at least a byte
                raise _invalid(f"{'a map of' if mapping else 'an array of'} {count} "
                               f"{'entries' if mapping else 'items'} in the {end - pos} bytes left", pos)
            if budget is not None and (values + items) * admission.PARSED_VALUE_BYTES > budget.max_request_bytes:
                # refused at the header: the items it declares would be over the budget once built
                admission.check_parse(values + items, members, end, budget, form="MessagePack")
            if len(left) > max_nesting:  # this container is at depth len(left) (the body's own is at 1)
                raise LimitExceededError(
                    f"the MessagePack body is nested more than {max_nesting} levels deep (NABLA_MAX_DEPTH "
                    f"levels of pytree, plus NABLA_MAX_DIMENSIONS of nested numbers and {ENVELOPE_DEPTH} for "
                    "the request's own fields)",
                    {"limit": "NABLA_MAX_DEPTH", "requested": len(left), "maximum": max_nesting})
            if mapping:
                members += count
                if budget is not None and members > budget.max_json_members:
                    admission.check_parse(values, members, end, budget, form="MessagePack")
            elif count >= _VECTOR_MIN:
                run = _scalar_run(view, pos, count, end)
                if run:
                    pos += run
                    values += count
                    continue
            if items:
                left.append(items)
                is_map.append(mapping)
                keys.append(None)
        elif first in _EXT:
            raise _invalid(f"an extension type (type byte 0x{first:02x}); only the JSON types and bin are accepted",
                           pos)
        else:  # 0xc1, the one byte MessagePack never uses
            raise _invalid(f"type byte 0x{first:02x}, which MessagePack does not define", pos)
        if pos > end:
            raise _invalid("the data ends in the middle of a string or bin", end)
    if pos != end:
        raise _invalid(f"{end - pos} byte(s) after the body's one object", pos)
    if budget is not None:
        admission.check_parse(values, members, end, budget, form="MessagePack")
    return BodyCounts(values, members, bin_bytes)


def _length(raw: bytes, pos: int, width: int, end: int) -> int:
    if pos + 1 + width > end:
        raise _invalid("the data ends in the middle of a length", pos)
    return int.from_bytes(raw[pos + 1:pos + 1 + width], "big")


def _scalar_run(view: memoryview, pos: int, count: int, end: int) -> int:
    """The bytes of `count` scalars at `pos` when they all have the first one's type byte (or are
    all one byte long: small integers, booleans, nil); 0 otherwise (scanned one by one then)."""
    size = _SCALAR_SIZE[view[pos]]
    if not size or pos + size * count > end:
        return 0
    block = np.frombuffer(view, dtype=np.uint8, count=size * count, offset=pos)
    same = _ONE_BYTE[block].all() if size == 1 else (block[::size] == view[pos]).all()
    return size * count if same else 0


# ----------------------------------------------------------------------------- bodies


def loads(raw: bytes, max_depth: int, max_dimensions: int, budget: admission.Budget) -> Any:
    """A MessagePack request body as Python objects, $array data as bytes: scanned, admitted by
    its value count (like a JSON body), then built by msgpack within the body's own size."""
    if not raw:
        raise InvalidRequest("the request body is empty; send a MessagePack map")
    counts = scan(raw, max_depth + max_dimensions + ENVELOPE_DEPTH, budget)
    size = len(raw)
    try:
        if counts.bin_bytes and counts.values <= _BUILT_HERE:
            return _build(memoryview(raw), 0)[0]
        return msgpack.unpackb(raw, raw=False, use_list=True, strict_map_key=True, max_str_len=size,
                               max_bin_len=size, max_array_len=size, max_map_len=size, max_ext_len=0)
    except UnicodeDecodeError as e:
        raise InvalidRequest(f"the body is not valid MessagePack for this API: a string is not valid UTF-8 "
                             f"({e.reason} at byte {e.start} of the string)") from None
    except (ValueError, TypeError, msgpack.UnpackException) as e:  # the scan lets nothing else through
        raise InvalidRequest(f"the body is not valid MessagePack for this API: {e}") from None


# A scanned body of at most this many values around its bin data is built here, its bins left as
# views of the body: msgpack would copy each into a bytes object of its own, megabytes of fresh
# memory for nothing (the array is a view of the bin either way).
_BUILT_HERE = 4096


def _build(view: memoryview, pos: int) -> tuple[Any, int]:
    """The object at `pos` of a scanned body and the position after it: maps and arrays built
    here, bin data as a view, every other value (and a run of same-size scalars) by msgpack."""
    first = view[pos]
    if 0x80 <= first <= 0x9F or first in _MAP_WIDTH or first in _ARRAY_WIDTH:
        if first <= 0x9F:
            count, start = first & 0x0F, pos + 1
        else:
            width = _MAP_WIDTH.get(first) or _ARRAY_WIDTH[first]
            count, start = int.from_bytes(view[pos + 1:pos + 1 + width], "big"), pos + 1 + width
        if first <= 0x8F or first in _MAP_WIDTH:
            out: dict[str, Any] = {}
            for _ in range(count):
                key, start = _build(view, start)
                out[key], start = _build(view, start)
            return out, start
        run = _scalar_run(view, start, count, len(view)) if count >= _VECTOR_MIN else 0
        if run:
            return msgpack.unpackb(view[pos:start + run], raw=False), start + run
        items = []
        for _ in range(count):
            item, start = _build(view, start)
            items.append(item)
        return items, start
    if first in _BIN_WIDTH:
        width = _BIN_WIDTH[first]
        start = pos + 1 + width
        end = start + int.from_bytes(view[pos + 1:start], "big")
        return view[start:end], end
    if 0xA0 <= first <= 0xBF:
        end = pos + 1 + (first & 0x1F)
    elif first in _STR_WIDTH:
        width = _STR_WIDTH[first]
        end = pos + 1 + width + int.from_bytes(view[pos + 1:pos + 1 + width], "big")
    else:
        end = pos + _SCALAR_SIZE[first]
    return msgpack.unpackb(view[pos:end], raw=False), end


def dumps(tree: Any) -> bytes:
    """A response pytree as MessagePack: every array (0-d included) a bin leaf, tuples as arrays,
    namedtuples and dataclasses as maps; floats, NaN and infinities as floats.

    Containers and bin headers are written here and everything else by msgpack, into a list of
    parts joined once: an array's bytes are copied once, into the body (msgpack's own packer
    would grow its buffer to the body's size and then copy it, several fresh megabytes more)."""
    check_deadline()
    parts: list[Any] = []
    _pack(_plain(tree), parts)
    return b"".join(parts)


def _pack(node: Any, parts: list[Any]) -> None:
    if isinstance(node, dict):
        parts.append(_header(len(node), 0x80, 0xDE))
        for key, value in node.items():
            parts.append(msgpack.packb(key))
            _pack(value, parts)
    elif isinstance(node, list):
        parts.append(_header(len(node), 0x90, 0xDC))
        for value in node:
            _pack(value, parts)
    elif isinstance(node, memoryview):
        size = node.nbytes
        if size >= 1 << 32:
            raise ValueError(f"an array of {size} bytes is over MessagePack's 4 GiB bin")
        width = 1 if size < 1 << 8 else 2 if size < 1 << 16 else 4
        parts.append(bytes([_BIN_OF_WIDTH[width]]) + size.to_bytes(width, "big"))
        parts.append(node)
    else:
        parts.append(msgpack.packb(node))


_BIN_OF_WIDTH = {width: first for first, width in _BIN_WIDTH.items()}  # bin8, bin16, bin32


def _header(count: int, fixed: int, sized: int) -> bytes:
    """A map's or an array's header: `fixed` | count up to 15, else `sized` (16-bit count) or the
    type after it (32-bit)."""
    if count < 16:
        return bytes([fixed | count])
    if count < 1 << 16:
        return bytes([sized]) + count.to_bytes(2, "big")
    return bytes([sized + 1]) + count.to_bytes(4, "big")


def _plain(node: Any) -> Any:
    from engine.array import Array

    if isinstance(node, Array):
        node = np.asarray(node._value)
    if isinstance(node, (np.ndarray, np.generic)):
        return binary_leaf(node)
    if isinstance(node, dict):
        return {str(k): _plain(v) for k, v in node.items()}
    if isinstance(node, tuple) and hasattr(node, "_fields"):
        return {k: _plain(v) for k, v in zip(node._fields, node)}
    if isinstance(node, (list, tuple)):
        return [_plain(v) for v in node]
    if hasattr(node, "__dataclass_fields__"):
        return {k: _plain(getattr(node, k)) for k in node.__dataclass_fields__}
    if node is None or isinstance(node, (bool, int, float, str)):
        return node
    return binary_leaf(node)


__all__ = ["JSON", "MSGPACK", "MSGPACK_ALIASES", "BodyCounts", "NotAcceptable", "call_formats", "dumps", "loads",
           "media_type", "negotiate", "scan"]
