"""Running the service under uvicorn, with the protections uvicorn lacks.

Uvicorn closes an idle keep-alive connection, but not one that opened and never finished its
headers: a few hundred such connections hold sockets and memory for as long as the clients
like. `HeaderDeadlineH11Protocol` closes a connection whose request headers have not all
arrived within NABLA_HEADER_TIMEOUT_S of it opening or of its previous response; the body has
its own limit (NABLA_BODY_TIMEOUT_S, enforced by the app while it reads).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import socket
from typing import Any

from uvicorn.protocols.http.h11_impl import H11Protocol

from service.logs import uvicorn_log_config
from service.settings import Settings


@functools.cache
def _header_timeout_s() -> float:
    # Read once per process (uvicorn's worker processes import this module themselves).
    return Settings().header_timeout_s


class HeaderDeadlineH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with a deadline for each request's headers."""

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
                log_config=uvicorn_log_config(settings.log_level), http=HeaderDeadlineH11Protocol,
                proxy_headers=True, timeout_graceful_shutdown=10, timeout_keep_alive=5)
