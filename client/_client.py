"""`Client` and `AsyncClient`: the service's transforms, called like the engine's.

    from client import Client
    c = Client()                                   # NABLA_BASE_URL, NABLA_API_KEY
    g = c.grad(loss, argnums=(0, 1))(W, b)         # loss: a Python function on engine.numpy
    c.grad("sum(tanh(x) ** 2)", params=["x"])(x)   # or an expression
    c.grad(c.model("tutorial_logreg"))(W, b)       # or a model on the server
    Client(encoding="msgpack")                     # MessagePack bodies: large arrays as raw bytes
"""

from __future__ import annotations

import asyncio
import email.utils
import os
import random
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx

from client import _wire as W
from client._exceptions import (
    APIConnectionError,
    APITimeoutError,
    GradientCheckError,
    error_for_status,
)

DEFAULT_BASE_URL = "http://127.0.0.1:8000"
DEFAULT_TIMEOUT = 60.0
DEFAULT_MAX_RETRIES = 2
# 408 is not retried: from this server it means the computation itself ran out of time; nor is 409
# (replacing or deleting a built-in model: retrying cannot help).
RETRY_STATUSES = {429, 500, 502, 503, 504}


@dataclass
class Call:
    """One request and how to read its answer."""

    method: str
    path: str
    body: Any
    decode: Callable[[Any], Any]
    # Sent with every attempt: the retry loops reuse the Call, so a retry repeats them exactly.
    headers: dict[str, str] = field(default_factory=dict)


# ----------------------------------------------------------------------------- request builders


def _prepare(f: Any, args: Sequence[Any], has_aux: bool) -> tuple[dict[str, Any], list[Any], Any]:
    """The function spec, the wire arguments, and the traced form (Python functions) or None."""
    if isinstance(f, W.PythonFunction):
        traced = f.traced(args, has_aux)
        return {"graph": traced.doc}, W.flat_leaves(args), traced
    return f.spec(), list(args), None


def _common(spec: dict[str, Any], wire_args: list[Any], originals: Sequence[Any]) -> dict[str, Any]:
    dtype = W.float_dtype(wire_args if "graph" in spec else originals)
    body = {"function": spec, "args": [W.encode_tree(a) for a in wire_args], "dtype": dtype}
    if W.any_large(originals):
        body["encoding"] = "base64"
    return body


def _rebuilt(traced: Any, tree: Any, obj: Any) -> Any:
    """Outputs rebuilt in `tree`'s structure from graph outputs for Python functions (one leaf
    arrives bare, several as a list), decoded as sent otherwise."""
    if traced is None:
        return W.decode_tree(obj)
    from engine.tree_util import tree_unflatten

    leaves = [W.decode_leaf(o) for o in obj] if tree.num_leaves > 1 else [W.decode_leaf(obj)]
    return tree_unflatten(tree, leaves)


def _value_out(traced: Any, obj: Any) -> Any:
    return _rebuilt(traced, traced.out_tree if traced else None, obj)


def _aux_out(traced: Any, obj: Any) -> Any:
    return _rebuilt(traced, traced.aux_tree if traced else None, obj)


def _grads_out(traced: Any, obj: Any, argnums: int | Sequence[int], args: Sequence[Any]) -> Any:
    """Gradients in the structure of the arguments they belong to."""
    if traced is None:
        if isinstance(argnums, int):
            return W.decode_like(obj, args[argnums])
        return tuple(W.decode_like(o, args[a]) for o, a in zip(obj, argnums))
    leaves = [W.decode_leaf(o) for o in obj] if isinstance(obj, list) and len(W.leaf_argnums(traced, argnums)) > 1 \
        else [W.decode_leaf(obj)]
    return W.unflatten_per_arg(traced, argnums, leaves)


def _wire_argnums(traced: Any, argnums: int | Sequence[int]) -> Any:
    if traced is None:
        return argnums if isinstance(argnums, int) else list(argnums)
    leaves = W.leaf_argnums(traced, argnums)
    return leaves[0] if len(leaves) == 1 else leaves


