"""The hostile-input harness: a real server per test module, watched while hostile requests hit it.

- `HostileServer` starts `python -m service.cli serve` (uvicorn, as `nabla serve` runs it) on a free
  loopback port with a SQLite data dir in tmp, under an address-space cap (`SERVER_ADDRESS_SPACE`: a
  server that tries to allocate without bound gets MemoryError instead of taking the machine down).
  Once warmed up it records a baseline RSS and starts two watchers:
  - a /livez probe, polling every 20 ms from its own process (`_livez_probe.py`; a thread in this
    process would be delayed whenever the test builds a large body, and that delay would be
    mistaken for server latency); a reader thread collects every poll's latency;
  - an RSS sampler thread reading VmRSS from /proc/<pid>/status of the server and its children
    every 25 ms (and VmHWM, the kernel's exact peak, of the server process).
- `Case` is one hostile request and `Expect` what the contract allows as its answer;
  `HostileServer.check(case)` sends it with a client timeout of the deadline plus a margin and
  asserts status, error body, limit naming and answer time (`judge`).
- `HostileServer.health()` (called by conftest's `assert_healthy` at the end of each module) checks
  that every /livez poll answered within 100 ms, and that RSS stayed within the module's
  budget and came back down; every slow poll is reported with the cases that were running.

The contract (issue 10) in short: every refused request is a 4xx (or 503/408) with
`application/json` and `{"error": {"type", "message", "detail", "request_id"}}`; a limit refusal is
413 `limit_exceeded` with `detail.limit` = the setting's environment-variable name and numbers
`requested` and `maximum`, the message naming the limit and the figures; any 5xx other than a
deliberate 503 is a bug.
"""

from __future__ import annotations

import base64
import contextlib
import json
import math
import os
import re
import resource
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
# The server's source tree: this checkout, or another one (e.g. an exported older revision) to
# compare behaviours; the test code itself always comes from this checkout.
SERVER_SOURCE = Path(os.environ.get("NABLA_HOSTILE_SERVER_SOURCE", str(REPO))).resolve()

MiB = 1 << 20
DEADLINE_S = 5.0  # NABLA_COMPUTE_TIMEOUT_S of every hostile server
MARGIN_S = 2.5  # transfer, scheduling and parsing on a busy 2-core machine
ANSWER_WITHIN_S = DEADLINE_S + MARGIN_S  # every answer must come within this
LIVEZ_INTERVAL_MS = 20
# Issue 10: /livez answers within 100 ms throughout, every poll. The event loop only moves bytes
# (decoding, computing and encoding run in compute worker processes), so no computation's C call
# can hold it.
LIVEZ_MAX_MS = 100.0
RESPONSE_CAP = 256 * MiB  # the test process stops reading an answer beyond this
SERVER_ADDRESS_SPACE = 3 << 30  # RLIMIT_AS of the server process (virtual memory, not RSS)

# The settings every hostile server gets; modules add or override with SERVER_ENV.
BASE_ENV: dict[str, str] = {
    "NABLA_LOG_LEVEL": "warning",
    "NABLA_WORKERS": "1",
    "NABLA_COMPUTE_TIMEOUT_S": str(int(DEADLINE_S)),
    "NABLA_COMPUTE_THREADS": "2",
    "NABLA_ADMISSION_QUEUE": "8",
    "NABLA_MAX_BODY_BYTES": str(16 * MiB),
    "NABLA_MAX_REQUEST_BYTES": str(128 * MiB),
    "NABLA_MAX_RESPONSE_BYTES": str(16 * MiB),
    "NABLA_PLAN_CACHE_BYTES": str(16 * MiB),  # caches cannot explain memory kept after the cases
    "NABLA_HEADER_TIMEOUT_S": "5",  # a half-sent request's headers
    "NABLA_BODY_TIMEOUT_S": "5",  # a half-sent request's body
}

# Names of the limits (the environment variables that set them), as detail.limit carries them.
BODY = "NABLA_MAX_BODY_BYTES"
ARRAY = "NABLA_MAX_ARRAY_ELEMENTS"
TOTAL = "NABLA_MAX_TOTAL_ELEMENTS"
LEAVES = "NABLA_MAX_LEAVES"
REQUEST = "NABLA_MAX_REQUEST_BYTES"
RESPONSE = "NABLA_MAX_RESPONSE_BYTES"
DIMENSIONS = "NABLA_MAX_DIMENSIONS"
NODES = "NABLA_MAX_GRAPH_NODES"
ORDER = "NABLA_MAX_ORDER"
DEPTH = "NABLA_MAX_DEPTH"
EXPR_CHARS = "NABLA_MAX_EXPRESSION_CHARS"
EXPR_DEPTH = "NABLA_MAX_EXPRESSION_DEPTH"
CONSTANTS = "NABLA_MAX_CONSTANT_ELEMENTS"

