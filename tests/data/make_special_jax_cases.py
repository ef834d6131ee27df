"""Writes special_jax_cases.json: values, gradients and Hessians of jax.scipy.special and
jax.scipy.stats functions in float64, the references of tests/test_breadth_special.py.

Where JAX's float64 numbers are themselves inaccurate (betaln of large arguments and its second
derivatives, log_ndtr's derivatives in the far left tail) the file also holds references
computed by mpmath with 40 significant digits ("high_precision"), and SciPy's erfcinv (which
jax.scipy.special lacks). Run with the dev dependencies installed:
python tests/data/make_special_jax_cases.py
"""

from __future__ import annotations

import json
from pathlib import Path

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import jax.scipy.special as S  # noqa: E402
import jax.scipy.stats as T  # noqa: E402

# name -> (function of scalars, argnums differentiated, points)
CASES = {
    "gammaln": (S.gammaln, (0,), [[0.3], [1.5], [2.0], [7.25], [31.0], [-0.5], [-2.7]]),
    "digamma": (S.digamma, (0,), [[0.3], [1.4616321449683622], [2.5], [12.0], [-0.5], [-3.2]]),
    "polygamma1": (lambda x: S.polygamma(1, x), (0,), [[0.3], [2.5], [15.0], [-1.5]]),
    "polygamma3": (lambda x: S.polygamma(3, x), (0,), [[0.7], [4.0], [25.0], [-0.25]]),
    "gamma": (S.gamma, (0,), [[0.3], [1.5], [4.5], [-0.5], [-1.5], [-2.25]]),
    "beta": (S.beta, (0, 1), [[0.5, 0.5], [2.0, 3.5], [1.3, 7.0], [-1.5, 2.5]]),
    "betaln": (S.betaln, (0, 1), [[0.5, 0.5], [2.0, 3.5], [10.0, 20.0]]),
    "erfc": (S.erfc, (0,), [[-2.0], [0.0], [0.7], [3.0], [9.0]]),
    "erfinv": (S.erfinv, (0,), [[-0.9], [-0.2], [1e-3], [0.5], [0.999]]),
    "xlogy": (S.xlogy, (0, 1), [[0.5, 2.0], [3.0, 0.25], [-1.5, 4.0], [0.0, 2.0]]),
    "xlog1py": (S.xlog1py, (0, 1), [[0.5, 2.0], [3.0, -0.25], [-1.5, 1e-3], [0.0, 2.0]]),
    "entr": (S.entr, (0,), [[0.1], [0.5], [1.0], [4.0]]),
    "i0": (S.i0, (0,), [[-3.0], [0.25], [1.0], [12.0], [30.0]]),
    "i1": (S.i1, (0,), [[-3.0], [0.25], [1.0], [12.0], [30.0]]),
    "i0e": (S.i0e, (0,), [[-3.0], [0.25], [1.0], [12.0], [30.0], [250.0]]),
    "i1e": (S.i1e, (0,), [[-3.0], [0.25], [1.0], [12.0], [30.0], [250.0]]),
    "ndtr": (S.ndtr, (0,), [[-6.0], [-1.0], [0.0], [0.5], [3.0]]),
    "ndtri": (S.ndtri, (0,), [[1e-10], [0.025], [0.3], [0.5], [0.9], [0.999]]),
    "log_ndtr": (S.log_ndtr, (0,), [[-30.0], [-8.0], [-1.0], [0.0], [2.0], [10.0]]),
    "gammainc": (S.gammainc, (1,), [[0.5, 0.2], [1.5, 2.0], [3.0, 1.0], [3.0, 7.0], [20.0, 25.0]]),
    "gammaincc": (S.gammaincc, (1,), [[0.5, 0.2], [1.5, 2.0], [3.0, 1.0], [3.0, 7.0], [20.0, 25.0]]),
    "multigammaln3": (lambda a: S.multigammaln(a, 3), (0,), [[1.25], [2.5], [10.0]]),
    "norm.logpdf": (T.norm.logpdf, (0, 1, 2), [[0.3, -0.2, 1.5], [-2.0, 1.0, 0.5]]),
    "norm.pdf": (T.norm.pdf, (0, 1, 2), [[0.3, -0.2, 1.5]]),
    "norm.cdf": (T.norm.cdf, (0, 1, 2), [[0.3, -0.2, 1.5], [-7.0, 0.0, 1.0]]),
    "norm.logcdf": (T.norm.logcdf, (0, 1, 2), [[0.3, -0.2, 1.5], [-25.0, 0.0, 1.0]]),
    "norm.ppf": (T.norm.ppf, (0, 1, 2), [[0.3, -0.2, 1.5], [0.99, 1.0, 2.0]]),
    "t.logpdf": (T.t.logpdf, (0, 1, 2, 3), [[0.3, 3.0, -0.2, 1.5], [-2.0, 7.5, 0.0, 1.0]]),
    "t.pdf": (T.t.pdf, (0, 1, 2, 3), [[0.3, 3.0, -0.2, 1.5]]),
    "gamma.logpdf": (T.gamma.logpdf, (0, 1, 2, 3), [[2.0, 2.5, 0.0, 1.0], [3.0, 0.7, 0.5, 2.0]]),
    "gamma.pdf": (T.gamma.pdf, (0, 1, 2, 3), [[2.0, 2.5, 0.0, 1.0]]),
    "beta.logpdf": (T.beta.logpdf, (0, 1, 2, 3, 4), [[0.3, 2.0, 3.0, 0.0, 1.0], [1.2, 0.7, 1.5, 1.0, 0.5]]),
    "beta.pdf": (T.beta.pdf, (0, 1, 2, 3, 4), [[0.3, 2.0, 3.0, 0.0, 1.0]]),
    "poisson.logpmf": (T.poisson.logpmf, (1,), [[3.0, 2.5, 0.0], [0.0, 0.5, 0.0], [7.0, 4.0, 2.0]]),
    "poisson.pmf": (T.poisson.pmf, (1,), [[3.0, 2.5, 0.0]]),
}


