"""Blocked plans benchmark: the gradient of a loss summed over the rows of large data, against the
loss's value alone in NumPy (issue 16's "one pass over the data").

    python benchmarks/blocked_bench.py            # 100000x100 regression, an MLP over 50000 rows
    python benchmarks/blocked_bench.py --quick    # small sizes (still over the blocking threshold)

Columns (median microseconds per call, float64, single-threaded BLAS, interleaved round by round
so machine noise hits all of them alike): np_fwd (the loss's value in plain NumPy: one pass over
the data), np_manual (a hand-written NumPy forward and backward pass: two passes), nabla
(engine.jit(engine.grad(f)), whose plan is blocked: engine/blocked.py; its blocks' elementwise
chains, sums over rows and products of the rows with a vector run in C when engine._fused is
built, engine/fused.py, as the header says), nabla_unblocked (the same compiled with blocking switched off,
`engine.blocked.unblocked()`, as NABLA_BLOCKED_PLANS=0 does), and JAX jit when JAX is installed.
Ratios are against np_fwd; the goal of issue 16 is nabla / np_fwd <= 1.25 on the regression.
Every gradient is checked against np_manual's first. Large temporaries come from the heap in
every column (`steady_allocator`), so page faults do not inflate np_fwd or the unblocked plans
by chance.
"""

from __future__ import annotations

import os

# Single-threaded BLAS, as the other engine benchmarks (must precede importing NumPy).
for _var in ("OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "OMP_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np
from engine_bench import Workload, _to_engine, agree, available, machine, median_us, mlp, tutorial_logreg

import engine
import engine.blocked
import engine.fused

engine.config.update("jax_enable_x64", True)

COLUMNS = ["np_fwd", "np_manual", "nabla", "nabla_unblocked", "jax_jit"]


def _nabla(w: Workload, *, blocking: bool) -> tuple[Callable[..., Any], Any]:
    """engine.jit of the gradient, compiled (by its first call) with or without blocking; and its plan."""
    argnums = w.argnums if len(w.argnums) > 1 else w.argnums[0]
    compiled = engine.jit(engine.grad(w.engine_fn, argnums))
    args = tuple(_to_engine(a) for a in w.args)
    if blocking:
        compiled(*args)
    else:
        with engine.blocked.unblocked():
            compiled(*args)
    ((_, _, plan),) = compiled._cache.values()
    if hasattr(plan, "blocking") != blocking:
        raise SystemExit(f"{w.name}: the plan is {'not ' if blocking else ''}blocked")
    return (lambda: compiled(*args)), plan


def run(workloads: list[Workload], budget_s: float, rounds: int) -> list[dict[str, Any]]:
    rows = []
    for w in workloads:
        expected = w.np_manual(*w.args)
        blocked, plan = _nabla(w, blocking=True)
        unblocked, _ = _nabla(w, blocking=False)
        for name, fn in (("nabla", blocked), ("nabla_unblocked", unblocked)):
            if not agree(fn(), expected):
                raise SystemExit(f"{w.name}: {name} disagrees with the hand-written gradient")
        columns: dict[str, Callable[[], Any]] = {
            "np_fwd": lambda w=w: w.np_fwd(*w.args),
            "np_manual": lambda w=w: w.np_manual(*w.args),
            "nabla": blocked,
            "nabla_unblocked": unblocked,
        }
        if "jax_jit" in w.refs and available("jax"):
            fn = w.refs["jax_jit"]()
            if agree(fn(*w.args), expected):
                columns["jax_jit"] = lambda fn=fn, w=w: fn(*w.args)
            else:
                print(f"  note: JAX disagrees on {w.name}; column left out", file=sys.stderr)
        samples: dict[str, list[float]] = {k: [] for k in columns}
        for _ in range(rounds):
            for key, fn in columns.items():
                samples[key].append(median_us(fn, budget_s / rounds))
        layout = plan.blocking
        rows.append({"workload": w.name, **{k: statistics.median(v) for k, v in samples.items()},
                     "blocks": f"{layout.blocks} blocks of {layout.block_rows} rows"})
        print(f"  measured {w.name}", file=sys.stderr)
    return rows


def render(rows: list[dict[str, Any]]) -> str:
    present = [c for c in COLUMNS if any(c in r for r in rows)]
    ratios = [c for c in present if c != "np_fwd"]
    head = ("| workload | " + " | ".join(present) + " | " + " | ".join(f"{c} / np_fwd" for c in ratios)
            + " | blocks |")
    lines = [head, "|---" * (len(present) + len(ratios) + 2) + "|"]
    for r in rows:
        cells = [f"{r[c]:,.0f}" if c in r else "–" for c in present]
        ratio_cells = [f"{r[c] / r['np_fwd']:.2f}x" if c in r else "–" for c in ratios]
        lines.append(f"| {r['workload']} | " + " | ".join(cells) + " | " + " | ".join(ratio_cells)
                     + f" | {r['blocks']} |")
    return "\n".join(lines)


def steady_allocator() -> None:
    """Serve large temporaries from the heap, for every column alike.

    glibc hands out blocks over its mmap threshold (128 KiB at first) with mmap and unmaps them on
    free, so each of np_fwd's 800 KB temporaries costs page faults (about 900 a call, 1-2 ms)
    until a freed mapped block raises the threshold; JAX's first call did that as a side effect,
    which moved np_fwd by up to 2x between runs. Freeing one 16 MiB block first raises it for
    the whole run."""
    block = np.ones(16 << 20, np.uint8)
    del block


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small sizes and budgets (a smoke test)")
    parser.add_argument("--budget", type=float, default=4.0, help="seconds of timing per column and workload")
    # Many short rounds: on a shared machine, load comes and goes within seconds.
    parser.add_argument("--rounds", type=int, default=20, help="interleaved rounds per workload")
    args = parser.parse_args(argv)
    if args.quick:
        # 24 MB and 20 MB of float64 rows: over the 16 MiB threshold, so blocked.
        workloads = [tutorial_logreg(30_000, 100), mlp(25_000, (100, 8, 4))]
        budget, rounds = 0.1, 1
    else:
        workloads = [tutorial_logreg(100_000, 100), mlp(50_000, (100, 32, 10))]
        budget, rounds = args.budget, args.rounds
    steady_allocator()
    print(f"# blocked plans benchmark, {time.strftime('%Y-%m-%d')}, {machine()}")
    print(f"# median microseconds per call, float64; blocks of about {engine.blocked.BLOCK_BYTES / 2 ** 20:g} MiB "
          f"of rows over {engine.blocked.THRESHOLD_BYTES >> 20} MiB of row data; block bodies: "
          f"{engine.fused.IMPLEMENTATION}")
    print(render(run(workloads, budget, rounds)))


if __name__ == "__main__":
    main()
