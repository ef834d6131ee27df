"""HTTP throughput with a native load generator: wrk on its own core, the server on the other.

    python benchmarks/http_bench.py                # 8 s per scenario
    python benchmarks/http_bench.py --seconds 4 --quick-check

A Python load generator on the same two cores measures itself as much as the server (issue 16),
so this script drives every server with `wrk` (Debian's package), pinned with `taskset` to core 0,
while the server and every process under it (its compute workers) are pinned to core 1. Side by
side, in one run:

- Nabla's echo (`POST /v1/echo`: the framework with our middleware, no pipeline);
- the tutorial's gradient by model name (`POST /v1/models/tutorial_logreg/grad`), computed in
  worker processes (the default) and in threads (NABLA_COMPUTE_ISOLATION=thread);
- a bare FastAPI echo on the same uvicorn settings (the framework's ceiling);
- the endpoint a user would write: FastAPI + `jax.jit(jax.grad(loss))` on the tutorial's loss
  (JAX from the `bench` extra; skipped, loudly, without it).

For each: requests per second, p50/p99 latency (wrk --latency) and the server's CPU milliseconds
per request (utime + stime of the server's process tree, read from /proc before and after), then
the ratios issue 16 states its goals in. One connection count (8) and one wrk thread.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import httpx
from _server import free_port, stop, wait_until_live
from _tutorial import B, W

ROOT = Path(__file__).resolve().parent.parent
TICKS = os.sysconf("SC_CLK_TCK")
GRAD_BODY = json.dumps({"args": [W.tolist(), B], "argnums": [0, 1]})  # the tutorial's W and b
ECHO_BODY = '{"args": [[1.0, 2.0, 3.0]]}'

BARE_ECHO_APP = textwrap.dedent('''
    from fastapi import FastAPI, Request
    from fastapi.responses import Response
    app = FastAPI()

    @app.get("/livez")  # for the script's start-up check only
    async def livez() -> Response:
        return Response(b'{"status":"ok"}', media_type="application/json")

    @app.post("/echo")
    async def echo(request: Request) -> Response:
        return Response(await request.body(), media_type="application/json")
''')

JAX_APP = textwrap.dedent('''
    import jax
    import jax.numpy as jnp
    import numpy as np
    from fastapi import FastAPI, Request
    from fastapi.responses import Response
    import orjson

    INPUTS = jnp.array([[0.52, 1.12, 0.77], [0.88, -1.08, 0.15], [0.52, 0.06, -1.30], [0.74, -2.49, 1.39]])
    TARGETS = jnp.array([True, True, False, True])

    def loss(W, b):
        preds = 0.5 * (jnp.tanh((INPUTS @ W + b) / 2) + 1)
        label_probs = preds * TARGETS + (1 - preds) * (1 - TARGETS)
        return -jnp.sum(jnp.log(label_probs))

    grad = jax.jit(jax.grad(loss, argnums=(0, 1)))
    app = FastAPI()

    @app.get("/livez")  # for the script's start-up check only
    async def livez() -> Response:
        return Response(b'{"status":"ok"}', media_type="application/json")

    @app.post("/grad")
    async def endpoint(request: Request) -> Response:
        body = orjson.loads(await request.body())
        W, b = body["args"]
        gW, gb = grad(jnp.asarray(W, jnp.float32), jnp.float32(b))
        return Response(orjson.dumps({"grad": [np.asarray(gW).tolist(), float(gb)]}),
                        media_type="application/json")
''')


def cpu_ticks(pid: int) -> int:
    """utime + stime of a process and everything under it (children still running)."""
    total, queue = 0, [pid]
    while queue:
        current = queue.pop()
        try:
            fields = Path(f"/proc/{current}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
            for task in Path(f"/proc/{current}/task").iterdir():
                queue += [int(c) for c in (task / "children").read_text().split()]
        except (FileNotFoundError, ProcessLookupError):
            continue
    return total


def wrk(url: str, body: str, seconds: float, connections: int) -> dict[str, float]:
    script = tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False)
    escaped = body.replace("\\", "\\\\").replace('"', '\\"')
    script.write(f'wrk.method = "POST"\nwrk.body = "{escaped}"\nwrk.headers["Content-Type"] = "application/json"\n')
    script.close()
    duration = f"-d{max(1, round(seconds))}s"  # wrk takes whole seconds
    out = subprocess.run(["taskset", "-c", "0", "wrk", "-t1", f"-c{connections}", duration, "--latency",
                          "-s", script.name, url], capture_output=True, text=True, check=True).stdout
    os.unlink(script.name)
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    total = int(re.search(r"(\d+) requests in", out).group(1))
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    latency = {p: _ms(v, u) for p, v, u in re.findall(r"^\s+(50|99)%\s+([\d.]+)(us|ms|s)$", out, re.M)}
    return {"rps": rps, "requests": total, "errors": int(errors.group(1)) if errors else 0,
            "p50_ms": latency.get("50", float("nan")), "p99_ms": latency.get("99", float("nan"))}


def _ms(value: str, unit: str) -> float:
    return float(value) * {"us": 1e-3, "ms": 1.0, "s": 1e3}[unit]


def start(command: list[str], port: int, env: dict[str, str]) -> subprocess.Popen:
    proc = subprocess.Popen(["taskset", "-c", "1", *command], env={**os.environ, **env, "OPENBLAS_NUM_THREADS": "1"},
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=ROOT)
    wait_until_live(proc, port, timeout=120)
    return proc


def measure(name: str, proc: subprocess.Popen, url: str, body: str, seconds: float, connections: int) -> dict:
    httpx.post(url, content=body, headers={"content-type": "application/json"}, timeout=30).raise_for_status()
    wrk(url, body, min(2.0, seconds), connections)  # warm-up: plans compiled, JAX traced, caches full
    before = cpu_ticks(proc.pid)
    result = wrk(url, body, seconds, connections)
    result["cpu_ms_per_request"] = (cpu_ticks(proc.pid) - before) / TICKS * 1000 / max(result["requests"], 1)
    result["name"] = name
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--connections", type=int, default=8)
    args = parser.parse_args()
    if shutil.which("wrk") is None or shutil.which("taskset") is None:
        raise SystemExit("needs wrk and taskset: apt-get install wrk util-linux")
    rows = []
    folder = tempfile.mkdtemp()
    uvicorn = [sys.executable, "-m", "uvicorn", "--host", "127.0.0.1", "--log-level", "warning", "--no-access-log"]

    def nabla(isolation: str) -> tuple[subprocess.Popen, int]:
        port = free_port()
        env = {"NABLA_HOST": "127.0.0.1", "NABLA_PORT": str(port), "NABLA_LOG_LEVEL": "warning",
               "NABLA_DATA_DIR": tempfile.mkdtemp(dir=folder), "NABLA_COMPUTE_ISOLATION": isolation}
        return start([sys.executable, "-m", "service.cli", "serve"], port, env), port

    for isolation in ("process", "thread"):
        proc, port = nabla(isolation)
        try:
            base = f"http://127.0.0.1:{port}"
            if isolation == "process":
                rows.append(measure("nabla echo", proc, base + "/v1/echo", ECHO_BODY, args.seconds, args.connections))
            rows.append(measure(f"nabla grad by name ({isolation}es)" if isolation == "process" else
                                "nabla grad by name (threads)", proc, base + "/v1/models/tutorial_logreg/grad",
                                GRAD_BODY, args.seconds, args.connections))
        finally:
            stop(proc)

    for label, source, path, body in (("bare FastAPI echo", BARE_ECHO_APP, "/echo", ECHO_BODY),
                                      ("FastAPI + jax.jit(jax.grad)", JAX_APP, "/grad", GRAD_BODY)):
        if "jax" in source:
            try:
                import jax  # noqa: F401
            except ImportError:
                print(f"skipped {label}: JAX is not installed (pip install '.[bench]')", file=sys.stderr)
                continue
        app_dir = Path(tempfile.mkdtemp(dir=folder))
        (app_dir / "bench_app.py").write_text(source)
        port = free_port()
        proc = start([*uvicorn, "--port", str(port), "--app-dir", str(app_dir), "bench_app:app"], port,
                     {"PYTHONPATH": str(app_dir)})
        try:
            rows.append(measure(label, proc, f"http://127.0.0.1:{port}{path}", body, args.seconds, args.connections))
        finally:
            stop(proc)

    print(f"wrk -t1 -c{args.connections} -d{args.seconds:g}s on core 0; each server (and its workers) on core 1\n")
    print("| server | requests/s | p50 ms | p99 ms | CPU ms per request | errors |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['name']} | {r['rps']:,.0f} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} | "
              f"{r['cpu_ms_per_request']:.2f} | {r['errors']} |")
    by = {r["name"]: r["rps"] for r in rows}
    print()

    def ratio(a: str, b: str) -> None:
        if a in by and b in by:
            print(f"- {a} / {b}: {by[a] / by[b]:.2f}x")

    ratio("nabla grad by name (processes)", "FastAPI + jax.jit(jax.grad)")
    ratio("nabla grad by name (processes)", "nabla echo")
    ratio("nabla echo", "bare FastAPI echo")
    ratio("nabla grad by name (processes)", "nabla grad by name (threads)")


if __name__ == "__main__":
    main()
