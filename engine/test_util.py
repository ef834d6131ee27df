"""Numerical checks of derivatives against finite differences (JAX's check_grads, and a report)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from engine.errors import GradientCheckError
from engine.numpy._base import asarray
from engine.transforms import jvp, vjp
from engine.tree_util import tree_leaves, tree_map

# Default tolerances by dtype, as JAX uses; the step suits the dtype's precision.
_TOLERANCE = {np.dtype("float16"): 1e-1, np.dtype("float32"): 2e-3, np.dtype("float64"): 1e-5}
_STEP = {np.dtype("float16"): 1e-2, np.dtype("float32"): 1e-3, np.dtype("float64"): 1e-4}
_SEED = 0


@dataclass
class CheckResult:
    """One comparison: a derivative of some order and mode against its numerical estimate."""

    order: int
    mode: str  # "fwd" or "rev"
    kind: str  # "jvp" or "vjp"
    max_abs_error: float
    max_rel_error: float
    passed: bool
    atol: float
    rtol: float
    expected: Any = field(default=None, repr=False)
    actual: Any = field(default=None, repr=False)

    def as_dict(self) -> dict[str, Any]:
        return {"order": self.order, "mode": self.mode, "kind": self.kind,
                "max_abs_error": self.max_abs_error, "max_rel_error": self.max_rel_error,
                "atol": self.atol, "rtol": self.rtol, "passed": self.passed}


def _leaves(tree: Any) -> list[np.ndarray]:
    return [np.asarray(x) for x in tree_leaves(tree)]


def _dtype_of(args: Sequence[Any]) -> np.dtype:
    dts = [x.dtype for x in _leaves(args) if x.dtype.kind in "fc"]
    if not dts:
        return np.dtype("float32")
    return max(dts, key=lambda d: d.itemsize)


def _rand_like(rng: np.random.Generator, tree: Any) -> Any:
    def one(x: Any) -> Any:
        a = np.asarray(x)
        if a.dtype.kind not in "fc":
            return asarray(np.zeros(a.shape, a.dtype))
        return asarray(rng.standard_normal(a.shape).astype(a.dtype), a.dtype)

    return tree_map(one, tree)


def _axpy(alpha: float, x: Any, y: Any) -> Any:
    def one(a: Any, b: Any) -> Any:
        b = asarray(b)
        if b.dtype.kind not in "fc":
            return b
        return asarray(np.asarray(b) + np.asarray(alpha * np.asarray(a)).astype(b.dtype), b.dtype)

    return tree_map(one, x, y)


def _vdot(x: Any, y: Any) -> np.ndarray:
    return sum(np.vdot(np.asarray(a, np.float64), np.asarray(b, np.float64)) for a, b in zip(_leaves(x), _leaves(y)))


def _compare(expected: Any, actual: Any, atol: float, rtol: float) -> tuple[float, float, bool]:
    max_abs = 0.0
    max_rel = 0.0
    passed = True
    for e, a in zip(_leaves(expected), _leaves(actual)):
        e = np.asarray(e, np.float64)
        a = np.asarray(a, np.float64)
        if e.shape != a.shape:
            return float("inf"), float("inf"), False
        diff = np.abs(a - e)
        bad_nan = np.isnan(a) != np.isnan(e)
        diff = np.where(np.isnan(a) & np.isnan(e), 0.0, diff)
        if diff.size:
            max_abs = max(max_abs, float(np.max(np.where(bad_nan, np.inf, diff))))
            rel = diff / np.maximum(np.abs(e), np.finfo(np.float64).tiny)
            max_rel = max(max_rel, float(np.max(np.where(bad_nan, np.inf, rel))))
        # Per element, not scaled by the number of outputs (unlike jax-ml/jax#3130).
        if np.any(bad_nan) or np.any(diff > atol + rtol * np.abs(e)):
            passed = False
    return max_abs, max_rel, passed


def _numerical_jvp(f: Callable[..., Any], args: tuple, tangents: tuple, eps: float) -> Any:
    plus = f(*_axpy(eps / 2, tangents, args))
    minus = f(*_axpy(-eps / 2, tangents, args))
    return tree_map(lambda p, m: (np.asarray(p, np.float64) - np.asarray(m, np.float64)) / eps, plus, minus)


def _run_checks(f: Callable[..., Any], args: tuple, order: int, modes: Sequence[str],
                atol: float | None, rtol: float | None, eps: float | None,
                results: list[CheckResult], level: int = 1) -> None:
    dtype = _dtype_of(args)
    tol_a = atol if atol is not None else _TOLERANCE.get(dtype, 1e-5)
    tol_r = rtol if rtol is not None else _TOLERANCE.get(dtype, 1e-5)
    step = eps if eps is not None else _STEP.get(dtype, 1e-4)
    rng = np.random.default_rng(_SEED + level)
    for mode in modes:
        if mode == "fwd":
            tangents = tuple(_rand_like(rng, a) for a in args)
            _, analytic = jvp(f, args, tangents)
            numeric = _numerical_jvp(f, args, tangents, step)
            results.append(CheckResult(level, "fwd", "jvp", *_compare(numeric, analytic, tol_a, tol_r),
                                       tol_a, tol_r, numeric, analytic))
            if order > 1:
                def pushed(*a: Any, tangents: tuple = tangents) -> Any:
                    return jvp(f, a, tangents)[1]

                _run_checks(pushed, args, order - 1, ("fwd",), atol, rtol, eps, results, level + 1)
        elif mode == "rev":
            out, pullback = vjp(f, *args)
            cotangent = _rand_like(rng, out)
            tangents = tuple(_rand_like(rng, a) for a in args)
            grads = pullback(cotangent)
            # <ct, J t> computed numerically must equal <J^T ct, t> from the VJP.
            numeric = _vdot(cotangent, _numerical_jvp(f, args, tangents, step))
            analytic = _vdot(grads, tangents)
            results.append(CheckResult(level, "rev", "vjp",
                                       *_compare(np.asarray(numeric), np.asarray(analytic), tol_a, tol_r),
                                       tol_a, tol_r, numeric, analytic))
            if order > 1:
                def pulled(*a: Any, cotangent: Any = cotangent) -> Any:
                    return vjp(f, *a)[1](cotangent)

                _run_checks(pulled, args, order - 1, ("rev",), atol, rtol, eps, results, level + 1)
        else:
            raise ValueError(f"unknown mode {mode!r}: modes are 'fwd' and 'rev'")


def check_gradients(f: Callable[..., Any], args: Sequence[Any], order: int = 1,
                    modes: Sequence[str] = ("fwd", "rev"), atol: float | None = None,
                    rtol: float | None = None, eps: float | None = None) -> list[CheckResult]:
    """Compare derivatives up to `order` with central differences; return every comparison."""
    if order < 1:
        raise ValueError(f"order must be at least 1, got {order}")
    if isinstance(modes, str):
        modes = (modes,)
    results: list[CheckResult] = []
    _run_checks(f, tuple(args), order, tuple(modes), atol, rtol, eps, results)
    return results


def check_grads(f: Callable[..., Any], args: Sequence[Any], order: int,
                modes: Sequence[str] = ("fwd", "rev"), atol: float | None = None,
                rtol: float | None = None, eps: float | None = None) -> None:
    """Raise GradientCheckError unless every derivative up to `order` matches finite differences."""
    for r in check_gradients(f, args, order, modes, atol, rtol, eps):
        if not r.passed:
            raise GradientCheckError(
                f"check_grads failed: the order-{r.order} {r.kind.upper()} ({r.mode} mode) disagrees "
                f"with central finite differences.\n  expected (numerical): {r.expected}\n"
                f"  actual (autodiff):    {r.actual}\n  largest absolute error {r.max_abs_error:.3g}, "
                f"relative {r.max_rel_error:.3g}; tolerances atol={r.atol:g}, rtol={r.rtol:g}"
            )
