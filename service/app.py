"""The FastAPI application: routes, auth, error bodies, request ids, metrics and docs."""

from __future__ import annotations

import json
import logging
import re
import secrets
import time
import uuid
from pathlib import Path
from typing import Any

import anyio
import numpy as np
from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi_offline import FastAPIOffline
from starlette.exceptions import HTTPException as StarletteHTTPException

import engine
from engine.primitives import PRIMITIVES
from service import __version__
from service import schemas as S
from service.builtin_models import BUILTIN_MODELS
from service.compute import TRANSFORMS, PlanCache, abstract_shapes, cast_floats, elapsed_ms, parse_options, run
from service.errors import (
    APIError,
    Conflict,
    Forbidden,
    InvalidRequest,
    LimitExceededError,
    NotFound,
    Unauthorized,
)
from service.functions import FunctionResolver, compile_spec, decode_constants, encode_constants
from service.json_trees import TreeBudget, decode_tree, encode_tree
from service.metrics import Metrics
from service.settings import Settings
from service.store import Registry, open_registry

log = logging.getLogger("nabla")
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,128}$")
_MODEL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_DTYPES = {"float32": np.dtype("float32"), "float64": np.dtype("float64")}


class JsonLogFormatter(logging.Formatter):
    """One JSON object per line, with the request id when there is one."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {"ts": round(record.created, 3), "level": record.levelname.lower(), "logger": record.name,
                 "message": record.getMessage()}
        for key in ("request_id", "method", "path", "status", "ms", "error_type"):
            if hasattr(record, key):
                entry[key] = getattr(record, key)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry)


def configure_logging(level: str) -> None:
    handler = logging.StreamHandler()
    handler.setFormatter(JsonLogFormatter())
    log.handlers[:] = [handler]
    log.setLevel(level.upper())
    log.propagate = False


class RequestContextMiddleware:
    """Request ids, the body-size limit, access logs and request metrics (pure ASGI: cheap)."""

    def __init__(self, app: Any, settings: Settings, metrics: Metrics) -> None:
        self.app = app
        self.max_body = settings.max_body_bytes
        self.metrics = metrics

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = dict(scope.get("headers") or [])
        given = incoming.get(b"x-request-id", b"").decode("latin-1")
        request_id = given if _REQUEST_ID.match(given) else uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = request_id
        start = time.perf_counter()
        status_holder = {"status": 500}

        async def send_with_id(message: dict) -> None:
            if message["type"] == "http.response.start":
                status_holder["status"] = message["status"]
                headers = list(message.get("headers", []))
                headers.append((b"x-request-id", request_id.encode()))
                message = {**message, "headers": headers}
            await send(message)

        length = incoming.get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_body:
            self.metrics.observe_error(LimitExceededError.type)
            await _send_error(send_with_id, request_id, LimitExceededError(
                f"the request body has {int(length)} bytes, over the limit of {self.max_body} "
                "(NABLA_MAX_BODY_BYTES)", {"limit": self.max_body}))
        else:
            received = 0

            async def limited_receive() -> dict:
                nonlocal received
                message = await receive()
                if message["type"] == "http.request":
                    received += len(message.get("body", b""))
                    if received > self.max_body:
                        raise _BodyTooLarge()
                return message

            try:
                await self.app(scope, limited_receive, send_with_id)
            except _BodyTooLarge:
                self.metrics.observe_error(LimitExceededError.type)
                await _send_error(send_with_id, request_id, LimitExceededError(
                    f"the request body is over the limit of {self.max_body} bytes (NABLA_MAX_BODY_BYTES)",
                    {"limit": self.max_body}))
        ms = elapsed_ms(start)
        route = scope.get("route")
        path_template = getattr(route, "path", None) or "unmatched"
        self.metrics.observe_request(scope["method"], path_template, status_holder["status"], ms / 1000)
        log.info("request", extra={"request_id": request_id, "method": scope["method"],
                                   "path": scope["path"], "status": status_holder["status"], "ms": ms})


class _BodyTooLarge(Exception):
    pass


async def _send_error(send: Any, request_id: str, error: APIError) -> None:
    body = json.dumps(error.body(request_id)).encode()
    await send({"type": "http.response.start", "status": error.status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


def _json_response(payload: Any, status: int = 200) -> Response:
    return Response(json.dumps(payload, separators=(",", ":"), allow_nan=False).encode(), status_code=status,
                    media_type="application/json")


def _parse_json(raw: bytes) -> Any:
    if not raw:
        raise InvalidRequest("the request body is empty; send a JSON object")
    try:
        return json.loads(raw)
    except RecursionError:
        raise LimitExceededError("the JSON body is nested too deeply") from None
    except (ValueError, UnicodeDecodeError) as e:
        raise InvalidRequest(f"the body is not valid JSON: {e}") from None


class Service:
    """Everything a request needs: settings, the registry, resolvers, caches and metrics."""

    def __init__(self, settings: Settings, registry: Registry | None = None) -> None:
        self.settings = settings
        self.limits = settings.engine_limits()
        self.registry = registry or open_registry(settings.database_url, settings.data_dir)
        self.repository = load_model_repository(settings.model_repository, self.limits)
        self.resolver = FunctionResolver(self.registry, self.limits, self.repository)
        self.plans = PlanCache(settings.plan_cache_size)
        self.metrics = Metrics()
        self.limiter = anyio.CapacityLimiter(settings.compute_threads)

    def budget(self) -> TreeBudget:
        s = self.settings
        return TreeBudget(s.max_array_elements, s.max_total_elements, s.max_depth)

    # ------------------------------------------------------------------ compute

    def compute(self, transform: str, raw: bytes, model: str | None = None) -> dict[str, Any]:
        start = time.perf_counter()
        body = _parse_json(raw)
        if not isinstance(body, dict):
            raise InvalidRequest("the body must be a JSON object")
        if model is not None:
            if "function" in body:
                raise InvalidRequest("the model is named in the path; leave `function` out of the body")
            version = body.pop("version", None)
            body["function"] = {"model": model} if version is None else {"model": model, "version": version}
        # a model route popped `version` above; in any other body it is an option that does not apply
        opts = parse_options(transform, body, self.settings.max_order)
        if "function" not in body:
            raise InvalidRequest("the body needs a `function`: {\"expr\", \"params\"}, {\"graph\"} or {\"model\"}")
        dtype_name = body.get("dtype", "float32")
        if dtype_name not in _DTYPES:
            raise InvalidRequest(f"dtype must be 'float32' or 'float64', got {dtype_name!r}", {"dtype": dtype_name})
        dtype = _DTYPES[dtype_name]
        encoding = body.get("encoding", "json")
        if encoding not in ("json", "base64"):
            raise InvalidRequest(f"encoding must be 'json' or 'base64', got {encoding!r}")
        function = self.resolver.resolve(body["function"])
        args = body.get("args")
        if not isinstance(args, list):
            raise InvalidRequest("args must be a list with one entry per parameter "
                                 f"{function.params}", {"expected": function.params})
        budget = self.budget()
        decoded = [cast_floats(decode_tree(a, dtype, f"args[{i}]", budget), dtype) for i, a in enumerate(args)]
        extra: list[Any] = []
        if transform == "jvp":
            tangents = body.get("tangents")
            if not isinstance(tangents, list) or len(tangents) != len(args):
                raise InvalidRequest("jvp needs tangents: a list with one entry per argument, each shaped like it")
            extra = [cast_floats(decode_tree(t, dtype, f"tangents[{i}]", budget), dtype)
                     for i, t in enumerate(tangents)]
            _check_like(decoded, extra, "tangents")
        elif transform == "vjp":
            if "cotangent" not in body:
                raise InvalidRequest("vjp needs a cotangent shaped like the function's output")
            extra = [cast_floats(decode_tree(body["cotangent"], dtype, "cotangent", budget), dtype)]
        outcome = run(function, opts, decoded, extra, plans=self.plans,
                      max_elements=self.settings.max_array_elements, timeout_s=self.settings.compute_timeout_s)
        self.metrics.observe_compute(transform, outcome.cache_hit, time.perf_counter() - start)
        payload = {k: encode_tree(v, encoding) for k, v in outcome.result.items()}
        payload["meta"] = {"transform": transform, "dtype": dtype_name, "elapsed_ms": elapsed_ms(start),
                           "graph_nodes": outcome.graph_nodes, "cache_hit": outcome.cache_hit}
        if function.model is not None:
            payload["meta"]["model"] = {"name": function.model, "version": function.version}
        return payload

    def shapes(self, raw: bytes) -> dict[str, Any]:
        body = _parse_json(raw)
        if not isinstance(body, dict) or "function" not in body or not isinstance(body.get("args"), list):
            raise InvalidRequest("the body needs `function` and `args` (a list of shape specs)")
        unknown = set(body) - {"function", "args"}
        if unknown:
            raise InvalidRequest(f"unknown field(s) {sorted(unknown)}")
        function = self.resolver.resolve(body["function"])
        if len(body["args"]) != len(function.params):
            raise InvalidRequest(f"the function takes {len(function.params)} argument(s) {function.params}, "
                                 f"got {len(body['args'])}")
        args = [_shape_tree(a, f"args[{i}]", self.settings) for i, a in enumerate(body["args"])]
        output, nodes = abstract_shapes(function, args, self.settings.max_array_elements)
        return {"output": output, "meta": {"graph_nodes": nodes}}

    # ------------------------------------------------------------------ models

    def register(self, raw: bytes) -> dict[str, Any]:
        body = _parse_json(raw)
        if not isinstance(body, dict):
            raise InvalidRequest("the body must be a JSON object {name, function, constants, description}")
        unknown = set(body) - {"name", "function", "constants", "description"}
        if unknown:
            raise InvalidRequest(f"unknown field(s) {sorted(unknown)}")
        name = body.get("name")
        if not isinstance(name, str) or not _MODEL_NAME.match(name):
            raise InvalidRequest("name must be 1-64 letters, digits, '_', '.' or '-', starting with a letter or "
                                 "digit", {"name": name})
        if name in BUILTIN_MODELS or name in self.repository:
            raise Conflict(f"{name!r} is a built-in or repository model and cannot be replaced", {"name": name})
        description = body.get("description", "")
        if not isinstance(description, str) or len(description) > 2000:
            raise InvalidRequest("description must be a string of at most 2000 characters")
        function = body.get("function")
        if isinstance(function, dict) and "model" in function:
            raise InvalidRequest("register an expr or graph function, not a reference to another model")
        fn, params, nodes = compile_spec(function, self.limits)
        constants = decode_constants(body.get("constants") or {}, self.limits)
        unknown_constants = set(constants) - set(params)
        if unknown_constants:
            raise InvalidRequest(f"constants {sorted(unknown_constants)} name no parameter of the function; its "
                                 f"parameters are {params}")
        version = self.registry.add(name, function, encode_constants(constants), description,
                                    [p for p in params if p not in constants], nodes)
        return {"name": name, "version": version, "params": [p for p in params if p not in constants],
                "constants": sorted(constants), "graph_nodes": nodes}

    def list_models(self) -> dict[str, Any]:
        out = []
        for m in BUILTIN_MODELS.values():
            out.append({"name": m.name, "version": 1, "source": "builtin", "description": m.description,
                        "params": [p for p in m.params if p not in m.constants], "graph_nodes": None})
        for name, definition in sorted(self.repository.items()):
            fn = self.resolver.model({"model": name})
            out.append({"name": name, "version": 1, "source": "repository",
                        "description": definition.get("description", ""), "params": fn.params,
                        "graph_nodes": fn.graph_nodes})
        for r in self.registry.list():
            out.append({"name": r.name, "version": r.version, "source": "registry", "description": r.description,
                        "params": r.params, "graph_nodes": r.graph_nodes})
        return {"models": out}

    def get_model(self, name: str) -> dict[str, Any]:
        builtin = BUILTIN_MODELS.get(name)
        if builtin is not None:
            return {"name": name, "source": "builtin", "description": builtin.description,
                    "params": [p for p in builtin.params if p not in builtin.constants],
                    "constants": sorted(builtin.constants), "versions": [1], "latest": 1, "graph_nodes": None}
        if name in self.repository:
            fn = self.resolver.model({"model": name})
            return {"name": name, "source": "repository", "description": fn.description, "params": fn.params,
                    "constants": sorted(self.repository[name].get("constants") or {}), "versions": [1],
                    "latest": 1, "graph_nodes": fn.graph_nodes}
        record = self.registry.get(name)
        if record is None:
            raise NotFound(f"no model named {name!r}; GET /v1/models lists them", {"model": name})
        return {"name": name, "source": "registry", "description": record.description, "params": record.params,
                "constants": sorted(record.constants), "versions": self.registry.versions(name),
                "latest": record.version, "graph_nodes": record.graph_nodes, "created_at": record.created_at,
                "function": record.function}

    def delete_model(self, name: str) -> dict[str, Any]:
        if name in BUILTIN_MODELS or name in self.repository:
            raise Conflict(f"{name!r} is a built-in or repository model and cannot be deleted", {"name": name})
        deleted = self.registry.delete(name)
        if not deleted:
            raise NotFound(f"no model named {name!r}", {"model": name})
        self.resolver.forget(name)
        return {"name": name, "deleted_versions": deleted}


def _check_like(args: list[Any], tangents: list[Any], what: str) -> None:
    from engine.tree_util import tree_flatten

    for i, (a, t) in enumerate(zip(args, tangents)):
        la, ta = tree_flatten(a)
        lt, tt = tree_flatten(t)
        if ta != tt:
            raise InvalidRequest(f"{what}[{i}] must have the structure of args[{i}]: {ta} vs {tt}")
        for j, (x, y) in enumerate(zip(la, lt)):
            if np.shape(x) != np.shape(y):
                raise InvalidRequest(f"{what}[{i}] leaf {j} has shape {list(np.shape(y))}, but its argument has "
                                     f"{list(np.shape(x))}")


def _shape_tree(obj: Any, where: str, settings: Settings, depth: int = 0) -> Any:
    """Shape specs `{"shape": [...], "dtype": "float32"}` as abstract arguments, in any pytree."""
    if depth > settings.max_depth:
        raise LimitExceededError(f"{where}: nested too deeply")
    if isinstance(obj, dict) and "shape" in obj and set(obj) <= {"shape", "dtype"}:
        shape = obj["shape"]
        if not isinstance(shape, list) or len(shape) > 32 or not all(
                isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in shape):
            raise InvalidRequest(f"{where}: shape must be a list of non-negative integers")
        dtype = obj.get("dtype", "float32")
        from engine.serialize import DTYPES

        if dtype not in DTYPES:
            raise InvalidRequest(f"{where}: unsupported dtype {dtype!r}")
        size = int(np.prod(shape, dtype=np.float64)) if shape else 1
        if size > settings.max_array_elements:
            raise LimitExceededError(f"{where}: {size} elements is over the limit of {settings.max_array_elements}")
        return engine.ShapeDtypeStruct(shape, dtype)
    if isinstance(obj, dict):
        return {k: _shape_tree(v, f"{where}[{k!r}]", settings, depth + 1) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_shape_tree(v, f"{where}[{i}]", settings, depth + 1) for i, v in enumerate(obj)]
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
        definition = json.loads(path.read_text(encoding="utf-8"))
        name = definition.get("name")
        if not isinstance(name, str) or not _MODEL_NAME.match(name):
            raise RuntimeError(f"{path}: a model file needs a valid name")
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
        if name == "custom_vjp_call":
            continue
        ops.append({"name": name, "arity": prim.arity, "attrs": list(prim.attr_names),
                    "vjp": prim.vjp is not None or "vjp_all" in prim.extra,
                    "jvp": prim.jvp is not None or "jvp_all" in prim.extra or bool(prim.extra.get("linear_jvp")),
                    "doc": prim.doc})
    return {"graph_format": "nabla.graph/1", "ops": ops, "expression_functions": sorted(FUNCTIONS)}


def create_app(settings: Settings | None = None, registry: Registry | None = None) -> FastAPI:
    settings = settings or Settings()
    configure_logging(settings.log_level)
    service = Service(settings, registry)
    app = FastAPIOffline(
        title="Nabla", version=__version__,
        description="Gradients as a service: values, gradients, higher derivatives, Jacobians, Hessians and "
                    "finite-difference checks of functions sent as expressions, JSON graphs or model names.",
        openapi_tags=[{"name": "compute"}, {"name": "models"}, {"name": "introspection"}, {"name": "health"}],
    )
    app.state.service = service
    app.add_middleware(RequestContextMiddleware, settings=settings, metrics=service.metrics)
    S.install_openapi(app)

    def request_id(request: Request) -> str | None:
        return request.scope.get("state", {}).get("request_id")

    @app.exception_handler(APIError)
    async def api_error(request: Request, exc: APIError) -> JSONResponse:
        service.metrics.observe_error(exc.type)
        return JSONResponse(exc.body(request_id(request)), status_code=exc.status, headers=exc.headers)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        kinds = {404: "not_found", 405: "method_not_allowed"}
        err = APIError(str(exc.detail), status=exc.status_code, type=kinds.get(exc.status_code, "http_error"))
        service.metrics.observe_error(err.type)
        return JSONResponse(err.body(request_id(request)), status_code=exc.status_code)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        err = InvalidRequest("the request does not match the API", {"errors": json.loads(json.dumps(
            exc.errors(), default=str))})
        service.metrics.observe_error(err.type)
        return JSONResponse(err.body(request_id(request)), status_code=400)

    @app.exception_handler(Exception)
    async def internal_error(request: Request, exc: Exception) -> JSONResponse:
        rid = request_id(request)
        log.error("unhandled error", exc_info=exc, extra={"request_id": rid})
        service.metrics.observe_error("internal_error")
        return JSONResponse({"error": {"type": "internal_error", "message": "an internal error occurred; it has "
                                       "been logged with this request id", "detail": {}, "request_id": rid}},
                            status_code=500)

    keys, admin_keys = settings.api_key_set, settings.admin_key_set

    def _bearer(request: Request) -> str | None:
        header = request.headers.get("authorization", "")
        if header.lower().startswith("bearer "):
            return header[7:].strip()
        return None

    def _matches(key: str | None, allowed: frozenset[str]) -> bool:
        return key is not None and any(secrets.compare_digest(key.encode(), k.encode()) for k in allowed)

    def require_key(request: Request) -> None:
        if not keys and not admin_keys:
            return
        key = _bearer(request)
        if key is None:
            raise Unauthorized("this server requires an API key: send `Authorization: Bearer <key>`",
                               headers={"WWW-Authenticate": "Bearer"})
        if not (_matches(key, keys) or _matches(key, admin_keys)):
            raise Unauthorized("the API key is not valid", headers={"WWW-Authenticate": "Bearer"})

    def require_admin(request: Request) -> None:
        require_key(request)
        if admin_keys and not _matches(_bearer(request), admin_keys):
            raise Forbidden("registering and deleting models needs an admin key (NABLA_ADMIN_KEYS)")
        if not admin_keys and keys:
            raise Forbidden("registering and deleting models is disabled: no admin keys are configured")

    async def in_thread(fn: Any, *args: Any) -> Any:
        return await anyio.to_thread.run_sync(fn, *args, limiter=service.limiter)

    # ------------------------------------------------------------------ compute routes

    for transform in TRANSFORMS:
        S.add_compute_route(app, transform, service, in_thread, require_key)

    @app.post("/v1/models/{name}/{transform}", tags=["compute"], dependencies=[Depends(require_key)],
              summary="Run a transform on a registered model", openapi_extra=S.model_compute_body())
    async def model_compute(name: str, transform: str, request: Request) -> Response:
        raw = await request.body()
        return _json_response(await in_thread(service.compute, transform, raw, name))

    @app.post("/v1/shapes", tags=["introspection"], dependencies=[Depends(require_key)],
              summary="Infer output shapes and dtypes without computing", openapi_extra=S.shapes_body())
    async def shapes(request: Request) -> Response:
        raw = await request.body()
        return _json_response(await in_thread(service.shapes, raw))

    @app.get("/v1/ops", tags=["introspection"], dependencies=[Depends(require_key)],
             summary="Every operation with its arity, attributes and derivative rules")
    async def ops() -> Response:
        return _json_response(ops_catalogue())

    @app.post("/v1/echo", tags=["introspection"], dependencies=[Depends(require_key)],
              summary="Return the JSON body unchanged (the framework's ceiling, for benchmarks)")
    async def echo(request: Request) -> Response:
        return Response(await request.body(), media_type="application/json")

    # ------------------------------------------------------------------ models

    @app.get("/v1/models", tags=["models"], dependencies=[Depends(require_key)], summary="List models")
    async def list_models() -> Response:
        return _json_response(await in_thread(service.list_models))

    @app.post("/v1/models", tags=["models"], dependencies=[Depends(require_admin)], status_code=201,
              summary="Register a model (a new version when the name exists)", openapi_extra=S.register_body())
    async def register(request: Request) -> Response:
        raw = await request.body()
        return _json_response(await in_thread(service.register, raw), status=201)

    @app.get("/v1/models/{name}", tags=["models"], dependencies=[Depends(require_key)], summary="Describe a model")
    async def get_model(name: str) -> Response:
        return _json_response(await in_thread(service.get_model, name))

    @app.delete("/v1/models/{name}", tags=["models"], dependencies=[Depends(require_admin)],
                summary="Delete a model and all its versions")
    async def delete_model(name: str) -> Response:
        return _json_response(await in_thread(service.delete_model, name))

    # ------------------------------------------------------------------ health

    @app.get("/livez", tags=["health"], summary="The process answers")
    async def livez() -> Response:
        return _json_response({"status": "ok"})

    @app.get("/readyz", tags=["health"], summary="The model registry answers")
    async def readyz() -> Response:
        ok = await anyio.to_thread.run_sync(service.registry.ping)
        if not ok:
            return _json_response({"error": {"type": "not_ready", "message": "the model registry does not answer",
                                             "detail": {"backend": service.registry.backend}}}, status=503)
        return _json_response({"status": "ok", "registry": service.registry.backend})

    @app.get("/metrics", tags=["health"], summary="Prometheus metrics")
    async def metrics() -> Response:
        body, content_type = service.metrics.render(service.plans)
        return Response(body, media_type=content_type)

    return app
