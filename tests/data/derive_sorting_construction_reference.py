"""Derive JAX_REFERENCE of tests/test_breadth_sorting_construction.py (needs JAX; the tests do not).

Runs the test module's CASES with jax.numpy (float64) in place of engine.numpy and prints the
value, gradient and Hessian-vector product of each, to paste into the test module:

    python tests/data/derive_sorting_construction_reference.py
"""

from __future__ import annotations

import importlib.util
import sys
import types
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

jax.config.update("jax_enable_x64", True)
TESTS = Path(__file__).resolve().parents[1]


def _load_cases() -> types.ModuleType:
    spec = importlib.util.spec_from_file_location("sorting_cases", TESTS / "test_breadth_sorting_construction.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class _JaxNumpy:
    """jax.numpy, plus NumPy's row_stack (vstack), which JAX no longer has."""

    row_stack = staticmethod(jnp.vstack)

    def __getattr__(self, name: str):
        return getattr(jnp, name)


def main() -> None:
    cases = _load_cases()
    m = _JaxNumpy()
    for name, (shape, f) in cases.CASES.items():
        x, v = cases.point(shape), cases.direction(shape)

        def fn(y, f=f):
            return f(m, y)

        grad = np.asarray(jax.grad(fn)(x)).ravel()
        hvp = np.asarray(jax.jvp(jax.grad(fn), (x,), (v,))[1]).ravel()
        print(f"    {name!r}: ({float(fn(x))!r}, {grad.tolist()!r}, {hvp.tolist()!r}),")


if __name__ == "__main__":
    sys.exit(main())
