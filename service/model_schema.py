"""Typed parameters: what each argument of a model must look like.

A parameter's spec is a pytree whose leaves are `{"shape": [...], "dtype": "float64"}`; a
dimension is a non-negative integer or a name (`"n"`), and a name stands for the same size
everywhere in one request. One notation is used in every message: `f64[3]`, `f32[n,3]`, `i32[]`,
and paths as `params.W`, `layers[0].b`.

Specs are given when a model is registered (`schema`), inferred from `example_args`, or read
from a graph's declared parameters; built-in models declare theirs.
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np

from engine.serialize import DTYPES
from service.errors import InvalidArgument, InvalidRequest

_SHORT = {"float16": "f16", "float32": "f32", "float64": "f64", "int8": "i8", "int16": "i16", "int32": "i32",
          "int64": "i64", "uint8": "u8", "uint16": "u16", "uint32": "u32", "uint64": "u64", "bool": "bool"}
_DIM_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,31}")
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
MAX_SPEC_LEAVES = 1000
MAX_DIMENSIONS = 32


def is_leaf(spec: Any) -> bool:
    return isinstance(spec, dict) and "shape" in spec and set(spec) <= {"shape", "dtype"}


def notation(shape: Any, dtype: Any) -> str:
    """`f64[3,n]`: the dtype's short name and the dimensions."""
    name = np.dtype(dtype).name if not isinstance(dtype, str) else dtype
    return f"{_SHORT.get(name, name)}[{','.join(str(d) for d in shape)}]"


class _Notation:
    """`notation(shape, dtype)`, spelled out when it is first shown (most values conform)."""

    def __init__(self, shape: Any, dtype: Any) -> None:
        self.shape, self.dtype = shape, dtype

    def __str__(self) -> str:
        return notation(self.shape, self.dtype)


def join(path: str, key: Any) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if _IDENTIFIER.fullmatch(str(key)) else f"{path}[{str(key)!r}]"


def parse(spec: Any, where: str, depth: int = 0, count: list[int] | None = None) -> Any:
    """A spec pytree as given by a caller, checked: leaves, dimensions, dtypes, size."""
    count = count if count is not None else [0]
    if depth > 32:
        raise InvalidRequest(f"{where}: the schema is nested more than 32 levels deep")
    if is_leaf(spec):
        count[0] += 1
        if count[0] > MAX_SPEC_LEAVES:
            raise InvalidRequest(f"{where}: a schema has at most {MAX_SPEC_LEAVES} leaves")
        shape, dtype = spec["shape"], spec.get("dtype", "float64")
        if not isinstance(shape, list) or len(shape) > MAX_DIMENSIONS or not all(
                (isinstance(d, int) and not isinstance(d, bool) and 0 <= d < 2**62)
                or (isinstance(d, str) and _DIM_NAME.fullmatch(d)) for d in shape):
            raise InvalidRequest(f"{where}: shape must be a list of at most {MAX_DIMENSIONS} dimensions, each a "
                                 "non-negative integer or a name such as \"n\"", {"path": where})
        if dtype not in DTYPES:
            raise InvalidRequest(f"{where}: unsupported dtype {dtype!r}; use one of {', '.join(DTYPES)}",
                                 {"path": where})
        return {"shape": list(shape), "dtype": dtype}
    if isinstance(spec, dict):
        return {str(k): parse(v, join(where, k), depth + 1, count) for k, v in spec.items()}
    if isinstance(spec, list):
        return [parse(v, join(where, i), depth + 1, count) for i, v in enumerate(spec)]
    if spec is None:
        return None
    raise InvalidRequest(f"{where}: a schema is a {{\"shape\", \"dtype\"}} leaf, an object or a list of them",
                         {"path": where})


