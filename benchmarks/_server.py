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


def start_server(port: int, data_dir: str, **settings: str) -> subprocess.Popen:
    """Start the service with NABLA_<NAME>=value for each setting; return once /livez answers."""
    env = dict(os.environ, NABLA_HOST="127.0.0.1", NABLA_PORT=str(port), NABLA_DATA_DIR=data_dir,
               NABLA_LOG_LEVEL="warning", OPENBLAS_NUM_THREADS="1",
               **{f"NABLA_{name.upper()}": str(value) for name, value in settings.items()})
    proc = subprocess.Popen([sys.executable, "-m", "service.cli", "serve"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 60
    while time.time() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/livez", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            if proc.poll() is not None:
                break
            time.sleep(0.1)
    proc.kill()
    raise SystemExit("the server did not start: " + proc.stderr.read().decode()[-2000:])
