"""Service benchmark: every server driven by wrk on its own core, side by side in one run.

    python benchmarks/service_bench.py                 # 8 s per scenario, 8 connections
    python benchmarks/service_bench.py --seconds 4
    python benchmarks/service_bench.py --quick         # 1 s each, small sizes, to check it runs

A Python load generator on the same two cores measures itself as much as the server (issue 16),
so this script drives every server with `wrk` (Debian's package), pinned with `taskset` to core 0
(`wrk -t1 -c8 --latency`), while the server and every process under it (its compute workers) are
pinned to core 1. Every scenario gets a server of its own, started for it, as the FastAPI apps
do (a Nabla server that had just served seconds of echoes answered gradients up to 30% slower
for several seconds), and starts with a warm-up run (plans compiled, JAX traced, caches full);
then it measures:

- Nabla's echo (`POST /v1/echo`: the framework with our middleware, no pipeline);
- the tutorial's gradient by model name (`POST /v1/models/tutorial_logreg/grad`) with default
  settings (small requests whose plan is cached are computed inline on the event loop);
- the same with NABLA_INLINE_MAX_BODY_BYTES=0 (every request hops to a compute worker process);
- the same with NABLA_LOG_LEVEL=info (the default: one JSON access line per request, written to
  /dev/null; every other Nabla server runs at warning);
- the same gradient with the function sent as an expression (`POST /v1/grad`);
- logistic regression on 100000x100 data registered with the model (only W and b sent, one
  connection), against the same gradient computed in-process (engine.jit(engine.grad)), also
  pinned to core 1 with one BLAS thread;
- a bare FastAPI echo on the same uvicorn (`python -m uvicorn`: httptools and uvloop, as Nabla);
- the endpoint a user would write: FastAPI + `jax.jit(jax.grad(loss))` on the tutorial's loss
  (JAX from the `bench` extra; skipped, loudly, without it);
- Nabla with NABLA_WORKERS=1 and =2, gradient by name, nothing pinned (both cores), wrk with
  twice the connections.

For each: requests per second, p50/p99 latency (wrk --latency), errors (non-2xx responses and
socket errors: any makes the script fail) and the server's CPU milliseconds per request (utime +
stime of the server's process tree, read from /proc before and after), and for Nabla's gradients
the share answered inline (its /metrics before and after); then the ratios issue 16
states its goals in, each with its target, the load average at the start and the end, and how
much faster base64 `$array` leaves decode than JSON lists. The three ratios of Nabla's gradient
and echo to the other servers are measured again in `--rounds` interleaved rounds (each round
starts a fresh echo, gradient, bare echo and JAX server in turn), and judged on the median of the
table's ratio and the rounds'.
"""

from __future__ import annotations

import argparse
import base64
import importlib.util
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from _server import free_port, stop, wait_until_live
from _tutorial import INPUTS, PARAMS, TARGETS, TUTORIAL_EXPR, B, W

ROOT = Path(__file__).resolve().parent.parent
TICKS = os.sysconf("SC_CLK_TCK")
ECHO_BODY = '{"args": [[1.0, 2.0, 3.0]]}'
GRAD_BODY = json.dumps({"args": [W.tolist(), B], "argnums": [0, 1]})  # the tutorial's W and b
EXPR_BODY = json.dumps({"function": {"expr": TUTORIAL_EXPR, "params": PARAMS},
                        "args": [W.tolist(), B, INPUTS.tolist(), TARGETS.tolist()], "argnums": [0, 1]})
LARGE_EXPR = "z = inputs @ W + b\n-mean(targets * log_sigmoid(z) + (1 - targets) * log_sigmoid(-z))"
GRAD_PATH = "/v1/models/tutorial_logreg/grad"

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

# Row names: the table's first column, and the keys the ratios and tests use.
ECHO = "Nabla echo (`POST /v1/echo`)"
BY_NAME = "Nabla grad by name (default: small cached requests inline)"
TO_WORKER = "Nabla grad by name, every request to a worker (NABLA_INLINE_MAX_BODY_BYTES=0)"
LOG_INFO = "Nabla grad by name, NABLA_LOG_LEVEL=info (an access line per request)"
EXPRESSION = "Nabla grad, function sent as an expression (`POST /v1/grad`)"
BARE = "bare FastAPI echo, same uvicorn"
JAX = "FastAPI + jax.jit(jax.grad)"


def large_name(rows: int, cols: int) -> str:
    return f"Nabla {rows}x{cols} regression registered with its data, W and b sent, 1 connection"


