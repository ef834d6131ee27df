"""The HTTP adapter: FastAPI routes over the transport-neutral pipeline (service.pipeline).

Routes only read the body, check auth and content type, wait for a compute slot and hand a
`Call` to a compute worker process (service.workers); every decision about the request is the
pipeline's, and the event loop only moves bytes. The pure-ASGI
middleware gives each request an id, enforces body size and body-read time, writes one JSON
access line and the request metrics, and turns anything that escapes into a JSON 500 that
keeps the connection usable.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import re
import secrets
import time
from collections.abc import Callable, Iterable
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import parse_qsl

import anyio
import orjson
from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from fastapi_offline import FastAPIOffline
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from service import __version__, msgpack_codec, oip, playground, umbridge
from service import responses as R
from service import schemas as S
from service.builtin_models import BUILTIN_MODELS
from service.compute import elapsed_ms
from service.errors import (
    APIError,
    ComputeTimeout,
    Forbidden,
    InvalidRequest,
    LimitExceededError,
    NotReady,
    Overloaded,
    Unauthorized,
    UnsupportedMediaType,
    retry_after,
)
from service.inline import NeedsWorker
from service.logs import JsonLogFormatter, configure_logging
from service.pipeline import Call, Pipeline, Reply
from service.requests import TRANSFORMS
from service.settings import Settings
from service.store import Registry, StoreError
from service.workers import WorkerPool, freeze_startup_objects

log = logging.getLogger("nabla")
_REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{1,128}")
_IDEMPOTENCY_KEY = re.compile(r"[\x21-\x7e]{1,255}")
_JSON_TYPE = re.compile(r"application/json", re.I)


# Request ids: 32 hex digits, a random prefix per process and a counter. Unique across the
# processes of a deployment as a random UUID is, without reading the system's random source for
# every request (a system call, a tenth of an echo's time).
_ids = {"prefix": secrets.token_hex(8), "counter": itertools.count(secrets.randbelow(1 << 32))}


def _new_request_id() -> str:
    return f"{_ids['prefix']}{next(_ids['counter']) & 0xFFFF_FFFF_FFFF_FFFF:016x}"


def _new_id_prefix() -> None:
    _ids["prefix"] = secrets.token_hex(8)


os.register_at_fork(after_in_child=_new_id_prefix)  # a forked server process counts on its own prefix


class _BodyTooLarge(Exception):
    pass


class _BodyTooSlow(Exception):
    pass


class RequestContextMiddleware:
    """Request ids, body limits (size and time), access logs, request metrics and the JSON 500
    (pure ASGI: cheap, and it sees every request, matched or not)."""

    def __init__(self, app: Any, settings: Settings, pipeline: Pipeline,
                 error_forms: dict[str, Callable[[Reply], Reply]] | None = None,
                 direct: DirectRoutes | None = None) -> None:
        self.app = app
        self.direct = direct
        # path prefix -> the error body of the protocol served there (OIP's differs from /v1's)
        self.error_forms = error_forms or {}
        self.max_body = settings.max_body_bytes
        self.body_timeout_s = settings.body_timeout_s
        self.pipeline = pipeline
        self.static_paths = frozenset({"/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc"})

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        await self.serve(scope, receive, send, self.direct.match(scope) if self.direct is not None else None)

    async def serve(self, scope: dict, receive: Any, send: Any,
                    direct: tuple[str, Callable[..., Any], dict[str, Any]] | None) -> None:
        """An HTTP request, answered by `direct` (a DirectRoutes match) or else by the app."""
        incoming = dict(scope.get("headers") or [])
        given = incoming.get(b"x-request-id", b"").decode("latin-1")
        request_id = given if _REQUEST_ID.fullmatch(given) else _new_request_id()
        scope.setdefault("state", {})["request_id"] = request_id
        start = time.perf_counter()
        state = {"status": 500, "started": False}

        async def send_with_id(message: dict) -> None:
            if message["type"] == "http.response.start":
                state["status"], state["started"] = message["status"], True
                message = {**message, "headers": [*message.get("headers", []), (b"x-request-id", request_id.encode())]}
            await send(message)

        route = None
        try:
            length = incoming.get(b"content-length")
            if length is not None and length.isdigit() and int(length) > self.max_body:
                raise _BodyTooLarge(int(length))
            limited = self._limited(receive, time.monotonic() + self.body_timeout_s)
            if direct is None:
                await self.app(scope, limited, send_with_id)
            else:
                route, handler, fields = direct
                await handler(scope, incoming, limited, send_with_id, request_id, **fields)
        except Exception as e:  # noqa: BLE001 - whatever escapes still gets a JSON answer
            if not state["started"]:
                error = self._as_api_error(e)
                reply = self.pipeline.error_reply(error, request_id, mapped=error is not e)
                if isinstance(e, (_BodyTooLarge, _BodyTooSlow)):
                    # the rest of the body is not read: parsing megabytes only to discard them
                    # would run on the event loop
                    reply.headers["Connection"] = "close"
                for prefix, form in self.error_forms.items():
                    if scope["path"].startswith(prefix):
                        reply = form(reply)
                await _send_reply(send_with_id, reply)
        ms = elapsed_ms(start)
        if route is None:
            route = getattr(scope.get("route"), "path", None)
        if route is None:  # the docs and schema routes are plain Starlette routes, set no "route"
            route = scope["path"] if scope["path"] in self.static_paths else "unmatched"
        self.pipeline.metrics.observe_request(scope["method"], route, state["status"], ms / 1000)
        if log.isEnabledFor(logging.INFO):
            log.info("request", extra={"request_id": request_id, "method": scope["method"][:16],
                                       "path": scope["path"][:256], "status": state["status"], "ms": ms})

    def _limited(self, receive: Any, deadline: float) -> Callable[[], Any]:
        received = 0

        async def limited_receive() -> dict:
            nonlocal received
            try:  # (asyncio's own timeout costs a third of anyio's cancel scope, on every request)
                async with asyncio.timeout(max(0.0, deadline - time.monotonic())):
                    message = await receive()
            except TimeoutError:
                raise _BodyTooSlow() from None
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body:
                    raise _BodyTooLarge(received)
            return message

        return limited_receive

    def _as_api_error(self, e: Exception) -> BaseException:
        if isinstance(e, _BodyTooLarge):
            return LimitExceededError(
                f"the request body is over the limit of {self.max_body} bytes (NABLA_MAX_BODY_BYTES)",
                {"limit": "NABLA_MAX_BODY_BYTES", "requested": e.args[0], "maximum": self.max_body})
        if isinstance(e, _BodyTooSlow):
            return ComputeTimeout(f"the request body did not arrive within {self.body_timeout_s} s "
                                  "(NABLA_BODY_TIMEOUT_S)", {"limit": "NABLA_BODY_TIMEOUT_S"}, type="body_timeout")
        return e  # the pipeline logs it as a bug


class DirectRoutes:
    """The compute routes (`POST /v1/{transform}`, `POST /v1/models/{name}/{transform}`) and the
    echo, served straight from the middleware: a dictionary lookup instead of Starlette's route
    scan, no Request object and no dependency solving. Each of these costs about as much CPU as
    computing a small gradient, and these routes are the ones called in loops. FastAPI still
    declares them (their handlers share `compute` below), so the OpenAPI document is unchanged."""

    def __init__(self, lanes: Lanes, authorize: Callable[[str | None], None],
                 accepts: Callable[[str], None]) -> None:
        self.lanes = lanes
        self.authorize = authorize  # raises Unauthorized; the Authorization header's value
        self.accepts = accepts  # raises UnsupportedMediaType; the content type
        self.transforms = {f"/v1/{t}": t for t in TRANSFORMS}

    def match(self, scope: dict) -> tuple[str, Callable[..., Any], dict[str, Any]] | None:
        if scope["method"] != "POST":
            return None
        path = scope["path"]
        transform = self.transforms.get(path)
        if transform is not None:
            return path, self.compute, {"transform": transform, "model": None}
        if path == "/v1/echo":
            return path, self.echo, {}
        if path.startswith("/v1/models/"):
            name, slash, transform = path[len("/v1/models/"):].partition("/")
            if slash and name and transform and "/" not in transform:
                known = transform in TRANSFORMS  # route labels come from a fixed set (metrics)
                route = "/v1/models/{name}/" + (transform if known else "{transform}")
                return route, self.compute, {"transform": transform, "model": name}
        return None

    async def compute(self, scope: dict, headers: dict[bytes, bytes], receive: Any, send: Any, request_id: str,
                      transform: str, model: str | None) -> None:
        body = await self._body(scope, headers, receive)
        call = Call("compute", body, transform=transform, model=model, request_id=request_id,
                    **msgpack_codec.call_formats(headers.get(b"content-type", b"").decode("latin-1"),
                                                 headers.get(b"accept", b"").decode("latin-1")))
        await _send_reply(send, await self.lanes.reply(call))

    async def echo(self, scope: dict, headers: dict[bytes, bytes], receive: Any, send: Any, request_id: str) -> None:
        body = await self._body(scope, headers, receive)
        await _send_reply(send, Reply(200, body))

    async def _body(self, scope: dict, headers: dict[bytes, bytes], receive: Any) -> bytes:
        self.authorize(headers.get(b"authorization", b"").decode("latin-1"))
        if scope.get("query_string"):
            given = parse_qsl(scope["query_string"].decode("latin-1"), keep_blank_values=True)
            refuse_unknown_query((k for k, _ in given), frozenset())
        self.accepts(headers.get(b"content-type", b"").decode("latin-1"))
        chunks = []
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise ClientDisconnect()
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                return chunks[0] if len(chunks) == 1 else b"".join(chunks)


class NablaApp(FastAPI):
    """The FastAPI application, with the direct routes (DirectRoutes) answered before FastAPI's own
    middleware stack: its layers (error pages, telemetry, a body limit of its own) wrap every call
    of those routes in several more Python frames, which cost a small gradient a third of its CPU
    time, and do nothing for them that `front`, the RequestContextMiddleware in front of them,
    does not already do (body limits, the JSON 500). Every other request goes through the stack,
    where the same middleware is installed as usual."""

    front: RequestContextMiddleware | None = None

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        front = self.front
        direct = front.direct.match(scope) if front is not None and front.direct is not None \
            and scope["type"] == "http" else None
        if direct is not None:
            await front.serve(scope, receive, send, direct)  # type: ignore[union-attr]
        else:
            await super().__call__(scope, receive, send)


def refuse_unknown_query(names: Iterable[str], allowed: frozenset[str]) -> None:
    """A 400 naming the query parameters a route does not take."""
    unknown = sorted(set(names) - allowed)
    if unknown:
        raise InvalidRequest(f"unknown query parameter(s) {unknown}" + (
            f"; this route takes {sorted(allowed)}" if allowed else "; this route takes none"),
            {"query": unknown, "allowed": sorted(allowed)})


def bearer_token(authorization: str) -> str | None:
    """The key in an `Authorization: Bearer <key>` header's value, or None."""
    return authorization[7:].strip() if authorization[:7].lower() == "bearer " else None


