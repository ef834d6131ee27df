"""Compute in worker processes, so that the server's own process only moves bytes.

Why processes: a long C call (orjson parsing a 12 MiB body, NumPy converting a nested list, a
large matmul) holds the interpreter lock of the process it runs in. Run in the server's process,
each one delays /livez and every other connection by its whole length; run in a worker, it delays
only its own request. A worker also gives two guarantees a thread cannot:
- a request still running past its deadline (a C call that never reaches a deadline check) is
  ended by killing its worker, which is replaced;
- memory a request leaves behind is given back by recycling the worker once its resident size
  passes NABLA_WORKER_MAX_RSS_BYTES.

Each worker runs its own `Pipeline` (registry connection, resolver, plan cache) and serves one
call at a time over a pipe: a small pickled header (our own `Call`/`Reply` fields, never client
objects) followed by the body as raw bytes. Workers are forked from a forkserver that has already
imported the engine and the pipeline, so a replacement is ready in milliseconds, and they run at a
lower CPU priority than the event loop, which then wins the cores whenever it has work.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import gc
import logging
import multiprocessing
import os
import socket
import threading
from multiprocessing.connection import Connection
from typing import Any

from service.errors import ComputeTimeout, InternalError, NotReady, retry_after
from service.settings import Settings

log = logging.getLogger("nabla")

# A worker past its deadline has this long to answer (its own deadline error, normally) before it
# is killed: enough for a deadline check to come round, short next to the deadline itself.
KILL_GRACE_S = 2.0
START_TIMEOUT_S = 60.0
# Lower CPU priority of the workers: the event loop, which only moves bytes, gets a core first.
WORKER_NICENESS = 5
# Memory a worker may keep beyond its start and its plan cache (the function cache, allocator
# arenas) before it is replaced, unless NABLA_WORKER_MAX_RSS_BYTES says otherwise.
WORKER_SLACK_BYTES = 64 * 1024 * 1024
_PAGE = os.sysconf("SC_PAGE_SIZE")


def resident_bytes() -> int:
    """This process's resident set size (cheap: one read of /proc/self/statm)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * _PAGE


def freeze_startup_objects() -> None:
    """Keep the objects that exist once a process has started (modules, classes, the engine's
    tables: some 86,000 in the server) out of every later garbage collection. Requests free their
    own objects by reference counting, but each full collection still walked all of these: a
    60 ms pause every 20,000 small requests or so."""
    gc.collect()
    gc.freeze()


class _RecordedMetrics:
    """A worker's metrics, recorded as (method, args) and replayed by the server's Metrics: the
    /metrics endpoint lives in the server process."""

    OBSERVATIONS = frozenset({"observe_error", "observe_compute", "observe_cache"})

    def __init__(self) -> None:
        self.events: list[tuple[str, tuple[Any, ...]]] = []

    def __getattr__(self, name: str) -> Any:
        if name not in self.OBSERVATIONS:
            raise AttributeError(name)
        return lambda *args: self.events.append((name, args))

    def drain(self) -> list[tuple[str, tuple[Any, ...]]]:
        events, self.events = self.events, []
        return events


# Socket buffers between the server and a worker: a body of megabytes then crosses in a few large
# writes rather than hundreds of 200 KB ones, each a switch between the two processes (8 MB each
# way: 5.5 ms a round trip with Linux's default buffers, 1.8 ms with these). The system caps them
# at net.core.wmem_max / rmem_max; they are filled only while a body is in flight.
SOCKET_BUFFER_BYTES = 4 << 20


def _widen(conn: Connection) -> None:
    with contextlib.suppress(OSError), socket.socket(fileno=os.dup(conn.fileno())) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SOCKET_BUFFER_BYTES)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SOCKET_BUFFER_BYTES)


def recv_body(conn: Connection) -> bytes:
    """`conn.recv_bytes()`, read in one piece: the stock reader grows a BytesIO a socket read at a
    time and copies it out, which for a body of 8 MB each way took 13-15 ms of a round trip that
    takes 2-8 ms this way (the kernel copies straight into the bytes returned). The framing is
    Connection.send_bytes's: a signed 4-byte big-endian length, or -1 and an 8-byte one."""
    fd = conn.fileno()
    size = int.from_bytes(_read_exactly(fd, 4), "big", signed=True)
    if size == -1:
        size = int.from_bytes(_read_exactly(fd, 8), "big")
    if size == 0:
        return b""
    duplicate = os.dup(fd)  # a socket object of our own: closing it leaves the connection open
    try:
        sock = socket.socket(fileno=duplicate)
    except OSError:  # a pipe, not a socket (Pipe(duplex=False))
        os.close(duplicate)
        return bytes(_read_exactly(fd, size))
    with sock:
        parts = [sock.recv(size, socket.MSG_WAITALL)]
        got = len(parts[0])
        while got < size:  # a signal cut the wait short
            part = sock.recv(size - got, socket.MSG_WAITALL)
            if not part:
                raise EOFError("the other end closed the connection")
            parts.append(part)
            got += len(part)
    return parts[0] if len(parts) == 1 else b"".join(parts)


