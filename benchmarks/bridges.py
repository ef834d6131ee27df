"""The autodiff bridges' overhead: client.jax.remote and client.torch.remote against a direct client
call, side by side, and the batch speedup of jax.vmap across the bridge.

    python benchmarks/bridges.py             # 200 interleaved rounds, a batch of 1,000 examples
    python benchmarks/bridges.py --quick     # 10 rounds, 50 examples, to check it runs

Starts `nabla serve` on a free loopback port. The function is the JAX tutorial's logistic-regression
loss (an expression, float64, its 4x3 data sent as arguments). Per call, median over interleaved
rounds (every method once per round, so a load spike hits all alike), end to end:
- value: `c.value(f)(...)`; the JAX bridge eager and under `jax.jit`; the torch bridge;
- gradient in W and b: `c.grad(f, argnums=(0, 1))` (one request); `jax.grad` eager (two requests:
  the value, then the VJP), `jax.jit(jax.grad)` (one: jit drops the unused value); torch
  `autograd.grad` (two: forward, then backward).
The batch row compares N per-example gradients (one example = one row of the data) computed by N
direct `c.grad` calls with one `jax.jit(jax.vmap(jax.grad(f)))` call (one request with in_axes).
Results are checked equal before anything is printed.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import jax
import numpy as np
import torch
from _server import free_port, start_server, stop
from _tutorial import INPUTS, PARAMS, TARGETS, TUTORIAL_EXPR, W
from _tutorial import B as _B

jax.config.update("jax_enable_x64", True)
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from client import Client  # noqa: E402
from client.jax import remote as jax_remote  # noqa: E402
from client.torch import remote as torch_remote  # noqa: E402

B = np.array(_B)  # a 0-d array: what JAX and torch take


def timed(fn: Callable[[], Any]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def interleaved(methods: dict[str, Callable[[], Any]], rounds: int) -> dict[str, float]:
    """Median seconds per call of each method, every method once per round."""
    for fn in methods.values():  # warm: shapes asked, plans compiled, jit traced
        fn()
        fn()
    times: dict[str, list[float]] = {name: [] for name in methods}
    for _ in range(rounds):
        for name, fn in methods.items():
            times[name].append(timed(fn))
    return {name: statistics.median(t) for name, t in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=200)
    parser.add_argument("--examples", type=int, default=1000)
    parser.add_argument("--quick", action="store_true", help="10 rounds, 50 examples")
    options = parser.parse_args()
    rounds, n = (10, 50) if options.quick else (options.rounds, options.examples)
    rng = np.random.default_rng(0)
    batch_inputs, batch_targets = rng.normal(size=(n, 3)), (rng.random(n) < 0.5).astype(np.float64)

    port = free_port()
    with tempfile.TemporaryDirectory() as data_dir:
        server = start_server(port, data_dir)
        try:
            with Client(f"http://127.0.0.1:{port}", timeout=300, max_retries=0) as c:
                rows, batch = measure(c, rounds, batch_inputs, batch_targets)
        finally:
            stop(server)

    print(f"Bridge overhead per call, the tutorial's loss (float64), one server on loopback, median of {rounds} "
          "interleaved rounds\n")
    print("| call | direct client µs | JAX eager µs | JAX jit µs | torch µs | JAX eager / direct | "
          "JAX jit / direct | torch / direct |")
    print("|---|---|---|---|---|---|---|---|")
    for name, t in rows.items():
        d = t["direct"]
        print(f"| {name} | {d * 1e6:,.0f} | {t['jax'] * 1e6:,.0f} | {t['jax_jit'] * 1e6:,.0f} | "
              f"{t['torch'] * 1e6:,.0f} | {t['jax'] / d:.2f}x | {t['jax_jit'] / d:.2f}x | {t['torch'] / d:.2f}x |")
    print(f"\n{n} per-example gradients: {n} direct c.grad calls {batch['loop'] * 1e3:,.1f} ms; one "
          f"jax.jit(jax.vmap(jax.grad(f))) call (one request with in_axes) {batch['vmap'] * 1e3:,.1f} ms: "
          f"{batch['loop'] / batch['vmap']:.1f}x faster; results equal (rtol 1e-12): yes")


def measure(c: Client, rounds: int, batch_inputs: np.ndarray,
            batch_targets: np.ndarray) -> tuple[dict[str, dict[str, float]], dict[str, float]]:
    expr = c.expr(TUTORIAL_EXPR, PARAMS)
    args = (W, B, INPUTS, TARGETS)
    jf = jax_remote(c, expr)
    jargs = tuple(jax.numpy.asarray(a) for a in args)
    tf = torch_remote(c, expr)
    W_t, b_t = (torch.tensor(a, requires_grad=True) for a in (W, B))
    data_t = tuple(torch.tensor(a) for a in (INPUTS, TARGETS))

    direct_value, direct_grad = c.value(expr), c.grad(expr, argnums=(0, 1))
    jit_value, jax_grad = jax.jit(jf), jax.grad(jf, (0, 1))
    jit_grad = jax.jit(jax_grad)

    def torch_grad() -> Any:
        return torch.autograd.grad(tf(W_t, b_t, *data_t), (W_t, b_t))

    expected = direct_grad(*args)
    for got in (jax_grad(*jargs), jit_grad(*jargs), torch_grad()):
        for g, e in zip(got, expected):
            np.testing.assert_allclose(np.asarray(g.detach() if hasattr(g, "detach") else g), e, rtol=1e-12)
    value = interleaved({"direct": lambda: direct_value(*args), "jax": lambda: jf(*jargs),
                         "jax_jit": lambda: jit_value(*jargs).block_until_ready(),
                         "torch": lambda: tf(W_t, b_t, *data_t)}, rounds)
    grad = interleaved({"direct": lambda: direct_grad(*args), "jax": lambda: jax_grad(*jargs),
                        "jax_jit": lambda: jit_grad(*jargs)[0].block_until_ready(), "torch": torch_grad}, rounds)

    per_example = jax.jit(jax.vmap(jax_grad, in_axes=(None, None, 0, 0)))
    batched = per_example(jargs[0], jargs[1], jax.numpy.asarray(batch_inputs), jax.numpy.asarray(batch_targets))
    start = time.perf_counter()
    batched = per_example(jargs[0], jargs[1], jax.numpy.asarray(batch_inputs), jax.numpy.asarray(batch_targets))
    batched[0].block_until_ready()
    vmap_s = time.perf_counter() - start
    start = time.perf_counter()
    looped = [direct_grad(W, B, x, t) for x, t in zip(batch_inputs, batch_targets)]
    loop_s = time.perf_counter() - start
    np.testing.assert_allclose(np.asarray(batched[0]), np.stack([g[0] for g in looped]), rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(np.asarray(batched[1]), np.stack([g[1] for g in looped]), rtol=1e-12, atol=1e-15)
    return {"value": value, "gradient (W, b)": grad}, {"vmap": vmap_s, "loop": loop_s}


if __name__ == "__main__":
    main()