def workers_name(workers: int, connections: int) -> str:
    return f"Nabla grad by name, NABLA_WORKERS={workers}, nothing pinned, {connections} connections"


@dataclass
class Row:
    name: str
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int
    cpu_ms_per_request: float
    inline_share: float | None  # of the compute requests measured, the fraction answered inline


class ScenarioFailed(SystemExit):
    """A scenario got an error response: the script stops with the details (exit status 1)."""


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


def wrk(url: str, body: str, seconds: float, connections: int, core: int | None = 0) -> dict[str, Any]:
    """One wrk run (one thread) POSTing `body`; pinned to `core` unless None."""
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        escaped = body.replace("\\", "\\\\").replace('"', '\\"')
        script.write(f'wrk.method = "POST"\nwrk.body = "{escaped}"\n'
                     'wrk.headers["Content-Type"] = "application/json"\n')
    pin = ["taskset", "-c", str(core)] if core is not None else []
    duration = f"-d{max(1, round(seconds))}s"  # wrk takes whole seconds
    try:
        out = subprocess.run([*pin, "wrk", "-t1", f"-c{connections}", duration, "--latency", "-s", script.name, url],
                             capture_output=True, text=True, check=True).stdout
    finally:
        os.unlink(script.name)
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    total = int(re.search(r"(\d+) requests in", out).group(1))
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    socket = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    errors = (int(non_2xx.group(1)) if non_2xx else 0) + (sum(map(int, socket.groups())) if socket else 0)
    latency = {p: _ms(v, u) for p, v, u in re.findall(r"^\s+(50|99)%\s+([\d.]+)(us|ms|s)$", out, re.M)}
    return {"rps": rps, "requests": total, "errors": errors, "output": out,
            "p50_ms": latency.get("50", float("nan")), "p99_ms": latency.get("99", float("nan"))}


def _ms(value: str, unit: str) -> float:
    return float(value) * {"us": 1e-3, "ms": 1.0, "s": 1e3}[unit]


class Server:
    """A server process (Nabla or a uvicorn app) on `port`, pinned to core 1 unless `pinned` is
    False, with one BLAS thread; its output goes to `log_path` (shown if it fails), or to
    /dev/null when that is None."""

    def __init__(self, command: list[str], env: dict[str, str], port: int, log_path: Path | None, *,
                 pinned: bool = True) -> None:
        self.port, self.log_path = port, log_path
        self.base = f"http://127.0.0.1:{port}"
        pin = ["taskset", "-c", "1"] if pinned else []
        env = {**os.environ, **env, "OPENBLAS_NUM_THREADS": "1"}
        with open(log_path or os.devnull, "wb") as output:
            self.proc = subprocess.Popen([*pin, *command], env=env, cwd=ROOT, stdout=output, stderr=subprocess.STDOUT)
        wait_until_live(self.proc, port, timeout=120, log_path=str(log_path) if log_path else None)

    def log_tail(self) -> str:
        if self.log_path is None:
            return "(its output went to /dev/null)"
        return self.log_path.read_text(errors="replace")[-2000:]

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *_: object) -> None:
        stop(self.proc)


def nabla(folder: str, *, pinned: bool = True, output_to_null: bool = False, **settings: Any) -> Server:
    """`nabla serve` with NABLA_<NAME>=value for each setting, at NABLA_LOG_LEVEL=warning unless set."""
    port = free_port()
    env = {"NABLA_HOST": "127.0.0.1", "NABLA_PORT": str(port), "NABLA_LOG_LEVEL": "warning",
           "NABLA_DATA_DIR": tempfile.mkdtemp(dir=folder),
           **{f"NABLA_{name.upper()}": str(value) for name, value in settings.items()}}
    log_path = None if output_to_null else Path(folder) / f"nabla-{port}.log"
    return Server([sys.executable, "-m", "service.cli", "serve"], env, port, log_path, pinned=pinned)


def uvicorn_app(folder: str, source: str) -> Server:
    """`source` as a module served by `python -m uvicorn` (which picks httptools and uvloop)."""
    port = free_port()
    app_dir = Path(tempfile.mkdtemp(dir=folder))
    (app_dir / "bench_app.py").write_text(source)
    command = [sys.executable, "-m", "uvicorn", "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning",
               "--no-access-log", "--app-dir", str(app_dir), "bench_app:app"]
    return Server(command, {"PYTHONPATH": str(app_dir)}, port, Path(folder) / f"uvicorn-{port}.log")


