"""A real `nabla serve` on a free loopback port, for the benchmark and reliability scripts."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

import httpx


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(port: int, data_dir: str, *, log_path: str | None = None, wait: bool = True,
                 **settings: str) -> subprocess.Popen:
    """Start the service with NABLA_<NAME>=value for each setting; return once /livez answers
    (or at once with wait=False: then call wait_until_live). With `log_path`, the server's output
    goes to that file (a long run can write more than a pipe holds); else stderr is piped."""
    env = dict(os.environ, NABLA_HOST="127.0.0.1", NABLA_PORT=str(port), NABLA_DATA_DIR=data_dir,
               NABLA_LOG_LEVEL="warning", OPENBLAS_NUM_THREADS="1",
               **{f"NABLA_{name.upper()}": str(value) for name, value in settings.items()})
    if log_path is None:
        proc = subprocess.Popen([sys.executable, "-m", "service.cli", "serve"], env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    else:
        with open(log_path, "ab") as log:
            proc = subprocess.Popen([sys.executable, "-m", "service.cli", "serve"], env=env,
                                    stdout=log, stderr=subprocess.STDOUT)
    if wait:
        wait_until_live(proc, port, log_path=log_path)
    return proc


def wait_until_live(proc: subprocess.Popen, port: int, timeout: float = 60.0, log_path: str | None = None) -> None:
    """Return once the server on `port` answers /livez; kill it and exit if it does not in time."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/livez", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            if proc.poll() is not None:
                break
            time.sleep(0.1)
    proc.kill()
    proc.wait()
    if log_path is not None:
        with open(log_path, errors="replace") as log:
            output = log.read()
    else:
        output = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
    raise SystemExit("the server did not start: " + output[-2000:])


def stop(proc: subprocess.Popen, timeout: float = 10.0) -> None:
    """Terminate (graceful shutdown), then kill if it has not exited within `timeout` seconds."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
