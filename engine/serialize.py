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

import base64
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from engine.array import Array
from engine.core import Graph, Literal, ShapedArray, Tracer, Var, _element_budget, element_budget, end_trace, new_trace
from engine.errors import DeadlineExceeded, EngineError
from engine.limits import DEFAULT_LIMITS, LimitExceeded, Limits

FORMAT = "nabla.graph/1"
SCHEMA_PATH = Path(__file__).parent / "schemas" / "graph-v1.json"
DTYPES = ("float16", "float32", "float64", "int8", "int16", "int32", "int64", "uint8", "uint16",
          "uint32", "uint64", "bool")
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.:-]{0,63}$")


class GraphFormatError(EngineError, ValueError):
    """A graph document is malformed: the message says where (node id, field) and why."""

    def __init__(self, message: str, *, node: str | None = None, field: str | None = None) -> None:
        super().__init__(message)
        self.node = node
        self.field = field


def load_schema() -> dict[str, Any]:
    return json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))


# ----------------------------------------------------------------------------- arrays


def encode_array(value: np.ndarray, encoding: str = "json") -> Any:
    """An array as JSON: nested lists (NaN and infinities as the strings "NaN", "Infinity",
    "-Infinity"), or a tagged base64 leaf for speed."""
    value = np.asarray(value)
    if encoding == "base64":
        data = np.ascontiguousarray(value, dtype=value.dtype.newbyteorder("<"))
        return {"$array": {"dtype": value.dtype.name, "shape": list(value.shape),
                           "data": base64.b64encode(data.tobytes()).decode("ascii")}}
    if value.dtype.kind == "f" and not np.all(np.isfinite(value)):
        # Vectorised: the special values become strings in an object array, then one tolist().
        obj = value.astype(object)
        obj[np.isnan(value)] = "NaN"
        obj[np.isposinf(value)] = "Infinity"
        obj[np.isneginf(value)] = "-Infinity"
        return obj.tolist()
    return value.tolist()


_SPECIALS = {"NaN": np.nan, "Infinity": np.inf, "-Infinity": -np.inf}


def _replace_specials(data: Any, depth: int = 0) -> Any:
    if isinstance(data, str):
        if data in _SPECIALS:
            return _SPECIALS[data]
        raise ValueError(f"unexpected string {data!r} in numeric data (only 'NaN', 'Infinity', "
                         "'-Infinity' are allowed)")
    if isinstance(data, list):
        if depth >= 32:
            raise ValueError("data is nested more than 32 levels deep (arrays have at most 32 dimensions)")
        return [_replace_specials(d, depth + 1) for d in data]
    return data


def decode_array(spec: Any, where: str, limits: Limits = DEFAULT_LIMITS, max_elements: int | None = None) -> np.ndarray:
    """A constant's value from `{"dtype", "shape", "data"}` (lists or base64) or `{"$array": ...}`."""
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
    if shape is not None:
        if not isinstance(shape, list) or not all(isinstance(n, int) and not isinstance(n, bool) and n >= 0
                                                  for n in shape):
            raise GraphFormatError(f"{where}: shape must be a list of non-negative integers", field=where)
        size = 1
        for n in shape:  # exact: np.prod in int64 wraps around for shapes like [2**32, 2**32]
            size *= n
        limits.check("max_constant_elements" if max_elements is None else "max_array_elements",
                     size, f"{where}: the number of elements")
    data = spec.get("data")
    if tagged or isinstance(data, str):
        if shape is None:
            raise GraphFormatError(f"{where}: base64 data needs an explicit shape", field=where)
        try:
            raw = base64.b64decode(data, validate=True)
        except (ValueError, TypeError):
            raise GraphFormatError(f"{where}: data is not valid base64", field=where) from None
        if len(raw) != size * dtype.itemsize:
            raise GraphFormatError(
                f"{where}: base64 data has {len(raw)} bytes, but shape {shape} of {dtype_name} needs "
                f"{size * dtype.itemsize}", field=where)
        try:
            return np.frombuffer(raw, dtype=dtype.newbyteorder("<")).astype(dtype).reshape(shape)
        except ValueError as e:  # an empty array with a dimension NumPy cannot index ([2**62, 4, 0])
            raise GraphFormatError(f"{where}: shape {shape} is not a valid array shape ({e})", field=where) from None
    try:
        value = np.asarray(_replace_specials(data), dtype=dtype)
    except (ValueError, TypeError) as e:
        raise GraphFormatError(f"{where}: data is not a rectangular array of numbers ({e})", field=where) from None
    if shape is not None and list(value.shape) != shape:
        raise GraphFormatError(f"{where}: data has shape {list(value.shape)} but shape says {shape}", field=where)
    limits.check("max_constant_elements", value.size, f"{where}: the number of elements")
    return value


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
    if not isinstance(value, int) or isinstance(value, bool):
        raise GraphFormatError(f"{where} must be an integer, got {json.dumps(value)[:40]}")
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        raise GraphFormatError(f"{where} = {value} is out of range [{lo}, {hi}]")
    return value