def scalar_case(fn, argnums, points):
    rows = []
    for point in points:
        args = [jnp.float64(v) for v in point]
        value = fn(*args)
        grad = jax.grad(fn, argnums)(*args)
        hess = jax.hessian(fn, argnums)(*args)
        rows.append({"args": point, "value": float(value), "grad": [float(g) for g in grad],
                     "hessian": [[float(h) for h in row] for row in hess]})
    return {"argnums": list(argnums), "rows": rows}


def multivariate_normal_case():
    x = jnp.array([[0.3, -1.2, 0.5], [1.0, 0.0, -0.4]])
    mean = jnp.array([0.1, -0.5, 0.2])
    m = jnp.array([[1.0, 0.3, -0.2], [0.1, 0.8, 0.4], [-0.3, 0.2, 1.2]])
    cov = m @ m.T + 0.5 * jnp.eye(3)

    def total(x, mean, cov):
        return jnp.sum(T.multivariate_normal.logpdf(x, mean, cov))

    grads = jax.grad(total, (0, 1, 2))(x, mean, cov)
    hess_mean = jax.hessian(total, 1)(x, mean, cov)
    return {"x": x.tolist(), "mean": mean.tolist(), "cov": cov.tolist(),
            "value": T.multivariate_normal.logpdf(x, mean, cov).tolist(),
            "scalar_cov_value": T.multivariate_normal.logpdf(x, mean, 0.7).tolist(),
            "univariate_value": T.multivariate_normal.logpdf(jnp.array([0.3, -1.0]), 0.2, 1.7).tolist(),
            "grad_x": grads[0].tolist(), "grad_mean": grads[1].tolist(), "grad_cov": grads[2].tolist(),
            "hessian_mean": hess_mean.tolist()}


def high_precision_cases():
    import mpmath as mp

    mp.mp.dps = 40

    def rows(fn, points):
        out = []
        for point in points:
            n = len(point)
            unit = [tuple(int(i == j) for j in range(n)) for i in range(n)]
            grad = [mp.diff(fn, point, unit[i]) for i in range(n)]
            hess = [[mp.diff(fn, point, tuple(a + b for a, b in zip(unit[i], unit[j]))) for j in range(n)]
                    for i in range(n)]
            out.append({"args": point, "value": float(fn(*point)), "grad": [float(g) for g in grad],
                        "hessian": [[float(h) for h in row] for row in hess]})
        return out

    return {
        "betaln": rows(lambda a, b: mp.log(mp.beta(a, b)), [[0.5, 0.5], [2.0, 3.5], [10.0, 20.0]]),
        "beta": rows(lambda a, b: mp.beta(a, b), [[0.5, 0.5], [2.0, 3.5], [1.3, 7.0]]),
        "log_ndtr": rows(lambda x: mp.log(mp.ncdf(x)), [[-30.0], [-8.0], [2.0], [10.0]]),
    }


def erfcinv_cases():
    import numpy as np
    import scipy.special

    z = np.array([1e-300, 1e-20, 1e-3, 0.3, 0.5, 0.9, 1.0, 1.0 + 1e-12, 1.4, 1.7, 2.0 - 1e-10, 2.0])
    return {"z": z.tolist(), "value": scipy.special.erfcinv(z).tolist()}


def main() -> None:
    out = {"jax_version": jax.__version__,
           "high_precision": high_precision_cases(),
           "erfcinv_scipy": erfcinv_cases(),
           "scalar": {name: scalar_case(*spec) for name, spec in CASES.items()},
           "multivariate_normal": multivariate_normal_case()}
    path = Path(__file__).with_name("special_jax_cases.json")
    path.write_text(json.dumps(out, indent=1) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
