"""The JSON graph format, `nabla.graph/1`.

    {"format": "nabla.graph/1",
     "params": ["W", {"name": "b", "shape": [], "dtype": "float32"}],
     "constants": {"inputs": {"dtype": "float32", "shape": [4, 3], "data": [[...], ...]}},
     "nodes": [{"id": "z", "op": "matmul", "inputs": ["inputs", "W"], "attrs": {}}, ...],
     "outputs": ["loss"]}

Node inputs name parameters, constants or earlier nodes, or are numbers (scalar literals that
take the dtype of the node's other operands). Ops are the engine's primitives
(`engine.primitives.PRIMITIVES`; GET /v1/ops on the service lists them with their attributes).
A document is validated in full before anything runs; every error names the node at fault.
The JSON Schema is `engine/schemas/graph-v1.json`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from array_codec import (
    DTYPES,
    SPECIAL_FLOATS,
    ByteCountMismatch,
    InvalidBase64,
    NestedTooDeep,
    UnknownSpecialFloat,
    encode_array,
    from_base64,
    replace_special_floats,
    special_name,
)
from engine.array import Array
from engine.core import (
    Graph,
    Literal,
    ShapedArray,
    Tracer,
    Var,
    _element_budget,
    bind,
    element_budget,
    end_trace,
    new_trace,
)
from engine.errors import (
    ConcretizationError,
    DeadlineExceeded,
    DifferentiationError,
    DtypeError,
    EngineError,
    EscapedTracerError,
    ShapeError,
)
from engine.limits import DEFAULT_LIMITS, LimitExceeded, Limits
from engine.numpy._base import asarray
from engine.primitive import InvalidAttributes
from engine.primitives import PRIMITIVES

FORMAT = "nabla.graph/1"
SCHEMA_PATH = Path(__file__).parent / "schemas" / "graph-v1.json"
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.:-]{0,63}")  # fullmatch: "$" would let a trailing newline in


class GraphFormatError(EngineError, ValueError):
    """A graph document is malformed: the message says where (node id, field) and why.

    `node` is the id of the node at fault (or "#k" for the k-th node when it has no valid id),
    `field` the part of the document (e.g. "constants.W", "inputs[1]", "attrs.shape"); either
    may be None. Subclasses say what kind of fault it is, for callers that map errors by type:
    GraphLimitError (also a LimitExceeded), GraphShapeError (also a ShapeError) and
    GraphDtypeError (also a DtypeError).
    """

    def __init__(self, message: str, *, node: str | None = None, field: str | None = None) -> None:
        Exception.__init__(self, message)  # not super(): GraphLimitError's next base needs more
        self.node = node
        self.field = field


class GraphLimitError(GraphFormatError, LimitExceeded):
    """A graph or one of its values exceeds a bound of `Limits` (`limit`, `value`, `maximum`)."""

    def __init__(self, message: str, *, limit: str, value: int, maximum: int, node: str | None = None,
                 field: str | None = None) -> None:
        LimitExceeded.__init__(self, message, limit=limit, value=value, maximum=maximum)
        self.node = node
        self.field = field


class GraphShapeError(GraphFormatError, ShapeError):
    """The operands of a node (or an argument for a declared parameter) do not fit its shapes."""


class GraphDtypeError(GraphFormatError, DtypeError):
    """The operands of a node (an argument, or a literal) do not fit its dtypes."""


LimitExceededInGraph = GraphLimitError  # its former name


def load_schema() -> dict[str, Any]:
    return json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))


# ----------------------------------------------------------------------------- arrays


def _replace_specials(data: Any, where: str, limits: Limits) -> Any:
    """Nested lists with "NaN", "Infinity", "-Infinity" as floats (nesting bounded by max_dimensions)."""
    try:
        return replace_special_floats(data, max_depth=limits.max_dimensions)
    except UnknownSpecialFloat as e:
        raise GraphFormatError(f"{where}: unexpected string {e.value[:40]!r} in numeric data (only 'NaN', "
                               "'Infinity', '-Infinity' are allowed)", field=where) from None
    except NestedTooDeep as e:
        raise GraphLimitError(f"{where}: data is nested more than {limits.max_dimensions} levels deep (an "
                              f"array has at most {limits.max_dimensions} dimensions, max_dimensions)",
                              limit="max_dimensions", value=e.depth, maximum=limits.max_dimensions,
                              field=where) from None


def _show(value: Any) -> str:
    """A number for a message: JSON's spelling of the special floats, long integers shortened."""
    if isinstance(value, float) and not np.isfinite(value):
        return special_name(value)
    text = str(value)
    return text if len(text) <= 24 else f"{text[:12]}... ({len(text)} digits)"


