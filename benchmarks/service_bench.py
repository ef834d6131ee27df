"""Service benchmark: throughput and latency over loopback, side by side in one run.

    python benchmarks/service_bench.py                 # 1 worker, 8 s per scenario
    python benchmarks/service_bench.py --workers 2 --seconds 15
    python benchmarks/service_bench.py --quick         # tiny, to check it runs

Starts `nabla serve` on a free loopback port (SQLite registry in a temporary folder), drives it
from a separate load-generator process (asyncio + httpx, a fixed number of connections), and
reports requests per second and p50/p99 latency for:
- echo: `POST /v1/echo` of the same app (the framework's ceiling);
- model: the tutorial model's gradient by name;
- inline: the same gradient with the function sent inline as an expression;
- large: logistic regression on 100000x100 data registered with the model (only W, b sent);
and compares the large model's request latency with the same gradient computed in-process, and
decoding a million float64s from base64 against JSON lists.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import multiprocessing as mp
import os
import statistics
import tempfile
import time
from typing import Any

import numpy as np
from _server import free_port, start_server

TUTORIAL_W = [-0.36838785, -2.275689, 0.01144757]
TUTORIAL_B = 0.8535516
TUTORIAL_EXPR = ("p = 0.5 * (tanh((inputs @ W + b) / 2) + 1)\n"
                 "-sum(log(p * targets + (1 - p) * (1 - targets)))")
INPUTS = [[0.52, 1.12, 0.77], [0.88, -1.08, 0.15], [0.52, 0.06, -1.30], [0.74, -2.49, 1.39]]
TARGETS = [True, True, False, True]


def start(port: int, workers: int, data_dir: str) -> Any:
    # Registering 80 MB of data as base64 needs larger body and constant limits.
    return start_server(port, data_dir, workers=workers, max_body_bytes=512 * 1024 * 1024,
                        max_constant_elements=20_000_000)


def _load(url: str, body: bytes, seconds: float, connections: int, queue: Any) -> None:
    """Load-generator process: closed loop, `connections` requests in flight."""
    import httpx

    async def main() -> None:
        latencies: list[float] = []
        errors = 0
        stop = time.perf_counter() + seconds
        limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
        async with httpx.AsyncClient(limits=limits, timeout=120) as client:
            async def worker() -> None:
                nonlocal errors
                while time.perf_counter() < stop:
                    t0 = time.perf_counter()
                    r = await client.post(url, content=body, headers={"content-type": "application/json"})
                    if r.status_code != 200:
                        errors += 1
                    latencies.append(time.perf_counter() - t0)
            start = time.perf_counter()
            await asyncio.gather(*(worker() for _ in range(connections)))
            elapsed = time.perf_counter() - start
        queue.put({"n": len(latencies), "elapsed": elapsed, "errors": errors,
                   "p50": statistics.median(latencies) * 1e3,
                   "p99": float(np.percentile(latencies, 99)) * 1e3})

    asyncio.run(main())


def drive(url: str, body: Any, seconds: float, connections: int) -> dict[str, float]:
    queue: Any = mp.Queue()
    proc = mp.Process(target=_load, args=(url, json.dumps(body).encode(), seconds, connections, queue))
    proc.start()
    result = queue.get()
    proc.join()
    result["rps"] = result["n"] / result["elapsed"]
    return result


def decode_speed(n: int) -> tuple[float, float]:
    """Seconds to decode n float64s from JSON lists and from a base64 $array leaf (service code)."""
    from service.json_trees import TreeBudget, decode_tree

    values = np.random.default_rng(0).standard_normal(n)
    as_json = json.dumps(values.tolist())
    as_b64 = json.dumps({"$array": {"dtype": "float64", "shape": [n],
                                    "data": base64.b64encode(values.tobytes()).decode()}})
    budget = lambda: TreeBudget(10**8, 10**8, 32)  # noqa: E731

    def run(text: str) -> float:
        best = float("inf")
        for _ in range(3):
            t0 = time.perf_counter()
            decode_tree(json.loads(text), np.dtype("float64"), "args[0]", budget())
            best = min(best, time.perf_counter() - t0)
        return best

    return run(as_json), run(as_b64)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    rows, cols = (2000, 20) if args.quick else (100_000, 100)
    seconds = 1.0 if args.quick else args.seconds
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory() as data_dir:
        server = start(port, args.workers, data_dir)
        try:
            import httpx

            rng = np.random.default_rng(0)
            X = rng.standard_normal((rows, cols))
            T = (rng.random(rows) > 0.5).astype(np.float64)
            enc = lambda a: {"$array": {"dtype": "float64", "shape": list(a.shape),  # noqa: E731
                                        "data": base64.b64encode(a.tobytes()).decode()}}
            r = httpx.post(f"{base}/v1/models", json={
                "name": "big_logreg", "function": {"expr": "z = inputs @ W + b\n-mean(targets * log_sigmoid(z) + "
                                                            "(1 - targets) * log_sigmoid(-z))",
                                                   "params": ["W", "b", "inputs", "targets"]},
                "constants": {"inputs": enc(X), "targets": enc(T)}}, timeout=300)
            r.raise_for_status()
            W = rng.standard_normal(cols) / np.sqrt(cols)
            tutorial_args = [TUTORIAL_W, TUTORIAL_B]
            scenarios = {
                "echo": (f"{base}/v1/echo", {"function": {"model": "tutorial_logreg"}, "args": tutorial_args,
                                             "argnums": [0, 1]}),
                "model": (f"{base}/v1/grad", {"function": {"model": "tutorial_logreg"}, "args": tutorial_args,
                                              "argnums": [0, 1]}),
                "inline": (f"{base}/v1/grad", {"function": {"expr": TUTORIAL_EXPR,
                                                            "params": ["W", "b", "inputs", "targets"]},
                                               "args": tutorial_args + [INPUTS, TARGETS], "argnums": [0, 1]}),
                "large": (f"{base}/v1/models/big_logreg/grad", {"args": [W.tolist(), 0.1], "argnums": [0, 1],
                                                                "dtype": "float64"}),
            }
            for url, body in scenarios.values():  # warm up: compile and cache every plan
                httpx.post(url, json=body, timeout=300).raise_for_status()
            results = {name: drive(url, body, seconds, args.connections if name != "large" else 1)
                       for name, (url, body) in scenarios.items()}
        finally:
            server.terminate()
            server.wait(timeout=30)

    # The large model's gradient in-process, the same way the service computes it.
    import engine
    import engine.numpy as jnp

    Xe, Te = jnp.asarray(X, jnp.float64), jnp.asarray(T, jnp.float64)

    def loss(W, b):
        z = jnp.dot(Xe, W) + b
        return -jnp.mean(Te * engine.nn.log_sigmoid(z) + (1 - Te) * engine.nn.log_sigmoid(-z))

    g = engine.jit(engine.grad(loss, (0, 1)))
    Wa, ba = jnp.asarray(W, jnp.float64), jnp.asarray(np.float64(0.1), jnp.float64)
    g(Wa, ba)
    samples = []
    for _ in range(5 if args.quick else 20):
        t0 = time.perf_counter()
        g(Wa, ba)
        samples.append(time.perf_counter() - t0)
    in_process_ms = statistics.median(samples) * 1e3
    json_s, b64_s = decode_speed(10_000 if args.quick else 1_000_000)

    print(f"# service benchmark, {time.strftime('%Y-%m-%d')}, {os.cpu_count()} cores, {args.workers} worker(s), "
          f"{args.connections} connections, {seconds:g} s per scenario")
    print("| scenario | requests/s | p50 ms | p99 ms | errors |")
    print("|---|---|---|---|---|")
    for name, r in results.items():
        print(f"| {name} | {r['rps']:,.0f} | {r['p50']:.2f} | {r['p99']:.2f} | {r['errors']} |")
    echo = results["echo"]["rps"]
    print()
    print(f"- tutorial grad by name: {results['model']['rps'] / echo:.2f}x the echo endpoint's throughput "
          "(target >= 0.6x)")
    print(f"- tutorial grad inline: {results['inline']['rps'] / echo:.2f}x the echo endpoint's throughput")
    print(f"- {rows}x{cols} regression: request p50 {results['large']['p50']:.1f} ms vs in-process "
          f"{in_process_ms:.1f} ms = {results['large']['p50'] / in_process_ms:.2f}x (target <= 1.2x)")
    print(f"- decoding {10_000 if args.quick else 1_000_000:,} float64: JSON lists {json_s * 1e3:.1f} ms, base64 "
          f"{b64_s * 1e3:.2f} ms = {json_s / b64_s:.0f}x faster (target >= 10x)")


if __name__ == "__main__":
    main()