def _read_exactly(fd: int, size: int) -> bytearray:
    buffer = bytearray(size)
    view, got = memoryview(buffer), 0
    while got < size:
        n = os.readv(fd, [view[got:]])
        if n == 0:
            raise EOFError("the other end closed the connection")
        got += n
    return buffer


def _worker_main(conn: Connection, settings: Settings) -> None:
    """A worker's life: build a pipeline, say ready, answer calls until told to stop."""
    from service.logs import configure_logging
    from service.pipeline import Pipeline

    with contextlib.suppress(OSError):
        os.nice(WORKER_NICENESS)
    configure_logging(settings.log_level)
    try:
        pipeline = Pipeline(settings)
    except Exception as e:  # noqa: BLE001 - reported to the server, which answers 503 until it starts
        conn.send(("failed", f"{type(e).__name__}: {e}"))
        return
    metrics = _RecordedMetrics()
    pipeline.metrics = metrics  # type: ignore[assignment]
    freeze_startup_objects()
    conn.send(("ready", resident_bytes()))
    epoch = 0
    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):
            return  # the server is gone
        if message is None:
            return
        call, registry_epoch = message
        call.body = recv_body(conn)
        if registry_epoch != epoch:  # a model was registered or deleted through this server
            epoch = registry_epoch
            pipeline.resolver.forget()
        reply = pipeline.handle(call)
        body, reply.body = reply.body, b""
        conn.send((reply, metrics.drain(), resident_bytes(), len(pipeline.plans), pipeline.plans.bytes))
        conn.send_bytes(body)


@dataclasses.dataclass
class _Outcome:
    """What a worker reports beside its reply."""

    reply: Any
    events: list[tuple[str, tuple[Any, ...]]]
    rss: int
    plans: int
    plan_bytes: int


class _Worker:
    def __init__(self, context: Any, settings: Settings, index: int) -> None:
        self.index = index
        self.conn, child = context.Pipe(duplex=True)
        for end in (self.conn, child):
            _widen(end)
        self.process = context.Process(target=_worker_main, args=(child, settings), daemon=True,
                                       name=f"nabla-compute-{index}")
        self.process.start()
        child.close()
        self.ready = False
        self.rss = self.started_rss = 0
        self.plans = (0, 0)

    def wait_ready(self, timeout: float) -> None:
        if self.ready:
            return
        if not self.conn.poll(timeout):
            raise TimeoutError(f"compute worker {self.index} did not start within {timeout:.0f} s")
        try:
            status, value = self.conn.recv()
        except (EOFError, OSError):
            self.process.join(5.0)
            raise RuntimeError(f"compute worker {self.index} exited while starting (exit code "
                               f"{self.process.exitcode}; its error is on stderr). A worker process imports the "
                               "server's main module again: a script that starts the server must do so under "
                               "`if __name__ == '__main__':`") from None
        if status != "ready":
            raise RuntimeError(f"compute worker {self.index} could not start: {value}")
        self.ready, self.rss, self.started_rss = True, value, value

    def stop(self, kill: bool = False) -> None:
        if self.process.is_alive() and not kill:
            with contextlib.suppress(OSError, ValueError):
                self.conn.send(None)
            self.process.join(1.0)
        if self.process.is_alive():
            self.process.kill()
            self.process.join(5.0)
        self.conn.close()


class _IdleWorkers:
    """Idle workers, the most recently used on top: calls in sequence all go to one worker, whose
    plan cache is then warm (each worker compiles and caches its own plans); a fresh worker goes
    to the bottom, so its start-up is waited for only when every other worker is busy."""

    def __init__(self) -> None:
        self._workers: collections.deque[_Worker] = collections.deque()
        self._available = threading.Condition()

    def put(self, worker: _Worker, *, fresh: bool = False) -> None:
        with self._available:
            if fresh:
                self._workers.appendleft(worker)
            else:
                self._workers.append(worker)
            self._available.notify()

    def take(self, timeout: float) -> _Worker | None:
        with self._available:
            if not self._available.wait_for(lambda: self._workers, timeout):
                return None
            return self._workers.pop()