def _holds(dtype: np.dtype) -> str:
    if dtype.kind == "b":
        return "true/false or 1/0"
    if dtype.kind in "iu":
        return f"integers from {np.iinfo(dtype).min} to {np.iinfo(dtype).max}"
    return f"finite values up to {float(np.finfo(dtype).max):.4g} in magnitude, or 'NaN'/'Infinity'/'-Infinity'"


def _outside(raw: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """Which parsed JSON numbers `dtype` cannot hold: integers out of range or not whole, and for
    floats finite numbers that would become infinite (the special strings are fine)."""
    if dtype.kind == "b":
        return ~np.isin(raw, (0, 1))
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        if raw.dtype.kind != "f":  # NumPy compares int64/uint64 with any Python int exactly
            return (raw < info.min) | (raw > info.max)
        with np.errstate(invalid="ignore"):
            return ~np.isfinite(raw) | (raw != np.floor(raw)) | (raw < info.min) | (raw >= float(info.max) + 1)
    with np.errstate(over="ignore"):
        return np.isfinite(raw) & ~np.isfinite(raw.astype(dtype))


def _as_floats(raw: np.ndarray, dtype: np.dtype, where: str, at: dict[str, Any]) -> np.ndarray:
    """Data NumPy kept as Python objects (integers beyond 64 bits, or something not a number) as
    float64, which then goes through the range check of `dtype`."""
    out = np.empty(raw.shape, dtype=np.float64)
    for pos, v in np.ndenumerate(raw):
        if not isinstance(v, (int, float)):
            raise GraphFormatError(f"{where}: {repr(v)[:40]}{_at(pos)} is not a number", **at)
        # an integer past 64 bits, checked exactly: as a float, -2**63 - 1 rounds to -2**63
        if isinstance(v, int) and dtype.kind in "iu" and not np.iinfo(dtype).min <= v <= np.iinfo(dtype).max:
            raise GraphFormatError(f"{where}: {_show(v)}{_at(pos)} does not fit {dtype.name} "
                                   f"({_holds(dtype)})", **at)
        try:
            out[pos] = float(v)
        except OverflowError:
            raise GraphFormatError(f"{where}: {_show(v)}{_at(pos)} does not fit {dtype.name} "
                                   f"({_holds(dtype)})", **at) from None
    return out


def _at(pos: tuple[int, ...]) -> str:
    return f" at {list(pos)}" if pos else ""


def _to_dtype(values: Any, dtype: np.dtype, where: str, **at: Any) -> np.ndarray:
    """Parsed JSON numbers (nested lists) as an array of `dtype`, refusing any value it cannot hold,
    rather than wrapping around, truncating or overflowing to infinity."""
    try:
        raw = np.asarray(values)
    except (ValueError, TypeError) as e:
        raise GraphFormatError(f"{where}: data is not a rectangular array of numbers ({e})", **at) from None
    given = raw  # for the message: the number as it was written
    if raw.dtype.kind not in "biuf":
        raw = _as_floats(raw, dtype, where, at)
    bad = _outside(raw, dtype)
    if np.any(bad):
        pos = tuple(int(i) for i in np.argwhere(bad)[0])
        value = given[pos]
        value = value.item() if isinstance(value, np.generic) else value
        raise GraphFormatError(f"{where}: {_show(value)}{_at(pos)} does not fit {dtype.name} ({_holds(dtype)}); "
                               "change the value or the dtype", **at)
    return raw.astype(dtype)


def decode_array(spec: Any, where: str, limits: Limits = DEFAULT_LIMITS, max_elements: int | None = None) -> np.ndarray:
    """A constant's value from `{"dtype", "shape", "data"}` (nested lists of numbers and the strings
    "NaN", "Infinity", "-Infinity", or base64) or `{"$array": ...}` (base64); every value is checked
    against the range of its dtype."""
    if isinstance(spec, dict) and "$array" in spec:
        spec = spec["$array"]
        tagged = True
    else:
        tagged = False
    if not isinstance(spec, dict):
        raise GraphFormatError(f"{where}: expected an object with dtype, shape and data", field=where)
    dtype_name = spec.get("dtype", "float32")
    if dtype_name not in DTYPES:
        raise GraphFormatError(f"{where}: unknown dtype {dtype_name!r}; use one of {', '.join(DTYPES)}",
                               field=where)
    dtype = np.dtype(dtype_name)
    shape = spec.get("shape")
    limit = "max_constant_elements" if max_elements is None else "max_array_elements"
    if shape is not None:
        if not isinstance(shape, list) or not all(isinstance(n, int) and not isinstance(n, bool) and n >= 0
                                                  for n in shape):
            raise GraphFormatError(f"{where}: shape must be a list of non-negative integers", field=where)
        size = 1
        for n in shape:  # exact: np.prod in int64 wraps around for shapes like [2**32, 2**32]
            size *= n
        limits.check(limit, size, f"{where}: the number of elements", GraphLimitError, field=where)
        limits.check_shape(tuple(shape), f"{where}: the shape", GraphLimitError, field=where)
    data = spec.get("data")
    # A string is base64, except the three special values: a 0-d NaN or infinity is written so.
    if tagged or (isinstance(data, str) and data not in SPECIAL_FLOATS):
        return _decode_base64(data, shape, dtype, where)
    value = _to_dtype(_replace_specials(data, where, limits), dtype, where, field=where)
    if shape is not None and list(value.shape) != shape:
        raise GraphFormatError(f"{where}: data has shape {list(value.shape)} but shape says {shape}", field=where)
    limits.check(limit, value.size, f"{where}: the number of elements", GraphLimitError, field=where)
    return value


def _decode_base64(data: Any, shape: list[int] | None, dtype: np.dtype, where: str) -> np.ndarray:
    if shape is None:
        raise GraphFormatError(f"{where}: base64 data needs an explicit shape", field=where)
    try:
        return from_base64(data, shape, dtype)
    except InvalidBase64:
        raise GraphFormatError(f"{where}: data is not valid base64", field=where) from None
    except ByteCountMismatch as e:
        raise GraphFormatError(f"{where}: base64 data has {e.actual} bytes, but shape {shape} of {dtype.name} "
                               f"needs {e.expected}", field=where) from None


# ----------------------------------------------------------------------------- attributes


def _attr_to_json(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_attr_to_json(v) for v in value]
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (bool, int, float, str)) or value is None:
        return value
    raise GraphFormatError(f"attribute value of type {type(value).__name__} cannot be serialised")


