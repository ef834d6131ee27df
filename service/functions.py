"""From a request's `function` field to something the engine can transform.

`{"expr": ..., "params": [...]}` compiles the expression language, `{"graph": {...}}` validates a
JSON graph, and `{"model": name, "version": n}` looks a model up (built in, from the model
repository, or registered). Every function has a content key, so compiled plans are cached per
function, not per request.

Derived functions wrap any of these (or each other): `{"jvp": f}` is the function
(primals..., tangents...) -> the output's tangent, and `{"vjp": f}` is (primals..., cotangent) ->
one cotangent per parameter. They are ordinary functions to every transform, so a transform of
`{"vjp": {"jvp": f}}` is a derivative of f of any order: this is what lets an autodiff system on
the client (client.jax, client.torch) differentiate through a call to the service.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

import engine
from engine.array import Array
from engine.core import aval_of
from engine.expr import Program
from engine.limits import Limits
from engine.serialize import GraphFunction
from engine.tree_util import describe_mismatch, tree_flatten, tree_leaves, tree_structure, tree_unflatten
from service.builtin_models import BUILTIN_MODELS
from service.errors import (
    InvalidArgument,
    InvalidFunction,
    InvalidRequest,
    LimitExceededError,
    NotFound,
)
from service.inline import needs_worker
from service.json_trees import TreeBudget, decode_tree, encode_tree
from service.model_schema import notation
from service.store import ModelRecord, Registry


@dataclass
class Function:
    key: str  # identifies the computation: same key, same function
    params: list[str]  # the parameters callers pass, in order
    fn: Callable[..., Any]  # takes one value per entry of `params`
    description: str = ""
    graph_nodes: int | None = None
    model: str | None = None
    version: int | None = None
    schema: dict[str, Any] | None = None  # parameter -> spec (service.model_schema); None: untyped
    # A derived function ({"jvp": ...}, {"vjp": ...}) differentiates `root` `depth` times when traced.
    root: Function | None = None
    depth: int = 0

    def spec(self, param: str) -> Any:
        return (self.schema or {}).get(param)


def declared_schema(fn: Callable[..., Any], params: list[str]) -> dict[str, Any] | None:
    """The parameters a graph declares with shape and dtype (a graph traced by a client declares
    all of them); None for an expression, whose parameters are untyped."""
    if not isinstance(fn, GraphFunction):
        return None
    schema = {p: {"shape": list(a.shape), "dtype": a.dtype.name} for p, a in zip(fn.params, fn.param_avals)
              if a is not None and p in params}
    return schema or None


def _canonical(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"))


def content_key(spec: Any) -> str:
    return hashlib.sha256(_canonical(spec).encode()).hexdigest()[:32]


def compile_spec(spec: Any, limits: Limits) -> tuple[Callable[..., Any], list[str], int]:
    """A function spec's callable, its parameter names and its size in nodes."""
    if not isinstance(spec, dict):
        raise InvalidFunction("function must be an object: {\"expr\", \"params\"}, {\"graph\"} or {\"model\"}")
    kinds = [k for k in ("expr", "graph", "model") if k in spec]
    if len(kinds) != 1:
        raise InvalidFunction("function must have exactly one of expr, graph or model",
                              {"keys": sorted(spec)})
    if "expr" in spec:
        extra = set(spec) - {"expr", "params"}
        if extra:
            raise InvalidFunction(f"unknown field(s) {sorted(extra)} in an expr function")
        if "params" not in spec:
            raise InvalidFunction("an expr function needs params: the names of its arguments, in order")
        program = Program(spec["expr"], spec["params"], limits)
        return program, list(program.params), program.num_nodes
    if "graph" in spec:
        extra = set(spec) - {"graph"}
        if extra:
            raise InvalidFunction(f"unknown field(s) {sorted(extra)} in a graph function")
        graph = GraphFunction(spec["graph"], limits)
        return graph, list(graph.params), graph.num_nodes
    raise InvalidFunction("a model reference cannot be registered as a model's function")


# ----------------------------------------------------------------------------- derived functions

DERIVED = ("jvp", "vjp")
DEFAULT_DERIVED_DEPTH = 4  # NABLA_MAX_ORDER's default


