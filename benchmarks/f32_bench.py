"""float32 tanh and log, JAX-exact (engine._xla_f32) against NumPy's np.tanh / np.log, side by side.

    python benchmarks/f32_bench.py            # 0-d to 1,000,000 elements, 41 interleaved rounds
    python benchmarks/f32_bench.py --quick    # 5 rounds, to check it runs

For each size, one round times a batch of calls of each function in turn (np.tanh, ours, the NumPy
emulation, then the same for log), so machine noise hits all columns alike; a batch lasts about
--batch-ms, long enough for the clock. Times are medians over rounds, in microseconds per call;
"ratio" is ours / NumPy's. Ours is whichever implementation engine._xla_f32 uses (printed first: the
C kernels of engine/_f32kernels.c when built); "emulation" is its NumPy fallback, timed with fewer
rounds at large sizes. Before timing, ours and the emulation are checked to give the same bits.
Inputs: tanh of uniform(-8, 8), log of uniform(0, 10), float32.
"""

from __future__ import annotations

import os

for _var in ("OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "OMP_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse
import platform
import statistics
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from engine import _xla_f32

SIZES: list[int | None] = [None, 1, 4, 100, 10_000, 1_000_000]  # None: a 0-d array


def batch_size(fn: Callable[[], Any], batch_s: float) -> int:
    """How many calls of fn take about batch_s."""
    calls, elapsed = 1, 0.0
    while True:
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        elapsed = time.perf_counter() - start
        if elapsed >= batch_s / 4 or calls >= 1 << 20:
            return max(1, round(calls * batch_s / max(elapsed, 1e-9)))
        calls *= 4


def per_call(fn: Callable[[], Any], calls: int) -> float:
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    return (time.perf_counter() - start) / calls


def interleaved(methods: dict[str, Callable[[], Any]], rounds: dict[str, int], batch_s: float) -> dict[str, float]:
    """Median seconds per call of each method; a round times one batch of each, in turn."""
    calls = {name: batch_size(fn, batch_s) for name, fn in methods.items()}
    times: dict[str, list[float]] = {name: [] for name in methods}
    for r in range(max(rounds.values())):
        for name, fn in methods.items():
            if r < rounds[name]:
                times[name].append(per_call(fn, calls[name]))
    return {name: statistics.median(t) for name, t in times.items()}


def inputs(size: int | None, low: float, high: float) -> np.ndarray:
    rng = np.random.default_rng(16)
    return np.asarray(rng.uniform(low, high, size)).astype(np.float32)


def same_bits(a: Any, b: Any) -> bool:
    a, b = np.asarray(a), np.asarray(b)
    return a.shape == b.shape and bool((a.view(np.uint32) == b.view(np.uint32)).all())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=41)
    parser.add_argument("--batch-ms", type=float, default=2.0, help="length of one timed batch of calls")
    parser.add_argument("--quick", action="store_true", help="5 rounds of 0.2 ms batches")
    options = parser.parse_args()
    rounds, batch_s = (5, 2e-4) if options.quick else (options.rounds, options.batch_ms / 1e3)

    print(f"engine._xla_f32.IMPLEMENTATION: {_xla_f32.IMPLEMENTATION}")
    print(f"NumPy {np.__version__}, Python {platform.python_version()}, {platform.machine()}; "
          f"median of {rounds} interleaved rounds, µs per call\n")
    functions = {"tanh": (np.tanh, _xla_f32.tanh, _xla_f32._tanh_numpy, (-8.0, 8.0)),
                 "log": (np.log, _xla_f32.log, _xla_f32._log_numpy, (0.0, 10.0))}
    header = "| size |" + "".join(f" np.{n} µs | ours µs | ratio | emulation µs |" for n in functions)
    print(header)
    print("|---" * header.count(" |") + "|")
    all_same = True
    for size in SIZES:
        cells = []
        for reference, ours, emulation, (low, high) in functions.values():
            x = inputs(size, low, high)
            with np.errstate(all="ignore"):
                all_same &= same_bits(ours(x), emulation(x))
            slow_rounds = rounds if size is None or size <= 10_000 else min(rounds, 5)
            t = interleaved({"numpy": lambda f=reference, x=x: f(x), "ours": lambda f=ours, x=x: f(x),
                             "emulation": lambda f=emulation, x=x: f(x)},
                            {"numpy": rounds, "ours": rounds, "emulation": slow_rounds}, batch_s)
            cells.append(f" {t['numpy'] * 1e6:,.3f} | {t['ours'] * 1e6:,.3f} | {t['ours'] / t['numpy']:.2f}x | "
                         f"{t['emulation'] * 1e6:,.1f} |")
        label = "0-d" if size is None else f"{size:,}"
        print(f"| {label} |" + "".join(cells), flush=True)
    print(f"\nours and the emulation give the same bits: {'yes' if all_same else 'NO'}")


if __name__ == "__main__":
    main()