def _int(value: Any, where: str, lo: int | None = None, hi: int | None = None) -> int:
    """An integer attribute; never past int64 (a slice stop of 10**400 would reach NumPy)."""
    if not isinstance(value, int) or isinstance(value, bool):
        raise GraphFormatError(f"{where} must be an integer, got {json.dumps(value)[:40]}")
    lo = -(2**63) if lo is None else lo
    hi = 2**63 - 1 if hi is None else hi
    if not lo <= value <= hi:
        raise GraphFormatError(f"{where} = {str(value)[:40]} is out of range [{lo}, {hi}]")
    return value


def _int_tuple(value: Any, where: str, lo: int | None = None, hi: int | None = None,
               max_len: int | None = 32) -> tuple[int, ...]:
    if not isinstance(value, list):
        raise GraphFormatError(f"{where} must be a list of integers")
    if max_len is not None and len(value) > max_len:
        raise GraphFormatError(f"{where} has {len(value)} entries; at most {max_len} dimensions are supported")
    return tuple(_int(v, f"{where}[{i}]", lo, hi) for i, v in enumerate(value))


def _shape(value: Any, where: str, limits: Limits) -> tuple[int, ...]:
    """A shape: at most max_dimensions non-negative integers, none over max_array_elements. The
    number of elements is bounded when the graph is traced (the limit in force may be lower),
    except for a zero-size shape, whose non-zero dimensions are bounded here as the expression
    language bounds them: [10**7, 10**7, 0] is as absurd as a full array of that size."""
    n, most = (len(value), limits.max_dimensions) if isinstance(value, list) else (0, 0)
    if n > most:
        raise GraphLimitError(f"{where} has {n} entries; at most {most} dimensions are supported (max_dimensions)",
                              limit="max_dimensions", value=n, maximum=most)
    dims = _int_tuple(value, where, 0, None, max_len=None)
    for i, d in enumerate(dims):
        limits.check("max_array_elements", d, f"{where}[{i}]", GraphLimitError)
    if 0 in dims:
        limits.check_shape(dims, where, GraphLimitError)
    return dims


def _exponent(value: Any, where: str, limits: Limits) -> int:
    y, most = _int(value, where), limits.max_integer_power
    if abs(y) > most:
        raise GraphLimitError(f"{where} = {y} is out of range [-{most}, {most}] (max_integer_power)",
                              limit="max_integer_power", value=abs(y), maximum=most)
    return y