async def _send_reply(send: Any, reply: Reply) -> None:
    headers = [(k.lower().encode(), v.encode()) for k, v in reply.headers.items()]
    if not any(k == b"content-type" for k, _ in headers):  # JSON unless the reply says (MessagePack)
        headers.append((b"content-type", b"application/json"))
    headers.append((b"content-length", str(len(reply.body)).encode()))
    await send({"type": "http.response.start", "status": reply.status, "headers": headers})
    await send({"type": "http.response.body", "body": reply.body})


def _response(reply: Reply) -> Response:
    return Response(reply.body, status_code=reply.status, headers=reply.headers, media_type="application/json")


# A plan is repeated in this process (to be computed inline next time) only if building and running
# it in a worker took at most this; the build's thread then shares the interpreter with the event
# loop (in turns of sys.getswitchinterval(), 5 ms) for about as long.
_WARM_MAX_S = 0.25
# At most this share of each window of the event loop's time goes to computing requests inline.
_INLINE_WINDOW_S = 0.025
_INLINE_SHARE = 0.8


class Lanes:
    """Where calls wait. Compute-heavy calls (compute, shapes, register) share `compute_threads`
    slots, one per compute worker, with a bounded queue in front (503 + Retry-After beyond it);
    registry reads and deletes run in threads of their own lane so they never wait behind a long
    computation; the event loop keeps /livez."""

    def __init__(self, settings: Settings, pipeline: Pipeline, workers: WorkerPool | None = None) -> None:
        self.pipeline = pipeline
        self.workers = workers
        self.queue = settings.admission_queue
        self.wait_s = settings.compute_timeout_s
        self.compute = anyio.CapacityLimiter(settings.compute_threads)
        self.registry = anyio.CapacityLimiter(4)
        # Threads are bounded by the two lanes; a pool of our own keeps anyio's shared default
        # pool (used by other code in the process) out of the picture.
        self.threads = anyio.CapacityLimiter(settings.compute_threads + 4)
        self.inline_max_body = settings.inline_max_body_bytes
        self.inline_max_s = settings.inline_max_ms / 1000
        self._warming: asyncio.Task | None = None
        self._inline_window, self._inline_spent = 0.0, 0.0

    async def run(self, call: Call) -> Response:
        return _response(await self.reply(call))

    async def reply(self, call: Call) -> Reply:
        """The pipeline's answer to a call, once a slot of its lane is free (every protocol
        adapter goes through here, so all share one queue and one set of limits). A small
        compute call whose function and plan are cached here and cheap is answered at once, on
        the event loop (service.inline)."""
        warm, slow_plan = False, None
        if call.operation == "compute" and len(call.body) <= self.inline_max_body and self._inline_time_left():
            started = time.perf_counter()
            try:
                reply = self.pipeline.handle_inline(call)
                self.pipeline.metrics.observe_answered("inline")
                return reply
            except NeedsWorker as e:
                warm, slow_plan = e.warm and self.workers is not None, e.plan
            finally:
                self._inline_spent += time.perf_counter() - started
        heavy = call.operation in ("compute", "shapes", "register", "graph")
        limiter = self.compute if heavy else self.registry
        if heavy and limiter.statistics().tasks_waiting >= self.queue:
            return self.pipeline.error_reply(self._overloaded("the admission queue is full"), call.request_id)
        with anyio.move_on_after(self.wait_s) as waited:
            await limiter.acquire()
        if waited.cancelled_caught:
            return self.pipeline.error_reply(self._overloaded("no compute slot became free in time"),
                                             call.request_id)
        try:
            if heavy and self.workers is not None:
                reply = await anyio.to_thread.run_sync(self._in_worker, call, limiter=self.threads)
            else:
                reply = await anyio.to_thread.run_sync(self.pipeline.handle, call, limiter=self.threads)
        finally:
            limiter.release()
        if call.operation == "compute":
            self.pipeline.metrics.observe_answered("thread" if self.workers is None else "worker")
        if call.operation in ("register", "delete_model") and reply.status < 300:
            self.pipeline.resolver.forget()
            if self.workers is not None:
                self.workers.registry_changed()
        if reply.plan_s is not None:
            build_s, run_s = reply.plan_s
            if slow_plan is not None and self.workers is not None:
                slow_plan.run_s = run_s
            # Only a plan that the worker runs fast enough to be run inline is worth building here
            # (a large model's would hold its data twice and compete with the worker for a core).
            if warm and reply.status < 300 and build_s + run_s <= _WARM_MAX_S and run_s <= self.inline_max_s:
                self._warm(call)
        return reply

    def _inline_time_left(self) -> bool:
        """Whether the event loop may compute one more request inline now. A burst of small
        requests arrives all at once, and the loop would compute every one of them before it
        reads the next /livez poll: inline work is capped at _INLINE_SHARE of every
        _INLINE_WINDOW_S, and the rest of a burst goes to the workers."""
        now = time.perf_counter()
        if now - self._inline_window > _INLINE_WINDOW_S:
            self._inline_window, self._inline_spent = now, 0.0
        return self._inline_spent < _INLINE_SHARE * _INLINE_WINDOW_S

    def _warm(self, call: Call) -> None:
        """Answer `call` once more, in a thread of this process, for its function and plan to be
        cached here: the next such call is computed inline. One at a time; the worker has just
        shown that building and running its plan takes under _WARM_MAX_S."""
        if self._warming is not None and not self._warming.done():
            return

        async def warm() -> None:
            await anyio.to_thread.run_sync(self.pipeline.warm, call, limiter=self.threads)

        self._warming = asyncio.get_running_loop().create_task(warm())

    def _in_worker(self, call: Call) -> Reply:
        reply, events = self.workers.call(call, self.pipeline.error_reply)  # type: ignore[union-attr]
        for name, args in events:
            getattr(self.pipeline.metrics, name)(*args)
        return reply

    def _overloaded(self, why: str) -> APIError:
        busy = self.compute.statistics()
        return retry_after(Overloaded(f"the server is busy: {why} ({busy.borrowed_tokens} computing, "
                                      f"{busy.tasks_waiting} waiting; NABLA_ADMISSION_QUEUE={self.queue}); retry later",
                                      {"limit": "NABLA_ADMISSION_QUEUE", "computing": busy.borrowed_tokens,
                                       "waiting": busy.tasks_waiting, "maximum": self.queue}), 1)