def unwrap_derived(spec: Any, max_depth: int) -> tuple[list[str], Any]:
    """The jvp/vjp wrappers of a spec, outermost first ([] for a plain function), and the function
    they wrap; refused past `max_depth` levels before anything is resolved: each level multiplies
    the traced size."""
    kinds: list[str] = []
    while isinstance(spec, dict) and any(k in spec for k in DERIVED):
        if len(spec) != 1:
            raise InvalidFunction("a derived function has exactly one field, jvp or vjp, whose value is the "
                                  "function it differentiates: {\"jvp\": {\"expr\": ..., \"params\": [...]}}",
                                  {"keys": sorted(spec)})
        kinds.append(next(iter(spec)))
        spec = spec[kinds[-1]]
    if len(kinds) > max_depth:
        raise LimitExceededError(
            f"the function nests {len(kinds)} jvp/vjp levels: a derivative of order {len(kinds)}, above the limit "
            f"of {max_depth} (NABLA_MAX_ORDER); ask for a lower-order derivative",
            {"limit": "NABLA_MAX_ORDER", "requested": len(kinds), "maximum": max_depth})
    return kinds, spec


def tangent_name(param: str, depth: int = 1) -> str:
    """The name of a parameter's tangent in a derived function of this nesting depth: parentheses,
    so no expression or graph parameter is spelled so, and the depth past 1, so the tangents of a
    second level differ from the first's (jvp of jvp of f has tangent(x) and tangent2(x))."""
    return f"tangent{depth if depth > 1 else ''}({param})"


def cotangent_name(depth: int = 1) -> str:
    return f"cotangent{depth if depth > 1 else ''}(output)"


def derived(kind: str, inner: Function) -> Function:
    """The jvp or vjp function of `inner` (see the module's docstring)."""
    n = len(inner.params)
    root = inner.root or inner
    depth = inner.depth + 1
    common = {"model": inner.model, "version": inner.version, "root": root, "depth": depth}
    if kind == "jvp":
        tangents = [tangent_name(p, depth) for p in inner.params]
        schema = None
        if inner.schema:  # a tangent is typed like its primal (named dimensions bound to the same sizes)
            schema = {**inner.schema, **{t: inner.schema[p] for p, t in zip(inner.params, tangents)
                                         if p in inner.schema}}

        def jvp_fn(*flat: Any) -> Any:
            _check_tangents(inner.params, tangents, flat[:n], flat[n:])
            return engine.jvp(inner.fn, tuple(flat[:n]), tuple(flat[n:]))[1]

        return Function(f"jvp({inner.key})", inner.params + tangents, jvp_fn,
                        f"the JVP of {inner.description or inner.key}", schema=schema, **common)

    cotangent = cotangent_name(depth)

    def vjp_fn(*flat: Any) -> Any:
        out, pullback = engine.vjp(inner.fn, *flat[:n])
        return tuple(pullback(_shaped_like(flat[n], out, cotangent)))

    schema = dict(inner.schema) if inner.schema else None
    return Function(f"vjp({inner.key})", inner.params + [cotangent], vjp_fn,
                    f"the VJP of {inner.description or inner.key}", schema=schema, **common)


def _check_tangents(params: list[str], names: list[str], primals: Any, tangents: Any) -> None:
    """Each tangent has its primal's structure, shapes and float dtype (as in JAX)."""
    for name, tangent_param, primal, tangent in zip(params, names, primals, tangents):
        where = f"args.{tangent_param}"
        p_leaves, p_tree = tree_flatten(primal)
        t_leaves, t_tree = tree_flatten(tangent)
        if p_tree != t_tree:
            raise InvalidArgument(f"{where}: a tangent has its primal's structure: {describe_mismatch(p_tree, t_tree)}",
                                  {"path": where})
        for p, t in zip(p_leaves, t_leaves):
            pa, ta = aval_of(_as_engine(p)), aval_of(_as_engine(t))
            if pa.shape != ta.shape or (pa.dtype.kind == "f" and pa.dtype != ta.dtype):
                expected, got = notation(pa.shape, pa.dtype), notation(ta.shape, ta.dtype)
                raise InvalidArgument(f"{where}: expected {expected} (shaped like {name}), got {got}",
                                      {"path": where, "expected": expected, "got": got})


