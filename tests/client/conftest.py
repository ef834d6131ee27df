"""Fixtures of the client tests: real Nabla servers (uvicorn subprocesses on loopback, started once
per session), a tiny fake server (Starlette on loopback) that misbehaves on purpose, recorded
backoff sleeps, and `api`, which runs a test through `Client` and through `AsyncClient`.

Everything test modules need comes as fixtures (`open_client`, `dead_url`, `keys`, `repo_root`), so
the suite works under any --import-mode."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[2]
USER_KEY = "user-key-123"
ADMIN_KEY = "admin-key-456"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Server:
    base_url: str
    proc: subprocess.Popen
    log: Path
    data_dir: Path


def _start(tmp: Path, name: str, env_extra: dict[str, str]) -> Server:
    port = free_port()
    data_dir = tmp / f"{name}-data"
    data_dir.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("NABLA_")}
    env.update({"NABLA_DATA_DIR": str(data_dir), "NABLA_LOG_LEVEL": "warning", "PYTHONPATH": str(ROOT)})
    env.update(env_extra)
    log = tmp / f"{name}.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "service.app:create_app", "--factory", "--host", "127.0.0.1",
             "--port", str(port), "--log-level", "warning", "--no-access-log"],
            cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    return Server(f"http://127.0.0.1:{port}", proc, log, data_dir)


def _wait(server: Server, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    with httpx.Client(timeout=1.0) as http:
        while time.monotonic() < deadline:
            if server.proc.poll() is not None:
                raise RuntimeError(f"the server exited ({server.proc.returncode}):\n{server.log.read_text()}")
            try:
                if http.get(server.base_url + "/livez").status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.05)
    raise RuntimeError(f"the server did not answer /livez in {timeout}s:\n{server.log.read_text()}")


def _stop(server: Server) -> None:
    server.proc.terminate()
    try:
        server.proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        server.proc.kill()
        server.proc.wait()


# ----------------------------------------------------------------------------- fake servers


@dataclass
class Script:
    """What a fake server answers, in order, then `final` forever; every request is recorded."""

    responses: list[tuple[int, dict[str, str], Any]] = field(default_factory=list)
    final: tuple[int, dict[str, str], Any] = (200, {}, {"value": 1.0})
    sleep: float = 0.0
    requests: list[dict[str, Any]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def next(self) -> tuple[int, dict[str, str], Any]:
        with self.lock:
            return self.responses.pop(0) if self.responses else self.final


class FakeServer:
    """A tiny Starlette app in a uvicorn thread on loopback, answering from a `Script`."""

    def __init__(self) -> None:
        import uvicorn
        from starlette.applications import Starlette
        from starlette.requests import Request
        from starlette.responses import JSONResponse, PlainTextResponse, Response
        from starlette.routing import Route

        self.script = Script()

        async def handle(request: Request) -> Response:
            import anyio

            script = self.script  # the test's script, even if this answer comes after the test ended
            body = await request.body()
            script.requests.append({"method": request.method, "path": request.url.path,
                                    "headers": dict(request.headers), "body": body})
            if script.sleep:
                await anyio.sleep(script.sleep)
            status, headers, payload = script.next()
            if isinstance(payload, str):  # not JSON: e.g. a proxy's error page
                return PlainTextResponse(payload, status_code=status, headers=headers)
            return JSONResponse(payload, status_code=status, headers=headers)

        app = Starlette(routes=[Route("/{path:path}", handle, methods=["GET", "POST", "DELETE"])])
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="error", access_log=False,
                                lifespan="off", timeout_graceful_shutdown=1)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("the fake server did not start")
            time.sleep(0.01)

    def reset(self, **kwargs: Any) -> Script:
        self.script = Script(**kwargs)
        return self.script

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=5)


# ----------------------------------------------------------------------------- sync and async alike


class Blocking:
    """An AsyncClient seen through a blocking surface: every coroutine it returns is run to completion
    on this view's event loop, and functions it returns (c.grad(f), vjp_fun) are wrapped the same
    way, so one test body exercises both clients."""

    def __init__(self, target: Any, loop: Any) -> None:
        self._target, self._loop = target, loop

    def _resolve(self, value: Any) -> Any:
        import inspect

        if inspect.iscoroutine(value):
            return self._resolve(self._loop.run_until_complete(value))
        if inspect.isfunction(value) or inspect.ismethod(value):
            return lambda *a, **k: self._resolve(value(*a, **k))
        if type(value) is tuple and any(callable(v) for v in value):
            return tuple(self._resolve(v) for v in value)
        return value

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._target, name)
        if name == "models":
            return Blocking(attr, self._loop)
        return self._resolve(attr) if callable(attr) else attr


def open_client(kind: str, *args: Any, **kwargs: Any) -> tuple[Any, Any]:
    """(client, close): a Client, or an AsyncClient behind a blocking view."""
    import asyncio

    from client import AsyncClient, Client

    if kind == "sync":
        c = Client(*args, **kwargs)
        return c, c.close
    loop = asyncio.new_event_loop()
    ac = AsyncClient(*args, **kwargs)

    def close() -> None:
        loop.run_until_complete(ac.close())
        loop.close()
    return Blocking(ac, loop), close


# ----------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="session")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Server]]:
    """Two real servers, started together: `open` (no keys: everyone may do everything) and `keyed`
    (an API key and an admin key)."""
    tmp = tmp_path_factory.mktemp("nabla-servers")
    started = {
        "open": _start(tmp, "open", {}),
        "keyed": _start(tmp, "keyed", {"NABLA_API_KEYS": USER_KEY, "NABLA_ADMIN_KEYS": ADMIN_KEY}),
    }
    try:
        for s in started.values():
            _wait(s)
        yield started
    finally:
        for s in started.values():
            _stop(s)


@pytest.fixture(scope="session")
def server_url(servers: dict[str, Server]) -> str:
    return servers["open"].base_url


@pytest.fixture(scope="session")
def keyed_url(servers: dict[str, Server]) -> str:
    return servers["keyed"].base_url


@pytest.fixture
def client(server_url: str) -> Iterator[Any]:
    from client import Client

    with Client(server_url, timeout=30, max_retries=0) as c:
        yield c


@pytest.fixture(autouse=True)
def _no_nabla_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests choose their own base URL and key; the developer's environment must not leak in."""
    monkeypatch.delenv("NABLA_BASE_URL", raising=False)
    monkeypatch.delenv("NABLA_API_KEY", raising=False)