# Error types the API documents for a 422 (docs/API.md).
UNPROCESSABLE_TYPES = ("invalid_function", "invalid_argument", "shape_error", "dtype_error", "not_differentiable",
                       "compute_error")
_SAFE_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,128}$")


# ----------------------------------------------------------------------------- request bodies


def E(src: str, params: Iterable[str] = ("x",)) -> dict[str, Any]:
    """An expression function."""
    return {"expr": src, "params": list(params)}


def G(nodes: list[dict[str, Any]], params: list[Any] | None = None, constants: dict[str, Any] | None = None,
      outputs: list[str] | None = None, **extra: Any) -> dict[str, Any]:
    """A nabla.graph/1 function; the output is the last node unless given."""
    doc: dict[str, Any] = {"format": "nabla.graph/1", "params": ["x"] if params is None else params,
                           "nodes": nodes, "outputs": outputs or ([nodes[-1]["id"]] if nodes else ["x"])}
    if constants is not None:
        doc["constants"] = constants
    doc.update(extra)
    return {"graph": doc}


def node(node_id: str, op: str, *inputs: Any, **attrs: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"id": node_id, "op": op, "inputs": list(inputs)}
    if attrs:
        out["attrs"] = attrs
    return out


_ITEMSIZE = {"float16": 2, "float32": 4, "float64": 8, "int8": 1, "int16": 2, "int32": 4, "int64": 8, "uint8": 1,
             "uint16": 2, "uint32": 4, "uint64": 8, "bool": 1}


def arr(dtype: str, shape: list[int], data: bytes | str | None = None) -> dict[str, Any]:
    """A `$array` leaf; zero-filled data of the right length unless given."""
    if data is None:
        data = bytes(math.prod(shape) * _ITEMSIZE[dtype])
    if isinstance(data, bytes):
        data = base64.b64encode(data).decode("ascii")
    return {"$array": {"dtype": dtype, "shape": shape, "data": data}}


def req(function: Any, *args: Any, **options: Any) -> dict[str, Any]:
    return {"function": function, "args": list(args), **options}


def chain_graph(n: int, op: str = "tanh") -> dict[str, Any]:
    """x -> op -> op -> ... (n nodes), a scalar function of a scalar."""
    nodes = [{"id": f"n{i}", "op": op, "inputs": ["x" if i == 0 else f"n{i - 1}"]} for i in range(n)]
    return G(nodes)


def chain_expr(n: int, fn: str = "tanh", out: str = "h") -> str:
    return "\n".join(["h = x"] + [f"h = {fn}(h)"] * n + [out])


# Values outside their dtype's range, as graph literals and constants write them.
OUT_OF_RANGE: dict[str, tuple[str, Any]] = {
    "int8_1000": ("int8", 1000), "int8_minus_129": ("int8", -129), "uint8_minus_1": ("uint8", -1),
    "uint8_256": ("uint8", 256), "int16_40000": ("int16", 40000), "int32_2_31": ("int32", 2**31),
    "uint32_minus_1": ("uint32", -1), "int64_2_63": ("int64", 2**63),
    "int64_minus_2_63_minus_1": ("int64", -(2**63) - 1),
    "uint64_2_64": ("uint64", 2**64), "uint64_minus_1": ("uint64", -1), "int32_infinity": ("int32", "Infinity"),
    "int32_nan": ("int32", "NaN"), "int64_minus_infinity": ("int64", "-Infinity"), "float16_70000": ("float16", 70000),
    "float32_10_400": ("float32", 10**400), "float32_1e39": ("float32", 1e39), "float64_10_400": ("float64", 10**400),
}


# The graphs output the value converted to float32 (their parameter x is unused), so they do not
# depend on the request's float dtype.
def literal_graph(dtype: str, value: Any) -> dict[str, Any]:
    return G([node("c", "add", {"literal": value, "dtype": dtype}, {"literal": 0, "dtype": dtype}),
              node("y", "convert_element_type", "c", dtype="float32")])


def constant_graph(dtype: str, value: Any) -> dict[str, Any]:
    return G([node("y", "convert_element_type", "c", dtype="float32")],
             constants={"c": {"dtype": dtype, "shape": [2], "data": [value, 0]}})


def bare_literal_graph(dtype: str, value: Any) -> dict[str, Any]:
    """A bare literal takes the dtype of the node's other operand (an int constant here)."""
    return G([node("s", "add", "c", value), node("y", "convert_element_type", "s", dtype="float32")],
             constants={"c": {"dtype": dtype, "shape": [2], "data": [0, 0]}})


def dumps(obj: Any) -> bytes:
    """JSON as a hostile client writes it: NaN/Infinity tokens allowed, huge integers as digits."""
    return json.dumps(obj, allow_nan=True, separators=(",", ":")).encode()


# ----------------------------------------------------------------------------- expectations