def _int_tuple(value: Any, where: str, lo: int | None = None, hi: int | None = None) -> tuple[int, ...]:
    if not isinstance(value, list):
        raise GraphFormatError(f"{where} must be a list of integers")
    if len(value) > 32:
        raise GraphFormatError(f"{where} has {len(value)} entries; at most 32 dimensions are supported")
    return tuple(_int(v, f"{where}[{i}]", lo, hi) for i, v in enumerate(value))


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


def _dtype_attr(value: Any, where: str) -> str:
    if value not in DTYPES:
        raise GraphFormatError(f"{where} must be one of {', '.join(DTYPES)}")
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
        "shape": lambda v, w: _int_tuple(v, w, 0, limits.max_array_elements),
        "y": lambda v, w: _int(v, w, -limits.max_integer_power, limits.max_integer_power),
        "dtype": _dtype_attr,
        "reverse": lambda v, w: v if isinstance(v, bool) else (_ for _ in ()).throw(
            GraphFormatError(f"{w} must be true or false")),
        "spec": _einsum_spec,
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
        value = np.asarray(c)
        encoded = encode_array(value, encoding)
        constants[name] = encoded if encoding == "base64" else {
            "dtype": value.dtype.name, "shape": list(value.shape), "data": encoded}

    def ref(atom: Any) -> Any:
        if isinstance(atom, Literal):
            value = np.asarray(atom.value)
            number = value.item()
            if isinstance(number, float) and not np.isfinite(number):
                number = "NaN" if np.isnan(number) else ("Infinity" if number > 0 else "-Infinity")
            return {"literal": number, "dtype": value.dtype.name}
        return names[atom]

    nodes = []
    for k, eqn in enumerate(graph.eqns):
        if eqn.prim.name == "custom_vjp_call":
            raise GraphFormatError("a custom_vjp function holds Python code and cannot be serialised; "
                                   "express it with primitives or register it as a model", node=f"n{k}")
        ids = [fresh(f"n{k}" if len(eqn.outputs) == 1 else f"n{k}.{j}") for j in range(len(eqn.outputs))]
        for v, node_id in zip(eqn.outputs, ids):
            names[v] = node_id
        nodes.append({"id": ids[0], "op": eqn.prim.name, "inputs": [ref(a) for a in eqn.inputs],
                      "attrs": {k2: _attr_to_json(v) for k2, v in eqn.attrs.items()}})
    outputs = []
    for atom in graph.outvars:  # outputs are names: a literal output becomes a 0-d constant
        if isinstance(atom, Literal):
            value = np.asarray(atom.value)
            name = fresh(f"c{len(constants)}")
            constants[name] = encode_array(value, encoding) if encoding == "base64" else {
                "dtype": value.dtype.name, "shape": [], "data": encode_array(value)}
            outputs.append(name)
        else:
            outputs.append(names[atom])
    return {"format": FORMAT, "params": params, "constants": constants, "nodes": nodes, "outputs": outputs}


