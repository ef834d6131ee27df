"""Derives tests/data/linalg_jax_reference.json with JAX (float64, CPU): for each function of
tests/test_breadth_linalg.py's REFERENCE, its value, gradient and Hessian-vector product.

Run by hand (JAX installed): python tests/data/derive_linalg_reference.py. The test reads the file
and never calls JAX. Two of JAX's spellings differ from the engine's, with the same mathematics:
its eig returns complex arrays (the real part is taken; the eigenvalues here are real) and needs
enable_eigvec_derivs=True for eigenvector derivatives; its svd has no derivative with
full_matrices=True even for a square matrix, whose full and reduced factors are the same.
"""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path

import jax
import jax.numpy as jjnp
import numpy as np

jax.config.update("jax_enable_x64", True)
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from test_breadth_linalg import DATA, REFERENCE, hvp_direction  # noqa: E402


def _eig(a):
    w, v = jax.lax.linalg.eig(a, compute_left_eigenvectors=False, enable_eigvec_derivs=True)
    return jjnp.real(w), jjnp.real(v)


def _svd(a, full_matrices=True, compute_uv=True):
    square = a.shape[-1] == a.shape[-2]
    return jjnp.linalg.svd(a, full_matrices=full_matrices and not square, compute_uv=compute_uv)


linalg = types.SimpleNamespace(**{name: getattr(jjnp.linalg, name) for name in dir(jjnp.linalg)
                                  if not name.startswith("_")})
linalg.eig, linalg.svd = _eig, _svd
lib = types.SimpleNamespace(**{name: getattr(jjnp, name) for name in dir(jjnp) if not name.startswith("_")})
lib.linalg = linalg


def main() -> None:
    out = {}
    for name, (fn, x) in REFERENCE.items():
        f = lambda a, fn=fn: fn(lib, a)  # noqa: E731
        t = hvp_direction(x.shape)
        out[name] = {
            "value": float(f(x)),
            "grad": np.asarray(jax.grad(f)(x)).tolist(),
            "hvp": np.asarray(jax.grad(lambda a, f=f, t=t: jjnp.vdot(jax.grad(f)(a), t))(x)).tolist(),
        }
    DATA.write_text("{\n" + ",\n".join(f"{json.dumps(k)}: {json.dumps(v)}" for k, v in out.items()) + "\n}\n")


if __name__ == "__main__":
    main()