def startup_message(settings: Settings, pipeline: Pipeline) -> str:
    """Where the service is, where its docs and its registry are, and what it serves."""
    url = f"http://{settings.host}:{settings.port}"
    registry = pipeline.registry
    try:
        registered: Any = len(registry.list())
    except StoreError:  # a registry that is not up yet must not stop the start
        registered = "?"
    return (f"Nabla {__version__} serving {url} (API docs: {url}/docs); model registry: {registry.backend} at "
            f"{registry.location}; models: {len(BUILTIN_MODELS)} built in, {len(pipeline.repository)} from the "
            f"model repository, {registered} registered; compute: {settings.compute_threads} at once in "
            + ("worker processes" if settings.compute_isolation == "process" else "threads of this process"))


def create_app(settings: Settings | None = None, registry: Registry | None = None) -> FastAPI:
    settings = settings or Settings()
    configure_logging(settings.log_level)
    pipeline = Pipeline(settings, registry)
    # A registry object given in code lives in this process only: its calls cannot move to workers.
    isolated = settings.compute_isolation == "process" and registry is None
    workers = WorkerPool(settings, settings.compute_threads) if isolated else None

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> Any:
        if workers is not None:
            await anyio.to_thread.run_sync(workers.start)
        freeze_startup_objects()
        log.info(startup_message(settings, pipeline))
        yield
        if workers is not None:
            await anyio.to_thread.run_sync(workers.close)
        pipeline.registry.close()

    app = FastAPIOffline(
        title="Nabla", version=__version__, lifespan=lifespan,
        description="Gradients as a service: values, gradients, higher derivatives, Jacobians, Hessians and "
                    "finite-difference checks of functions sent as expressions, JSON graphs or model names.",
        openapi_tags=[{"name": "compute"}, {"name": "models"}, {"name": "introspection"}, {"name": "health"}],
    )
    app.state.service = pipeline
    app.state.workers = workers
    app.router.redirect_slashes = False  # /v1/grad/ is a JSON 404, not an empty 307
    lanes = Lanes(settings, pipeline, workers)
    S.install_openapi(app, keyed=bool(settings.api_key_set or settings.admin_key_set))

    def request_id(request: Request) -> str:
        return request.scope.get("state", {}).get("request_id", "")

    @app.exception_handler(APIError)
    async def api_error(request: Request, exc: APIError) -> Response:
        return _response(pipeline.error_reply(exc, request_id(request)))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        kinds = {404: "not_found", 405: "method_not_allowed"}
        detail = str(exc.detail)
        if exc.status_code == 404:
            detail = f"not found: no route {request.url.path[:200]!r}; the API is described at /docs"
        err = APIError(detail, status=exc.status_code, type=kinds.get(exc.status_code, "http_error"),
                       headers=dict(exc.headers or {}))
        return _response(pipeline.error_reply(err, request_id(request)))

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> Response:
        # Path and query parameters (the bodies are validated by the pipeline): the same form of
        # problems as any other validation error.
        problems = [{"path": ".".join(str(p) for p in e["loc"][1:]) or str(e["loc"][0]), "problem": e["msg"],
                     "kind": e["type"]} for e in exc.errors()]
        first = problems[0] if problems else {"path": "(request)", "problem": "invalid"}
        err = InvalidRequest(f"{first['path']}: {first['problem']}", {"errors": problems})
        return _response(pipeline.error_reply(err, request_id(request)))

    keys, admin_keys = settings.api_key_set, settings.admin_key_set

    def _bearer(request: Request) -> str | None:
        return bearer_token(request.headers.get("authorization", ""))

    def _matches(key: str | None, allowed: frozenset[str]) -> bool:
        return key is not None and any(secrets.compare_digest(key.encode(), k.encode()) for k in allowed)

    def authorize(authorization: str) -> None:
        """Any valid key, when the server has keys (`authorization`: the header's value, "" if absent)."""
        if not keys and not admin_keys:
            return
        key = bearer_token(authorization)
        if key is None:
            raise Unauthorized("this server requires an API key: send `Authorization: Bearer <key>`",
                               headers={"WWW-Authenticate": "Bearer"})
        if not (_matches(key, keys) or _matches(key, admin_keys)):
            raise Unauthorized("the API key is not valid", headers={"WWW-Authenticate": "Bearer"})

    def require_key(request: Request) -> None:
        authorize(request.headers.get("authorization", ""))

    def require_admin(request: Request) -> None:
        require_key(request)
        if admin_keys and not _matches(_bearer(request), admin_keys):
            raise Forbidden("registering and deleting models needs an admin key (NABLA_ADMIN_KEYS)")
        if not admin_keys and keys:
            raise Forbidden("registering and deleting models is disabled: no admin keys are configured")

    def accept_json(content_type: str) -> None:
        media_type = content_type.split(";")[0].strip()
        if not _JSON_TYPE.fullmatch(media_type) and msgpack_codec.media_type(media_type) is None:
            raise UnsupportedMediaType(
                f"the body must be JSON: send `Content-Type: application/json` (got {media_type[:80]!r})",
                {"content_type": media_type[:80], "expected": "application/json"})

    async def json_body(request: Request) -> bytes:
        accept_json(request.headers.get("content-type", ""))
        return await request.body()

    def call(request: Request, operation: str, body: bytes = b"", query: frozenset[str] = frozenset(),
             **fields: Any) -> Call:
        refuse_unknown_query(request.query_params, query)
        return Call(operation, body, request_id=request_id(request), query=dict(request.query_params),
                    **msgpack_codec.call_formats(request.headers.get("content-type"), request.headers.get("accept")),
                    **fields)

    context = {"settings": settings, "pipeline": pipeline, "error_forms": {oip.PREFIX + "/": oip.in_oip_form},
               "direct": DirectRoutes(lanes, authorize, accept_json)}
    app.add_middleware(RequestContextMiddleware, **context)
    # FastAPIOffline builds a plain FastAPI object (with documentation pages served from the
    # package): made a NablaApp afterwards, it answers the direct routes in front of its stack.
    app.__class__ = NablaApp
    app.front = RequestContextMiddleware(super(NablaApp, app).__call__, **context)

    # ------------------------------------------------------------------ compute routes

    for transform in TRANSFORMS:
        S.add_compute_route(app, transform, lanes, call, json_body, require_key)
        S.add_model_compute_route(app, transform, lanes, call, json_body, require_key)

    # Any other transform on a model: the pipeline answers 404 naming the ones there are.
    @app.post("/v1/models/{name}/{transform}", dependencies=[Depends(require_key)], include_in_schema=False)
    async def model_compute(name: str, transform: str, request: Request) -> Response:
        body = await json_body(request)
        return await lanes.run(call(request, "compute", body, transform=transform, model=name))

    @app.post("/v1/shapes", tags=["introspection"], dependencies=[Depends(require_key)],
              summary="Infer output shapes and dtypes without computing", openapi_extra=S.shapes_body(),
              operation_id="shapes")
    async def shapes(request: Request) -> Response:
        return await lanes.run(call(request, "shapes", await json_body(request)))

    @app.get("/v1/ops", tags=["introspection"], dependencies=[Depends(require_key)],
             summary="Every operation with its arity, attributes and derivative rules", operation_id="ops",
             openapi_extra=S.returns(R.OpsResponse))
    async def ops(request: Request) -> Response:
        return _response(pipeline.handle(call(request, "ops")))

    @app.post("/v1/echo", tags=["introspection"], dependencies=[Depends(require_key)], include_in_schema=False,
              summary="Return the JSON body unchanged (the framework's ceiling, for benchmarks)")
    async def echo(request: Request) -> Response:
        return Response(await json_body(request), media_type="application/json")

    # ------------------------------------------------------------------ models

    @app.get("/v1/models", tags=["models"], dependencies=[Depends(require_key)],
             summary="List models by name, `limit` at a time; pass `next_cursor` back as `cursor` for more",
             operation_id="list_models", openapi_extra=S.returns(R.ModelList))
    async def list_models(request: Request, limit: int = 100, cursor: str | None = None) -> Response:
        return await lanes.run(call(request, "list_models", query=frozenset({"limit", "cursor"})))

    @app.post("/v1/models", tags=["models"], dependencies=[Depends(require_admin)], status_code=201,
              summary="Register a model (a new version when the name exists)", openapi_extra=S.register_body(),
              operation_id="register_model")
    async def register(request: Request) -> Response:
        body = await json_body(request)
        key = request.headers.get("idempotency-key")
        if key is not None and not _IDEMPOTENCY_KEY.fullmatch(key):
            raise InvalidRequest("the Idempotency-Key header must be 1-255 visible ASCII characters (a UUID, say)",
                                 {"header": "Idempotency-Key"})
        return await lanes.run(call(request, "register", body, idempotency_key=key))

    @app.get("/v1/models/{name}", tags=["models"], dependencies=[Depends(require_key)], summary="Describe a model",
             operation_id="get_model", openapi_extra=S.returns(R.ModelInfo))
    async def get_model(name: str, request: Request) -> Response:
        return await lanes.run(call(request, "get_model", model=name))

    @app.get("/v1/models/{name}/schema", tags=["models"], dependencies=[Depends(require_key)],
             summary="JSON Schema of a request body for this model (its typed parameters)",
             operation_id="get_model_schema", openapi_extra=S.returns(R.JsonSchemaDocument))
    async def model_request_schema(name: str, request: Request) -> Response:
        return await lanes.run(call(request, "model_schema", model=name))

    @app.delete("/v1/models/{name}", tags=["models"], dependencies=[Depends(require_admin)],
                summary="Delete a model and all its versions", operation_id="delete_model",
                openapi_extra=S.returns(R.Deleted))
    async def delete_model(name: str, request: Request) -> Response:
        return await lanes.run(call(request, "delete_model", model=name))

    @app.delete("/v1/models/{name}/versions/{version}", tags=["models"], dependencies=[Depends(require_admin)],
                summary="Delete one version of a model (its number is never reused)",
                operation_id="delete_model_version", openapi_extra=S.returns(R.Deleted))
    async def delete_model_version(name: str, version: int, request: Request) -> Response:
        return await lanes.run(call(request, "delete_model", model=name, version=version))

    # ------------------------------------------------------------------ other protocols
    # (adapters over the same lanes and pipeline; each module adds its routes here)
    oip.install(app, lanes, pipeline, require_key)  # Open Inference Protocol v2 (KServe, Triton): /v2
    umbridge.install(app, lanes, pipeline, require_key)  # UM-Bridge 1.0: /umbridge
    playground.install(app, lanes, call, json_body, require_key)  # GET /playground and POST /v1/graph

    # ------------------------------------------------------------------ health

    @app.get("/", include_in_schema=False)
    async def root() -> Response:
        return Response(orjson.dumps({"name": "Nabla", "version": __version__, "docs": "/docs",
                                      "openapi": "/openapi.json", "health": "/livez"}), media_type="application/json")

    @app.head("/livez", include_in_schema=False)
    @app.get("/livez", tags=["health"], summary="The process answers", operation_id="livez",
             openapi_extra=S.returns(R.Health))
    async def livez() -> Response:
        return Response(b'{"status":"ok"}', media_type="application/json")

    @app.head("/readyz", include_in_schema=False)
    @app.get("/readyz", tags=["health"], summary="The model registry answers", operation_id="readyz",
             openapi_extra=S.returns(R.Health))
    async def readyz(request: Request) -> Response:
        ok = await anyio.to_thread.run_sync(pipeline.registry.ping, limiter=lanes.registry)
        if not ok:
            error = retry_after(NotReady("the model registry does not answer", {"backend": pipeline.registry.backend}),
                                1)
            return _response(pipeline.error_reply(error, request_id(request)))
        return Response(orjson.dumps({"status": "ok", "registry": pipeline.registry.backend}),
                        media_type="application/json")

    @app.get("/metrics", tags=["health"], summary="Prometheus metrics", operation_id="metrics")
    async def metrics() -> Response:
        plan_entries, plan_bytes = workers.plan_stats() if workers is not None else (len(pipeline.plans),
                                                                                     pipeline.plans.bytes)
        body, content_type = pipeline.metrics.render(plan_entries, plan_bytes, workers)
        return Response(body, media_type=content_type)

    return app


__all__ = ["JsonLogFormatter", "create_app"]