@dataclass(frozen=True)
class Expect:
    """The answers the contract allows for one request.

    errors: acceptable refusals as (status, error type), type None meaning any string;
    limits: for a 413, the acceptable `detail.limit` values (the limits the request exceeds);
    success: acceptable 2xx statuses, each checked by `check_success` (returns a problem or None);
    located: for invalid_function / invalid_argument refusals, require a location in `detail`
      (line and column, or a node id; the argument path);
    within_s: the answer must come within this many seconds;
    protocol: a plain-text refusal (one of `errors`' statuses) from the HTTP layer is acceptable
      too: malformed HTTP never reaches the application;
    form: the error body's form: "v1" ({"error": {type, message, detail, request_id}}), "oip"
      (the Open Inference Protocol's {"error": "<message>"}) or "umbridge" ({"error": {type,
      message, ...}}); for "oip" an error type in `errors` cannot be checked (None there).
    """

    errors: frozenset[tuple[int, str | None]] = frozenset()
    limits: frozenset[str] = frozenset()
    success: frozenset[int] = frozenset()
    check_success: Callable[[Any], str | None] | None = None
    located: bool = False
    within_s: float = ANSWER_WITHIN_S
    protocol: bool = False
    form: str = "v1"

    def __or__(self, other: Expect) -> Expect:
        checks = [c for c in (self.check_success, other.check_success) if c is not None]
        return Expect(self.errors | other.errors, self.limits | other.limits, self.success | other.success,
                      checks[0] if len(checks) == 1 else (_all_checks(checks) if checks else None),
                      self.located or other.located, max(self.within_s, other.within_s),
                      self.protocol or other.protocol, self.form if self.form == other.form else "v1")

    def describe(self) -> str:
        parts = [f"{s} {t or '*'}" + (f" naming {'/'.join(sorted(self.limits))}" if s == 413 else "")
                 for s, t in sorted(self.errors, key=lambda e: (e[0], e[1] or ""))]
        parts += [f"{s} (checked)" if self.check_success else str(s) for s in sorted(self.success)]
        return " or ".join(parts) + f", within {self.within_s:g} s"


def _all_checks(checks: list[Callable[[Any], str | None]]) -> Callable[[Any], str | None]:
    def check(body: Any) -> str | None:
        return next((p for p in (c(body) for c in checks) if p), None)
    return check


def limit(*names: str) -> Expect:
    return Expect(errors=frozenset({(413, "limit_exceeded")}), limits=frozenset(names))


def ok(check: Callable[[Any], str | None] | None = None, status: int = 200) -> Expect:
    return Expect(success=frozenset({status}), check_success=check)


BAD_REQUEST = Expect(errors=frozenset({(400, "invalid_request")}))
BAD_FUNCTION = Expect(errors=frozenset({(422, "invalid_function")}), located=True)
BAD_FUNCTION_ANY = Expect(errors=frozenset({(422, "invalid_function")}))  # no location to give (a wrong type)
BAD_ARGUMENT = Expect(errors=frozenset({(422, "invalid_argument")}), located=True)
UNPROCESSABLE = Expect(errors=frozenset({(422, t) for t in UNPROCESSABLE_TYPES}))
NOT_FOUND = Expect(errors=frozenset({(404, "not_found")}))
METHOD_NOT_ALLOWED = Expect(errors=frozenset({(405, None)}))
UNSUPPORTED_MEDIA = Expect(errors=frozenset({(415, "unsupported_media_type")}))
TIMEOUT = Expect(errors=frozenset({(408, "timeout")}))
CONFLICT = Expect(errors=frozenset({(409, "conflict")}))
BAD_SPEC = BAD_REQUEST | BAD_FUNCTION_ANY  # a wrongly typed `function` field: 400 or 422 both fit the contract
# A value outside its dtype's range in a graph: 422, at the node (or field) at fault.
OUT_OF_DTYPE = Expect(errors=frozenset({(422, "invalid_function"), (422, "dtype_error")}), located=True)


def value_is(expected: Any, key: str = "value") -> Callable[[Any], str | None]:
    def check(body: Any) -> str | None:
        got = body.get(key) if isinstance(body, dict) else None
        return None if got == expected else f"{key} = {json.dumps(got)[:200]}, expected {json.dumps(expected)[:200]}"
    return check


# ----------------------------------------------------------------------------- cases and replies


@dataclass
class Case:
    """One hostile request. `body`: a JSON-able object, raw bytes, or a callable returning bytes
    (built when sent, for large bodies); `headers` override the default content type (a None value
    removes a header); `then` runs after the answer was judged (follow-up requests)."""

    id: str
    path: str
    body: Any = None
    expect: Expect = field(default_factory=lambda: BAD_REQUEST)
    method: str = "POST"
    headers: dict[str, str | bytes | None] = field(default_factory=dict)
    then: Callable[[HostileServer, Reply], None] | None = None

    def encoded(self) -> bytes | None:
        if self.body is None:
            return None
        if callable(self.body):
            return self.body()
        if isinstance(self.body, bytes):
            return self.body
        return dumps(self.body)