def _shaped_like(cotangent: Any, output: Any, name: str) -> Any:
    """The cotangent in the output's structure: JSON has no tuples, and a list of equal-shaped
    arrays arrives stacked, so it is matched to the output by its leaves."""
    target = tree_structure(output)
    leaves = [_as_engine(c) for c in tree_leaves(cotangent)]
    if len(leaves) == 1 and target.num_leaves > 1 and aval_of(leaves[0]).shape[:1] == (target.num_leaves,):
        leaves = [leaves[0][i] for i in range(target.num_leaves)]
    where = f"args.{name}"
    if len(leaves) != target.num_leaves:
        raise InvalidArgument(f"{where}: {len(leaves)} array(s), but the function's output has {target.num_leaves}: "
                              "send one array per output, shaped like it", {"path": where})
    for c, o in zip(leaves, tree_leaves(output)):
        ca, oa = aval_of(c), aval_of(_as_engine(o))
        if ca.shape != oa.shape:
            expected, got = notation(oa.shape, oa.dtype), notation(ca.shape, ca.dtype)
            raise InvalidArgument(f"{where}: expected {expected} (the output's shape), got {got}",
                                  {"path": where, "expected": expected, "got": got})
    return tree_unflatten(target, leaves)


def _as_engine(x: Any) -> Any:
    return Array(x) if isinstance(x, (np.ndarray, np.generic, int, float)) else x


def bind_constants(fn: Callable[..., Any], params: list[str],
                   constants: dict[str, Any]) -> tuple[Callable[..., Any], list[str]]:
    """fn with some parameters fixed by name; returns it and the remaining parameter names."""
    unknown = set(constants) - set(params)
    if unknown:
        raise InvalidFunction(f"constants {sorted(unknown)} name no parameter of the function; its "
                              f"parameters are {params}")
    free = [p for p in params if p not in constants]
    frozen = {k: _as_array_tree(v) for k, v in constants.items()}

    def bound(*args: Any) -> Any:
        it = iter(args)
        return fn(*[frozen[p] if p in frozen else next(it) for p in params])

    return bound, free


def _as_array_tree(tree: Any) -> Any:
    from engine.tree_util import tree_map

    return tree_map(lambda x: Array(x) if isinstance(x, np.ndarray) else x, tree)