# ----------------------------------------------------------------------------- JSON -> function


def _check_depth(doc: Any, limits: Limits) -> None:
    """Bound the nesting of the document (max_depth) without recursion, before anything walks it."""
    stack = [(doc, 1)]
    while stack:
        value, depth = stack.pop()
        limits.check("max_depth", depth, "the nesting depth of the document")
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
        self.limits.check("max_nodes", len(params), "the number of params")
        names, avals = [], []
        for i, p in enumerate(params):
            if isinstance(p, str):
                name, aval = p, None
            elif isinstance(p, dict) and isinstance(p.get("name"), str):
                name = p["name"]
                aval = None
                if "shape" in p:
                    shape = _int_tuple(p["shape"], f"params[{i}].shape", 0, self.limits.max_array_elements)
                    dtype = _dtype_attr(p.get("dtype", "float32"), f"params[{i}].dtype")
                    aval = ShapedArray(shape, np.dtype(dtype))
            else:
                raise GraphFormatError(f"params[{i}] must be a name or an object with a name", field="params")
            if not _NAME.match(name):
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
            if not _NAME.match(name):
                raise GraphFormatError(f"constant name {name!r} is not a valid name", field="constants")
            if name in self.params:
                raise GraphFormatError(f"constant {name!r} has the name of a parameter", field="constants")
            value = decode_array(spec, f"constants.{name}", self.limits)
            total += value.size
            self.limits.check("max_constant_elements", total, "the total number of constant elements")
            value.flags.writeable = False
            out[name] = value
        return out

    def _nodes(self, nodes: Any) -> list[tuple[str, Any, list[Any], dict[str, Any]]]:
        from engine.primitives import PRIMITIVES

        if not isinstance(nodes, list):
            raise GraphFormatError("nodes must be a list", field="nodes")
        self.limits.check("max_nodes", len(nodes), "the number of nodes")
        parsers = attr_parsers(self.limits)
        defined = set(self.params) | set(self.constants)
        later = {n.get("id") for n in nodes if isinstance(n, dict)}
        out = []
        for k, node in enumerate(nodes):
            if not isinstance(node, dict):
                raise GraphFormatError(f"nodes[{k}] must be an object", node=f"#{k}")
            node_id = node.get("id")
            if not isinstance(node_id, str) or not _NAME.match(node_id):
                raise GraphFormatError(f"nodes[{k}]: id must be a name string, got {json.dumps(node_id)[:40]}",
                                       node=f"#{k}")
            if node_id in defined:
                raise GraphFormatError(f"node {node_id!r}: the id is already used by a parameter, constant "
                                       "or earlier node", node=node_id)
            extra = set(node) - {"id", "op", "inputs", "attrs"}
            if extra:
                raise GraphFormatError(f"node {node_id!r}: unknown field(s) {sorted(extra)}", node=node_id)
            op = node.get("op")
            prim = PRIMITIVES.get(op) if isinstance(op, str) else None
            if prim is None or op == "custom_vjp_call":
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
                    if ref not in defined:
                        why = ("it is defined by a later node: nodes must come after their inputs, and "
                               "graphs cannot have cycles") if ref in later or ref == node_id else \
                            "no parameter, constant or earlier node has that name"
                        raise GraphFormatError(f"node {node_id!r}: input {j} refers to {ref!r}, but {why}",
                                               node=node_id)
                    refs.append(ref)
                else:
                    refs.append(self._literal(ref, f"node {node_id!r}: input {j}", node_id))
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
            parsed = {}
            for name, value in attrs.items():
                try:
                    parsed[name] = parsers[name](value, f"node {node_id!r}: attribute {name!r}")
                except GraphFormatError as e:
                    raise GraphFormatError(str(e), node=node_id) from None
            if op == "integer_pow" and abs(parsed["y"]) > self.limits.max_integer_power:
                raise GraphFormatError(f"node {node_id!r}: exponent {parsed['y']} is too large", node=node_id)
            defined.add(node_id)
            out.append((node_id, prim, refs, parsed))
        return out

    def _literal(self, ref: Any, where: str, node_id: str) -> Any:
        if isinstance(ref, dict) and set(ref) <= {"literal", "dtype"} and "literal" in ref:
            value = ref["literal"]
            dtype = ref.get("dtype")
            if dtype is not None:
                _dtype_attr(dtype, f"{where}.dtype")
        else:
            value, dtype = ref, None
        if isinstance(value, str) and value in _SPECIALS:
            value = _SPECIALS[value]
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise GraphFormatError(f"{where} must be a name or a number, got {json.dumps(ref)[:40]}", node=node_id)
        return ("literal", value, dtype)

    def _outputs(self, outputs: Any) -> list[str]:
        if not isinstance(outputs, list) or not outputs:
            raise GraphFormatError("outputs must be a non-empty list of names", field="outputs")
        known = set(self.params) | set(self.constants) | {n[0] for n in self.nodes}
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
        from engine.core import bind
        from engine.numpy._base import asarray

        if len(args) != len(self.params):
            raise TypeError(f"this graph takes {len(self.params)} argument(s) {self.params}, got {len(args)}")
        env: dict[str, Any] = {}
        for name, aval, arg in zip(self.params, self.param_avals, args):
            x = arg if isinstance(arg, (Array, Tracer)) else asarray(arg)
            if aval is not None and (tuple(x.shape) != aval.shape or x.dtype != aval.dtype):
                raise GraphShapeError(f"parameter {name!r} is declared {aval.str_short()} but the argument is "
                                      f"{x.dtype.name}{list(x.shape)}", node=None)
            env[name] = x
        for name, value in self.constants.items():
            env[name] = Array(value)
        for node_id, prim, refs, attrs in self.nodes:
            operands = [env[r] if isinstance(r, str) else None for r in refs]
            typed = next((o for o in operands if o is not None), None)
            for j, r in enumerate(refs):
                if not isinstance(r, str):
                    _, value, dtype = r
                    dt = np.dtype(dtype) if dtype else (typed.dtype if typed is not None else np.dtype("float32"))
                    operands[j] = Array(np.asarray(value, dtype=dt)[()])
            try:
                with element_budget(_budget(self.limits.max_array_elements)):
                    result = bind(prim, tuple(operands), attrs)
            except (LimitExceededInGraph, DeadlineExceeded):  # a time limit is not the node's fault
                raise
            except LimitExceeded as e:
                raise LimitExceededInGraph(f"node {node_id!r} ({prim.name}): {e}", node=node_id) from None
            except (EngineError, ValueError, TypeError, IndexError, np.linalg.LinAlgError) as e:
                if isinstance(e, GraphFormatError):
                    raise
                raise GraphShapeError(f"node {node_id!r} ({prim.name}): {e}", node=node_id) from None
            self._check_size(node_id, result)
            env[node_id] = result
        outs = [env[o] for o in self.outputs]
        return outs[0] if len(outs) == 1 else tuple(outs)

    def _check_size(self, node_id: str, result: Any) -> None:
        size = 1
        for n in result.shape:
            size *= n
        if size > self.limits.max_array_elements:
            raise LimitExceededInGraph(
                f"node {node_id!r} would produce {size} elements, over the limit of "
                f"{self.limits.max_array_elements} (max_array_elements)", node=node_id)


def _budget(limit: int) -> int:
    """The element budget for a node: this graph's limit, or an enclosing tighter one."""
    outer = _element_budget[-1]
    return limit if outer is None else min(limit, outer)


class GraphShapeError(GraphFormatError):
    """Operands of a node do not fit its op (shapes or dtypes)."""


class LimitExceededInGraph(GraphFormatError):
    """A node's result would exceed the element budget."""


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