def build_grad(f: Any, args: Sequence[Any], argnums: Any, has_aux: bool, order: int) -> Call:
    spec, wire, traced = _prepare(f, args, has_aux)
    body = _common(spec, wire, args)
    body["argnums"] = _wire_argnums(traced, argnums)
    if has_aux:
        body["has_aux"] = True
    if order != 1:
        body["order"] = order

    def decode(resp: dict[str, Any]) -> Any:
        grads = _grads_out(traced, resp["grad"], argnums, args)
        return (grads, _aux_out(traced, resp.get("aux"))) if has_aux else grads
    return Call("POST", "/v1/grad", body, decode)


def build_value_and_grad(f: Any, args: Sequence[Any], argnums: Any, has_aux: bool) -> Call:
    spec, wire, traced = _prepare(f, args, has_aux)
    body = _common(spec, wire, args)
    body["argnums"] = _wire_argnums(traced, argnums)
    if has_aux:
        body["has_aux"] = True

    def decode(resp: dict[str, Any]) -> Any:
        value = W.decode_leaf(resp["value"])
        grads = _grads_out(traced, resp["grad"], argnums, args)
        if has_aux:
            return (value, _aux_out(traced, resp.get("aux"))), grads
        return value, grads
    return Call("POST", "/v1/value_and_grad", body, decode)


def build_value(f: Any, args: Sequence[Any], has_aux: bool = False) -> Call:
    spec, wire, traced = _prepare(f, args, has_aux)

    def decode(resp: dict[str, Any]) -> Any:
        obj = resp["value"]
        if not has_aux:
            return _value_out(traced, obj)
        if traced is None:
            return W.decode_tree(obj[0]), W.decode_tree(obj[1] if len(obj) == 2 else obj[1:])
        n = traced.out_tree.num_leaves
        outs = obj if isinstance(obj, list) else [obj]
        out = _value_out(traced, outs[0] if n == 1 else outs[:n])
        rest = outs[n:]
        return out, _aux_out(traced, rest[0] if len(rest) == 1 else rest)
    return Call("POST", "/v1/value", _common(spec, wire, args), decode)


def build_jvp(f: Any, primals: Sequence[Any], tangents: Sequence[Any], has_aux: bool) -> Call:
    spec, wire, traced = _prepare(f, primals, has_aux)
    body = _common(spec, wire, primals)
    body["tangents"] = [W.encode_tree(t) for t in (W.flat_leaves(tangents) if traced else tangents)]
    if has_aux:
        body["has_aux"] = True

    def decode(resp: dict[str, Any]) -> Any:
        out = (_value_out(traced, resp["value"]), _value_out(traced, resp["jvp"]))
        return out + (_aux_out(traced, resp.get("aux")),) if has_aux else out
    return Call("POST", "/v1/jvp", body, decode)


def build_vjp(f: Any, primals: Sequence[Any], cotangent: Any, has_aux: bool) -> Call:
    spec, wire, traced = _prepare(f, primals, has_aux)
    body = _common(spec, wire, primals)
    if traced is not None:
        from engine.tree_util import tree_leaves

        ct_leaves = tree_leaves(cotangent)
        body["cotangent"] = W.encode_tree(ct_leaves[0] if len(ct_leaves) == 1 else ct_leaves)
    else:
        body["cotangent"] = W.encode_tree(cotangent)
    if has_aux:
        body["has_aux"] = True
    nums = tuple(range(len(primals)))

    def decode(resp: dict[str, Any]) -> Any:
        if traced is None:
            return tuple(W.decode_like(g, a) for g, a in zip(resp["vjp"], primals))
        return _grads_out(traced, resp["vjp"] if len(W.flat_leaves(primals)) > 1 else resp["vjp"][0], nums, primals)
    return Call("POST", "/v1/vjp", body, decode)