def cases(*groups: Iterable[Case]) -> list[Case]:
    out = [c for g in groups for c in g]
    ids = [c.id for c in out]
    duplicates = sorted({i for i in ids if ids.count(i) > 1})
    assert not duplicates, f"duplicate case ids: {duplicates}"
    return out


@dataclass
class Reply:
    status: int | None
    headers: dict[str, str]
    content: bytes
    elapsed: float
    error: str | None = None  # the transport failed: no answer (timeout, reset, ...)
    truncated: bool = False

    def excerpt(self, n: int = 300) -> str:
        text = self.content[:n].decode("utf-8", "replace")
        return text + ("..." if len(self.content) > n else "")

    def json(self) -> Any:
        return strict_json(self.content)

    def summary(self) -> str:
        if self.error:
            return f"no answer ({self.error}) after {self.elapsed:.2f} s"
        return (f"{self.status} in {self.elapsed:.2f} s, {self.headers.get('content-type', 'no content-type')}, "
                f"{len(self.content)} bytes: {self.excerpt()}")


def strict_json(content: bytes) -> Any:
    """Parse JSON, refusing the NaN/Infinity tokens that are not JSON (the API writes them as strings)."""
    def refuse(token: str) -> Any:
        raise ValueError(f"non-JSON token {token}")
    return json.loads(content, parse_constant=refuse)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


# ----------------------------------------------------------------------------- judging


def _figures(n: Any) -> set[str]:
    """Ways a message can write the number n."""
    if isinstance(n, float) and n.is_integer():
        n = int(n)
    out = {str(n)}
    if isinstance(n, int):
        out |= {f"{n:,}", f"{n:_}", f"{n:.0e}", f"{n:e}", f"{n:g}"}
        for unit, size in (("KiB", 1 << 10), ("MiB", 1 << 20), ("GiB", 1 << 30)):
            if n >= size and n % size == 0:
                out |= {f"{n // size} {unit}", f"{n // size}{unit}"}
    return out


def judge(case: Case, reply: Reply, limits: dict[str, int] | None = None) -> None:
    """Assert the reply is one the contract allows for the case; the message says what came back."""
    ex = case.expect
    problems: list[str] = []
    if reply.error:
        raise AssertionError(f"{case.method} {case.path} [{case.id}]: {reply.summary()}; "
                             f"the contract wants {ex.describe()}")
    status = reply.status or 0
    if reply.elapsed > ex.within_s:
        problems.append(f"answered after {reply.elapsed:.2f} s (> {ex.within_s:g} s)")
    content_type = reply.headers.get("content-type", "").split(";")[0].strip().lower()
    if 200 <= status < 300:
        if status not in ex.success:
            problems.append(f"accepted with {status}")
        elif content_type != "application/json":
            problems.append(f"content-type {content_type!r}")
        else:
            max_response = (limits or {}).get(RESPONSE)
            if max_response is not None and len(reply.content) > max_response:
                problems.append(f"the answer has {len(reply.content)} bytes, over {RESPONSE}={max_response}")
            if reply.truncated:
                problems.append(f"the answer was cut at {RESPONSE_CAP} bytes")
            else:
                try:
                    body = reply.json()
                except ValueError as e:
                    problems.append(f"the answer is not strict JSON ({e})")
                else:
                    if ex.check_success is not None:
                        problem = ex.check_success(body)
                        if problem:
                            problems.append(problem)
    else:
        problems += _judge_error(ex, reply, status, content_type)
    if problems:
        raise AssertionError(f"{case.method} {case.path} [{case.id}]: got {reply.summary()}\n  problems: "
                             + "; ".join(problems) + f"\n  the contract wants {ex.describe()}")


