"""Running the service under uvicorn, with the protections uvicorn lacks.

Uvicorn closes an idle keep-alive connection, but not one that opened and never finished its
headers: a few hundred such connections hold sockets and memory for as long as the clients
like. The protocols here close a connection whose request headers have not all arrived within
NABLA_HEADER_TIMEOUT_S of it opening or of its previous response; the body has its own limit
(NABLA_BODY_TIMEOUT_S, enforced by the app while it reads).

The HTTP parser is httptools (llhttp, in C) and the event loop uvloop when they are installed
(the `service` extra installs both): against uvicorn's pure-Python h11 they halve the CPU an
HTTP request costs (docs/PERFORMANCE.md). h11 and asyncio's loop remain the fallback.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import re
import socket
import uuid
from typing import Any

import orjson
from uvicorn.protocols.http.h11_impl import H11Protocol

try:
    import httptools
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
except ImportError:  # httptools is not installed: h11 only
    HttpToolsProtocol = None  # type: ignore[assignment,misc]

from service.logs import uvicorn_log_config
from service.settings import Settings


@functools.cache
def _header_timeout_s() -> float:
    # Read once per process (uvicorn's worker processes import this module themselves).
    return Settings().header_timeout_s


class _HeaderDeadline:
    """A deadline for each request's headers, for either of uvicorn's HTTP protocols (both set
    `self.cycle` to a new object once a request's headers are complete)."""

    cycle: Any
    loop: asyncio.AbstractEventLoop
    transport: asyncio.Transport

    _header_timer: asyncio.TimerHandle | None = None
    _waiting_since_cycle: Any = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        _no_delay(transport)
        self._arm_header_deadline()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._arm_header_deadline()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
        super().connection_lost(exc)

    def _arm_header_deadline(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
        # A new request replaces self.cycle; if it is still the one seen now when the timer
        # fires, no request's headers were completed in time.
        self._waiting_since_cycle = self.cycle
        self._header_timer = self.loop.call_later(_header_timeout_s(), self._header_deadline_passed)

    def _header_deadline_passed(self) -> None:
        if self.transport.is_closing() or self.cycle is not self._waiting_since_cycle:
            return
        if self.cycle is None or self.cycle.response_complete:
            self.transport.close()


class HeaderDeadlineH11Protocol(_HeaderDeadline, H11Protocol):
    """uvicorn's h11 protocol (pure Python) with a deadline for each request's headers."""


class _Refused(Exception):  # noqa: N818 - stops the parser after a refusal was sent
    pass


# RFC 9110's token: what a method may be spelled with.
_METHOD = re.compile(rb"[!#$%&'*+.^_`|~0-9A-Za-z-]+ ")


def _refusal(status: int, reason: bytes, error_type: str, message: str) -> bytes:
    body = orjson.dumps({"error": {"type": error_type, "message": message, "detail": {},
                                   "request_id": uuid.uuid4().hex}})
    return (b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\n"
            b"connection: close\r\n\r\n" % (status, reason, len(body))) + body


if HttpToolsProtocol is not None:
    class HeaderDeadlineHttpToolsProtocol(_HeaderDeadline, HttpToolsProtocol):
        """uvicorn's httptools protocol (llhttp) with a deadline for each request's headers, and
        the checks llhttp leaves out that h11 makes: an HTTP/1.1 request names its Host, HTTP/0.9
        is not served, and a method llhttp does not know is a 405 (h11 passes any method on, for
        the app to refuse). Every refusal is in the API's JSON error form."""

        def data_received(self, data: bytes) -> None:
            self._unset_keepalive_if_required()
            try:
                self.parser.feed_data(data)
            except httptools.HttpParserInvalidMethodError:
                if _METHOD.match(data):  # a well-formed method, just not one llhttp knows
                    self._refuse(405, b"Method Not Allowed", "method_not_allowed",
                                 "unknown HTTP method; this API uses GET, HEAD, POST and DELETE")
                else:
                    self._refuse(400, b"Bad Request", "bad_request", "the request line is not valid HTTP/1.1")
            except httptools.HttpParserUpgrade:
                if self._should_upgrade():
                    self.handle_websocket_upgrade()
                else:
                    self._unsupported_upgrade_warning()
            except httptools.HttpParserError:
                if not self.transport.is_closing():  # else a check below has answered
                    self._refuse(400, b"Bad Request", "bad_request", "the request is not valid HTTP/1.1")

        def on_headers_complete(self) -> None:
            version = self.parser.get_http_version()
            if version not in ("1.0", "1.1"):
                self._refuse(400, b"Bad Request", "bad_request",
                             f"HTTP/{version} is not served; send HTTP/1.1 requests")
                raise _Refused()
            if version == "1.1" and not any(name == b"host" for name, _ in self.headers):
                self._refuse(400, b"Bad Request", "bad_request", "an HTTP/1.1 request must have a Host header")
                raise _Refused()
            super().on_headers_complete()

        def send_400_response(self, msg: str) -> None:
            self._refuse(400, b"Bad Request", "bad_request", msg)

        def _refuse(self, status: int, reason: bytes, error_type: str, message: str) -> None:
            self.transport.write(_refusal(status, reason, error_type, message))
            self.transport.close()


def http_protocol() -> type:
    """The fastest HTTP protocol installed, with header deadlines."""
    return HeaderDeadlineH11Protocol if HttpToolsProtocol is None else HeaderDeadlineHttpToolsProtocol


def event_loop() -> str:
    """uvloop when installed (uvicorn's "auto" picks it), else asyncio's own."""
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return "asyncio"
    return "uvloop"


def _no_delay(transport: asyncio.Transport) -> None:
    """Send small responses at once. asyncio sets TCP_NODELAY on the connections of a server it
    creates, but with NABLA_WORKERS > 1 uvicorn's workers serve a socket handed to them, whose
    connections keep Nagle's algorithm: a response split into headers and body then waits for the
    client's delayed ACK, about 40 ms on every keep-alive request."""
    sock = transport.get_extra_info("socket")
    if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def serve(settings: Settings) -> None:
    """Run the app with uvicorn: JSON logs, header deadlines, graceful shutdown."""
    import uvicorn

    uvicorn.run("service.app:create_app", factory=True, host=settings.host, port=settings.port,
                workers=settings.workers, log_level=settings.log_level, access_log=False,
                log_config=uvicorn_log_config(settings.log_level), http=http_protocol(), loop=event_loop(),
                proxy_headers=True, timeout_graceful_shutdown=10, timeout_keep_alive=5)