def build_jacobian(f: Any, args: Sequence[Any], argnums: Any, mode: str, has_aux: bool, hessian: bool) -> Call:
    spec, wire, traced = _prepare(f, args, has_aux)
    body = _common(spec, wire, args)
    body["argnums"] = _wire_argnums(traced, argnums)
    if not hessian:
        body["mode"] = mode
    if has_aux:
        body["has_aux"] = True
    key = "hessian" if hessian else "jacobian"

    def decode(resp: dict[str, Any]) -> Any:
        # JAX's structure: the output's, then per argnums entry the argument's (twice for a Hessian).
        out = _jac_out(traced, resp[key], argnums, hessian)
        return (out, _aux_out(traced, resp.get("aux"))) if has_aux else out
    return Call("POST", f"/v1/{key}", body, decode)


def _jac_out(traced: Any, obj: Any, argnums: int | Sequence[int], hessian: bool) -> Any:
    """A Jacobian or Hessian in JAX's structure (decode_tree alone would stack same-shaped parts)."""
    if traced is None:  # an expression or model: tuple argnums give one part (row) per entry
        if isinstance(argnums, int):
            return W.decode_tree(obj)
        return tuple(tuple(W.decode_tree(o) for o in row) if hessian else W.decode_tree(row) for row in obj)
    from engine.tree_util import tree_unflatten

    several = len(W.leaf_argnums(traced, argnums)) > 1  # the server's parts: one per argument leaf

    def per_arg(o: Any, inner: Callable[[Any], Any]) -> Any:
        return W.unflatten_per_arg(traced, argnums, [inner(x) for x in (o if several else [o])])

    per_out = obj if traced.out_tree.num_leaves > 1 else [obj]
    parts = [per_arg(o, (lambda r: per_arg(r, W.decode_leaf)) if hessian else W.decode_leaf) for o in per_out]
    return tree_unflatten(traced.out_tree, parts)


def build_check(f: Any, args: Sequence[Any], order: int, modes: Sequence[str], eps: float | None,
                atol: float | None, rtol: float | None) -> Call:
    spec, wire, traced = _prepare(f, args, False)
    body = _common(spec, wire, args)
    check: dict[str, Any] = {"order": order, "modes": [modes] if isinstance(modes, str) else list(modes)}
    for name, value in (("eps", eps), ("atol", atol), ("rtol", rtol)):
        if value is not None:
            check[name] = value
    body["check"] = check
    return Call("POST", "/v1/check_grads", body, lambda r: r["check"])


def raise_if_failed(report: dict[str, Any]) -> None:
    for r in report["results"]:
        if not r["passed"]:
            raise GradientCheckError(
                f"check_grads failed: the order-{r['order']} {r['kind'].upper()} ({r['mode']} mode) disagrees "
                f"with finite differences: largest absolute error {r['max_abs_error']:.3g}, relative "
                f"{r['max_rel_error']:.3g} (atol={r['atol']:g}, rtol={r['rtol']:g})")


# ----------------------------------------------------------------------------- transport helpers


def _retry_after(response: httpx.Response | None) -> float | None:
    if response is None:
        return None
    value = response.headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        parsed = email.utils.parsedate_to_datetime(value)
        return max(0.0, parsed.timestamp() - time.time()) if parsed else None


def _backoff(attempt: int, response: httpx.Response | None) -> float:
    hinted = _retry_after(response)
    if hinted is not None:
        return min(hinted, 60.0)
    base = min(8.0, 0.5 * 2 ** attempt)
    return base * random.uniform(0.75, 1.25)  # jitter spreads retries of many clients


def _headers(api_key: str | None, encoding: str = "json") -> dict[str, str]:
    headers = {"user-agent": "nabla-client/0.1", "accept": W.MEDIA_TYPES[encoding]}
    if api_key:
        headers["authorization"] = f"Bearer {api_key}"
    return headers


def _encoding(encoding: str) -> str:
    if encoding not in W.MEDIA_TYPES:
        raise ValueError(f"encoding must be 'json' or 'msgpack', not {encoding!r}")
    if encoding == "msgpack":
        W.msgpack_module()  # fail at construction, not at the first call, when msgpack is missing
    return encoding


