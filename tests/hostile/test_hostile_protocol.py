"""HTTP-level hostility: content types (415), wrong methods (405), unknown routes (404), hostile
request ids, bodies over NABLA_MAX_BODY_BYTES (with and without Content-Length), malformed HTTP,
metrics label cardinality (5,000 made-up methods, random paths), and slow clients (half-sent
headers and bodies, trickled bytes, idle connections) that the server must close within
SLOW_CLIENT_BOUND_S while it keeps serving.

Slow clients are opened when the module starts (`slow_clients`) and judged by the last tests, so
their waiting overlaps the other cases. Raw sockets, small counts."""

from __future__ import annotations

import random
import re
import socket
import string
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from _hostile import (
    BAD_REQUEST,
    BODY,
    METHOD_NOT_ALLOWED,
    NOT_FOUND,
    UNSUPPORTED_MEDIA,
    Case,
    E,
    Expect,
    HostileServer,
    MiB,
    cases,
    judge,
    limit,
    ok,
    parse_raw_response,
    req,
)

pytestmark = pytest.mark.slow

MAX_BODY = 1 * MiB
SERVER_ENV = {"NABLA_MAX_BODY_BYTES": str(MAX_BODY)}
# A half-sent request is closed within the header timeout plus the body timeout (5 s each here) plus
# a margin.
SLOW_CLIENT_BOUND_S = 12.5
GOOD = req(E("sum(x ** 2)"), [1.0, 2.0])
PROTOCOL_400 = Expect(errors=frozenset({(400, None)}), protocol=True)
LARGE_HEADERS = ok() | Expect(errors=frozenset({(400, None), (431, None)}), protocol=True)


# ----------------------------------------------------------------------------- content types, methods, routes

def content_type_cases() -> list[Case]:
    routes = {"value": ("/v1/value", GOOD), "grad": ("/v1/grad", GOOD), "hessian": ("/v1/hessian", GOOD),
              "check_grads": ("/v1/check_grads", GOOD), "shapes": ("/v1/shapes", {"function": E("x"),
                                                                                   "args": [{"shape": [2]}]}),
              "model_grad": ("/v1/models/rosenbrock/grad", {"args": [[1.0, 2.0]]})}
    types = {"text_plain": "text/plain", "form": "application/x-www-form-urlencoded", "none": None,
             "multipart": "multipart/form-data; boundary=b", "xml": "application/xml"}
    out = [Case(f"content_type_{r}_{t}", path, body, UNSUPPORTED_MEDIA, headers={"content-type": ct})
           for r, (path, body) in routes.items() for t, ct in types.items()]
    out += [Case("content_type_json_with_charset", "/v1/grad", GOOD, ok(),
                 headers={"content-type": "application/json; charset=utf-8"}),
            Case("content_type_json_uppercase", "/v1/grad", GOOD, ok(), headers={"content-type": "Application/JSON"}),
            Case("content_type_json_with_bad_charset", "/v1/grad", GOOD, UNSUPPORTED_MEDIA | BAD_REQUEST | ok(),
                 headers={"content-type": "application/json; charset=klingon"})]
    return out


def method_cases() -> list[Case]:
    wrong = [("GET", "/v1/grad"), ("PUT", "/v1/grad"), ("DELETE", "/v1/value"), ("PATCH", "/v1/models"),
             ("PUT", "/v1/models"), ("POST", "/livez"), ("POST", "/metrics"), ("DELETE", "/v1/ops"),
             ("POST", "/v1/ops"), ("PUT", "/v1/models/rosenbrock"), ("TRACE", "/v1/grad"), ("OPTIONS", "/v1/grad"),
             ("FROBNICATE", "/v1/grad"), ("GET", "/v1/shapes"), ("CONNECT", "/v1/grad")]
    return [Case(f"method_{m.lower()}_{p.strip('/').replace('/', '_')}", p, None, METHOD_NOT_ALLOWED, method=m)
            for m, p in wrong]


def route_cases() -> list[Case]:
    paths = {"unknown": "/v1/nonexistent", "extra_segment": "/v1/grad/extra", "uppercase": "/V1/GRAD",
             "double_slash": "/v1//grad", "deep": "/v1/models/a/b/c", "long": "/" + "x" * 4000,
             "nul": "/v1/grad%00", "dotenv": "/.env", "encoded_traversal": "/v1/%2e%2e/%2e%2e/etc/passwd",
             "unicode": "/v1/%E2%88%87"}
    return [Case(f"route_{k}", p, GOOD, NOT_FOUND | METHOD_NOT_ALLOWED) for k, p in paths.items()]