def infer(value: Any) -> Any:
    """The spec of a decoded example argument (concrete shapes)."""
    if isinstance(value, dict):
        return {str(k): infer(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [infer(v) for v in value]
    if value is None:
        return None
    arr = np.asarray(value)
    return {"shape": list(arr.shape), "dtype": arr.dtype.name}


def leaf_dtype(spec: Any) -> np.dtype | None:
    return np.dtype(spec["dtype"]) if is_leaf(spec) else None


# Which kinds of data a declared kind takes: the declared float width is what plain JSON numbers
# become, but an explicit $array of another float width is honoured; integers and booleans are
# converted to a declared float (0/1 targets); a declared integer takes integers and booleans.
_ACCEPTS = {"f": "fiub", "i": "iub", "u": "iub", "b": "b"}


def conform(value: Any, spec: Any, path: str, sizes: dict[str, tuple[int, str]]) -> Any:
    """A decoded argument checked against its spec, integers converted where a float is
    declared; `sizes` binds dimension names across the request. Raises a 422 naming the path
    with the expected and the received type."""
    if spec is None:
        if value is not None:
            raise _mismatch(path, "null", _describe(value))
        return None
    if is_leaf(spec):
        if isinstance(value, (dict, list, tuple)) or value is None:
            raise _mismatch(path, notation(spec["shape"], spec["dtype"]), _describe(value))
        arr = np.asarray(value)
        declared = np.dtype(spec["dtype"])
        expected = _Notation(spec["shape"], spec["dtype"])  # spelled out only for an error
        if arr.ndim != len(spec["shape"]) or arr.dtype.kind not in _ACCEPTS[declared.kind]:
            raise _mismatch(path, expected, notation(arr.shape, arr.dtype))
        for dim, size in zip(spec["shape"], arr.shape):
            if isinstance(dim, int) and dim != size:
                raise _mismatch(path, expected, notation(arr.shape, arr.dtype))
            if isinstance(dim, str):
                bound = sizes.setdefault(dim, (size, path))
                if bound[0] != size:
                    raise _mismatch(path, expected, notation(arr.shape, arr.dtype),
                                    f"; {dim} is {bound[0]} in {bound[1]}")
        return arr.astype(declared) if declared.kind == "f" and arr.dtype.kind != "f" else arr
    if isinstance(spec, dict):
        if not isinstance(value, dict) or set(value) != set(spec):
            got = sorted(value) if isinstance(value, dict) else _describe(value)
            raise InvalidArgument(f"{path}: expected an object with keys {sorted(spec)}, got {got}",
                                  {"path": path, "expected": sorted(spec), "got": got})
        return {k: conform(value[k], spec[k], join(path, k), sizes) for k in value}
    if not isinstance(value, (list, tuple)) or len(value) != len(spec):
        raise InvalidArgument(f"{path}: expected a list of {len(spec)} entries, got {_describe(value)}",
                              {"path": path, "expected": len(spec)})
    return [conform(v, s, join(path, i), sizes) for i, (v, s) in enumerate(zip(value, spec))]


def _describe(value: Any) -> str:
    if isinstance(value, dict):
        return f"an object with keys {sorted(value)[:8]}"
    if isinstance(value, (list, tuple)):
        return f"a list of {len(value)} entries"
    if value is None:
        return "null"
    arr = np.asarray(value)
    return notation(arr.shape, arr.dtype)


def _mismatch(path: str, expected: Any, got: str, extra: str = "") -> InvalidArgument:
    expected = str(expected)
    return InvalidArgument(f"{path}: expected {expected}, got {got}{extra}",
                           {"path": path, "expected": expected, "got": got})


def signature(params: list[str], schema: dict[str, Any] | None) -> str | None:
    """`W: f32[3], b: f32[]` for a schema whose parameters are leaves; None without a schema."""
    if not schema:
        return None
    parts = []
    for p in params:
        spec = schema.get(p)
        parts.append(f"{p}: {notation(spec['shape'], spec['dtype'])}" if is_leaf(spec) else f"{p}: {{...}}")
    return ", ".join(parts)


def json_schema(spec: Any) -> dict[str, Any]:
    """JSON Schema of the JSON that a parameter of this spec accepts: nested lists of numbers
    (lengths fixed where the dimension is), or a base64 `$array` leaf."""
    if spec is None:
        return {"type": "null"}
    if is_leaf(spec):
        number = {"type": "boolean"} if spec["dtype"] == "bool" else (
            {"type": "integer"} if np.dtype(spec["dtype"]).kind in "iu" else
            {"anyOf": [{"type": "number"}, {"enum": ["NaN", "Infinity", "-Infinity"]}]})
        nested: dict[str, Any] = number
        for dim in reversed(spec["shape"]):
            nested = {"type": "array", "items": nested}
            if isinstance(dim, int):
                nested["minItems"] = nested["maxItems"] = dim
        tagged = {"type": "object", "required": ["$array"], "properties": {"$array": {
            "type": "object", "required": ["dtype", "shape", "data"],
            "properties": {"dtype": {"const": spec["dtype"]}, "shape": {"type": "array"},
                           "data": {"type": "string", "contentEncoding": "base64"}}}}}
        return {"anyOf": [nested, tagged], "description": notation(spec["shape"], spec["dtype"])}
    if isinstance(spec, dict):
        return {"type": "object", "required": sorted(spec), "additionalProperties": False,
                "properties": {k: json_schema(v) for k, v in spec.items()}}
    return {"type": "array", "prefixItems": [json_schema(v) for v in spec], "minItems": len(spec),
            "maxItems": len(spec)}


def with_float_dtype(spec: Any, dtype: str) -> Any:
    """The spec with every float leaf in `dtype` (a caller asking for a precision)."""
    if is_leaf(spec):
        return {**spec, "dtype": dtype} if np.dtype(spec["dtype"]).kind == "f" else spec
    if isinstance(spec, dict):
        return {k: with_float_dtype(v, dtype) for k, v in spec.items()}
    if isinstance(spec, list):
        return [with_float_dtype(v, dtype) for v in spec]
    return spec