def _content(call: Call, encoding: str) -> dict[str, Any]:
    """httpx's arguments for a call's body: JSON (httpx writes it) or MessagePack bytes."""
    if call.body is None:
        return {}
    if encoding == "msgpack":
        return {"content": W.msgpack_module().packb(call.body, use_bin_type=True),
                "headers": {**call.headers, "content-type": W.MEDIA_TYPES["msgpack"]}}
    return {"json": call.body}


def _decoded(response: httpx.Response) -> Any:
    """The answer's body by its content type: MessagePack, or JSON (errors are always JSON)."""
    if response.headers.get("content-type", "").split(";")[0].strip().lower() == W.MEDIA_TYPES["msgpack"]:
        return W.msgpack_module().unpackb(response.content, raw=False)
    return response.json()


def _result(response: httpx.Response) -> Any:
    try:
        body = _decoded(response)
    except ValueError:
        body = None
    if response.status_code >= 400:
        raise error_for_status(response.status_code, body, response.headers.get("x-request-id"))
    return body


class _Progress:
    """A one-line progress bar on stderr."""

    def __init__(self, total: int, enabled: bool) -> None:
        self.total, self.done, self.enabled = total, 0, enabled

    def step(self) -> None:
        self.done += 1
        if self.enabled:
            width = 30
            filled = int(width * self.done / max(self.total, 1))
            sys.stderr.write(f"\r[{'#' * filled}{'.' * (width - filled)}] {self.done}/{self.total}")
            if self.done == self.total:
                sys.stderr.write("\n")
            sys.stderr.flush()


# ----------------------------------------------------------------------------- shared surface


class _Surface:
    """The transform methods; subclasses supply `_run(call)` (sync or async)."""

    encoding = "json"  # how bodies travel: "json" or "msgpack" (see Client)

    def _run(self, call: Call) -> Any:
        raise NotImplementedError

    def _send(self, build: Callable[..., Call], *args: Any) -> Any:
        """Build a call, its large arrays in the form this client's encoding sends, and run it."""
        with W.binary_arrays(self.encoding == "msgpack"):
            call = build(*args)
        return self._run(call)

    @staticmethod
    def expr(source: str, params: Sequence[str]) -> W.Expr:
        """A function in the expression language."""
        return W.Expr(source, tuple(params))

    @staticmethod
    def model(name: str, version: int | None = None) -> W.Model:
        """A model on the server, usable wherever a function is."""
        return W.Model(name, version)

    def value(self, f: Any, *, params: Sequence[str] | None = None) -> Callable[..., Any]:
        ref = W.as_function_ref(f, params)
        return lambda *args: self._send(build_value, ref, args)

    def grad(self, f: Any, argnums: int | Sequence[int] = 0, has_aux: bool = False, *, order: int = 1,
             params: Sequence[str] | None = None) -> Callable[..., Any]:
        """Like engine.grad: returns a function computing the gradient on the server."""
        ref = W.as_function_ref(f, params)
        return lambda *args: self._send(build_grad, ref, args, argnums, has_aux, order)

    def value_and_grad(self, f: Any, argnums: int | Sequence[int] = 0, has_aux: bool = False, *,
                       params: Sequence[str] | None = None) -> Callable[..., Any]:
        ref = W.as_function_ref(f, params)
        return lambda *args: self._send(build_value_and_grad, ref, args, argnums, has_aux)

    def jvp(self, f: Any, primals: Sequence[Any], tangents: Sequence[Any], has_aux: bool = False, *,
            params: Sequence[str] | None = None) -> Any:
        return self._send(build_jvp, W.as_function_ref(f, params), tuple(primals), tuple(tangents), has_aux)

    def vjp(self, f: Any, *primals: Any, has_aux: bool = False, params: Sequence[str] | None = None) -> Any:
        """(value, vjp_fun): vjp_fun(cotangent) asks the server for the vector-Jacobian product."""
        raise NotImplementedError  # defined per transport: it chains two requests

    def jacobian(self, f: Any, argnums: int | Sequence[int] = 0, *, mode: str = "rev", has_aux: bool = False,
                 params: Sequence[str] | None = None) -> Callable[..., Any]:
        ref = W.as_function_ref(f, params)
        return lambda *args: self._send(build_jacobian, ref, args, argnums, mode, has_aux, False)

    def hessian(self, f: Any, argnums: int | Sequence[int] = 0, *, has_aux: bool = False,
                params: Sequence[str] | None = None) -> Callable[..., Any]:
        ref = W.as_function_ref(f, params)
        return lambda *args: self._send(build_jacobian, ref, args, argnums, "rev", has_aux, True)

    def check_gradients(self, f: Any, args: Sequence[Any], order: int = 2, modes: Sequence[str] = ("fwd", "rev"),
                        atol: float | None = None, rtol: float | None = None, eps: float | None = None, *,
                        params: Sequence[str] | None = None) -> Any:
        """The server's finite-difference comparison, as data: {passed, results}."""
        return self._send(build_check, W.as_function_ref(f, params), tuple(args), order, modes, eps, atol, rtol)