def _index(value: Any, where: str) -> tuple:
    if not isinstance(value, list) or len(value) > 32:
        raise GraphFormatError(f"{where} must be a list of at most 32 index items")
    items = []
    for i, item in enumerate(value):
        w = f"{where}[{i}]"
        if not isinstance(item, list) or not item or not isinstance(item[0], str):
            raise GraphFormatError(f"{w} must be a list starting with its kind: "
                                   '["int", i], ["slice", start, stop, step], ["none"], ["ellipsis"], ["array", k]')
        kind = item[0]
        if kind == "int" and len(item) == 2:
            items.append(("int", _int(item[1], w, 0)))
        elif kind == "slice" and len(item) == 4:
            parts = tuple(None if p is None else _int(p, w) for p in item[1:])
            if parts[2] == 0:
                raise GraphFormatError(f"{w}: slice step cannot be zero")
            items.append(("slice", *parts))
        elif kind in ("none", "ellipsis") and len(item) == 1:
            items.append((kind,))
        elif kind == "array" and len(item) == 2:
            items.append(("array", _int(item[1], w, 0, 31)))
        else:
            raise GraphFormatError(f"{w}: unknown index item {json.dumps(item)[:60]}")
    return tuple(items)


# A conversion inside a graph may name a complex dtype (a real value meeting a complex one, as in
# jnp.fft programs), though no array of the document (params, constants) can be complex.
_ATTR_DTYPES = DTYPES + ("complex64", "complex128")


def _dtype_attr(value: Any, where: str) -> str:
    if value not in _ATTR_DTYPES:
        raise GraphFormatError(f"{where} must be one of {', '.join(_ATTR_DTYPES)}")
    return value


_EINSUM = re.compile(r"^[a-zA-Z]{0,32}(,[a-zA-Z]{0,32}){0,15}->[a-zA-Z]{0,32}$")


def _einsum_spec(value: Any, where: str) -> str:
    if not isinstance(value, str) or not _EINSUM.match(value):
        raise GraphFormatError(f"{where} must be an explicit einsum spec like 'ij,jk->ik'")
    return value


def attr_parsers(limits: Limits) -> dict[str, Callable[[Any, str], Any]]:
    """How each attribute of the JSON format is checked and converted back to the IR's value."""
    return {
        "axes": lambda v, w: _int_tuple(v, w, 0, 31),
        "axis": lambda v, w: _int(v, w, -32, 31),
        "perm": lambda v, w: _int_tuple(v, w, 0, 31),
        "shape": lambda v, w: _shape(v, w, limits),
        "y": lambda v, w: _exponent(v, w, limits),
        "dtype": _dtype_attr,
        "reverse": lambda v, w: v if isinstance(v, bool) else (_ for _ in ()).throw(
            GraphFormatError(f"{w} must be true or false")),
        "full_matrices": lambda v, w: v if isinstance(v, bool) else (_ for _ in ()).throw(
            GraphFormatError(f"{w} must be true or false")),
        "spec": _einsum_spec,
        "fft_type": lambda v, w: v if v in ("fft", "ifft", "rfft", "irfft") else (_ for _ in ()).throw(
            GraphFormatError(f"{w} must be 'fft', 'ifft', 'rfft' or 'irfft'")),
        "fft_lengths": lambda v, w: _int_tuple(v, w, 1, limits.max_array_elements, max_len=3),
        "index": _index,
        "mode": lambda v, w: v if v in ("set", "add", "mul") else (_ for _ in ()).throw(
            GraphFormatError(f"{w} must be 'set', 'add' or 'mul'")),
    }


# ----------------------------------------------------------------------------- graph -> JSON


def graph_to_json(graph: Graph, param_names: list[str] | None = None, encoding: str = "json") -> dict[str, Any]:
    """The document for a graph; values captured from enclosing traces cannot be serialised."""
    names: dict[Var, str] = {}
    params = []
    for i, v in enumerate(graph.invars):
        name = param_names[i] if param_names else f"p{i}"
        names[v] = name
        params.append({"name": name, "shape": list(v.aval.shape), "dtype": v.aval.dtype.name})
    taken = set(names.values())

    def fresh(name: str) -> str:  # generated names never shadow a parameter's
        while name in taken:
            name += "_"
        taken.add(name)
        return name

    constants = {}
    for i, (v, c) in enumerate(zip(graph.constvars, graph.consts)):
        if isinstance(c, Tracer):
            raise GraphFormatError("this graph captures a traced value of an enclosing transformation; "
                                   "only graphs of closed functions can be serialised")
        name = fresh(f"c{i}")
        names[v] = name
        constants[name] = _constant_json(np.asarray(c), encoding)

    def ref(atom: Any) -> Any:
        if isinstance(atom, Literal):
            value = np.asarray(atom.value)
            _refuse_complex_value(value)
            number = value.item()
            if isinstance(number, bool):  # JSON's true/false are not numbers in this format
                number = int(number)
            elif isinstance(number, float) and not np.isfinite(number):  # strict JSON has no NaN
                number = special_name(number)
            return {"literal": number, "dtype": value.dtype.name}
        return names[atom]

    nodes = []
    for k, eqn in enumerate(graph.eqns):
        if eqn.prim.python_code:
            kind = eqn.prim.name.removesuffix("_call")
            raise GraphFormatError(f"a {kind} function holds Python code and cannot be serialised; "
                                   "express it with primitives or register it as a model", node=f"n{k}")
        node = {"id": fresh(f"n{k}"), "op": eqn.prim.name, "inputs": [ref(a) for a in eqn.inputs],
                "attrs": {k2: _attr_to_json(v) for k2, v in eqn.attrs.items()}}
        if eqn.prim.multiple_results:  # each result gets a name of its own (svd's u, s, vt, ...)
            node["results"] = [fresh(f"{node['id']}.{j}") for j in range(len(eqn.outputs))]
            names.update(zip(eqn.outputs, node["results"]))
        else:
            names[eqn.outputs[0]] = node["id"]
        nodes.append(node)
    outputs = []
    for atom in graph.outvars:  # outputs are names: a literal output becomes a 0-d constant
        if isinstance(atom, Literal):
            name = fresh(f"c{len(constants)}")
            constants[name] = _constant_json(np.asarray(atom.value), encoding)
            outputs.append(name)
        else:
            outputs.append(names[atom])
    return {"format": FORMAT, "params": params, "constants": constants, "nodes": nodes, "outputs": outputs}