def _judge_error(ex: Expect, reply: Reply, status: int, content_type: str) -> list[str]:
    allowed = {s for s, _ in ex.errors}
    if ex.protocol and 400 <= status < 500 and content_type != "application/json":
        # the HTTP layer refused malformed HTTP before the application saw it
        return [] if status in {s for s, _ in ex.errors} else [f"status {status}"]
    problems = []
    if status not in allowed:
        problems.append(f"status {status}" + (" (a server error)" if status >= 500 else ""))
    if content_type != "application/json":
        return problems + [f"content-type {content_type!r}, not application/json"]
    try:
        body = reply.json()
    except ValueError as e:
        return problems + [f"the error body is not strict JSON ({e})"]
    error = body.get("error") if isinstance(body, dict) else None
    if ex.form == "oip":  # the Open Inference Protocol's error: {"error": "<message>"}
        if not isinstance(error, str) or set(body) != {"error"} or not error:
            problems.append("the body is not OIP's {\"error\": \"<message>\"}")
        return problems
    if ex.form == "umbridge":
        if not isinstance(error, dict) or not all(isinstance(error.get(k), str) for k in ("type", "message")):
            problems.append("the body is not UM-Bridge's {\"error\": {\"type\", \"message\"}}")
        return problems
    if not isinstance(error, dict) or set(body) != {"error"}:
        return problems + ["the body is not {\"error\": {...}}"]
    shape = {"type": str, "message": str, "detail": dict, "request_id": str}
    for key, kind in shape.items():
        if not isinstance(error.get(key), kind):
            problems.append(f"error.{key} is {type(error.get(key)).__name__}, not {kind.__name__}")
    if problems:
        return problems
    rid = error["request_id"]
    if not _SAFE_REQUEST_ID.match(rid):
        problems.append(f"request_id {rid[:60]!r} is not a plain id")
    header_rid = reply.headers.get("x-request-id")
    if header_rid is not None and header_rid != rid:
        problems.append(f"request_id {rid!r} differs from X-Request-ID {header_rid!r}")
    etype, detail, message = error["type"], error["detail"], error["message"]
    if status in allowed and not any(s == status and (t is None or t == etype) for s, t in ex.errors):
        problems.append(f"error type {etype!r}")
    if status == 413 and etype == "limit_exceeded":
        problems += _judge_limit(ex, detail, message)
    if ex.located and status == 422:
        if etype in ("invalid_function", "dtype_error", "shape_error") and not (
                (detail.get("line") is not None and detail.get("column") is not None) or detail.get("node")
                or detail.get("field")):
            problems.append(f"{etype} without line/column, node or field in detail "
                            f"{json.dumps(detail)[:120]}")
        if etype == "invalid_argument" and not detail.get("path"):
            problems.append(f"invalid_argument without the argument path in detail {json.dumps(detail)[:120]}")
    if status == 503:
        retry = reply.headers.get("retry-after")
        if retry is None or not retry.strip().isdigit():
            problems.append(f"503 without a Retry-After of seconds (got {retry!r})")
    return problems


def _judge_limit(ex: Expect, detail: dict[str, Any], message: str) -> list[str]:
    problems = []
    name = detail.get("limit")
    if name not in ex.limits:
        problems.append(f"detail.limit {name!r}, expected one of {sorted(ex.limits)}")
    numbers = {}
    for key in ("requested", "maximum"):
        value = detail.get(key)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            problems.append(f"detail.{key} is {json.dumps(value)[:40]}, not a number")
        else:
            numbers[key] = value
    if len(numbers) == 2 and not numbers["requested"] > numbers["maximum"]:
        problems.append(f"detail.requested {numbers['requested']} is not above detail.maximum {numbers['maximum']}")
    if isinstance(name, str) and name not in message:
        problems.append(f"the message does not name {name}")
    if "maximum" in numbers and not any(f in message for f in _figures(numbers["maximum"])):
        problems.append(f"the message does not give the maximum {numbers['maximum']}")
    return problems


# ----------------------------------------------------------------------------- raw HTTP


@dataclass
class RawReply:
    status: int | None
    headers: dict[str, str]
    body: bytes
    elapsed: float
    closed: bool  # the server closed the connection
    error: str | None = None

    def as_reply(self) -> Reply:
        return Reply(self.status, self.headers, self.body, self.elapsed,
                     None if self.status is not None else (self.error or "no HTTP response"))


def parse_raw_response(data: bytes) -> tuple[int | None, dict[str, str], bytes, bool]:
    """(status, headers, body, complete) of the first HTTP response in data."""
    head, sep, rest = data.partition(b"\r\n\r\n")
    if not sep:
        return None, {}, b"", False
    lines = head.decode("latin-1").split("\r\n")
    try:
        status = int(lines[0].split()[1])
    except (IndexError, ValueError):
        return None, {}, b"", False
    headers = {}
    for line in lines[1:]:
        k, _, v = line.partition(":")
        headers[k.strip().lower()] = v.strip()
    if "content-length" in headers and headers["content-length"].isdigit():
        n = int(headers["content-length"])
        return status, headers, rest[:n], len(rest) >= n
    return status, headers, rest, False


def raw_exchange(host: str, port: int, request: bytes, timeout: float, *, chunks: Iterable[bytes] = ()) -> RawReply:
    """Send `request` (then each of `chunks`) on a new connection while reading the answer, so an
    answer sent before the body is complete (413 on Content-Length) is seen even if the server then
    stops reading. Returns when a complete response arrived, the server closed, or at `timeout`."""
    start = time.monotonic()
    sock = socket.create_connection((host, port), timeout=timeout)
    received = bytearray()
    send_error: list[str] = []

    def sender() -> None:
        try:
            sock.sendall(request)
            for chunk in chunks:
                sock.sendall(chunk)
        except OSError as e:
            send_error.append(type(e).__name__)

    thread = threading.Thread(target=sender, daemon=True)
    thread.start()
    closed = False
    error = None
    try:
        while time.monotonic() - start < timeout:
            sock.settimeout(max(0.05, min(0.5, timeout - (time.monotonic() - start))))
            try:
                data = sock.recv(65536)
            except TimeoutError:
                continue
            except OSError as e:
                error, closed = type(e).__name__, True
                break
            if not data:
                closed = True
                break
            received += data
            status, headers, body, complete = parse_raw_response(bytes(received))
            if complete:
                break
    finally:
        elapsed = time.monotonic() - start
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
        sock.close()
        thread.join(timeout=1)
    status, headers, body, _ = parse_raw_response(bytes(received))
    if status is None and error is None:
        error = "timeout" if not closed else "closed without a response"
    return RawReply(status, headers, body, elapsed, closed, error)