class _Models:
    def __init__(self, owner: Any) -> None:
        self._owner = owner

    def _register_call(self, name: str, f: Any, constants: dict[str, Any] | None, description: str,
                       params: Sequence[str] | None, example_args: Sequence[Any] | None) -> Call:
        ref = W.as_function_ref(f, params)
        if isinstance(ref, W.PythonFunction):
            if example_args is None:
                raise TypeError("registering a Python function needs example_args (one per parameter, "
                                "with the shapes and dtypes the model takes) to trace it")
            spec = {"graph": ref.traced(tuple(example_args), False).doc}
        elif isinstance(ref, W.Model):
            raise TypeError("register an expression, a graph or a Python function, not another model")
        else:
            spec = ref.spec()
        body = {"name": name, "function": spec, "description": description,
                "constants": {k: W.encode_tree(v) for k, v in (constants or {}).items()}}
        # One key per registration, repeated on each retry: if an attempt's answer was lost after
        # the server committed, the retry returns that version instead of adding another.
        return Call("POST", "/v1/models", body, lambda r: r, {"Idempotency-Key": str(uuid.uuid4())})


def _list_page_call(cursor: str | None) -> Call:
    query = "?limit=1000" + (f"&cursor={_quote(cursor)}" if cursor else "")
    return Call("GET", "/v1/models" + query, None, lambda r: r)


class Models(_Models):
    """c.models: list, get, register, delete, delete_version."""

    def list(self) -> list[dict[str, Any]]:
        """Every model: the pages of GET /v1/models, followed to the end."""
        models, cursor = [], None
        while True:
            page = self._owner._run(_list_page_call(cursor))
            models += page["models"]
            cursor = page.get("next_cursor")
            if cursor is None:
                return models

    def get(self, name: str) -> dict[str, Any]:
        return self._owner._run(Call("GET", f"/v1/models/{_quote(name)}", None, lambda r: r))

    def register(self, name: str, f: Any, constants: dict[str, Any] | None = None, description: str = "", *,
                 params: Sequence[str] | None = None, example_args: Sequence[Any] | None = None) -> dict[str, Any]:
        return self._owner._send(self._register_call, name, f, constants, description, params, example_args)

    def delete(self, name: str) -> dict[str, Any]:
        return self._owner._run(Call("DELETE", f"/v1/models/{_quote(name)}", None, lambda r: r))

    def delete_version(self, name: str, version: int) -> dict[str, Any]:
        """Delete one version of a model; the others stay (its number is never reused)."""
        return self._owner._run(_delete_version_call(name, version))