def answers(server: Server) -> dict[str, float]:
    """Nabla's compute requests so far by where they were answered (inline, worker, thread)."""
    text = httpx.get(server.base + "/metrics", timeout=30).text
    return {where: float(count) for where, count in
            re.findall(r'^nabla_compute_answers_total\{where="(\w+)"\} ([\d.e+]+)$', text, re.M)}


def measure(name: str, server: Server, path: str, body: str, seconds: float, connections: int,
            core: int | None = 0, count_inline: bool = False) -> Row:
    """A check request, a warm-up run, then the measured run with the server's CPU time around it
    (and, with `count_inline`, Nabla's count of requests answered inline around it)."""
    url = server.base + path
    first = httpx.post(url, content=body, headers={"content-type": "application/json"}, timeout=120)
    if first.status_code != 200:
        raise ScenarioFailed(f"{name}: {first.status_code} {first.text[:500]}\n{server.log_tail()}")
    wrk(url, body, min(2.0, seconds), connections, core)
    answered_before = answers(server) if count_inline else {}
    before = cpu_ticks(server.proc.pid)
    result = wrk(url, body, seconds, connections, core)
    cpu_ms = (cpu_ticks(server.proc.pid) - before) / TICKS * 1000 / max(result["requests"], 1)
    inline_share = None
    if count_inline:
        answered = {where: count - answered_before.get(where, 0.0) for where, count in answers(server).items()}
        inline_share = answered.get("inline", 0.0) / max(sum(answered.values()), 1.0)
    if result["errors"]:
        sample = httpx.post(url, content=body, headers={"content-type": "application/json"}, timeout=120)
        raise ScenarioFailed(f"{name}: {result['errors']} failed requests (non-2xx or socket errors); "
                             f"a request now answers {sample.status_code} {sample.text[:300]}\n"
                             f"{result['output']}\n{server.log_tail()}")
    print(f"{time.strftime('%H:%M:%S')} {name}: {result['rps']:,.0f} requests/s", file=sys.stderr, flush=True)
    return Row(name, result["rps"], result["p50_ms"], result["p99_ms"], result["errors"], cpu_ms, inline_share)