def _refuse_complex_value(value: np.ndarray) -> None:
    if value.dtype.kind == "c":
        raise GraphFormatError(f"the graph holds a complex {value.dtype.name} constant, and graph documents carry "
                               "real values only: build complex values inside the function from real ones "
                               "(the `complex` op, or jnp.fft of real arrays)")


def _constant_json(value: np.ndarray, encoding: str) -> dict[str, Any]:
    _refuse_complex_value(value)
    # A 0-d NaN or infinity as nested data would be the bare string "NaN", which the schema
    # cannot tell from base64: it is written as a tagged base64 leaf instead.
    special = value.ndim == 0 and value.dtype.kind == "f" and not np.isfinite(value)
    if encoding == "base64" or special:
        return encode_array(value, "base64")
    return {"dtype": value.dtype.name, "shape": list(value.shape), "data": encode_array(value)}


# ----------------------------------------------------------------------------- JSON -> function


def _check_depth(doc: Any, limits: Limits) -> None:
    """Bound the nesting of the document (max_depth) without recursion, before anything walks it."""
    stack = [(doc, 1)]
    while stack:
        value, depth = stack.pop()
        limits.check("max_depth", depth, "the nesting depth of the document", GraphLimitError)
        children = value.values() if isinstance(value, dict) else value
        stack.extend((v, depth + 1) for v in children if isinstance(v, (dict, list)))