class AsyncModels(_Models):
    async def list(self) -> list[dict[str, Any]]:
        models, cursor = [], None
        while True:
            page = await self._owner._run(_list_page_call(cursor))
            models += page["models"]
            cursor = page.get("next_cursor")
            if cursor is None:
                return models

    async def get(self, name: str) -> dict[str, Any]:
        return await self._owner._run(Call("GET", f"/v1/models/{_quote(name)}", None, lambda r: r))

    async def register(self, name: str, f: Any, constants: dict[str, Any] | None = None, description: str = "", *,
                       params: Sequence[str] | None = None,
                       example_args: Sequence[Any] | None = None) -> dict[str, Any]:
        return await self._owner._send(self._register_call, name, f, constants, description, params, example_args)

    async def delete(self, name: str) -> dict[str, Any]:
        return await self._owner._run(Call("DELETE", f"/v1/models/{_quote(name)}", None, lambda r: r))

    async def delete_version(self, name: str, version: int) -> dict[str, Any]:
        return await self._owner._run(_delete_version_call(name, version))


def _delete_version_call(name: str, version: int) -> Call:
    if isinstance(version, bool) or not isinstance(version, int):
        raise TypeError(f"version must be an int, got {type(version).__name__}")
    return Call("DELETE", f"/v1/models/{_quote(name)}/versions/{version}", None, lambda r: r)


def _quote(name: str) -> str:
    from urllib.parse import quote

    return quote(name, safe="")


def _settings(base_url: str | None, api_key: str | None) -> tuple[str, str | None]:
    return (base_url or os.environ.get("NABLA_BASE_URL") or DEFAULT_BASE_URL).rstrip("/"), \
        api_key if api_key is not None else os.environ.get("NABLA_API_KEY")