class WorkerPool:
    """`size` worker processes; `call` hands a call to an idle one and waits for its reply.

    `call` blocks (run it in a thread); the caller bounds concurrency to `size` (the compute
    lane's slots), so an idle worker is always there to take a call.
    """

    def __init__(self, settings: Settings, size: int) -> None:
        self.settings = settings
        self.size = size
        self.deadline_s = settings.compute_timeout_s
        self.max_rss = settings.worker_max_rss_bytes
        self._context = multiprocessing.get_context("forkserver")
        # The forkserver imports these once; every worker forked from it starts with them loaded.
        self._context.set_forkserver_preload(["service.pipeline", "service.logs"])
        self._idle = _IdleWorkers()
        self._workers: dict[int, _Worker] = {}
        self._lock = threading.Lock()
        self._epoch = 0
        self.recycled = 0
        self.killed = 0
        self._closed = False
        self._started = False

    def start(self) -> None:
        """Start every worker and wait until each is ready (a server is not ready before)."""
        with self._lock:
            if self._started:
                return
            self._started = True
        for index in range(self.size):
            self._workers[index] = _Worker(self._context, self.settings, index)
        for worker in self._workers.values():
            worker.wait_ready(START_TIMEOUT_S)
            self._idle.put(worker)

    def memory_limit(self, worker: _Worker) -> int:
        """Resident bytes past which a worker is replaced after its answer: the setting, or by
        default what it had when it started plus its plan cache's allowance and some slack."""
        if self.max_rss is not None:
            return self.max_rss
        return worker.started_rss + self.settings.plan_cache_bytes + WORKER_SLACK_BYTES

    def registry_changed(self) -> None:
        """A model was registered or deleted: every worker drops its cached models before its next call."""
        with self._lock:
            self._epoch += 1

    def plan_stats(self) -> tuple[int, int]:
        """Compiled plans held by all workers, and their estimated bytes (as last reported)."""
        with self._lock:
            workers = list(self._workers.values())
        return sum(w.plans[0] for w in workers), sum(w.plans[1] for w in workers)

    def resident_bytes(self) -> int:
        with self._lock:
            return sum(w.rss for w in self._workers.values())

    def call(self, call: Any, error_reply: Any) -> tuple[Any, list[tuple[str, tuple[Any, ...]]]]:
        """The reply to `call` and the metrics its worker recorded. A worker that does not answer
        within the deadline and the grace period is killed (and replaced); one that dies answers
        with a logged 500; `error_reply(exception, request_id)` builds those replies."""
        if not self._started:  # an app used without its lifespan (a bare TestClient, say)
            self.start()
        worker = self._idle.take(START_TIMEOUT_S)
        if worker is None:  # only when the pool is closing
            return error_reply(retry_after(NotReady("the server is shutting down"), 1), call.request_id), []
        try:
            try:
                worker.wait_ready(START_TIMEOUT_S)
            except (TimeoutError, RuntimeError) as e:
                self._replace(worker, kill=True)
                return error_reply(retry_after(NotReady(f"no compute worker is available: {e}"), 1),
                                   call.request_id), []
            outcome = self._exchange(worker, call)
        except _WorkerOverran:
            self.killed += 1
            self._replace(worker, kill=True)
            limit = self.deadline_s
            return error_reply(ComputeTimeout(
                f"the request was still running {KILL_GRACE_S:.0f} s past its deadline of {limit} s "
                "(NABLA_COMPUTE_TIMEOUT_S) and was stopped; send a smaller request or raise the limit",
                {"limit": "NABLA_COMPUTE_TIMEOUT_S", "maximum": limit}), call.request_id), []
        except _WorkerDied as e:
            self._replace(worker, kill=True)
            log.error("compute worker died", extra={"request_id": call.request_id, "exitcode": e.args[0]})
            return error_reply(InternalError("the compute worker stopped while answering; it has been replaced "
                                             "and the failure logged with this request id",
                                             {"exitcode": e.args[0]}), call.request_id), []
        except BaseException:
            self._replace(worker, kill=True)
            raise
        worker.rss, worker.plans = outcome.rss, (outcome.plans, outcome.plan_bytes)
        if outcome.rss > self.memory_limit(worker):
            self.recycled += 1
            self._replace(worker)
        else:
            self._idle.put(worker)
        return outcome.reply, outcome.events

    def _exchange(self, worker: _Worker, call: Any) -> _Outcome:
        header = dataclasses.replace(call, body=b"")
        with self._lock:
            epoch = self._epoch
        try:
            worker.conn.send((header, epoch))
            worker.conn.send_bytes(call.body)
            if not worker.conn.poll(self.deadline_s + KILL_GRACE_S):
                raise _WorkerOverran()
            reply, events, rss, plans, plan_bytes = worker.conn.recv()
            reply.body = recv_body(worker.conn)
        except (EOFError, OSError, BrokenPipeError):
            worker.process.join(1.0)
            raise _WorkerDied(worker.process.exitcode) from None
        return _Outcome(reply, events, rss, plans, plan_bytes)

    def _replace(self, worker: _Worker, kill: bool = False) -> None:
        """Stop a worker and start its successor in its place (ready-checked when next taken)."""
        worker.stop(kill=kill)
        if self._closed:
            return
        fresh = _Worker(self._context, self.settings, worker.index)
        with self._lock:
            self._workers[worker.index] = fresh
        self._idle.put(fresh, fresh=True)

    def close(self) -> None:
        self._closed = True
        with self._lock:
            workers = list(self._workers.values())
        for worker in workers:
            worker.stop()


class _WorkerOverran(Exception):
    pass


class _WorkerDied(Exception):
    pass


__all__ = ["KILL_GRACE_S", "WorkerPool", "resident_bytes"]