class FunctionResolver:
    """Resolves function specs, caching compiled ones (inline specs by content, models by version)."""

    def __init__(self, registry: Registry, limits: Limits, repository: dict[str, dict[str, Any]] | None = None,
                 cache_size: int = 512, refresh_s: float = 1.0, max_derived_depth: int = DEFAULT_DERIVED_DEPTH) -> None:
        self.registry = registry
        self.limits = limits
        self.max_derived_depth = max_derived_depth  # nested jvp/vjp levels, a derivative order (NABLA_MAX_ORDER)
        self.repository = repository or {}
        self._cache: OrderedDict[str, Function] = OrderedDict()
        self._lock = threading.Lock()
        self._cache_size = cache_size
        # Registered models are cached per registry generation, re-read at most every refresh_s:
        # a delete or a new version made through any replica is seen within that time.
        self.refresh_s = refresh_s
        self._generation: int | None = None
        self._checked_at = -float("inf")
        self._latest: dict[str, int | None] = {}

    def _cached(self, key: str, build: Callable[[], Function]) -> Function:
        with self._lock:
            hit = self._cache.get(key)
            if hit is not None:
                self._cache.move_to_end(key)
                return hit
        needs_worker("the function is not resolved in this process yet")
        fn = build()
        with self._lock:
            self._cache[key] = fn
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        return fn

    def resolve(self, spec: Any) -> Function:
        kinds, innermost = unwrap_derived(spec, self.max_derived_depth)
        if kinds:
            function = self.resolve(innermost)
            for kind in reversed(kinds):  # the innermost derivative first
                function = derived(kind, function)
            return function
        if isinstance(spec, dict) and "model" in spec:
            return self.model(spec)
        key = content_key(spec)

        def build() -> Function:
            fn, params, nodes = compile_spec(spec, self.limits)
            return Function(key, params, fn, graph_nodes=nodes, schema=declared_schema(fn, params))

        return self._cached("inline:" + key, build)

    def model(self, spec: dict[str, Any]) -> Function:
        extra = set(spec) - {"model", "version"}
        if extra:
            raise InvalidFunction(f"unknown field(s) {sorted(extra)} in a model reference")
        name = spec["model"]
        version = spec.get("version")
        if not isinstance(name, str):
            raise InvalidFunction("model must be a model's name")
        if version is not None and (isinstance(version, bool) or not isinstance(version, int)
                                    or not 1 <= version < 2**31):
            raise InvalidFunction("version must be a positive integer below 2**31",
                                  {"version": str(version)[:40]})
        builtin = BUILTIN_MODELS.get(name)
        if builtin is not None:
            if version not in (None, 1):
                raise NotFound(f"built-in model {name!r} has only version 1", {"model": name, "version": version})

            def build_builtin() -> Function:
                fn, free = bind_constants(builtin.function, builtin.params, builtin.constants)
                return Function(f"builtin:{name}", free, fn, builtin.description, model=name, version=1,
                                schema=builtin.schema)

            return self._cached(f"builtin:{name}", build_builtin)
        if name in self.repository:
            if version not in (None, 1):
                raise NotFound(f"model {name!r} from the model repository has only version 1")
            return self._cached(f"repo:{name}", lambda: self._from_definition(name, 1, self.repository[name]))
        self._refresh()
        if version is None:
            version = self._latest_version(name)
            if version is None:
                raise NotFound(f"no model named {name!r}; GET /v1/models lists them", {"model": name})
        key = f"model:{name}:{version}"

        def build_registered() -> Function:
            record = self.registry.get(name, version)
            if record is None:
                raise NotFound(f"model {name!r} has no version {version}", {"model": name, "version": version})
            return self._from_record(record)

        return self._cached(key, build_registered)

    def _from_record(self, record: ModelRecord) -> Function:
        return self._from_definition(record.name, record.version, {
            "function": record.function, "constants": record.constants, "description": record.description,
            "schema": record.param_schema})

    def _from_definition(self, name: str, version: int, definition: dict[str, Any]) -> Function:
        fn, params, nodes = compile_spec(definition["function"], self.limits)
        constants = decode_constants(definition.get("constants") or {}, self.limits, declared_schema(fn, params))
        bound, free = bind_constants(fn, params, constants)
        # The content is part of the key: a name deleted and registered again reuses version numbers,
        # and compiled plans must not be shared with the old function.
        key = f"model:{name}:{version}:" + content_key([definition["function"], definition.get("constants") or {}])
        schema = definition.get("schema") or declared_schema(fn, free)
        return Function(key, free, bound, definition.get("description", ""), nodes, name, version, schema)

    def _latest_version(self, name: str) -> int | None:
        with self._lock:
            if name in self._latest:
                return self._latest[name]
        needs_worker("the model's latest version is not known in this process yet")
        version = self.registry.latest_version(name)
        with self._lock:
            self._latest[name] = version
        return version

    def _refresh(self) -> None:
        now = time.monotonic()
        if now - self._checked_at < self.refresh_s:
            return
        needs_worker("this process's view of the registry is due for a refresh")
        generation = self.registry.generation()
        with self._lock:
            self._checked_at = now
            if generation != self._generation:
                self._generation = generation
                self._drop_registered()

    def _drop_registered(self) -> None:
        self._latest.clear()
        for key in [k for k in self._cache if k.startswith("model:")]:
            del self._cache[key]

    def forget(self) -> None:
        """Drop registered models now (this process changed the registry)."""
        with self._lock:
            self._checked_at = -float("inf")
            self._drop_registered()


def decode_constants(constants: Any, limits: Limits, schema: dict[str, Any] | None = None) -> dict[str, Any]:
    """Constants as arrays: plain numbers are float64 (JSON numbers are doubles), or the dtype
    the function declares for that parameter; $array leaves keep theirs."""
    if not isinstance(constants, dict):
        raise InvalidRequest("constants must be an object mapping parameter names to values")
    budget = TreeBudget(limits.max_array_elements, limits.max_constant_elements, limits.max_depth,
                        "NABLA_MAX_CONSTANT_ELEMENTS")
    return {name: decode_tree(value, np.dtype("float64"), f"constants[{name!r}]", budget, (schema or {}).get(name))
            for name, value in constants.items()}


def encode_constants(constants: dict[str, Any]) -> dict[str, Any]:
    return {k: encode_tree(v, "base64") for k, v in constants.items()}