class GraphFunction:
    """A validated graph document, callable on arrays or tracers (so every transform applies).

    Structural checks (format, names, references, cycles, ops, arity, attributes, limits) run at
    construction; shape and dtype checks run when it is called (or traced) with arguments.
    """

    def __init__(self, doc: Any, limits: Limits = DEFAULT_LIMITS) -> None:
        self.limits = limits
        if not isinstance(doc, dict):
            raise GraphFormatError("a graph document must be a JSON object")
        _check_depth(doc, limits)
        fmt = doc.get("format")
        if fmt != FORMAT:
            raise GraphFormatError(f"unsupported graph format {fmt!r}; this server reads {FORMAT!r}",
                                   field="format")
        unknown = set(doc) - {"format", "params", "constants", "nodes", "outputs", "description"}
        if unknown:
            raise GraphFormatError(f"unknown top-level field(s) {sorted(unknown)}", field=sorted(unknown)[0])
        self.params, self.param_avals = self._params(doc.get("params"))
        self.constants = self._constants(doc.get("constants", {}))
        self.nodes = self._nodes(doc.get("nodes"))
        self.outputs = self._outputs(doc.get("outputs"))

    def _params(self, params: Any) -> tuple[list[str], list[ShapedArray | None]]:
        if not isinstance(params, list):
            raise GraphFormatError("params must be a list of names or {name, shape, dtype} objects",
                                   field="params")
        self.limits.check("max_nodes", len(params), "the number of params", GraphLimitError, field="params")
        names, avals = [], []
        for i, p in enumerate(params):
            if isinstance(p, str):
                name, aval = p, None
            elif isinstance(p, dict) and isinstance(p.get("name"), str):
                name = p["name"]
                aval = None
                if "shape" in p:
                    try:
                        shape = _shape(p["shape"], f"params[{i}].shape", self.limits)
                        dtype = _dtype_attr(p.get("dtype", "float32"), f"params[{i}].dtype")
                    except GraphFormatError as e:
                        e.field = "params"
                        raise
                    aval = ShapedArray(shape, np.dtype(dtype))
            else:
                raise GraphFormatError(f"params[{i}] must be a name or an object with a name", field="params")
            if not _NAME.fullmatch(name):
                raise GraphFormatError(f"params[{i}]: {name!r} is not a valid name (letters, digits, _ . : -; "
                                       "starting with a letter or _)", field="params")
            if name in names:
                raise GraphFormatError(f"params[{i}]: duplicate parameter name {name!r}", field="params")
            names.append(name)
            avals.append(aval)
        return names, avals

    def _constants(self, constants: Any) -> dict[str, np.ndarray]:
        if not isinstance(constants, dict):
            raise GraphFormatError("constants must be an object mapping names to arrays", field="constants")
        out = {}
        total = 0
        for name, spec in constants.items():
            if not _NAME.fullmatch(name):
                raise GraphFormatError(f"constant name {name!r} is not a valid name", field="constants")
            if name in self.params:
                raise GraphFormatError(f"constant {name!r} has the name of a parameter", field="constants")
            value = decode_array(spec, f"constants.{name}", self.limits)
            total += value.size
            self.limits.check("max_constant_elements", total, "the total number of constant elements",
                              GraphLimitError, field=f"constants.{name}")
            value.flags.writeable = False
            out[name] = value
        return out

    def _nodes(self, nodes: Any) -> list[tuple[str, Any, list[Any], dict[str, Any]]]:
        if not isinstance(nodes, list):
            raise GraphFormatError("nodes must be a list", field="nodes")
        self.limits.check("max_nodes", len(nodes), "the number of nodes", GraphLimitError, field="nodes")
        parsers = attr_parsers(self.limits)
        defined = set(self.params) | set(self.constants)
        later = {n.get("id") for n in nodes if isinstance(n, dict)}
        self.results: dict[str, list[str]] = {}  # node id -> the names of its results (several-result ops)
        out = []
        for k, node in enumerate(nodes):
            if not isinstance(node, dict):
                raise GraphFormatError(f"nodes[{k}] must be an object", node=f"#{k}")
            node_id = node.get("id")
            if not isinstance(node_id, str) or not _NAME.fullmatch(node_id):
                raise GraphFormatError(f"nodes[{k}]: id must be a name string, got {json.dumps(node_id)[:40]}",
                                       node=f"#{k}")
            if node_id in defined:
                raise GraphFormatError(f"node {node_id!r}: the id is already used by a parameter, constant "
                                       "or earlier node", node=node_id)
            extra = set(node) - {"id", "op", "inputs", "attrs", "results"}
            if extra:
                raise GraphFormatError(f"node {node_id!r}: unknown field(s) {sorted(extra)}", node=node_id)
            op = node.get("op")
            prim = PRIMITIVES.get(op) if isinstance(op, str) else None
            if prim is None or prim.python_code:
                raise GraphFormatError(f"node {node_id!r}: unknown op {op!r}; GET /v1/ops (or "
                                       "engine.primitives.PRIMITIVES) lists the supported ones", node=node_id)
            inputs = node.get("inputs", [])
            if not isinstance(inputs, list):
                raise GraphFormatError(f"node {node_id!r}: inputs must be a list", node=node_id)
            if prim.arity is not None and len(inputs) != prim.arity:
                raise GraphFormatError(f"node {node_id!r}: op {op!r} takes {prim.arity} input"
                                       f"{'s' if prim.arity != 1 else ''}, got {len(inputs)}", node=node_id)
            if prim.arity is None and not 1 <= len(inputs) <= 64:
                raise GraphFormatError(f"node {node_id!r}: op {op!r} takes 1 to 64 inputs, got {len(inputs)}",
                                       node=node_id)
            refs = []
            for j, ref in enumerate(inputs):
                if isinstance(ref, str):
                    if ref in self.results:
                        raise GraphFormatError(
                            f"node {node_id!r}: input {j} refers to {ref!r}, a node with several results: refer to "
                            f"one of them by the names in its `results`, {self.results[ref]}", node=node_id)
                    if ref not in defined:
                        why = ("it is defined by a later node: nodes must come after their inputs, and "
                               "graphs cannot have cycles") if ref in later or ref == node_id else \
                            "no parameter, constant or earlier node has that name"
                        raise GraphFormatError(f"node {node_id!r}: input {j} refers to {ref!r}, but {why}",
                                               node=node_id)
                    refs.append(ref)
                else:
                    refs.append(self._literal(ref, f"node {node_id!r}: input {j}", node_id, f"inputs[{j}]"))
            attrs = node.get("attrs", {})
            if not isinstance(attrs, dict):
                raise GraphFormatError(f"node {node_id!r}: attrs must be an object", node=node_id)
            expected = set(prim.attr_names)
            if set(attrs) != expected:
                missing, unknown = sorted(expected - set(attrs)), sorted(set(attrs) - expected)
                raise GraphFormatError(
                    f"node {node_id!r}: op {op!r} takes attributes {sorted(expected) or 'none'}"
                    + (f"; missing {missing}" if missing else "") + (f"; unknown {unknown}" if unknown else ""),
                    node=node_id)
            parsed = self._attrs(node_id, attrs, parsers)
            if prim.check_attrs is not None:
                try:
                    prim.check_attrs(parsed, len(inputs))
                except InvalidAttributes as e:
                    raise GraphFormatError(f"node {node_id!r}: attribute {e.attribute!r}: {e}", node=node_id,
                                           field=f"attrs.{e.attribute}") from None
            defined.add(node_id)
            if prim.multiple_results or "results" in node:
                self.results[node_id] = self._result_names(node_id, op, prim.multiple_results, node.get("results"),
                                                           defined)
                defined.update(self.results[node_id])
            out.append((node_id, prim, refs, parsed))
        return out

    @staticmethod
    def _result_names(node_id: str, op: str, several: bool, names: Any, defined: set[Any]) -> list[str]:
        if not several:
            raise GraphFormatError(f"node {node_id!r}: op {op!r} has one result, named by the node's id; remove "
                                   "`results`", node=node_id, field="results")
        if not isinstance(names, list) or not names or not all(isinstance(n, str) and _NAME.fullmatch(n)
                                                               for n in names):
            raise GraphFormatError(f"node {node_id!r}: op {op!r} has several results: `results` must list a new "
                                   "name for each, e.g. [\"u\", \"s\", \"vt\"]", node=node_id, field="results")
        taken = [n for n in names if n in defined or names.count(n) > 1]
        if taken:
            raise GraphFormatError(f"node {node_id!r}: result name(s) {sorted(set(taken))} are already used",
                                   node=node_id, field="results")
        return names

    @staticmethod
    def _attrs(node_id: str, attrs: dict[str, Any], parsers: dict[str, Callable[[Any, str], Any]]) -> dict[str, Any]:
        parsed = {}
        for name, value in attrs.items():
            try:
                parsed[name] = parsers[name](value, f"node {node_id!r}: attribute {name!r}")
            except GraphFormatError as e:  # the parsers know the value, the node is known here
                e.node, e.field = node_id, f"attrs.{name}"
                raise
        return parsed

    def _literal(self, ref: Any, where: str, node_id: str, field: str) -> Any:
        """("literal", value, dtype name or None); a value its dtype cannot hold is refused here, and
        a literal without a dtype when the node runs (it takes its operands' dtype)."""
        if isinstance(ref, dict) and set(ref) <= {"literal", "dtype"} and "literal" in ref:
            value = ref["literal"]
            dtype = ref.get("dtype")
            if dtype is not None:
                _dtype_attr(dtype, f"{where}.dtype")
        else:
            value, dtype = ref, None
        if isinstance(value, str) and value in SPECIAL_FLOATS:
            value = SPECIAL_FLOATS[value]
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise GraphFormatError(f"{where} must be a name or a number, got {json.dumps(ref)[:40]}", node=node_id,
                                   field=field)
        # float64 holds any value some dtype can; checked now so that no node fails later on it
        _to_dtype(value, np.dtype(dtype or "float64"), where, node=node_id, field=field)
        return ("literal", value, dtype)

    def _outputs(self, outputs: Any) -> list[str]:
        if not isinstance(outputs, list) or not outputs:
            raise GraphFormatError("outputs must be a non-empty list of names", field="outputs")
        known = set(self.params) | set(self.constants) | {n[0] for n in self.nodes if n[0] not in self.results}
        known.update(name for names in self.results.values() for name in names)
        for j, ref in enumerate(outputs):
            if not isinstance(ref, str) or ref not in known:
                raise GraphFormatError(f"outputs[{j}] refers to {json.dumps(ref)[:40]}, which is not a "
                                       "parameter, constant or node", field="outputs")
        return outputs

    @property
    def num_nodes(self) -> int:
        return len(self.nodes)

    def __call__(self, *args: Any) -> Any:
        """Evaluate on arrays or tracers; returns one array, or a tuple for several outputs."""
        if len(args) != len(self.params):
            raise TypeError(f"this graph takes {len(self.params)} argument(s) {self.params}, got {len(args)}")
        env: dict[str, Any] = {name: _argument(name, aval, arg)
                               for name, aval, arg in zip(self.params, self.param_avals, args)}
        for name, value in self.constants.items():
            env[name] = Array(value)
        for node_id, prim, refs, attrs in self.nodes:
            operands = _operands(node_id, refs, env)
            try:
                with element_budget(_budget(self.limits.max_array_elements)):
                    result = bind(prim, tuple(operands), attrs)
            except (DeadlineExceeded, ConcretizationError, DifferentiationError, EscapedTracerError):
                raise  # not the node's fault: a time limit, or how the graph is being transformed
            except (EngineError, ValueError, TypeError, IndexError, np.linalg.LinAlgError) as e:
                raise _node_error(e, node_id, prim.name) from None
            if node_id in self.results:
                names = self.results[node_id]
                if len(names) != len(result):
                    raise GraphFormatError(f"node {node_id!r}: op {prim.name!r} has {len(result)} results, but "
                                           f"`results` names {len(names)}", node=node_id, field="results")
                for name, one in zip(names, result):
                    self._check_size(node_id, one)
                    env[name] = one
                continue
            self._check_size(node_id, result)
            env[node_id] = result
        outs = [env[o] for o in self.outputs]
        return outs[0] if len(outs) == 1 else tuple(outs)

    def _check_size(self, node_id: str, result: Any) -> None:
        size = 1
        for n in result.shape:
            size *= n
        self.limits.check("max_array_elements", size, f"node {node_id!r}: the number of elements of its result",
                          GraphLimitError, node=node_id)