@pytest.fixture(scope="session")
def _fake_server() -> Iterator[FakeServer]:
    server = FakeServer()
    yield server
    server.stop()


@pytest.fixture
def fake(_fake_server: FakeServer) -> FakeServer:
    _fake_server.reset()
    return _fake_server


@pytest.fixture
def sleeps(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """Backoff delays the clients ask for (sync and async), recorded instead of slept."""
    import asyncio

    import client._client as cc

    recorded: list[float] = []
    real_async_sleep = asyncio.sleep

    async def fake_async_sleep(seconds: float, *args: Any, **kwargs: Any) -> Any:
        recorded.append(seconds)
        return await real_async_sleep(0)

    class _Time:
        """The time module, but sleep records (patched on the client module only, not globally:
        the fake server's event loop keeps its real clock)."""

        def __getattr__(self, name: str) -> Any:
            return getattr(time, name)

        @staticmethod
        def sleep(seconds: float) -> None:
            recorded.append(seconds)

    class _Asyncio:
        def __getattr__(self, name: str) -> Any:
            return getattr(asyncio, name)

        sleep = staticmethod(fake_async_sleep)

    monkeypatch.setattr(cc, "time", _Time())
    monkeypatch.setattr(cc, "asyncio", _Asyncio())
    return recorded


@pytest.fixture(scope="session", params=["sync", "async"])
def api(request: pytest.FixtureRequest, server_url: str) -> Iterator[Any]:
    """The open server through `Client` and through `AsyncClient` (one of each for the session:
    building an httpx client costs ~0.1 s)."""
    c, close = open_client(request.param, server_url, timeout=30, max_retries=0)
    yield c
    close()


@pytest.fixture(name="open_client")
def open_client_fixture() -> Callable[..., tuple[Any, Callable[[], None]]]:
    """open_client(kind, base_url, **options) -> (client, close); kind "sync" or "async"."""
    return open_client


@pytest.fixture
def dead_url() -> str:
    """A loopback URL nothing listens on."""
    return f"http://127.0.0.1:{free_port()}"


@pytest.fixture(scope="session")
def keys() -> SimpleNamespace:
    """The keyed server's keys."""
    return SimpleNamespace(user=USER_KEY, admin=ADMIN_KEY)


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return ROOT