class Client(_Surface):
    """A synchronous client (connection pooling, retries with backoff, typed errors)."""

    def __init__(self, base_url: str | None = None, api_key: str | None = None, timeout: float = DEFAULT_TIMEOUT,
                 max_retries: int = DEFAULT_MAX_RETRIES, *, transport: httpx.BaseTransport | None = None,
                 encoding: str = "json") -> None:
        """`encoding="msgpack"` sends bodies and asks for answers in MessagePack, large arrays as
        raw bytes (needs the `msgpack` package): about 3x faster than JSON with base64 for a
        million float64 values; "json" (the default) sends JSON."""
        self.base_url, self.api_key = _settings(base_url, api_key)
        self.max_retries = max_retries
        self.encoding = _encoding(encoding)
        self._http = httpx.Client(base_url=self.base_url, headers=_headers(self.api_key, encoding), timeout=timeout,
                                  transport=transport)
        self.models = Models(self)

    def _run(self, call: Call) -> Any:
        attempt = 0
        while True:
            response, failure = None, None
            try:
                response = self._http.request(call.method, call.path,
                                              **{"headers": call.headers, **_content(call, self.encoding)})
            except httpx.TransportError as e:
                failure = e
            done, value = _outcome(call, response, failure, self.base_url)
            if done:
                return value
            if attempt >= self.max_retries:
                raise value
            time.sleep(_backoff(attempt, response))
            attempt += 1

    def vjp(self, f: Any, *primals: Any, has_aux: bool = False, params: Sequence[str] | None = None) -> Any:
        ref = W.as_function_ref(f, params)
        first = self._send(build_value, ref, primals, has_aux)
        out, aux = first if has_aux else (first, None)

        def vjp_fun(cotangent: Any) -> tuple[Any, ...]:
            return self._send(build_vjp, ref, primals, cotangent, has_aux)

        return (out, vjp_fun, aux) if has_aux else (out, vjp_fun)

    def check_grads(self, f: Any, args: Sequence[Any], order: int = 2, modes: Sequence[str] = ("fwd", "rev"),
                    atol: float | None = None, rtol: float | None = None, eps: float | None = None, *,
                    params: Sequence[str] | None = None) -> None:
        """Raise GradientCheckError unless the server's derivatives match finite differences."""
        raise_if_failed(self.check_gradients(f, args, order, modes, atol, rtol, eps, params=params))

    def batch(self, fn: Callable[..., Any], arg_sets: Sequence[Sequence[Any]], *, progress: bool = False) -> list[Any]:
        """fn(*args) for every argument set, e.g. c.batch(c.grad(f), [(W1, b1), (W2, b2)])."""
        bar = _Progress(len(arg_sets), progress)
        results = []
        for args in arg_sets:
            results.append(fn(*args))
            bar.step()
        return results

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class AsyncClient(_Surface):
    """The same surface for asyncio: every call is awaited."""

    def __init__(self, base_url: str | None = None, api_key: str | None = None, timeout: float = DEFAULT_TIMEOUT,
                 max_retries: int = DEFAULT_MAX_RETRIES, *,
                 transport: httpx.AsyncBaseTransport | None = None, encoding: str = "json") -> None:
        """`encoding`: as for Client."""
        self.base_url, self.api_key = _settings(base_url, api_key)
        self.max_retries = max_retries
        self.encoding = _encoding(encoding)
        self._http = httpx.AsyncClient(base_url=self.base_url, headers=_headers(self.api_key, encoding),
                                       timeout=timeout, transport=transport)
        self.models = AsyncModels(self)

    async def _run(self, call: Call) -> Any:
        attempt = 0
        while True:
            response, failure = None, None
            try:
                response = await self._http.request(call.method, call.path,
                                                     **{"headers": call.headers, **_content(call, self.encoding)})
            except httpx.TransportError as e:
                failure = e
            done, value = _outcome(call, response, failure, self.base_url)
            if done:
                return value
            if attempt >= self.max_retries:
                raise value
            await asyncio.sleep(_backoff(attempt, response))
            attempt += 1

    async def vjp(self, f: Any, *primals: Any, has_aux: bool = False,
                  params: Sequence[str] | None = None) -> Any:
        ref = W.as_function_ref(f, params)
        first = await self._send(build_value, ref, primals, has_aux)
        out, aux = first if has_aux else (first, None)

        async def vjp_fun(cotangent: Any) -> tuple[Any, ...]:
            return await self._send(build_vjp, ref, primals, cotangent, has_aux)

        return (out, vjp_fun, aux) if has_aux else (out, vjp_fun)

    async def check_grads(self, f: Any, args: Sequence[Any], order: int = 2, modes: Sequence[str] = ("fwd", "rev"),
                          atol: float | None = None, rtol: float | None = None, eps: float | None = None, *,
                          params: Sequence[str] | None = None) -> None:
        raise_if_failed(await self.check_gradients(f, args, order, modes, atol, rtol, eps, params=params))

    async def batch(self, fn: Callable[..., Awaitable[Any]], arg_sets: Sequence[Sequence[Any]], *,
                    progress: bool = False, concurrency: int = 8) -> list[Any]:
        """Run fn(*args) for every argument set, `concurrency` at a time, results in order."""
        bar = _Progress(len(arg_sets), progress)
        gate = asyncio.Semaphore(concurrency)

        async def one(args: Sequence[Any]) -> Any:
            async with gate:
                result = await fn(*args)
            bar.step()
            return result

        return list(await asyncio.gather(*(one(a) for a in arg_sets)))

    async def close(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()


def _outcome(call: Call, response: httpx.Response | None, failure: Exception | None,
             base_url: str) -> tuple[bool, Any]:
    """(True, result) when the attempt is final (a result, or a non-retryable error raised
    here); (False, error) when it may be retried, with the error to raise if it is not."""
    if failure is not None:
        if isinstance(failure, httpx.TimeoutException):
            return False, APITimeoutError(f"the request timed out: {failure}")
        return False, APIConnectionError(f"could not reach {base_url}: {failure}")
    assert response is not None
    if response.status_code not in RETRY_STATUSES:
        return True, _finish(call, _result(response))
    return False, error_for_status(response.status_code, _json_or_none(response),
                                   response.headers.get("x-request-id"))


def _finish(call: Call, body: Any) -> Any:
    result = call.decode(body)
    dtype = call.body.get("dtype") if isinstance(call.body, dict) else None
    return W.cast_floats(result, dtype) if dtype else result


def _json_or_none(response: httpx.Response) -> Any:
    try:
        return _decoded(response)
    except ValueError:
        return None
