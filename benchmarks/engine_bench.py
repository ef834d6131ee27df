"""Engine benchmark: gradient calls of five workloads, side by side in one run.

    python benchmarks/engine_bench.py            # full sizes (a few minutes)
    python benchmarks/engine_bench.py --quick    # tiny sizes, to check it runs

Columns: np_fwd (the function's value in plain NumPy), np_manual (a hand-written NumPy forward
and backward pass: the practical limit for an engine that executes NumPy), nabla (engine.jit of
engine.grad, or engine.hessian, after warm-up, called with engine arrays), nabla_np (the same
compiled function called with the NumPy arrays and scalars a user passes) and, when installed,
autograd, JAX (eager and jit) and torch. Every time is the median of repeated calls in
microseconds, float64, in this process, interleaved so machine noise hits all columns alike;
ratios are against np_manual unless named otherwise. Each gradient is checked against
np_manual's before timing. Peak memory of one nabla call is measured with tracemalloc.
"""

from __future__ import annotations

import os

# Single-threaded BLAS, as the reference table was measured (must precede importing NumPy).
for _var in ("OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "OMP_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse
import gc
import importlib.util
import platform
import statistics
import sys
import time
import tracemalloc
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

import engine
import engine.numpy as jnp

engine.config.update("jax_enable_x64", True)


@dataclass
class Workload:
    name: str
    args: tuple  # NumPy float64 arguments
    np_fwd: Callable[..., Any]
    np_manual: Callable[..., Any]  # returns the gradient (or Hessian)
    engine_fn: Callable[..., Any]  # written against engine.numpy; the objective
    kind: str = "grad"  # or "hessian"
    argnums: tuple = (0,)
    refs: dict[str, Callable[[], Callable[..., Any]]] = field(default_factory=dict)


# ----------------------------------------------------------------------------- workloads


def tutorial_logreg(rows: int = 4, cols: int = 3, seed: int = 0) -> Workload:
    rng = np.random.default_rng(seed)
    if rows == 4 and cols == 3:
        X = np.array([[0.52, 1.12, 0.77], [0.88, -1.08, 0.15], [0.52, 0.06, -1.30], [0.74, -2.49, 1.39]])
        T = np.array([1.0, 1.0, 0.0, 1.0])
    else:
        X = rng.standard_normal((rows, cols))
        T = (rng.random(rows) > 0.5).astype(np.float64)
    # Small weights keep probabilities away from 0 and 1 on large data (no log(0)).
    W = rng.standard_normal(cols) / np.sqrt(cols)
    b = np.float64(0.1)

    def np_fwd(W, b):
        p = 0.5 * (np.tanh((X @ W + b) / 2) + 1)
        return -np.sum(np.log(p * T + (1 - p) * (1 - T)))

    def np_manual(W, b):
        t = np.tanh((X @ W + b) / 2)
        p = 0.5 * (t + 1)
        q = p * T + (1 - p) * (1 - T)
        dz = -(2 * T - 1) / q * 0.25 * (1 - t * t)
        return X.T @ dz, np.sum(dz)

    Xe, Te = jnp.asarray(X, jnp.float64), jnp.asarray(T, jnp.float64)

    def loss(W, b):
        p = 0.5 * (jnp.tanh((jnp.dot(Xe, W) + b) / 2) + 1)
        return -jnp.sum(jnp.log(p * Te + (1 - p) * (1 - Te)))

    name = "tutorial logistic regression (4x3)" if rows == 4 else f"logistic regression ({rows}x{cols})"
    return Workload(name, (W, b), np_fwd, np_manual, loss, argnums=(0, 1),
                    refs=_refs_logreg(X, T))


def _refs_logreg(X: np.ndarray, T: np.ndarray) -> dict[str, Callable[[], Callable[..., Any]]]:
    def autograd_fn():
        import autograd
        import autograd.numpy as anp

        def loss(W, b):
            p = 0.5 * (anp.tanh((anp.dot(X, W) + b) / 2) + 1)
            return -anp.sum(anp.log(p * T + (1 - p) * (1 - T)))
        return autograd.grad(loss, (0, 1))

    def jax_fn(jit: bool):
        def make():
            import jax
            import jax.numpy as xnp

            jax.config.update("jax_enable_x64", True)
            Xj, Tj = xnp.asarray(X), xnp.asarray(T)

            def loss(W, b):
                p = 0.5 * (xnp.tanh((xnp.dot(Xj, W) + b) / 2) + 1)
                return -xnp.sum(xnp.log(p * Tj + (1 - p) * (1 - Tj)))
            g = jax.grad(loss, (0, 1))
            g = jax.jit(g) if jit else g
            return lambda W, b: [np.asarray(v) for v in jax.block_until_ready(g(W, b))]
        return make

    def torch_fn():
        import torch

        Xt, Tt = torch.from_numpy(X), torch.from_numpy(T)

        def grad(W, b):
            Wt = torch.tensor(W, requires_grad=True)
            bt = torch.tensor(b, requires_grad=True)
            p = 0.5 * (torch.tanh((Xt @ Wt + bt) / 2) + 1)
            loss = -torch.sum(torch.log(p * Tt + (1 - p) * (1 - Tt)))
            loss.backward()
            return Wt.grad.numpy(), bt.grad.numpy()
        return grad

    return {"autograd": autograd_fn, "jax_eager": jax_fn(False), "jax_jit": jax_fn(True), "torch": torch_fn}


def mlp(batch: int = 128, sizes: tuple = (784, 256, 256, 10), seed: int = 0) -> Workload:
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((batch, sizes[0]))
    labels = rng.integers(0, sizes[-1], batch)
    Y = np.eye(sizes[-1])[labels]
    params = {}
    for k, (a, b) in enumerate(zip(sizes[:-1], sizes[1:]), start=1):
        params[f"W{k}"] = rng.standard_normal((a, b)) / np.sqrt(a)
        params[f"b{k}"] = np.zeros(b)
    depth = len(sizes) - 1

    def np_fwd(p):
        h = X
        for k in range(1, depth + 1):
            h = h @ p[f"W{k}"] + p[f"b{k}"]
            if k < depth:
                h = np.tanh(h)
        m = h.max(axis=1, keepdims=True)
        lse = np.log(np.exp(h - m).sum(axis=1, keepdims=True)) + m
        return -np.mean(np.sum((h - lse) * Y, axis=1))

    def np_manual(p):
        hs = [X]
        h = X
        for k in range(1, depth + 1):
            h = h @ p[f"W{k}"] + p[f"b{k}"]
            if k < depth:
                h = np.tanh(h)
            hs.append(h)
        m = h.max(axis=1, keepdims=True)
        e = np.exp(h - m)
        soft = e / e.sum(axis=1, keepdims=True)
        g = (soft - Y) / batch
        grads = {}
        for k in range(depth, 0, -1):
            grads[f"W{k}"] = hs[k - 1].T @ g
            grads[f"b{k}"] = g.sum(axis=0)
            if k > 1:
                g = (g @ p[f"W{k}"].T) * (1 - hs[k - 1] ** 2)
        return grads

    Xe, Ye = jnp.asarray(X, jnp.float64), jnp.asarray(Y, jnp.float64)

    def loss(p):
        h = Xe
        for k in range(1, depth + 1):
            h = jnp.dot(h, p[f"W{k}"]) + p[f"b{k}"]
            if k < depth:
                h = jnp.tanh(h)
        return -jnp.mean(jnp.sum(engine.nn.log_softmax(h, axis=1) * Ye, axis=1))

    def torch_fn():
        import torch

        Xt, Yt = torch.from_numpy(X), torch.from_numpy(Y)

        def grad(p):
            tp = {k: torch.tensor(v, requires_grad=True) for k, v in p.items()}
            h = Xt
            for k in range(1, depth + 1):
                h = h @ tp[f"W{k}"] + tp[f"b{k}"]
                if k < depth:
                    h = torch.tanh(h)
            loss = -torch.mean(torch.sum(torch.log_softmax(h, dim=1) * Yt, dim=1))
            loss.backward()
            return {k: v.grad.numpy() for k, v in tp.items()}
        return grad

    def autograd_fn():
        import autograd
        import autograd.numpy as anp
        from autograd.scipy.special import logsumexp

        def loss(p):
            h = X
            for k in range(1, depth + 1):
                h = anp.dot(h, p[f"W{k}"]) + p[f"b{k}"]
                if k < depth:
                    h = anp.tanh(h)
            return -anp.mean(anp.sum((h - logsumexp(h, axis=1, keepdims=True)) * Y, axis=1))
        return autograd.grad(loss)

    def jax_fn(jit: bool):
        def make():
            import jax
            import jax.numpy as xnp

            jax.config.update("jax_enable_x64", True)

            def loss(p):
                h = X
                for k in range(1, depth + 1):
                    h = xnp.dot(h, p[f"W{k}"]) + p[f"b{k}"]
                    if k < depth:
                        h = xnp.tanh(h)
                return -xnp.mean(xnp.sum(jax.nn.log_softmax(h, axis=1) * Y, axis=1))
            g = jax.jit(jax.grad(loss)) if jit else jax.grad(loss)
            return lambda p: {k: np.asarray(v) for k, v in jax.block_until_ready(g(p)).items()}
        return make

    name = f"MLP {'-'.join(map(str, sizes))}, batch {batch}"
    return Workload(name, (params,), np_fwd, np_manual, loss,
                    refs={"autograd": autograd_fn, "jax_eager": jax_fn(False), "jax_jit": jax_fn(True),
                          "torch": torch_fn})


def tanh_hessian(rows: int = 100, cols: int = 50, seed: int = 0) -> Workload:
    rng = np.random.default_rng(seed)
    A = rng.standard_normal((rows, cols)) / np.sqrt(cols)
    x = rng.standard_normal(cols)

    def np_fwd(x):
        return np.sum(np.tanh(A @ x) ** 2)

    def np_manual(x):
        t = np.tanh(A @ x)
        # d2/dz2 of tanh(z)^2 = 2(1 - t^2)(1 - 3t^2)
        w = 2 * (1 - t * t) * (1 - 3 * t * t)
        return (A.T * w) @ A

    Ae = jnp.asarray(A, jnp.float64)

    def f(x):
        return jnp.sum(jnp.tanh(jnp.dot(Ae, x)) ** 2)

    def jax_fn(jit: bool):
        def make():
            import jax
            import jax.numpy as xnp

            jax.config.update("jax_enable_x64", True)
            h = jax.hessian(lambda x: xnp.sum(xnp.tanh(xnp.dot(A, x)) ** 2))
            h = jax.jit(h) if jit else h
            return lambda x: np.asarray(jax.block_until_ready(h(x)))
        return make

    def autograd_fn():
        import autograd
        import autograd.numpy as anp

        return autograd.hessian(lambda x: anp.sum(anp.tanh(anp.dot(A, x)) ** 2))

    def torch_fn():
        import torch

        At = torch.from_numpy(A)
        return lambda x: torch.autograd.functional.hessian(
            lambda v: torch.sum(torch.tanh(At @ v) ** 2), torch.from_numpy(x)).numpy()

    return Workload(f"hessian of sum(tanh(A @ x)**2), A {rows}x{cols}", (x,), np_fwd, np_manual, f,
                    kind="hessian", refs={"autograd": autograd_fn, "jax_eager": jax_fn(False),
                                          "jax_jit": jax_fn(True), "torch": torch_fn})


def scalar_chain(steps: int = 200) -> Workload:
    x0 = np.float64(0.3)

    def np_fwd(x):
        for _ in range(steps):
            x = np.sin(x) * 1.01 + 0.1 * x * x
        return x

    def np_manual(x):
        xs = []
        for _ in range(steps):
            xs.append(x)
            x = np.sin(x) * 1.01 + 0.1 * x * x
        g = np.float64(1.0)
        for x in reversed(xs):
            g = g * (np.cos(x) * 1.01 + 0.2 * x)
        return g

    def f(x):
        for _ in range(steps):
            x = jnp.sin(x) * 1.01 + 0.1 * x * x
        return x

    def autograd_fn():
        import autograd
        import autograd.numpy as anp

        def g(x):
            for _ in range(steps):
                x = anp.sin(x) * 1.01 + 0.1 * x * x
            return x
        return autograd.grad(g)

    def jax_fn(jit: bool):
        def make():
            import jax
            import jax.numpy as xnp

            jax.config.update("jax_enable_x64", True)

            def g(x):
                for _ in range(steps):
                    x = xnp.sin(x) * 1.01 + 0.1 * x * x
                return x
            d = jax.jit(jax.grad(g)) if jit else jax.grad(g)
            return lambda x: np.asarray(jax.block_until_ready(d(x)))
        return make

    def torch_fn():
        import torch

        def grad(x):
            t = torch.tensor(x, requires_grad=True)
            y = t
            for _ in range(steps):
                y = torch.sin(y) * 1.01 + 0.1 * y * y
            y.backward()
            return t.grad.numpy()
        return grad

    return Workload(f"scalar chain: {steps} steps of x = sin(x)*1.01 + 0.1*x*x", (x0,), np_fwd, np_manual, f,
                    refs={"autograd": autograd_fn, "jax_eager": jax_fn(False), "jax_jit": jax_fn(True),
                          "torch": torch_fn})


# ----------------------------------------------------------------------------- measuring


def nabla_fn(w: Workload) -> Callable[..., Any]:
    if w.kind == "hessian":
        compiled = engine.jit(engine.hessian(w.engine_fn))
    else:
        argnums = w.argnums if len(w.argnums) > 1 else w.argnums[0]
        compiled = engine.jit(engine.grad(w.engine_fn, argnums))
    return compiled


def _leaves(tree: Any) -> list[np.ndarray]:
    from engine.tree_util import tree_leaves

    return [np.asarray(x, dtype=np.float64) for x in tree_leaves(tree)]


def agree(a: Any, b: Any) -> bool:
    la, lb = _leaves(a), _leaves(b)
    return len(la) == len(lb) and all(np.allclose(x, y, rtol=1e-6, atol=1e-9) for x, y in zip(la, lb))


def median_us(fn: Callable[[], Any], budget_s: float, min_reps: int = 5) -> float:
    # Calibrate the batch size so each timed sample is about a millisecond or more.
    start = time.perf_counter()
    fn()
    once = max(time.perf_counter() - start, 1e-7)
    inner = max(1, int(1e-3 / once))
    samples = []
    deadline = time.perf_counter() + budget_s
    while len(samples) < min_reps or time.perf_counter() < deadline:
        t0 = time.perf_counter()
        for _ in range(inner):
            fn()
        samples.append((time.perf_counter() - t0) / inner)
        if len(samples) >= 200:
            break
    return statistics.median(samples) * 1e6


def peak_bytes(fn: Callable[[], Any]) -> int:
    gc.collect()
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def available(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def run(workloads: list[Workload], budget_s: float, rounds: int) -> list[dict[str, Any]]:
    rows = []
    for w in workloads:
        engine_args = tuple(_to_engine(a) for a in w.args)
        nabla = nabla_fn(w)
        expected = w.np_manual(*w.args)
        got = nabla(*engine_args)
        if not agree(got, expected) or not agree(nabla(*w.args), expected):
            raise SystemExit(f"{w.name}: nabla's result disagrees with the hand-written gradient")
        columns: dict[str, Callable[[], Any]] = {
            "np_fwd": lambda w=w: w.np_fwd(*w.args),
            "np_manual": lambda w=w: w.np_manual(*w.args),
            "nabla": lambda nabla=nabla, a=engine_args: nabla(*a),
            "nabla_np": lambda nabla=nabla, w=w: nabla(*w.args),
        }
        for ref, make in w.refs.items():
            module = {"autograd": "autograd", "jax_eager": "jax", "jax_jit": "jax", "torch": "torch"}[ref]
            if not available(module):
                continue
            try:
                fn = make()
                if not agree(fn(*w.args), expected):
                    print(f"  note: {ref} disagrees on {w.name}; column left out", file=sys.stderr)
                    continue
                columns[ref] = lambda fn=fn, w=w: fn(*w.args)
            except Exception as e:  # a reference that fails to run is reported, not fatal
                print(f"  note: {ref} failed on {w.name}: {e}", file=sys.stderr)
        # Interleave the columns round by round, so slow phases of the machine hit all of them.
        samples: dict[str, list[float]] = {k: [] for k in columns}
        for _ in range(rounds):
            for key, fn in columns.items():
                samples[key].append(median_us(fn, budget_s / rounds))
        row = {"workload": w.name, **{k: statistics.median(v) for k, v in samples.items()}}
        row["nabla_peak_bytes"] = peak_bytes(columns["nabla"])
        row["np_manual_peak_bytes"] = peak_bytes(columns["np_manual"])
        rows.append(row)
        print(f"  measured {w.name}", file=sys.stderr)
    return rows


def _to_engine(a: Any) -> Any:
    from engine.tree_util import tree_map

    return tree_map(lambda x: jnp.asarray(np.asarray(x), np.float64), a)


COLUMNS = ["np_fwd", "np_manual", "nabla", "nabla_np", "autograd", "jax_eager", "jax_jit", "torch"]


def render(rows: list[dict[str, Any]]) -> str:
    present = [c for c in COLUMNS if any(c in r for r in rows)]
    head = ("| workload | " + " | ".join(present) + " | nabla / np_manual | nabla_np / np_manual | nabla / jax_jit"
            " | nabla / np_fwd | peak MB (nabla / manual) |")
    sep = "|---" * (len(present) + 6) + "|"
    lines = [head, sep]
    for r in rows:
        cells = [f"{r[c]:,.0f}" if c in r else "–" for c in present]
        lines.append(f"| {r['workload']} | " + " | ".join(cells) +
                     f" | {r['nabla'] / r['np_manual']:.2f}x | {r['nabla_np'] / r['np_manual']:.2f}x"
                     f" | {_ratio(r, 'nabla', 'jax_jit')} | {r['nabla'] / r['np_fwd']:.2f}x | "
                     f"{r['nabla_peak_bytes'] / 1e6:.1f} / {r['np_manual_peak_bytes'] / 1e6:.1f} |")
    return "\n".join(lines)


def _ratio(row: dict[str, Any], a: str, b: str) -> str:
    return f"{row[a] / row[b]:.2f}x" if a in row and b in row else "–"


def machine() -> str:
    try:
        from threadpoolctl import threadpool_info

        blas = ", ".join(f"{i['internal_api']} {i.get('version')} ({i['num_threads']} threads)"
                         for i in threadpool_info())
    except ImportError:
        blas = "unknown BLAS"
    return (f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, Python "
            f"{platform.python_version()}, NumPy {np.__version__}, {blas}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="tiny sizes and budgets (a smoke test)")
    parser.add_argument("--budget", type=float, default=2.0, help="seconds of timing per column and workload")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds per workload")
    args = parser.parse_args(argv)
    if args.quick:
        workloads = [tutorial_logreg(), tutorial_logreg(200, 10), mlp(8, (20, 16, 16, 4)), tanh_hessian(10, 5),
                     scalar_chain(20)]
        budget, rounds = 0.05, 1
    else:
        workloads = [tutorial_logreg(), tutorial_logreg(100_000, 100), mlp(), tanh_hessian(), scalar_chain()]
        budget, rounds = args.budget, args.rounds
    print(f"# engine benchmark, {time.strftime('%Y-%m-%d')}, {machine()}")
    print("# median microseconds per call, float64; ratios measured side by side in this run")
    print(render(run(workloads, budget, rounds)))


if __name__ == "__main__":
    main()