def _argument(name: str, aval: ShapedArray | None, arg: Any) -> Any:
    x = arg if isinstance(arg, (Array, Tracer)) else asarray(arg)
    if aval is None or (tuple(x.shape) == aval.shape and x.dtype == aval.dtype):
        return x
    error = GraphShapeError if tuple(x.shape) != aval.shape else GraphDtypeError
    raise error(f"parameter {name!r} is declared {aval.str_short()} but the argument is "
                f"{x.dtype.name}{list(x.shape)}; pass an argument of the declared shape and dtype", field="params")


def _operands(node_id: str, refs: list[Any], env: dict[str, Any]) -> list[Any]:
    """A node's inputs; a literal without a dtype takes the dtype of the node's first named input."""
    operands = [env[r] if isinstance(r, str) else None for r in refs]
    typed = next((o for o in operands if o is not None), None)
    for j, r in enumerate(refs):
        if not isinstance(r, str):
            _, value, dtype = r
            dt = np.dtype(dtype) if dtype else (typed.dtype if typed is not None else np.dtype("float32"))
            try:
                operands[j] = Array(_to_dtype(value, dt, f"node {node_id!r}: input {j}")[()])
            except GraphFormatError as e:  # only possible without a dtype: it depends on the operands
                raise GraphDtypeError(f"{e}; the literal takes the dtype of the node's other operands, or give "
                                      'it one: {"literal": ..., "dtype": ...}', node=node_id,
                                      field=f"inputs[{j}]") from None
    return operands


