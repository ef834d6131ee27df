"""Derives the REAL_REFERENCE and COMPLEX_REFERENCE tables of tests/test_breadth_fft.py with JAX
(float64, CPU): each program of that file run through jax.grad, and through jax.jvp of jax.grad
along `direction(x)` (real inputs) or jax.grad of a weighted sum of the gradient's parts
(`second_weights(z)`, complex inputs).

Run by hand (JAX installed): python tests/data/derive_fft_reference.py, and paste its output over
the two tables. The test never calls JAX.
"""

from __future__ import annotations

import sys
from pathlib import Path

import jax
import jax.numpy as jjnp
import numpy as np

jax.config.update("jax_enable_x64", True)
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from test_breadth_fft import complex_programs, direction, real_programs, second_weights  # noqa: E402

np.set_printoptions(precision=17, floatmode="unique", linewidth=100, threshold=10**6)


def _literal(a: object) -> str:
    return "np.array(" + np.array2string(np.asarray(a), separator=", ", max_line_width=100) + ")"


def _weighted_parts(f, a: np.ndarray, b: np.ndarray):
    return lambda z: jjnp.sum(jjnp.real(jax.grad(f)(z)) * a + jjnp.imag(jax.grad(f)(z)) * b)


def main() -> None:
    lines = ["REAL_REFERENCE = {"]
    for name, (f, x) in real_programs(jjnp).items():
        x = jjnp.asarray(x)
        hvp = jax.jvp(jax.grad(f), (x,), (jjnp.asarray(direction(np.asarray(x))),))[1]
        lines.append(f"    {name!r}: ({float(f(x))!r},\n        {_literal(jax.grad(f)(x))},\n        {_literal(hvp)}),")
    lines += ["}", "COMPLEX_REFERENCE = {"]
    for name, (f, z) in complex_programs(jjnp).items():
        z = jjnp.asarray(z)
        a, b = second_weights(np.asarray(z))
        second = jax.grad(_weighted_parts(f, a, b))(z)
        grad = _literal(jax.grad(f)(z))
        lines.append(f"    {name!r}: ({float(f(z))!r},\n        {grad},\n        {_literal(second)}),")
    lines.append("}")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
