"""The transport-neutral request pipeline: every request, whatever protocol brought it, goes
parse → validate → admit → compute → encode here, under one deadline, and comes back as a
`Reply` (status, JSON bytes, headers). Protocol adapters (service.app for HTTP) only move bytes
in and out and decide nothing.

`Pipeline.handle` is synchronous and meant to run off the event loop: decoding, computing and
encoding all check the deadline as they go, so a request past its time stops where it is.
Errors are mapped by type (service.error_map); an exception no row maps is a bug, answered as
a JSON 500 with the request id and logged as one line.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import hashlib
import importlib
import json
import logging
import math
import pkgutil
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import orjson
from pydantic import BaseModel, ValidationError

import engine
from engine.core import deadline
from engine.primitives import PRIMITIVES
from engine.serialize import DTYPES
from engine.tree_util import tree_flatten, tree_map
from service import admission, batch_axes, graph_view, model_schema, msgpack_codec, replay, vector_products
from service import requests as R
from service.admission import Budget
from service.builtin_models import BUILTIN_MODELS
from service.compute import Options, Outcome, PlanCache, abstract_shapes, computed_dtype, elapsed_ms, run
from service.error_map import to_api_error
from service.errors import (
    APIError,
    Conflict,
    InternalError,
    InvalidArgument,
    InvalidFunction,
    InvalidRequest,
    LimitExceededError,
    NotFound,
    UnsupportedMediaType,
)
from service.functions import (
    Function,
    FunctionResolver,
    bind_constants,
    compile_spec,
    declared_schema,
    decode_constants,
    encode_constants,
)
from service.inline import NeedsWorker, inline
from service.json_trees import MAX_DIMENSIONS, TreeBudget, Verbatim, decode_tree, dumps
from service.metrics import Metrics
from service.msgpack_codec import JSON, MSGPACK
from service.settings import Settings
from service.store import Registry, open_registry

log = logging.getLogger("nabla")


def _import_the_whole_engine() -> None:
    """Import every engine module now. The engine imports some modules inside functions (to break
    cycles); a server that imported them only on first use would fail mid-request if its files
    were replaced after it started (an upgrade or `pip install -e` under a running server)."""
    for module in pkgutil.walk_packages(engine.__path__, "engine."):
        importlib.import_module(module.name)


_import_the_whole_engine()
_NAME = re.compile(R.NAME_PATTERN.strip("^$"))
_FLOATS = {"float32": np.dtype("float32"), "float64": np.dtype("float64")}


@dataclass
class Call:
    """One request, as any protocol delivers it."""

    operation: str  # compute, shapes, register, list_models, get_model, delete_model, ops
    body: bytes = b""
    transform: str | None = None
    model: str | None = None
    request_id: str = ""
    idempotency_key: str | None = None
    version: int | None = None
    query: dict[str, str] = field(default_factory=dict)
    # The body's media type and the answer's (service.msgpack_codec: JSON or MSGPACK); the
    # protocol adapter has checked the one and negotiated the other.
    content_type: str = JSON
    accept: str = JSON


@dataclass
class Reply:
    status: int
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)
    error_type: str | None = None
    # Seconds that building the answer's plan took (cached or not), and that its runs take: the
    # server computes such requests inline only if both are small (service.inline).
    plan_s: tuple[float, float] | None = None


@dataclass
class Result:
    """What an operation returns before encoding."""

    payload: Any
    status: int = 200
    encoding: str = "json"
    plan_s: tuple[float, float] | None = None  # as in Reply


def parse_json(raw: bytes, max_depth: int = 32) -> Any:
    """The body as JSON. Numbers must fit a double (1e400 is refused, not read as infinity) and
    integers are exact (the fast parser would turn one past 64 bits into a float). The bare
    NaN/Infinity tokens that Python's json module writes are read too (the standard has no such
    tokens; the strings "NaN", "Infinity" and "-Infinity" are the portable spelling). Strings
    must be valid Unicode (no lone surrogate escapes)."""
    if not raw:
        raise InvalidRequest("the request body is empty; send a JSON object")
    digits = raw.translate(_DIGITS_AS_ZEROS)
    if _LONG_RUN not in digits and not digits.startswith(_LONG_RUN[1:]):
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError as e:
            return _parse_slowly(raw, e, max_depth)
        return _no_lone_surrogates(raw, body)
    return _parse_slowly(raw, None, max_depth)


# 19 digits in a row that do not follow a decimal point: an integer that may not fit 64 bits
# (or a number with a long integer part or exponent), read exactly by the standard library's
# parser. Found by mapping every digit to "0", the point to itself and every other byte to a
# space, and looking for a space and 19 zeros: a regular expression took 190 ms over 10 MB of
# base64. Digits after a decimal point are safe: orjson rounds decimals of any length correctly
# (checked on 800,000 long and halfway decimals), and random float64 values printed in full have
# 19-digit fractions ("0.0072113596587564995") often enough to send most large JSON bodies of
# numbers to the slow parser, 15 times slower, were they counted.
_DIGITS_AS_ZEROS = bytes(48 if 48 <= i <= 57 else 46 if i == 46 else 32 for i in range(256))
_LONG_RUN = b" " + b"0" * 19
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")


def _parse_slowly(raw: bytes, first_error: Exception | None, max_depth: int) -> Any:
    try:
        body = json.loads(raw, parse_constant=_SPECIAL_TOKENS.__getitem__, parse_float=_finite_float)
    except RecursionError:
        raise LimitExceededError(f"the JSON body is nested more than {max_depth} levels deep (NABLA_MAX_DEPTH)",
                                 {"limit": "NABLA_MAX_DEPTH", "requested": 1000, "maximum": max_depth}) from None
    except (ValueError, UnicodeDecodeError) as e:
        error = first_error or e
        raise InvalidRequest(f"the body is not valid JSON: {error}",
                             {"position": getattr(error, "pos", None)}) from None
    return _no_lone_surrogates(raw, body)


def _no_lone_surrogates(raw: bytes, body: Any) -> Any:
    # Only an escape (\ud800) can put a surrogate in a parsed string; a lone one cannot be
    # stored, logged or written back as UTF-8. Checked only when such an escape appears.
    if b"\\" in raw and _SURROGATE_ESCAPE.search(raw) is not None:  # the one-byte search is at memory speed
        try:
            orjson.dumps(body)
        except TypeError:
            raise InvalidRequest("the body contains a lone UTF-16 surrogate escape (\\ud800-\\udfff without its "
                                 "pair): strings must be valid Unicode") from None
    return body


_SPECIAL_TOKENS = {"NaN": float("nan"), "Infinity": float("inf"), "-Infinity": float("-inf")}


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"the number {text[:40]} is too large for a double")
    return value


def validate(model: type[BaseModel], body: Any, operation: str) -> Any:
    """The body as a typed request. A malformed request is a 400 naming the field and what it
    must be; a `function` that is not an object is a bad function (422)."""
    if not isinstance(body, dict):
        raise InvalidRequest(f"the body must be a JSON object: the {operation} request's fields, see "
                             f"/docs for {model.__name__}")
    try:
        return model.model_validate(body)
    except ValidationError as e:
        problems = R.validation_problems(e)
    extra = sorted(p["path"] for p in problems if p["kind"] == "extra_forbidden")
    if extra:
        nested = [p.split(".", 1) for p in extra if "." in p]
        if nested:
            raise InvalidRequest(f"unknown {nested[0][0]} option(s) {sorted(n[1] for n in nested)}",
                                 {"errors": problems})
        allowed = sorted(model.model_fields)
        if operation not in R.OPTIONS:
            raise InvalidRequest(f"unknown field(s) {extra} for {operation}; it takes {', '.join(allowed)}",
                                 {"fields": extra, "allowed": allowed, "errors": problems})
        applies = sorted(t for t, fields in R.OPTIONS.items() if set(extra) <= set(fields))
        raise InvalidRequest(f"option(s) {extra} do not apply to {operation}"
                             + (f" (they apply to {', '.join(applies)})" if applies else "")
                             + f"; {operation} takes {', '.join(allowed)}",
                             {"options": extra, "transform": operation, "allowed": allowed, "errors": problems})
    first = problems[0]
    path = first["path"]
    detail: dict[str, Any] = {"errors": problems}
    value = body.get(path)
    if isinstance(value, (bool, int, float, str)) and len(str(value)) <= 40:
        detail[path] = value  # echo small values only: a body can be megabytes
    if path == "function" and first["kind"] != "missing":
        raise InvalidFunction("function must be an object: {\"expr\", \"params\"}, {\"graph\"} or {\"model\"}",
                              detail)
    advice = R.FIELD_ADVICE.get(path) or R.FIELD_ADVICE.get(path.split(".")[0])
    message = f"{advice} ({path}: {first['problem']})" if advice else f"{path}: {first['problem']}"
    raise InvalidRequest(message, detail)


class Pipeline:
    """Everything a request needs: settings, the registry, resolvers, caches and metrics."""

    def __init__(self, settings: Settings, registry: Registry | None = None) -> None:
        self.settings = settings
        self.limits = settings.engine_limits()
        self.registry = registry or open_registry(settings.database_url, settings.data_dir)
        self.repository = load_model_repository(settings.model_repository, self.limits)
        self.resolver = FunctionResolver(self.registry, self.limits, self.repository,
                                         refresh_s=settings.registry_refresh_s, max_derived_depth=settings.max_order)
        self.plans = PlanCache(settings.plan_cache_size, settings.plan_cache_bytes)
        self.replays = replay.Replays()
        self.metrics = Metrics()
        self.budget = Budget(settings.max_array_elements, settings.max_response_bytes, settings.max_request_bytes,
                             settings.max_dimensions, settings.max_plan_nodes,
                             8 * settings.max_graph_nodes + 2 * settings.max_leaves)
        for definition in self.repository.values():  # typed like registered models, checked at start
            fn, params, _ = compile_spec(definition["function"], self.limits)
            constants = decode_constants(definition.get("constants") or {}, self.limits, declared_schema(fn, params))
            free = [p for p in params if p not in constants]
            definition["schema"] = self.model_schema(fn, free, constants, definition.get("schema"),
                                                     definition.get("example_args"))

    # ------------------------------------------------------------------ the one entry point

    def handle(self, call: Call) -> Reply:
        start = time.perf_counter()
        try:
            with deadline(self.settings.compute_timeout_s):
                result = self._dispatch(call)
                # Every answer is JSON or MessagePack by the Accept header: a shared cache must key
                # it by that header too (errors are always JSON, and need no Vary).
                if call.accept == MSGPACK:
                    body, headers = msgpack_codec.dumps(result.payload), {"content-type": MSGPACK, "vary": "Accept"}
                else:
                    body, headers = dumps(result.payload, result.encoding), {"vary": "Accept"}
            if call.operation == "compute":
                self.metrics.observe_compute(call.transform or "?", time.perf_counter() - start)
            return Reply(result.status, body, headers, plan_s=result.plan_s)
        except NeedsWorker:
            raise
        except Exception as e:  # noqa: BLE001 - every exception becomes an answer
            return self.error_reply(e, call.request_id)
        finally:
            if len(call.body) > _LARGE_BODY:
                release_free_memory()

    def handle_inline(self, call: Call) -> Reply:
        """`handle`, for a call that may be answered on the event loop: raises NeedsWorker as soon
        as it would need anything that could be slow (service.inline)."""
        with inline():
            return self.handle(call)

    def warm(self, call: Call) -> None:
        """Answer `call` for the caches' sake only: its function and plan are kept, its answer and
        its metrics are not (the call was answered, and counted, by a worker)."""
        with self.metrics.muted():
            self.handle(call)

    def error_reply(self, e: BaseException, request_id: str, *, mapped: bool = True) -> Reply:
        """The answer to an exception: by the error table, or (no row, or `mapped=False` for an
        exception that escaped the protocol layer) a logged JSON 500."""
        error = to_api_error(e) if mapped or isinstance(e, APIError) else None
        if error is None:
            log.error("unhandled error", exc_info=e, extra={"request_id": request_id})
            error = InternalError("an internal error occurred; it has been logged with this request id",
                                  {"exception": type(e).__name__})
        self.metrics.observe_error(error.type)
        return Reply(error.status, _error_bytes(error.body(request_id)), dict(error.headers), error.type)

    def _dispatch(self, call: Call) -> Result:
        op = call.operation
        if call.content_type != JSON and op not in ("compute", "shapes", "register"):
            raise UnsupportedMediaType(f"this route takes a JSON body: send `Content-Type: {JSON}` "
                                       f"(got {call.content_type!r})",
                                       {"content_type": call.content_type, "expected": JSON})
        if op == "compute":
            return self.compute(call.transform or "", call.body, call.model, content_type=call.content_type,
                                accept=call.accept)
        if op == "shapes":
            return Result(self.shapes(call.body, call.content_type))
        if op == "register":
            return self.register(call.body, call.idempotency_key, call.content_type)
        if op == "list_models":
            query = _validated_query(R.ListModelsQuery, call.query)
            return Result(self.list_models(query.limit, query.cursor))
        if op == "get_model":
            return Result(self.get_model(call.model or ""))
        if op == "model_schema":
            return Result(self.request_schema(call.model or ""))
        if op == "delete_model":
            return Result(self.delete_model(call.model or "", call.version))
        if op == "ops":
            return Result(ops_catalogue())
        if op == "graph":  # POST /v1/graph, the derivative's graph (the playground draws it)
            return Result(graph_view.derivative_graph(self, call.body))
        raise NotFound(f"unknown operation {op!r}")

    # ------------------------------------------------------------------ compute

    def compute(self, transform: str, raw: bytes, model: str | None = None, *, content_type: str = JSON,
                accept: str = JSON) -> Result:
        """A transform's answer. `content_type`: the body's media type; `accept`: the answer's (a
        MessagePack answer writes every array as bin bytes, whatever `encoding` asks). A body
        shaped like an earlier one, but for its numbers, is answered by that one's replay
        (service.replay): the same answer, without validating and resolving it all again."""
        start = time.perf_counter()
        models = R.MODEL_COMPUTE_REQUESTS if model is not None else R.COMPUTE_REQUESTS
        if transform not in models:
            raise NotFound(f"unknown transform {transform!r}; use one of {', '.join(R.TRANSFORMS)}",
                           {"transform": transform})
        body = self.parse(raw, content_type)
        shape_key = replay.skeleton(transform, model, accept, body) if content_type == JSON else None
        known = self.replays.find(shape_key)
        if known is not None:
            outcome = known.outcome(body["args"], self.resolver.resolve, self.plans, self.settings.inline_max_ms / 1000)
            if outcome is not None:
                return self._answer(transform, known.function, outcome, known.dtype, known.answer_encoding, start)
        if model is not None and isinstance(body, dict) and "function" in body:
            raise InvalidRequest("the model is named in the path; leave `function` out of the body")
        request = validate(models[transform], body, transform)
        if model is not None:
            spec = {"model": model} if request.version is None else {"model": model, "version": request.version}
        else:
            spec = body["function"]
        opts = Options.from_request(transform, request, self.settings.max_order)
        function = self.resolver.resolve(spec)
        if len(request.args) != len(function.params):
            raise InvalidRequest(
                f"the function takes {len(function.params)} argument(s) {function.params}, got {len(request.args)}",
                {"expected": function.params, "got": len(request.args)})
        budget = self.tree_budget()  # one budget for everything the request sends
        in_axes = getattr(request, "in_axes", None)
        arguments = self.decode_arguments(function, request.args, request.dtype, budget, in_axes=in_axes)
        args = [a for a, _ in arguments]
        extra: list[Any] = []
        if vector_products.takes_vectors(transform, request):  # hvp, batches of tangents or cotangents
            extra = vector_products.decode_vectors(transform, request, function, args, budget)
        elif transform == "jvp":
            if len(request.tangents) != len(args):
                raise InvalidRequest(f"jvp needs one tangent per argument: {len(args)} argument(s), "
                                     f"{len(request.tangents)} tangent(s)")
            extra = [a for a, _ in self.decode_arguments(function, request.tangents, request.dtype, budget,
                                                         "tangents.", in_axes=in_axes)]
            _check_like(args, extra, function.params)
        elif transform == "vjp":
            extra = [decode_tree(request.cotangent, _dtype(request.dtype), "cotangent", budget)]
        encoding = "binary" if accept == MSGPACK else request.encoding  # admission predicts the answer's size by it
        outcome = run(function, opts, args, extra, plans=self.plans, budget=self.budget, encoding=encoding,
                      inline_max_s=self.settings.inline_max_ms / 1000)
        dtype = outcome.dtype or _float_dtype_of(outcome.result, request.dtype)
        if shape_key is not None and outcome.plan_key is not None:
            forms = [replay.argument_form(value, decoded, where)
                     for value, decoded, where in zip(body["args"], args, function.params)]
            if all(forms):
                self.replays.record(shape_key, replay.Replay(spec, function, opts, tuple(forms), outcome.plan_key,
                                                             encoding, dtype, request.encoding))
            else:
                self.replays.forget(shape_key)
        return self._answer(transform, function, outcome, dtype, request.encoding, start)

    def _answer(self, transform: str, function: Function, outcome: Outcome, dtype: str, encoding: str,
                start: float) -> Result:
        self.metrics.observe_cache(outcome.cache_hit)
        payload: dict[str, Any] = dict(outcome.result)
        payload["meta"] = Verbatim(transform=transform, dtype=dtype, elapsed_ms=elapsed_ms(start),
                                   graph_nodes=outcome.graph_nodes, cache_hit=outcome.cache_hit)
        if outcome.examples is not None:
            payload["meta"]["examples"] = outcome.examples
        if function.model is not None:
            payload["meta"]["model"] = {"name": function.model, "version": function.version}
        return Result(payload, encoding=encoding, plan_s=outcome.plan_s)

    def decode_arguments(self, function: Function, values: list[Any], dtype: str | None, budget: TreeBudget,
                         prefix: str = "", in_axes: list[Any] | None = None) -> list[tuple[Any, Any]]:
        """Each JSON argument as arrays, with its spec: plain numbers take the requested dtype, or
        the one the parameter declares, or float64; a typed parameter is checked against its spec
        (dimension names bound across the whole request), batched along its in_axes entry."""
        sizes: dict[str, tuple[int, str]] = {}
        entries = in_axes if in_axes is not None and len(in_axes) == len(values) else [None] * len(values)
        out = []
        for name, value, entry in zip(function.params, values, entries):
            spec = function.spec(name)
            if spec is not None and dtype is not None:
                spec = model_schema.with_float_dtype(spec, dtype)
            batched = batch_axes.batched_spec(spec, entry)
            decoded = decode_tree(value, _dtype(dtype), prefix + name, budget, batched, override=dtype is not None)
            if spec is not None:
                decoded = model_schema.conform(decoded, batched, prefix + name, sizes)
            out.append((decoded, spec))
        return out

    def parse(self, raw: bytes, content_type: str = JSON) -> Any:
        """The body as Python objects, after predicting what parsing it costs: every value becomes
        a Python object of some 40 bytes, so a body of many small numbers is refused before it is
        parsed. JSON values are separated by commas and colons (a count at memory speed);
        MessagePack bodies are counted by service.msgpack_codec.scan."""
        s = self.settings
        if content_type == MSGPACK:
            return msgpack_codec.loads(raw, s.max_depth, s.max_dimensions, self.budget)
        admission.check_parse(*_json_counts(raw, self.budget), len(raw), self.budget)
        return parse_json(raw, s.max_depth)

    def tree_budget(self) -> TreeBudget:
        s = self.settings
        return TreeBudget(s.max_array_elements, s.max_total_elements, s.max_depth, max_leaves=s.max_leaves,
                          max_dimensions=s.max_dimensions)

    def shapes(self, raw: bytes, content_type: str = JSON) -> dict[str, Any]:
        body = self.parse(raw, content_type)
        request = validate(R.ShapesRequest, body, "shapes")
        function = self.resolver.resolve(body["function"])
        if len(request.args) != len(function.params):
            raise InvalidRequest(f"the function takes {len(function.params)} argument(s) {function.params}, "
                                 f"got {len(request.args)}")
        leaves = [0]
        args = [_shape_tree(a, f"args[{i}]", self.settings, leaves) for i, a in enumerate(request.args)]
        output, nodes = abstract_shapes(function, args, self.settings.max_array_elements)
        return {"output": output, "meta": {"graph_nodes": nodes}}

    # ------------------------------------------------------------------ models

    def register(self, raw: bytes, idempotency_key: str | None, content_type: str = JSON) -> Result:
        body = self.parse(raw, content_type)
        request = validate(R.RegisterRequest, body, "register")
        name = request.name
        if name in BUILTIN_MODELS or name in self.repository:
            raise Conflict(f"{name!r} is a built-in or repository model and cannot be replaced", {"name": name})
        function = body["function"]
        if "model" in function:
            raise InvalidRequest("register an expr or graph function, not a reference to another model")
        fn, params, nodes = compile_spec(function, self.limits)
        constants = decode_constants(request.constants, self.limits, declared_schema(fn, params))
        unknown_constants = set(constants) - set(params)
        if unknown_constants:
            raise InvalidRequest(f"constants {sorted(unknown_constants)} name no parameter of the function; its "
                                 f"parameters are {params}")
        free = [p for p in params if p not in constants]
        schema = self.model_schema(fn, free, constants, request.schema_, request.example_args)
        self.trace_if_typed(Function("registration", free, _bind(fn, list(fn.params), constants)), schema)
        registration = self.registry.register(
            name, function, encode_constants(constants), request.description, free, nodes,
            idempotency_key=idempotency_key, request_hash=hashlib.sha256(raw).hexdigest() if idempotency_key else None,
            param_schema=schema)
        self.resolver.forget()
        payload = {"name": name, "version": registration.version, "params": free, "constants": sorted(constants),
                   "graph_nodes": nodes, "schema": schema, "signature": model_schema.signature(free, schema)}
        return Result(payload, status=201 if registration.created else 200)

    def model_schema(self, fn: Any, free: list[str], constants: dict[str, Any], given: dict[str, Any] | None,
                     examples: list[Any] | None) -> dict[str, Any] | None:
        """A model's typed parameters: given, inferred from example arguments (checked by tracing the
        function on them), or declared by its graph; None when nothing says."""
        if given is not None and examples is not None:
            raise InvalidRequest("send either schema or example_args, not both")
        if given is not None:
            unknown = sorted(set(given) - set(free))
            if unknown:
                raise InvalidRequest(f"schema names {unknown}, which are not free parameters of the function "
                                     f"{free}", {"path": "schema", "params": free})
            return {p: model_schema.parse(given[p], f"schema.{p}") for p in free if p in given} or None
        if examples is not None:
            if len(examples) != len(free):
                raise InvalidRequest(f"example_args needs one example per free parameter {free}, got {len(examples)}",
                                     {"path": "example_args", "expected": free})
            bound = Function("example", free, _bind(fn, list(fn.params), constants))
            decoded = [a for a, _ in self.decode_arguments(bound, examples, None, self.tree_budget(),
                                                           "example_args.")]
            abstract_shapes(bound, [_shape_struct(a) for a in decoded], self.settings.max_array_elements)
            return {p: model_schema.infer(a) for p, a in zip(free, decoded)}
        return declared_schema(fn, free)

    def trace_if_typed(self, function: Function, schema: dict[str, Any] | None) -> None:
        """A model whose every parameter has concrete shapes is traced once at registration, so a
        graph that cannot run on them (operands that do not fit, a literal outside its operand's
        dtype) is refused now rather than on every call."""
        specs = [(schema or {}).get(p) for p in function.params]
        if any(s is None for s in specs) or not all(_concrete(s) for s in specs):
            return
        abstract_shapes(function, [_abstract(s) for s in specs], self.settings.max_array_elements)

    def list_models(self, limit: int = 100, cursor: str | None = None) -> dict[str, Any]:
        """Models by name, `limit` at a time; `next_cursor` continues the list (null at its end)."""
        out = []
        for m in BUILTIN_MODELS.values():
            free = [p for p in m.params if p not in m.constants]
            out.append({"name": m.name, "version": 1, "source": "builtin", "description": m.description,
                        "params": free, "graph_nodes": None, "signature": model_schema.signature(free, m.schema)})
        for name, definition in self.repository.items():
            fn = self.resolver.model({"model": name})
            out.append({"name": name, "version": 1, "source": "repository",
                        "description": definition.get("description", ""), "params": fn.params,
                        "graph_nodes": fn.graph_nodes, "signature": model_schema.signature(fn.params, fn.schema)})
        out = [m for m in out if cursor is None or m["name"] > cursor]
        for r in self.registry.list(after=cursor, limit=limit + 1):
            out.append({"name": r.name, "version": r.version, "source": "registry", "description": r.description,
                        "params": r.params, "graph_nodes": r.graph_nodes,
                        "signature": model_schema.signature(r.params, r.param_schema)})
        out.sort(key=lambda m: m["name"])
        page = out[:limit]
        return {"models": page, "next_cursor": page[-1]["name"] if len(out) > limit else None}

    def get_model(self, name: str) -> dict[str, Any]:
        _check_name(name)
        builtin = BUILTIN_MODELS.get(name)
        if builtin is not None:
            free = [p for p in builtin.params if p not in builtin.constants]
            return {"name": name, "source": "builtin", "description": builtin.description, "params": free,
                    "constants": sorted(builtin.constants), "versions": [1], "latest": 1, "graph_nodes": None,
                    "schema": builtin.schema or None, "signature": model_schema.signature(free, builtin.schema)}
        if name in self.repository:
            fn = self.resolver.model({"model": name})
            return {"name": name, "source": "repository", "description": fn.description, "params": fn.params,
                    "constants": sorted(self.repository[name].get("constants") or {}), "versions": [1],
                    "latest": 1, "graph_nodes": fn.graph_nodes, "schema": fn.schema,
                    "signature": model_schema.signature(fn.params, fn.schema)}
        record = self.registry.get(name)
        if record is None:
            raise NotFound(f"no model named {name!r}; GET /v1/models lists them", {"model": name})
        return {"name": name, "source": "registry", "description": record.description, "params": record.params,
                "constants": sorted(record.constants), "versions": self.registry.versions(name),
                "latest": record.version, "graph_nodes": record.graph_nodes, "created_at": record.created_at,
                "schema": record.param_schema, "signature": model_schema.signature(record.params, record.param_schema),
                "function": record.function}

    def request_schema(self, name: str) -> dict[str, Any]:
        """JSON Schema of the body of POST /v1/models/{name}/{transform} (the args part typed by the
        model's schema; untyped parameters accept any JSON)."""
        _check_name(name)
        function = self.resolver.model({"model": name})
        items = [model_schema.json_schema(function.spec(p)) if function.spec(p) is not None else {}
                 for p in function.params]
        body = R.MODEL_COMPUTE_REQUESTS["value"].model_json_schema()
        body.pop("$defs", None)
        body["title"] = f"A request to model {name}"
        body["properties"]["args"] = {"type": "array", "items": True, "minItems": len(items), "maxItems": len(items),
                                      "description": "one entry per parameter: " + ", ".join(function.params)
                                      + "; typed one example at a time (with in_axes, a mapped argument has the "
                                        "batch dimension at its axis)"}
        typed = {"properties": {"args": {"prefixItems": items, "items": False}}}
        return {"$schema": "https://json-schema.org/draft/2020-12/schema", **body,
                "if": {"required": ["in_axes"]}, "else": typed}

    def delete_model(self, name: str, version: int | None = None) -> dict[str, Any]:
        _check_name(name)
        if name in BUILTIN_MODELS or name in self.repository:
            raise Conflict(f"{name!r} is a built-in or repository model and cannot be deleted", {"name": name})
        if version is not None:
            if not 1 <= version <= R.MAX_VERSION:
                raise NotFound(f"model {name!r} has no version {version}", {"model": name, "version": version})
            found = self.registry.delete_version(name, version)
            self.resolver.forget()
            if not found:
                raise NotFound(f"model {name!r} has no version {version}", {"model": name, "version": version})
            return {"name": name, "deleted_versions": 1, "version": version}
        deleted = self.registry.delete(name)
        self.resolver.forget()
        if not deleted:
            raise NotFound(f"no model named {name!r}", {"model": name})
        return {"name": name, "deleted_versions": deleted}


def _concrete(spec: Any) -> bool:
    if model_schema.is_leaf(spec):
        return all(isinstance(d, int) for d in spec["shape"])
    if isinstance(spec, dict):
        return all(_concrete(v) for v in spec.values())
    if isinstance(spec, list):
        return all(_concrete(v) for v in spec)
    return True


def _abstract(spec: Any) -> Any:
    if model_schema.is_leaf(spec):
        return engine.ShapeDtypeStruct(tuple(spec["shape"]), spec["dtype"])
    if isinstance(spec, dict):
        return {k: _abstract(v) for k, v in spec.items()}
    if isinstance(spec, list):
        return [_abstract(v) for v in spec]
    return spec


def _bind(fn: Any, params: list[str], constants: dict[str, Any]) -> Any:
    return bind_constants(fn, params, constants)[0]


def _shape_struct(tree: Any) -> Any:
    return tree_map(lambda x: engine.ShapeDtypeStruct(np.shape(x), np.asarray(x).dtype), tree)


def _validated_query(model: type[BaseModel], query: dict[str, str]) -> Any:
    try:
        return model.model_validate(query, strict=False)
    except ValidationError as e:
        problems = R.validation_problems(e)
        raise InvalidRequest(f"query parameter {problems[0]['path']}: {problems[0]['problem']}",
                             {"errors": problems}) from None


def _check_name(name: str) -> None:
    if not _NAME.fullmatch(name):
        raise NotFound(f"no model named {name[:80]!r}: names are letters, digits, '_', '.' or '-'",
                       {"model": name[:80]})


_LARGE_BODY = 1 << 20
_LIBC = ctypes.CDLL(ctypes.util.find_library("c")) if ctypes.util.find_library("c") else None


def release_free_memory() -> None:
    """Give freed heap pages back to the system after a large request. A parsed body's millions
    of small objects are freed into the allocator's arenas, which glibc keeps: without this the
    process stays hundreds of MB above its baseline after one large request (refused or not)."""
    trim = getattr(_LIBC, "malloc_trim", None)
    if trim is not None:
        trim(0)


def _json_counts(raw: bytes, budget: Budget) -> tuple[int, int]:
    """A JSON body's values (commas and colons, plus one) and object members (colons), for
    admission.check_parse. Each count is a pass over the body, made only when the body is long
    enough to be over its bound: a value takes at least two bytes with its separator, a member
    five (`"":0,`), so a shorter body cannot be refused by it whatever it holds (zero stands in)."""
    size = len(raw)
    count_values = (size // 2 + 1) * admission.PARSED_VALUE_BYTES > budget.max_request_bytes
    members = raw.count(b":") if count_values or size // 5 + 1 > budget.max_json_members else 0
    return (raw.count(b",") + members + 1 if count_values else 0), members


def _error_bytes(body: dict[str, Any]) -> bytes:
    """An error body as JSON, whatever figures or text it quotes: integers past 64 bits and
    unpaired surrogates make orjson refuse, and the standard library writes them (as digits and
    as \\u escapes)."""
    try:
        return orjson.dumps(body)
    except TypeError:
        return json.dumps(body, default=str).encode()


def _dtype(name: str | None) -> np.dtype:
    return _FLOATS[name or "float64"]


def _float_dtype_of(result: Any, requested: str | None) -> str:
    """The dtype a result without a plan (check_grads) was computed in; the requested one if it
    has no leaves."""
    return computed_dtype([np.asarray(leaf).dtype for leaf in tree_flatten(result)[0]]) or \
        np.dtype(requested or "float64").name


def _check_like(args: list[Any], tangents: list[Any], params: list[str]) -> None:
    """A tangent has its primal's structure and shapes (jvp)."""
    for name, a, t in zip(params, args, tangents):
        where = f"tangents.{name}"
        la, ta = tree_flatten(a)
        lt, tt = tree_flatten(t)
        if ta != tt:
            raise InvalidArgument(f"{where}: expected the structure of {name}, {ta}, got {tt}",
                                  {"path": where, "expected": str(ta), "got": str(tt)})
        for x, y in zip(la, lt):
            if np.shape(x) != np.shape(y) or np.asarray(x).dtype != np.asarray(y).dtype:
                # as in JAX, a tangent has its primal's shape and dtype
                expected = model_schema.notation(np.shape(x), np.asarray(x).dtype)
                got = model_schema.notation(np.shape(y), np.asarray(y).dtype)
                raise InvalidArgument(f"{where}: expected {expected} (the shape and dtype of {name}), got {got}",
                                      {"path": where, "expected": expected, "got": got})


def _shape_tree(obj: Any, where: str, settings: Settings, leaves: list[int], depth: int = 0) -> Any:
    """Shape specs `{"shape": [...], "dtype": "float32"}` as abstract arguments, in any pytree."""
    if depth > settings.max_depth:
        raise LimitExceededError(f"{where}: nested more than {settings.max_depth} levels deep (NABLA_MAX_DEPTH)",
                                 {"limit": "NABLA_MAX_DEPTH", "requested": depth, "maximum": settings.max_depth})
    if isinstance(obj, dict) and "shape" in obj and set(obj) <= {"shape", "dtype"}:
        try:
            spec = R.ShapeSpec.model_validate(obj)
        except ValidationError as e:
            raise InvalidRequest(f"{where}: shape must be a list of at most {MAX_DIMENSIONS} non-negative integers",
                                 {"errors": R.validation_problems(e)}) from None
        if spec.dtype not in DTYPES:
            raise InvalidRequest(f"{where}: unsupported dtype {spec.dtype!r}; use one of {', '.join(DTYPES)}")
        leaves[0] += 1
        if leaves[0] > settings.max_leaves:
            raise LimitExceededError(f"{where}: more than {settings.max_leaves} leaves (NABLA_MAX_LEAVES)",
                                     {"limit": "NABLA_MAX_LEAVES", "requested": leaves[0],
                                      "maximum": settings.max_leaves})
        size = int(np.prod([float(n) for n in spec.shape])) if spec.shape else 1
        if size > settings.max_array_elements:
            raise LimitExceededError(f"{where}: {size} elements is over the limit of {settings.max_array_elements} "
                                     "(NABLA_MAX_ARRAY_ELEMENTS)",
                                     {"limit": "NABLA_MAX_ARRAY_ELEMENTS", "requested": size,
                                      "maximum": settings.max_array_elements})
        return engine.ShapeDtypeStruct(spec.shape, spec.dtype)
    if isinstance(obj, dict):
        return {k: _shape_tree(v, f"{where}[{k!r}]", settings, leaves, depth + 1) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_shape_tree(v, f"{where}[{i}]", settings, leaves, depth + 1) for i, v in enumerate(obj)]
    if obj is None:
        return None
    raise InvalidRequest(f"{where}: expected a shape spec {{\"shape\": [...], \"dtype\": ...}} or a container")


def load_model_repository(folder: Path | None, limits: Any) -> dict[str, dict[str, Any]]:
    """Models an operator deploys as files: every *.json in the folder, validated at start."""
    if folder is None:
        return {}
    folder = Path(folder)
    if not folder.is_dir():
        raise RuntimeError(f"NABLA_MODEL_REPOSITORY {folder} is not a folder")
    models: dict[str, dict[str, Any]] = {}
    for path in sorted(folder.glob("*.json")):
        definition = orjson.loads(path.read_bytes())
        name = definition.get("name")
        try:
            R.RegisterRequest.model_validate(definition)
        except ValidationError as e:
            raise RuntimeError(f"{path}: not a valid model file: {R.validation_problems(e)}") from None
        if name in BUILTIN_MODELS or name in models:
            raise RuntimeError(f"{path}: model {name!r} is defined twice")
        compile_spec(definition.get("function"), limits)  # validate now, not on first use
        decode_constants(definition.get("constants") or {}, limits)
        models[name] = definition
    return models


def ops_catalogue() -> dict[str, Any]:
    from engine.expr import FUNCTIONS

    ops = []
    for name, prim in sorted(PRIMITIVES.items()):
        if prim.python_code:  # custom_vjp calls: in memory only, a graph cannot name them
            continue
        ops.append({"name": name, "arity": prim.arity, "attrs": list(prim.attr_names),
                    "vjp": prim.vjp is not None, "jvp": prim.jvp is not None, "doc": prim.doc})
    return {"graph_format": "nabla.graph/1", "ops": ops, "expression_functions": sorted(FUNCTIONS)}


__all__ = ["Call", "Pipeline", "Reply", "parse_json", "validate"]
