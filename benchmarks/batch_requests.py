"""Per-example gradients: one `in_axes` request against one request per example, side by side.

    python benchmarks/batch_requests.py             # 1,000 examples of the tutorial's loss
    python benchmarks/batch_requests.py --quick     # 50 examples, to check it runs

Starts `nabla serve` on a free loopback port and computes the gradient of the JAX tutorial's
logistic-regression loss with respect to W and b for each of N examples, two ways:
- batched: one POST /v1/grad with `"in_axes": [null, null, 0, 0]` (the examples as base64
  `$array` leaves, the answer base64 too), timed cold (the plan traced and compiled) and warm;
- one by one: N sequential calls of the Python client's `grad`, each sending one example.
Both are end to end (encoding, HTTP, decoding). The results are compared, and the speedup of
the warm batched request over the N calls is reported against the issue's target (>= 20x).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import httpx
import numpy as np
from _server import free_port, start_server, stop
from _tutorial import PARAMS, TUTORIAL_EXPR, B, W

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from client import Client  # noqa: E402
from client._wire import decode_tree, encode_tree  # noqa: E402

TARGET_SPEEDUP = 20.0


def batched_body(inputs: np.ndarray, targets: np.ndarray) -> dict:
    return {"function": {"expr": TUTORIAL_EXPR, "params": PARAMS},
            "args": [W.tolist(), B, encode_tree(inputs), encode_tree(targets.astype(np.float64))],
            "argnums": [0, 1], "in_axes": [None, None, 0, 0], "encoding": "base64"}


def run_batched(http: httpx.Client, inputs: np.ndarray, targets: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """One request for every example; seconds end to end and the gradients."""
    start = time.perf_counter()
    response = http.post("/v1/grad", json=batched_body(inputs, targets))
    response.raise_for_status()
    w_grads, b_grads = decode_tree(response.json()["grad"])
    return time.perf_counter() - start, np.asarray(w_grads), np.asarray(b_grads)


def run_one_by_one(client: Client, inputs: np.ndarray, targets: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """One request per example, sequentially, with the Python client."""
    grad = client.grad(client.expr(TUTORIAL_EXPR, PARAMS), argnums=(0, 1))
    w_grads, b_grads = [], []
    start = time.perf_counter()
    for x, t in zip(inputs, targets):
        gw, gb = grad(W, B, x, float(t))
        w_grads.append(gw)
        b_grads.append(gb)
    return time.perf_counter() - start, np.array(w_grads), np.array(b_grads)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--examples", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=5, help="warm batched requests timed (the median is kept)")
    parser.add_argument("--quick", action="store_true", help="50 examples, 2 repeats")
    options = parser.parse_args()
    n, repeats = (50, 2) if options.quick else (options.examples, options.repeats)

    rng = np.random.default_rng(0)
    inputs = rng.normal(size=(n, 3))
    targets = rng.random(n) < 0.5

    port = free_port()
    with tempfile.TemporaryDirectory() as data_dir:
        server = start_server(port, data_dir)
        try:
            url = f"http://127.0.0.1:{port}"
            with httpx.Client(base_url=url, timeout=300) as http, Client(url, timeout=300) as client:
                cold, w_batch, b_batch = run_batched(http, inputs, targets)
                warm = statistics.median(run_batched(http, inputs, targets)[0] for _ in range(repeats))
                client.grad(client.expr(TUTORIAL_EXPR, PARAMS), argnums=(0, 1))(W, B, inputs[0], 1.0)  # compile once
                separate, w_single, b_single = run_one_by_one(client, inputs, targets)
        finally:
            stop(server)

    np.testing.assert_allclose(w_batch, w_single, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(b_batch, b_single, rtol=1e-12, atol=1e-15)
    speedup = separate / warm
    print(f"Per-example gradients of the tutorial's loss (W, b), {n} examples, float64, one server, loopback\n")
    print("| method | requests | total ms | per example µs |")
    print("|---|---|---|---|")
    print(f"| one request with in_axes, warm (median of {repeats}) | 1 | {warm * 1e3:,.1f} | {warm / n * 1e6:,.1f} |")
    print(f"| one request with in_axes, cold (plan traced and compiled) | 1 | {cold * 1e3:,.1f} | "
          f"{cold / n * 1e6:,.1f} |")
    print(f"| one request per example, Python client, sequential | {n} | {separate * 1e3:,.1f} | "
          f"{separate / n * 1e6:,.1f} |")
    print(f"\nresults equal (rtol 1e-12): yes; speedup warm: {speedup:.1f}x, cold: {separate / cold:.1f}x "
          f"(target >= {TARGET_SPEEDUP:.0f}x: {'met' if speedup >= TARGET_SPEEDUP else 'NOT met'})")


if __name__ == "__main__":
    main()