def _node_error(e: Exception, node_id: str, op: str) -> GraphFormatError:
    """An error evaluating a node, as the graph error of its kind, naming the node."""
    message = f"node {node_id!r} ({op}): {e}"
    if isinstance(e, GraphFormatError):
        return e
    if isinstance(e, LimitExceeded):
        return GraphLimitError(message, limit=e.limit, value=e.value, maximum=e.maximum, node=node_id)
    if isinstance(e, DtypeError):
        return GraphDtypeError(message, node=node_id)
    return GraphShapeError(message, node=node_id)  # shapes, indices out of bounds, NumPy refusing values


def _budget(limit: int) -> int:
    """The element budget for a node: this graph's limit, or an enclosing tighter one."""
    outer = _element_budget[-1]
    return limit if outer is None else min(limit, outer)


def load_graph(doc: Any, limits: Limits = DEFAULT_LIMITS) -> Graph:
    """A Graph from a document whose params declare shapes and dtypes (as `to_json` writes)."""
    fn = GraphFunction(doc, limits)
    if any(a is None for a in fn.param_avals):
        missing = [n for n, a in zip(fn.params, fn.param_avals) if a is None]
        raise GraphFormatError(f"params {missing} declare no shape/dtype; pass arguments to "
                               "GraphFunction(doc) instead, or declare them", field="params")
    return trace_graph_function(fn, fn.param_avals)


def trace_graph_function(fn: GraphFunction, avals: list[ShapedArray]) -> Graph:
    trace = new_trace(concrete=False)
    try:
        tracers = [trace.new_input(av) for av in avals]
        for value in fn.constants.values():  # captured first, in the document's order
            trace.atom_for(Array(value))
        out = fn(*tracers)
        outs = list(out) if isinstance(out, tuple) else [out]
        graph = trace.to_graph(outs)
    finally:
        end_trace(trace)
    graph.param_names = list(fn.params)
    return graph