def request_id_cases() -> list[Case]:
    ids = {"long": "a" * 1000, "markup": "<script>alert(1)</script>", "spaces": "a b c", "latin1": b"caf\xe9",
           "empty": "", "quotes": '"; DROP TABLE models; --', "json": '{"a": 1}'}
    return [Case(f"request_id_{k}", "/v1/grad", b"{", BAD_REQUEST, headers={"x-request-id": v})
            for k, v in ids.items()]


CASES = cases(content_type_cases(), method_cases(), route_cases(), request_id_cases())


# ----------------------------------------------------------------------------- raw HTTP

def head(method: str = "POST", path: str = "/v1/value", **headers: str) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1"]
    lines += [f"{k.replace('_', '-')}: {v}" for k, v in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def json_padding(total: int) -> bytes:
    """A syntactically valid JSON body of exactly `total` bytes."""
    body = b'{"function": {"expr": "x", "params": ["x"]}, "args": [1.0]}'
    return body[:-1] + b" " * (total - len(body)) + b"}"


@dataclass
class RawCase:
    id: str
    request: bytes
    expect: Expect
    chunks: list[bytes] = field(default_factory=list)


def chunked(body: bytes, size: int = 65536) -> list[bytes]:
    parts = [b"%x\r\n%s\r\n" % (len(body[i:i + size]), body[i:i + size]) for i in range(0, len(body), size)]
    return parts + [b"0\r\n\r\n"]


def raw_cases() -> list[RawCase]:
    over = json_padding(MAX_BODY + 1)
    body_limit = limit(BODY)
    return [
        RawCase("body_over_limit_with_length", head(content_type="application/json", content_length=str(len(over)))
                + over, body_limit),
        RawCase("body_length_announced_not_sent", head(content_type="application/json",
                                                       content_length=str(10 * MAX_BODY)), body_limit),
        RawCase("body_over_limit_chunked", head(content_type="application/json", transfer_encoding="chunked"),
                body_limit, chunked(over)),
        RawCase("body_at_limit_fine", head(content_type="application/json", content_length=str(MAX_BODY))
                + json_padding(MAX_BODY), ok()),
        RawCase("content_length_10_400", head(content_type="application/json", content_length="1" + "0" * 400)
                + b"{}", body_limit | PROTOCOL_400),
        RawCase("content_length_negative", head(content_type="application/json", content_length="-1") + b"{}",
                PROTOCOL_400),
        RawCase("content_length_not_a_number", head(content_type="application/json", content_length="ten") + b"{}",
                PROTOCOL_400),
        RawCase("content_length_twice_conflicting",
                b"POST /v1/value HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 2\r\n"
                b"Content-Length: 3\r\n\r\n{}", PROTOCOL_400),
        # large headers: answered or refused, never a 5xx or a dropped connection
        RawCase("header_64kib", head(method="GET", path="/livez", x_filler="a" * 65536), LARGE_HEADERS),
        RawCase("headers_2000", b"GET /livez HTTP/1.1\r\nHost: x\r\n"
                + b"".join(b"X-H%d: v\r\n" % i for i in range(2000)) + b"\r\n", LARGE_HEADERS),
        RawCase("method_with_at_sign", b"G@T /livez HTTP/1.1\r\nHost: x\r\n\r\n", PROTOCOL_400),
        RawCase("http_0_9", b"GET /livez\r\n\r\n", PROTOCOL_400),
        RawCase("http_2_0_version", b"GET /livez HTTP/2.0\r\nHost: x\r\n\r\n", PROTOCOL_400 | ok()),
        RawCase("nul_in_path", b"GET /v1/mod\x00els HTTP/1.1\r\nHost: x\r\n\r\n", PROTOCOL_400 | NOT_FOUND),
        RawCase("no_host_header", b"GET /livez HTTP/1.1\r\n\r\n", PROTOCOL_400),
        RawCase("bare_lf_line_endings", b"GET /livez HTTP/1.1\nHost: x\n\n", PROTOCOL_400 | ok()),
    ]


RAW = raw_cases()


# ----------------------------------------------------------------------------- slow clients

@dataclass
class SlowSpec:
    id: str
    opening: bytes
    trickle: bytes = b""  # then one byte of this every `interval` seconds
    interval: float = 0.5
    connections: int = 1
    answer_ok: bool = False  # a 2xx answer before the close is expected (a complete request)


@dataclass
class SlowOutcome:
    closed_after: float | None  # None: still open at the bound
    received: bytes


SLOW = [
    SlowSpec("silent_connection", b"", connections=2),
    SlowSpec("partial_request_line", b"POST /v1/va", connections=2),
    SlowSpec("headers_without_blank_line",
             b"POST /v1/value HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n", connections=2),
    SlowSpec("header_trickle", b"POST /v1/value HTTP/1.1\r\nHost: x\r\nX-Slow: ", trickle=b"a" * 1000),
    SlowSpec("body_short_then_silent", b"POST /v1/value HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
             b"Content-Length: 100\r\n\r\n{\"function\"", connections=2),
    SlowSpec("body_trickle", b"POST /v1/value HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
             b"Content-Length: 100000\r\n\r\n", trickle=b" " * 1000),
    SlowSpec("chunked_unterminated", b"POST /v1/value HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
             b"Transfer-Encoding: chunked\r\n\r\n5\r\n{\"fun\r\n"),
    SlowSpec("idle_after_response", b"GET /livez HTTP/1.1\r\nHost: x\r\n\r\n", answer_ok=True),
]


def _hold(port: int, spec: SlowSpec, bound: float) -> SlowOutcome:
    start = time.monotonic()
    received = bytearray()
    trickle = iter(spec.trickle)
    next_send = start + spec.interval
    try:
        sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    except OSError:
        return SlowOutcome(0.0, b"")
    try:
        if spec.opening:
            sock.sendall(spec.opening)
        sock.settimeout(0.1)
        while True:
            now = time.monotonic()
            if now - start > bound:
                return SlowOutcome(None, bytes(received))
            try:
                data = sock.recv(65536)
                if not data:
                    return SlowOutcome(now - start, bytes(received))
                received += data
            except TimeoutError:
                pass
            except OSError:
                return SlowOutcome(time.monotonic() - start, bytes(received))
            if now >= next_send:
                byte = next(trickle, None)
                if byte is not None:
                    try:
                        sock.sendall(bytes([byte]))
                    except OSError:
                        return SlowOutcome(time.monotonic() - start, bytes(received))
                next_send = now + spec.interval
    finally:
        sock.close()


class SlowClients:
    def __init__(self, port: int) -> None:
        self.results: dict[str, list[SlowOutcome]] = {s.id: [] for s in SLOW}
        self.threads: dict[str, list[threading.Thread]] = {s.id: [] for s in SLOW}
        self.started = time.monotonic()
        for spec in SLOW:
            for _ in range(spec.connections):
                t = threading.Thread(target=lambda s=spec: self.results[s.id].append(
                    _hold(port, s, SLOW_CLIENT_BOUND_S + 1.0)), daemon=True)
                t.start()
                self.threads[spec.id].append(t)

    def wait(self, spec_id: str) -> list[SlowOutcome]:
        for t in self.threads[spec_id]:
            t.join(timeout=SLOW_CLIENT_BOUND_S + 10)
        return self.results[spec_id]


@pytest.fixture(scope="module", autouse=True)
def slow_clients(server: HostileServer) -> Iterator[SlowClients]:
    clients = SlowClients(server.port)
    yield clients
    for spec in SLOW:
        clients.wait(spec.id)


# ----------------------------------------------------------------------------- tests

@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_http_case(server: HostileServer, case: Case) -> None:
    server.check(case)


@pytest.mark.parametrize("case", RAW, ids=[c.id for c in RAW])
def test_raw_http(server: HostileServer, case: RawCase) -> None:
    reply = server.raw(case.request, chunks=case.chunks, label=case.id)
    judge(Case(case.id, "(raw)", None, case.expect, method="RAW"), reply.as_reply(), server.limits())


def _series(text: str) -> set[str]:
    return {line.rsplit(" ", 1)[0] for line in text.splitlines() if line and not line.startswith("#")}


def _label_values(text: str, label: str) -> set[str]:
    return set(re.findall(label + r'="([^"]*)"', text))


def _blast(server: HostileServer, requests: list[tuple[str, str]], threads: int = 4) -> Counter[int | str]:
    statuses: Counter[int | str] = Counter()
    lock = threading.Lock()

    def work(part: list[tuple[str, str]]) -> None:
        with httpx.Client(base_url=server.url, timeout=10) as client:
            for method, path in part:
                try:
                    status: int | str = client.request(method, path).status_code
                except httpx.HTTPError as e:
                    status = type(e).__name__
                with lock:
                    statuses[status] += 1

    workers = [threading.Thread(target=work, args=(requests[i::threads],)) for i in range(threads)]
    start = time.monotonic()
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    server.timeline.append((start, time.monotonic(), f"blast of {len(requests)}"))
    return statuses


def _random_token(rng: random.Random, n: int = 10) -> str:
    return "".join(rng.choice(string.ascii_uppercase) for _ in range(n))


def test_metrics_ignore_made_up_methods(server: HostileServer) -> None:
    """5,000 requests with made-up method tokens: refused with a 4xx, and /metrics does not grow with
    them (the method label comes from a fixed set, unknown ones count as "other")."""
    rng = random.Random(10)
    before = server.metrics_text()
    methods = [f"X{_random_token(rng)}" for _ in range(5000)]
    paths = ["/v1/grad", "/livez", "/v1/models", "/metrics"]
    statuses = _blast(server, [(m, paths[i % len(paths)]) for i, m in enumerate(methods)])
    after = server.metrics_text()
    problems = []
    bad = {s: n for s, n in statuses.items() if not (isinstance(s, int) and 400 <= s < 500)}
    if bad:
        problems.append(f"answers other than 4xx: {bad}")
    leaked = [m for m in methods if m in after]
    if leaked:
        problems.append(f"{len(leaked)} made-up methods appear in /metrics, e.g. {leaked[:3]}")
    methods_seen = _label_values(after, "method")
    if len(methods_seen) > 12:
        problems.append(f"{len(methods_seen)} distinct method label values")
    growth = len(after) - len(before)
    if growth > 64 * 1024:
        problems.append(f"/metrics grew by {growth} bytes ({len(_series(after) - _series(before))} new series)")
    assert not problems, "; ".join(problems) + f" (statuses {dict(statuses)})"


def test_metrics_ignore_random_paths(server: HostileServer) -> None:
    """600 requests to made-up paths and model names: the route label is the route template."""
    rng = random.Random(11)
    before = server.metrics_text()
    tokens = [_random_token(rng).lower() for _ in range(600)]
    requests = [("GET", f"/{t}/{t[:3]}") for t in tokens[:300]]
    requests += [("POST", f"/v1/models/{t}/grad") for t in tokens[300:450]]
    requests += [("GET", f"/v1/models/{t}") for t in tokens[450:]]
    statuses = _blast(server, requests)
    after = server.metrics_text()
    problems = []
    bad = {s: n for s, n in statuses.items() if not (isinstance(s, int) and 400 <= s < 500)}
    if bad:
        problems.append(f"answers other than 4xx: {bad}")
    leaked = [t for t in tokens if t in after]
    if leaked:
        problems.append(f"{len(leaked)} made-up paths or names appear in /metrics, e.g. {leaked[:3]}")
    growth = len(after) - len(before)
    if growth > 64 * 1024:
        problems.append(f"/metrics grew by {growth} bytes")
    assert not problems, "; ".join(problems) + f" (statuses {dict(statuses)})"


@pytest.mark.parametrize("spec", SLOW, ids=[s.id for s in SLOW])
def test_slow_client_is_closed(server: HostileServer, slow_clients: SlowClients, spec: SlowSpec) -> None:
    """A client that never finishes its request is disconnected within SLOW_CLIENT_BOUND_S; any
    answer before the close is a 4xx (408, 400, 413), never a 5xx."""
    outcomes = slow_clients.wait(spec.id)
    assert len(outcomes) == spec.connections, f"{len(outcomes)} of {spec.connections} connections reported"
    problems = []
    for i, outcome in enumerate(outcomes):
        if outcome.closed_after is None:
            problems.append(f"connection {i} still open after {SLOW_CLIENT_BOUND_S:g} s")
        elif outcome.closed_after > SLOW_CLIENT_BOUND_S:
            problems.append(f"connection {i} closed only after {outcome.closed_after:.1f} s")
        if outcome.received:
            status, _, body, _ = parse_raw_response(outcome.received)
            allowed = (lambda s: s == 200) if spec.answer_ok else (lambda s: s is not None and 400 <= s < 500)
            if not allowed(status):
                problems.append(f"connection {i} got {outcome.received[:120]!r}")
    assert not problems, "; ".join(problems)


def test_server_stayed_healthy(server: HostileServer, slow_clients: SlowClients, assert_healthy: Any) -> None:
    for spec in SLOW:
        slow_clients.wait(spec.id)
    assert_healthy(server)
