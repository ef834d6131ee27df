"""From a request's `function` field to something the engine can transform.

`{"expr": ..., "params": [...]}` compiles the expression language, `{"graph": {...}}` validates a
JSON graph, and `{"model": name, "version": n}` looks a model up (built in, from the model
repository, or registered). Every function has a content key, so compiled plans are cached per
function, not per request.
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

from engine.array import Array
from engine.expr import Program
from engine.limits import Limits
from engine.serialize import GraphFunction
from service.builtin_models import BUILTIN_MODELS
from service.errors import (
    InvalidFunction,
    InvalidRequest,
    NotFound,
)
from service.json_trees import TreeBudget, decode_tree, encode_tree
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
                 cache_size: int = 512, refresh_s: float = 1.0) -> None:
        self.registry = registry
        self.limits = limits
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
        fn = build()
        with self._lock:
            self._cache[key] = fn
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        return fn

    def resolve(self, spec: Any) -> Function:
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
        version = self.registry.latest_version(name)
        with self._lock:
            self._latest[name] = version
        return version

    def _refresh(self) -> None:
        now = time.monotonic()
        if now - self._checked_at < self.refresh_s:
            return
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