def regression_data(rows: int, cols: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The large model's data and the W sent with each request (the same every run)."""
    rng = np.random.default_rng(0)
    X = rng.standard_normal((rows, cols))
    T = (rng.random(rows) > 0.5).astype(np.float64)
    W_large = rng.standard_normal(cols) / np.sqrt(cols)
    return X, T, W_large


def _b64(a: np.ndarray) -> dict[str, Any]:
    return {"$array": {"dtype": "float64", "shape": list(a.shape), "data": base64.b64encode(a.tobytes()).decode()}}


def register_large(server: Server, rows: int, cols: int) -> str:
    """Register the regression with its data as constants; return the body each request sends."""
    X, T, W_large = regression_data(rows, cols)
    r = httpx.post(server.base + "/v1/models", timeout=300, json={
        "name": "big_logreg", "function": {"expr": LARGE_EXPR, "params": ["W", "b", "inputs", "targets"]},
        "constants": {"inputs": _b64(X), "targets": _b64(T)}})
    if r.status_code >= 300:
        raise ScenarioFailed(f"registering the large model: {r.status_code} {r.text[:500]}\n{server.log_tail()}")
    return json.dumps({"args": [W_large.tolist(), 0.1], "argnums": [0, 1], "dtype": "float64"})


def in_process_ms(rows: int, cols: int, rounds: int) -> float:
    """Median ms of the large model's gradient in this process, the way the service computes it."""
    import engine
    import engine.numpy as jnp

    X, T, W_large = regression_data(rows, cols)
    Xe, Te = jnp.asarray(X, jnp.float64), jnp.asarray(T, jnp.float64)

    def loss(W, b):
        z = jnp.dot(Xe, W) + b
        return -jnp.mean(Te * engine.nn.log_sigmoid(z) + (1 - Te) * engine.nn.log_sigmoid(-z))

    g = engine.jit(engine.grad(loss, (0, 1)))
    Wa, ba = jnp.asarray(W_large, jnp.float64), jnp.asarray(np.float64(0.1), jnp.float64)
    g(Wa, ba)
    samples = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        g(Wa, ba)
        samples.append(time.perf_counter() - t0)
    return statistics.median(samples) * 1e3


def in_process_pinned(rows: int, cols: int, rounds: int) -> float:
    """in_process_ms in a fresh process on core 1 with one BLAS thread, like the server's workers."""
    out = subprocess.run(["taskset", "-c", "1", sys.executable, __file__, "--in-process", f"{rows}x{cols}x{rounds}"],
                         env={**os.environ, "OPENBLAS_NUM_THREADS": "1"}, cwd=ROOT, capture_output=True,
                         text=True, check=True).stdout
    return float(out)


def decode_speed(n: int) -> tuple[float, float]:
    """Seconds to read n float64s from a body holding them as JSON lists and as a base64 $array
    leaf: the service's own parser (service.pipeline.parse_json) and decoding (decode_tree)."""
    from service.json_trees import TreeBudget, decode_tree
    from service.pipeline import parse_json

    values = np.random.default_rng(0).standard_normal(n)
    as_json = json.dumps(values.tolist()).encode()
    as_b64 = json.dumps(_b64(values)).encode()

    def run(raw: bytes) -> float:
        best = float("inf")
        for _ in range(3):
            t0 = time.perf_counter()
            decode_tree(parse_json(raw), np.dtype("float64"), "args[0]", TreeBudget(10**8, 10**8, 32))
            best = min(best, time.perf_counter() - t0)
        return best

    return run(as_json), run(as_b64)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=8.0, help="measured seconds per scenario (default 8)")
    parser.add_argument("--connections", type=int, default=8, help="wrk connections (default 8; twice that "
                                                                     "for the workers comparison)")
    parser.add_argument("--quick", action="store_true", help="1 s per scenario and small sizes")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds of the goal ratios' four "
                                                              "scenarios after the table (default 3; 1 with --quick)")
    parser.add_argument("--in-process", help=argparse.SUPPRESS)  # ROWSxCOLSxROUNDS: the in-process child
    args = parser.parse_args(argv)
    if args.in_process:
        print(in_process_ms(*map(int, args.in_process.split("x"))))
        return
    if shutil.which("wrk") is None or shutil.which("taskset") is None:
        raise SystemExit("needs wrk and taskset: apt-get install wrk util-linux")
    if (os.cpu_count() or 1) < 2:
        raise SystemExit("needs 2 cores: wrk on core 0, the server on core 1")

    rows_, cols = (2000, 20) if args.quick else (100_000, 100)
    seconds = 1.0 if args.quick else args.seconds
    connections, both_cores_connections = args.connections, 2 * args.connections
    load_start, started = os.getloadavg(), time.strftime("%Y-%m-%d %H:%M")
    jax_installed = importlib.util.find_spec("jax") is not None
    if not jax_installed:
        print(f"skipping {JAX}: JAX is not installed (pip install '.[bench]')", file=sys.stderr)
    rows: list[Row] = []

    with tempfile.TemporaryDirectory() as folder:
        def run(name: str, server_factory: Callable[[], Server], path: str, body: str, conns: int = connections,
                core: int | None = 0, count_inline: bool = True) -> None:
            with server_factory() as server:
                rows.append(measure(name, server, path, body, seconds, conns, core, count_inline))

        run(ECHO, lambda: nabla(folder), "/v1/echo", ECHO_BODY, count_inline=False)
        run(BY_NAME, lambda: nabla(folder), GRAD_PATH, GRAD_BODY)
        run(EXPRESSION, lambda: nabla(folder), "/v1/grad", EXPR_BODY)
        # Registering 80 MB of data as base64 needs larger body and constant limits.
        with nabla(folder, max_body_bytes=512 * 1024 * 1024, max_constant_elements=20_000_000) as server:
            large_body = register_large(server, rows_, cols)
            large = measure(large_name(rows_, cols), server, "/v1/models/big_logreg/grad", large_body, seconds, 1,
                            count_inline=True)
            rows.append(large)
        run(TO_WORKER, lambda: nabla(folder, inline_max_body_bytes=0), GRAD_PATH, GRAD_BODY)
        run(LOG_INFO, lambda: nabla(folder, log_level="info", output_to_null=True), GRAD_PATH, GRAD_BODY)
        run(BARE, lambda: uvicorn_app(folder, BARE_ECHO_APP), "/echo", ECHO_BODY, count_inline=False)
        if jax_installed:
            run(JAX, lambda: uvicorn_app(folder, JAX_APP), "/grad", GRAD_BODY, count_inline=False)
        for workers in (1, 2):  # each uvicorn worker has metrics of its own: /metrics shows one of them
            run(workers_name(workers, both_cores_connections), lambda w=workers: nabla(folder, pinned=False, workers=w),
                GRAD_PATH, GRAD_BODY, both_cores_connections, None, count_inline=workers == 1)

        # The goal ratios again, round after round, each round's four servers measured back to back:
        # a shared machine's speed drifts over a run, and a ratio of neighbours drifts least.
        factories = {ECHO: (lambda: nabla(folder), "/v1/echo", ECHO_BODY),
                     BY_NAME: (lambda: nabla(folder), GRAD_PATH, GRAD_BODY),
                     BARE: (lambda: uvicorn_app(folder, BARE_ECHO_APP), "/echo", ECHO_BODY)}
        if jax_installed:
            factories[JAX] = (lambda: uvicorn_app(folder, JAX_APP), "/grad", GRAD_BODY)
        rounds: list[dict[str, float]] = []
        for _ in range(1 if args.quick else args.rounds):
            measured = {}
            for name, (factory, path, body) in factories.items():
                with factory() as server:
                    measured[name] = measure(name, server, path, body, seconds, connections).rps
            rounds.append(measured)

    in_process = in_process_pinned(rows_, cols, 5 if args.quick else 20)
    decoded = 10_000 if args.quick else 1_000_000
    json_s, b64_s = decode_speed(decoded)

    print(f"# service benchmark, {started}, {os.cpu_count()} cores, load average {load_start[0]:.2f} at the start, "
          f"{os.getloadavg()[0]:.2f} at the end\n")
    print(f"wrk -t1 -c{connections} --latency for {seconds:g} s (after a warm-up run) on core 0, each server and "
          f"every process under it on core 1; the NABLA_WORKERS rows pin nothing and use -c{both_cores_connections}. "
          "Nabla servers run with NABLA_LOG_LEVEL=warning except the info row (its output to /dev/null). "
          "Answered inline: the share of the measured gradient requests Nabla computed on the event loop "
          "(nabla_compute_answers_total; not shown for 2 workers, whose metrics are per worker).\n")
    print("| scenario | requests/s | p50 ms | p99 ms | CPU ms per request | answered inline | errors |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        inline_share = "" if r.inline_share is None else f"{r.inline_share:.0%}"
        print(f"| {r.name} | {r.rps:,.0f} | {r.p50_ms:.2f} | {r.p99_ms:.2f} | {r.cpu_ms_per_request:.2f} | "
              f"{inline_share} | {r.errors} |")
    rps = {r.name: r.rps for r in rows}
    one, two = workers_name(1, both_cores_connections), workers_name(2, both_cores_connections)
    print()

    def target(label: str, value: float, goal: str, met: bool) -> None:
        print(f"- {label}: {value:.2f}x (target {goal}: {'met' if met else 'NOT met'})")

    def across_rounds(label: str, numerator: str, denominator: str, goal: str, at_least: float) -> None:
        """The table run's ratio and each interleaved round's; the goal is judged on their median."""
        ratios = [rps[numerator] / rps[denominator]] + [r[numerator] / r[denominator] for r in rounds]
        middle = statistics.median(ratios)
        verdict = "met" if middle >= at_least else "NOT met"
        print(f"- {label}: {middle:.2f}x, the median of {len(ratios)} runs "
              f"({', '.join(f'{x:.2f}x' for x in ratios)}) (target {goal}: {verdict})")

    if JAX in rps:
        across_rounds("grad by name / FastAPI + jax.jit(jax.grad)", BY_NAME, JAX, "≥ 1.5x", 1.5)
    else:
        print("- grad by name / FastAPI + jax.jit(jax.grad): skipped, JAX is not installed")
    across_rounds("grad by name / Nabla echo", BY_NAME, ECHO, "≥ 0.8x", 0.8)
    across_rounds("Nabla echo / bare FastAPI echo", ECHO, BARE, "≥ 0.9x", 0.9)
    target("2 workers / 1 worker, both cores", rps[two] / rps[one], "≥ 1.0x", rps[two] / rps[one] >= 1.0)
    target(f"{rows_}x{cols} regression request p50 / in-process median ({large.p50_ms:.2f} ms / {in_process:.2f} ms)",
           large.p50_ms / in_process, "≤ 1.2x", large.p50_ms / in_process <= 1.2)
    print(f"- grad by name inline (default) / every request to a worker: {rps[BY_NAME] / rps[TO_WORKER]:.2f}x")
    print(f"- grad by name at NABLA_LOG_LEVEL=info / at warning: {rps[LOG_INFO] / rps[BY_NAME]:.2f}x")
    print(f"- grad with the function sent as an expression / by name: {rps[EXPRESSION] / rps[BY_NAME]:.2f}x")
    print(f"- decoding {decoded:,} float64: JSON lists {json_s * 1e3:.1f} ms, base64 {b64_s * 1e3:.2f} ms = "
          f"{json_s / b64_s:.0f}x faster (target ≥ 10x)")


if __name__ == "__main__":
    main()