# ----------------------------------------------------------------------------- watchers


@dataclass
class Poll:
    at: float  # monotonic seconds
    ms: float
    outcome: str


class LivezProbe:
    """Runs `_livez_probe.py` in its own process; a thread collects its polls."""

    def __init__(self, url: str) -> None:
        self.polls: list[Poll] = []
        self._lock = threading.Lock()
        self.process = subprocess.Popen(
            [sys.executable, str(HERE / "_livez_probe.py"), url, str(LIVEZ_INTERVAL_MS), "2"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            parts = line.split()
            if len(parts) == 3:
                with self._lock:
                    self.polls.append(Poll(float(parts[0]), float(parts[1]), parts[2]))

    def snapshot(self) -> list[Poll]:
        with self._lock:
            return list(self.polls)

    def stop(self) -> None:
        if self.process.poll() is None:
            with contextlib.suppress(OSError):
                assert self.process.stdin is not None
                self.process.stdin.close()
            try:
                self.process.wait(timeout=3)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._thread.join(timeout=3)


def _status_kib(pid: int, key: str) -> int | None:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


def _process_tree(pid: int) -> list[int]:
    pids, stack = [], [pid]
    while stack:
        p = stack.pop()
        pids.append(p)
        try:
            for task in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{task}/children") as f:
                    stack.extend(int(c) for c in f.read().split())
        except (OSError, ValueError):
            continue
    return pids


def tree_rss(pid: int) -> int:
    """Resident bytes of the process and its descendants (VmRSS)."""
    return sum((_status_kib(p, "VmRSS") or 0) * 1024 for p in _process_tree(pid))


class RssSampler:
    """Samples the server's RSS (process tree) every 25 ms."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.samples: list[tuple[float, int]] = []
        self.loads: list[float] = []  # the machine's 1-minute load average, once a second (context)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        next_load = 0.0
        while not self._stop.is_set():
            rss = tree_rss(self.pid)
            now = time.monotonic()
            if rss:
                self.samples.append((now, rss))
            if now >= next_load:
                with contextlib.suppress(OSError, ValueError):
                    self.loads.append(float(Path("/proc/loadavg").read_text().split()[0]))
                next_load = now + 1.0
            self._stop.wait(0.025)

    def peak(self) -> tuple[float, int]:
        samples = list(self.samples)
        return max(samples, key=lambda s: s[1]) if samples else (0.0, 0)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)


# ----------------------------------------------------------------------------- the server


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _cap_address_space() -> None:  # runs in the child before exec
    resource.setrlimit(resource.RLIMIT_AS, (SERVER_ADDRESS_SPACE, SERVER_ADDRESS_SPACE))


@dataclass
class Health:
    module: str
    polls: int
    failed: int
    p50: float
    p99: float
    max: float
    baseline_mib: float
    peak_mib: float
    hwm_mib: float
    end_mib: float
    peak_budget_mib: float
    end_margin_mib: float
    max_load: float
    errors_logged: int  # error lines in the server's log (each 5xx is one; reported, not judged here)

    def line(self) -> str:
        return (f"{self.module} (machine load up to {self.max_load:.1f}): livez n={self.polls} "
                f"failed={self.failed} p50={self.p50:.1f} ms "
                f"p99={self.p99:.1f} ms max={self.max:.1f} ms; RSS baseline={self.baseline_mib:.0f} MiB "
                f"peak={self.peak_mib:.0f} MiB (VmHWM {self.hwm_mib:.0f}; budget +{self.peak_budget_mib:.0f}) "
                f"end={self.end_mib:.0f} MiB (margin +{self.end_margin_mib:.0f}); server error log lines: "
                f"{self.errors_logged}")


class HostileServer:
    def __init__(self, env: dict[str, str], data_dir: Path, log_path: Path, name: str) -> None:
        self.name = name
        self.env = env
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        environ = {k: v for k, v in os.environ.items() if not k.startswith("NABLA_")}
        environ.update(env)
        environ.update({"NABLA_HOST": "127.0.0.1", "NABLA_PORT": str(self.port), "NABLA_DATA_DIR": str(data_dir),
                        "PYTHONPATH": os.pathsep.join([str(SERVER_SOURCE), environ.get("PYTHONPATH", "")])})
        with open(log_path, "wb") as out:
            self.process = subprocess.Popen([sys.executable, "-m", "service.cli", "serve"], cwd=SERVER_SOURCE,
                                            env=environ, stdout=out, stderr=subprocess.STDOUT,
                                            preexec_fn=_cap_address_space)
        self.client = httpx.Client(base_url=self.url, timeout=ANSWER_WITHIN_S)
        self.timeline: list[tuple[float, float, str]] = []  # (start, end, case id)
        self.probe: LivezProbe | None = None
        self.rss: RssSampler | None = None
        self.baseline = 0
        self._wait_until_live()

    # -- settings

    def setting(self, name: str) -> int:
        return int(float(self.env[name]))

    def limits(self) -> dict[str, int]:
        return {k: self.setting(k) for k in self.env if k.startswith("NABLA_MAX_")}

    # -- life cycle

    def output(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def log_lines_for(self, reply: Reply, limit: int = 1500) -> str:
        """The server's log lines about a reply (by its request id), for a 5xx's report."""
        time.sleep(0.1)
        rid = reply.headers.get("x-request-id") or ""
        try:
            rid = rid or reply.json()["error"]["request_id"]
        except (ValueError, KeyError, TypeError):
            pass
        lines = [line for line in self.output().splitlines() if rid and rid in line]
        return ("\n".join(lines) or "(no line with the request id)")[-limit:]

    def error_log_lines(self) -> list[str]:
        return [line for line in self.output().splitlines()
                if '"level": "error"' in line or '"level":"error"' in line or "Traceback" in line]

    def _wait_until_live(self) -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the server exited with {self.process.returncode}:\n{self.output()[-3000:]}")
            try:
                if httpx.get(self.url + "/livez", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"the server did not answer /livez within 60 s:\n{self.output()[-3000:]}")

    def start_watching(self, warm_up: Iterable[Case]) -> None:
        """Send ordinary requests until caches and lazy imports are warm, take the baseline, then
        start the /livez probe and the RSS sampler."""
        for _ in range(3):
            for case in warm_up:
                self.send(case)
        time.sleep(0.5)
        self.baseline = tree_rss(self.process.pid)
        self.rss = RssSampler(self.process.pid)
        self.probe = LivezProbe(self.url)
        deadline = time.monotonic() + 15
        while len(self.probe.snapshot()) < 3 and time.monotonic() < deadline:
            time.sleep(0.02)

    def stop(self) -> None:
        if self.probe is not None:
            self.probe.stop()
        if self.rss is not None:
            self.rss.stop()
        self.client.close()
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    # -- requests

    def send(self, case: Case, timeout: float | None = None) -> Reply:
        """Send a case (httpx; the answer read up to RESPONSE_CAP bytes) within a wall-clock timeout."""
        timeout = timeout if timeout is not None else case.expect.within_s
        headers = {} if case.body is None else {"content-type": "application/json"}
        for k, v in case.headers.items():
            headers.pop(k.lower(), None)
            if v is not None:
                headers[k.lower()] = v
        content = case.encoded()
        start = time.monotonic()
        try:
            with self.client.stream(case.method, case.path, content=content, headers=headers,
                                    timeout=httpx.Timeout(timeout)) as r:
                chunks: list[bytes] = []
                size, truncated = 0, False
                for chunk in r.iter_raw():
                    size += len(chunk)
                    if size > RESPONSE_CAP:
                        truncated = True
                        break
                    chunks.append(chunk)
                    if time.monotonic() - start > timeout:
                        return Reply(r.status_code, dict(r.headers), b"".join(chunks), time.monotonic() - start,
                                     error=f"answer still streaming after {timeout:g} s")
                return Reply(r.status_code, dict(r.headers), b"".join(chunks), time.monotonic() - start,
                             truncated=truncated)
        except httpx.TimeoutException:
            return Reply(None, {}, b"", time.monotonic() - start, error=f"no answer within {timeout:g} s")
        except httpx.HTTPError as e:
            error = f"{type(e).__name__}: {e}"
            if self.process.poll() is not None:
                error += f" (the server exited with {self.process.returncode})"
            return Reply(None, {}, b"", time.monotonic() - start, error=error)
        finally:
            self.timeline.append((start, time.monotonic(), case.id))

    def check(self, case: Case) -> Reply:
        reply = self.send(case)
        try:
            judge(case, reply, self.limits())
        except AssertionError as e:
            if reply.status is not None and reply.status >= 500:
                raise AssertionError(f"{e}\n  server log: {self.log_lines_for(reply)}") from None
            raise
        if case.then is not None:
            case.then(self, reply)
        return reply

    def raw(self, request: bytes, timeout: float = ANSWER_WITHIN_S, chunks: Iterable[bytes] = (),
            label: str = "raw") -> RawReply:
        start = time.monotonic()
        try:
            return raw_exchange("127.0.0.1", self.port, request, timeout, chunks=chunks)
        finally:
            self.timeline.append((start, time.monotonic(), label))

    def metrics_text(self) -> str:
        start = time.monotonic()
        try:
            return httpx.get(self.url + "/metrics", timeout=30).text
        finally:
            self.timeline.append((start, time.monotonic(), "GET /metrics"))

    # -- health

    def cases_during(self, t0: float, t1: float) -> list[str]:
        return sorted({cid for s, e, cid in self.timeline if s <= t1 and e >= t0})

    def health(self, peak_budget: int, end_margin: int, settle_s: float = 5.0) -> tuple[Health, list[str]]:
        assert self.probe is not None and self.rss is not None, "start_watching() was not called"
        problems = []
        if self.process.poll() is not None:
            problems.append(f"the server exited with {self.process.returncode}: {self.output()[-1500:]}")
        polls = self.probe.snapshot()
        latencies = sorted(p.ms for p in polls)
        failed = [p for p in polls if p.outcome != "ok"]
        q = statistics.quantiles(latencies, n=100, method="inclusive") if len(latencies) >= 2 else latencies * 99
        p50, p99, worst = (q[49], q[98], latencies[-1]) if latencies else (math.nan,) * 3
        if len(polls) < 10:
            problems.append(f"only {len(polls)} /livez polls were recorded")
        if failed:
            first = failed[:5]
            problems.append(f"{len(failed)} /livez polls failed, e.g. " + ", ".join(
                f"{p.outcome} after {p.ms:.0f} ms during {self.cases_during(p.at, p.at + p.ms / 1000)[:4]}"
                for p in first))
        slow = [p for p in polls if p.ms >= LIVEZ_MAX_MS]
        if slow:
            worst_polls = sorted(slow, key=lambda p: -p.ms)[:5]
            problems.append(
                f"/livez p99 {p99:.1f} ms, max {worst:.1f} ms: {len(slow)} of {len(polls)} polls over the "
                f"{LIVEZ_MAX_MS:.0f} ms bound; slowest during: "
                + "; ".join(f"{p.ms:.0f} ms: {self.cases_during(p.at, p.at + p.ms / 1000)[:4]}" for p in worst_polls))
        peak_at, peak = self.rss.peak()
        hwm = (_status_kib(self.process.pid, "VmHWM") or 0) * 1024
        peak = max(peak, hwm)
        if peak > self.baseline + peak_budget:
            problems.append(f"RSS peaked at {peak / MiB:.0f} MiB, over baseline {self.baseline / MiB:.0f} MiB + "
                            f"budget {peak_budget / MiB:.0f} MiB (sampled peak during "
                            f"{self.cases_during(peak_at - 0.05, peak_at + 0.05)[:4]})")
        end = tree_rss(self.process.pid)
        settle = time.monotonic() + settle_s
        while end > self.baseline + end_margin and time.monotonic() < settle:
            time.sleep(0.25)
            end = tree_rss(self.process.pid)
        if end > self.baseline + end_margin:
            problems.append(f"RSS is {end / MiB:.0f} MiB after the cases ({settle_s:g} s to settle), over baseline "
                            f"{self.baseline / MiB:.0f} MiB + margin {end_margin / MiB:.0f} MiB")
        health = Health(self.name, len(polls), len(failed), p50, p99, worst, self.baseline / MiB, peak / MiB,
                        hwm / MiB, end / MiB, peak_budget / MiB, end_margin / MiB, max(self.rss.loads, default=0.0),
                        len(self.error_log_lines()))
        return health, problems


def warm_up_cases() -> list[Case]:
    """Ordinary requests of every kind: imports, plan caches and allocator arenas warm up before the
    baseline RSS is taken."""
    x = [0.5, -1.0, 2.0]
    fn = E("sum(tanh(x) ** 2)")
    return [
        Case("warm_value", "/v1/value", req(fn, x), ok()),
        Case("warm_grad", "/v1/grad", req(fn, x), ok()),
        Case("warm_grad2", "/v1/grad", req(E("sin(x)"), 0.5, order=2), ok()),
        Case("warm_vg", "/v1/value_and_grad", req(fn, x), ok()),
        Case("warm_jvp", "/v1/jvp", req(fn, x, tangents=[[1.0, 0.0, 0.0]]), ok()),
        Case("warm_vjp", "/v1/vjp", req(E("tanh(x)"), x, cotangent=[1.0, 1.0, 1.0]), ok()),
        Case("warm_jacobian", "/v1/jacobian", req(E("tanh(x)"), x), ok()),
        Case("warm_hessian", "/v1/hessian", req(fn, x), ok()),
        Case("warm_check", "/v1/check_grads", req(fn, x, dtype="float64"), ok()),
        Case("warm_graph", "/v1/grad", req(chain_graph(3), 0.5), ok()),
        Case("warm_base64", "/v1/value", req(E("x * 2"), arr("float32", [1000]), encoding="base64"), ok()),
        Case("warm_shapes", "/v1/shapes", {"function": E("x"), "args": [{"shape": [2]}]}, ok()),
        Case("warm_model", "/v1/models/rosenbrock/grad", {"args": [x]}, ok()),
        Case("warm_models", "/v1/models", None, ok(), method="GET"),
        Case("warm_bad", "/v1/value", b"{", BAD_REQUEST),
    ]
