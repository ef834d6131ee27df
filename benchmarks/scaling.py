"""Scaling curves: gradient time vs data size, vs graph size, and graph size vs derivative order.

    python benchmarks/scaling.py
    python benchmarks/scaling.py --quick

1. Logistic regression with 10 features, 1e3..1e6 rows: engine.jit(engine.grad) against the
   hand-written NumPy gradient, median microseconds and their ratio.
2. Random graphs of N elementwise operations on a vector of 64 (N = 100..1600): trace+compile
   time and gradient time per call, and both divided by N (flat means linear).
3. Nodes of the graph of the n-th derivative of tanh, before and after engine.optimize.
"""

from __future__ import annotations

import os

for _var in ("OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "OMP_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse
import statistics
import time
from collections.abc import Callable
from typing import Any

import numpy as np

import engine
import engine.numpy as jnp

engine.config.update("jax_enable_x64", True)


def median_us(fn: Callable[[], Any], reps: int) -> float:
    fn()
    samples = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - t0)
    return statistics.median(samples) * 1e6


def _regression_row(n: int, reps: int, rng: np.random.Generator) -> str:
    X = rng.standard_normal((n, 10))
    T = (rng.random(n) > 0.5).astype(np.float64)
    W = rng.standard_normal(10) * 0.3
    Xe, Te = jnp.asarray(X, jnp.float64), jnp.asarray(T, jnp.float64)

    def loss(W, b):
        z = jnp.dot(Xe, W) + b
        return -jnp.mean(Te * engine.nn.log_sigmoid(z) + (1 - Te) * engine.nn.log_sigmoid(-z))

    def manual(W, b):
        z = X @ W + b
        s = 0.5 * (np.tanh(z / 2) + 1)
        g = (s - T) / n
        return X.T @ g, g.sum()

    g = engine.jit(engine.grad(loss, (0, 1)))
    Wa, ba = jnp.asarray(W, jnp.float64), jnp.asarray(np.float64(0.1), jnp.float64)
    ours = median_us(lambda: g(Wa, ba), reps)
    theirs = median_us(lambda: manual(W, 0.1), reps)
    return f"| {n:,} | {theirs:,.0f} | {ours:,.0f} | {ours / theirs:.2f}x |"


def regression(sizes: list[int], reps: int) -> list[str]:
    rng = np.random.default_rng(0)
    lines = ["| rows | hand-written NumPy µs | nabla jit µs | ratio |", "|---|---|---|---|"]
    return lines + [_regression_row(n, reps, rng) for n in sizes]


def _apply(op: int, a: Any, b: Any) -> Any:
    if op == 0:
        return jnp.sin(a)
    if op == 1:
        return a * b
    if op == 2:
        return a + b
    if op == 3:
        return jnp.tanh(a) * 0.5
    if op == 4:
        return a - 0.1 * b
    return jnp.cos(b) + a


def random_program(n_ops: int, seed: int) -> Callable[[Any], Any]:
    rng = np.random.default_rng(seed)
    ops = rng.integers(0, 6, n_ops)
    picks = [(int(rng.integers(0, k + 1)), int(rng.integers(0, k + 1))) for k in range(n_ops)]

    def f(x):
        values = [x]
        total = 0.0
        for op, (i, j) in zip(ops, picks):
            values.append(_apply(int(op), values[i], values[j]))
            total = total + jnp.sum(values[-1])  # every operation reaches the output
        return total
    return f


def graphs(sizes: list[int], reps: int) -> list[str]:
    x = jnp.asarray(np.linspace(-1, 1, 64), jnp.float64)  # small: the working set stays in cache
    lines = ["| operations | graph nodes (optimised) | trace+compile ms | per op µs | gradient µs | per op µs |",
             "|---|---|---|---|---|---|"]
    for n in sizes:
        f = random_program(n, seed=n)
        g = engine.jit(engine.grad(f))
        t0 = time.perf_counter()
        g(x)
        compile_ms = (time.perf_counter() - t0) * 1e3
        nodes = next(iter(g._cache.values()))[0].num_nodes
        call = median_us(lambda g=g: g(x), reps)
        lines.append(f"| {n} | {nodes} | {compile_ms:,.0f} | {compile_ms * 1e3 / n:.0f} | {call:,.0f} | "
                     f"{call / n:.2f} |")
    return lines


def orders(max_order: int) -> list[str]:
    lines = ["| n | nodes before | nodes after |", "|---|---|---|"]
    fn = jnp.tanh
    for n in range(1, max_order + 1):
        fn = engine.grad(fn)
        graph = engine.make_graph(fn)(0.5)
        lines.append(f"| {n} | {graph.num_nodes} | {engine.optimize(graph).num_nodes} |")
    return lines


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    if args.quick:
        rows, ops, order, reps = [1_000, 10_000], [50, 100], 4, 5
    else:
        rows, ops, order, reps = [1_000, 10_000, 100_000, 1_000_000], [100, 200, 400, 800, 1600], 9, 30
    print(f"# scaling, {time.strftime('%Y-%m-%d')}, {os.cpu_count()} cores, float64, single-threaded BLAS\n")
    print("## Logistic regression (10 features): gradient time vs rows\n")
    print("\n".join(regression(rows, reps)))
    print("\n## Random graphs: time vs number of operations\n")
    print("\n".join(graphs(ops, reps)))
    print("\n## Graph size vs derivative order (tanh)\n")
    print("\n".join(orders(order)))


if __name__ == "__main__":
    main()
