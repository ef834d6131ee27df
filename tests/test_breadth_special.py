"""engine.scipy.special and engine.scipy.stats (issue 15): values and derivatives to any order.

References: float64 values, gradients and Hessians computed by JAX (tests/data/special_jax_cases.json,
written by tests/data/make_special_jax_cases.py), 40-digit mpmath numbers where JAX's own float64
numbers are inaccurate, SciPy's erfcinv (jax.scipy.special has none), the closed forms that tie
the family together (gammaln' = digamma, digamma' = polygamma(1, .), i0' = i1, ...), and central
finite differences (check_grads). Then jit against eager, vmap against a loop, the conventions at
poles and non-differentiable points, and the refusals (tests/service/test_special_http.py sends
some through the service).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import engine
import engine as jax
import engine.numpy as jnp
import engine.scipy.special as S
import engine.scipy.stats as T
from engine.errors import DifferentiationError, DtypeError, ShapeError
from engine.limits import LimitExceeded
from engine.primitives_special import igamma_p, lgamma_p, polygamma_p
from engine.serialize import load_graph
from engine.test_util import check_grads

REFERENCES = json.loads((Path(__file__).parent / "data" / "special_jax_cases.json").read_text(encoding="utf-8"))


pytestmark = pytest.mark.usefixtures("x64")  # every test computes in float64 (tests/conftest.py)


FUNCTIONS: dict[str, Callable[..., Any]] = {
    "gammaln": S.gammaln, "digamma": S.digamma, "polygamma1": lambda x: S.polygamma(1, x),
    "polygamma3": lambda x: S.polygamma(3, x), "gamma": S.gamma, "beta": S.beta, "betaln": S.betaln,
    "erfc": S.erfc, "erfinv": S.erfinv, "xlogy": S.xlogy, "xlog1py": S.xlog1py, "entr": S.entr, "i0": S.i0,
    "i1": S.i1, "i0e": S.i0e, "i1e": S.i1e, "ndtr": S.ndtr, "ndtri": S.ndtri, "log_ndtr": S.log_ndtr,
    "gammainc": S.gammainc, "gammaincc": S.gammaincc, "multigammaln3": lambda a: S.multigammaln(a, 3),
    "norm.logpdf": T.norm.logpdf, "norm.pdf": T.norm.pdf, "norm.cdf": T.norm.cdf, "norm.logcdf": T.norm.logcdf,
    "norm.ppf": T.norm.ppf, "t.logpdf": T.t.logpdf, "t.pdf": T.t.pdf, "gamma.logpdf": T.gamma.logpdf,
    "gamma.pdf": T.gamma.pdf, "beta.logpdf": T.beta.logpdf, "beta.pdf": T.beta.pdf,
    "poisson.logpmf": T.poisson.logpmf, "poisson.pmf": T.poisson.pmf,
}

# Where JAX's float64 numbers are not accurate to 1e-12 (each confirmed against mpmath, whose
# numbers the high-precision test below checks tightly): its betaln of large arguments uses a
# different algorithm (4e-9 off at (10, 20)) whose second derivatives are wrong even at (0.5, 0.5)
# (all four entries 0.822 where trigamma gives 3.29 and -1.64); its log_ndtr's derivatives lose
# digits in the far left tail (2e-12 relative in its value at -25, 1.4e-7 in its second derivative
# at -30).
JAX_INACCURATE: dict[str, dict[str, float | None]] = {
    "betaln": {"value": 1e-8, "grad": 1e-7, "hessian": None},
    "beta": {"hessian": None},
    "log_ndtr": {"value": 1e-11, "grad": 1e-9, "hessian": 1e-6},
    "norm.logcdf": {"value": 1e-11, "grad": 1e-9, "hessian": 1e-6},
}
RTOL = {"value": 1e-12, "grad": 1e-11, "hessian": 1e-11}


def _scalar_rows() -> list[Any]:
    return [pytest.param(name, row, id=f"{name}{row['args']}")
            for name, case in REFERENCES["scalar"].items() for row in case["rows"]]


def _evaluate(fn: Callable[..., Any], argnums: tuple[int, ...], args: list[float]) -> dict[str, np.ndarray]:
    values = [np.float64(a) for a in args]
    return {"value": np.asarray(fn(*values)),
            "grad": np.asarray(jax.grad(fn, argnums)(*values)),
            "hessian": np.asarray(jax.hessian(fn, argnums)(*values))}


@pytest.mark.parametrize("name, row", _scalar_rows())
def test_values_and_two_derivatives_match_jax(name: str, row: dict[str, Any]) -> None:
    argnums = tuple(REFERENCES["scalar"][name]["argnums"])
    got = _evaluate(FUNCTIONS[name], argnums, row["args"])
    for kind in ("value", "grad", "hessian"):
        rtol = JAX_INACCURATE.get(name, {}).get(kind, RTOL[kind])
        if rtol is None:
            continue
        np.testing.assert_allclose(got[kind], row[kind], rtol=rtol, atol=1e-14, err_msg=f"{name} {kind}")


@pytest.mark.parametrize("name", sorted(REFERENCES["high_precision"]))
def test_values_and_two_derivatives_match_high_precision_references(name: str) -> None:
    for row in REFERENCES["high_precision"][name]:
        argnums = tuple(range(len(row["args"])))
        got = _evaluate(FUNCTIONS[name], argnums, row["args"])
        for kind in ("value", "grad", "hessian"):
            # log_ndtr'' = -m (x + m) with m = log_ndtr' ~ -x in the left tail: the sum cancels
            # (at -30, 30 - 30.03), which costs its last three digits.
            rtol = 1e-10 if (name, kind) == ("log_ndtr", "hessian") else 1e-12
            np.testing.assert_allclose(got[kind], row[kind], rtol=rtol, atol=1e-15, err_msg=f"{name} {row['args']}")


def test_erfcinv_matches_scipy_and_its_derivative_is_the_inverse_functions():
    z = np.asarray(REFERENCES["erfcinv_scipy"]["z"])
    np.testing.assert_allclose(S.erfcinv(z), REFERENCES["erfcinv_scipy"]["value"], rtol=1e-13, atol=0)
    inner = np.array([0.3, 0.9, 1.4, 1.7])
    x = S.erfcinv(inner)
    # (erfc^-1)'(z) = -1 / erfc'(x) = -sqrt(pi)/2 exp(x^2); and its derivative again
    np.testing.assert_allclose(jax.vmap(jax.grad(S.erfcinv))(inner), -math.sqrt(math.pi) / 2 * np.exp(x * x),
                               rtol=1e-13)
    np.testing.assert_allclose(jax.vmap(jax.grad(jax.grad(S.erfcinv)))(inner),
                               math.pi / 2 * x * np.exp(2 * x * x), rtol=1e-12)


# ----------------------------------------------------------------------------- closed forms


def _nth_derivative(fn: Callable[[Any], Any], n: int) -> Callable[[Any], Any]:
    for _ in range(n):
        fn = jax.grad(fn)
    return fn


@pytest.mark.parametrize("x", [0.3, 2.5, 11.0, -1.7])
def test_derivatives_of_gammaln_are_the_polygamma_functions_at_every_order(x: float) -> None:
    assert float(_nth_derivative(S.gammaln, 1)(x)) == pytest.approx(float(S.digamma(x)), rel=1e-14)
    for n in range(1, 5):
        expected = float(S.polygamma(n - 1, x))
        assert float(_nth_derivative(S.gammaln, n)(x)) == pytest.approx(expected, rel=1e-13), n
        assert float(_nth_derivative(lambda v, k=n - 1: S.polygamma(k, v), 1)(x)) == pytest.approx(
            float(S.polygamma(n, x)), rel=1e-13)


def test_polygamma_matches_its_series_definition() -> None:
    # psi^(n)(x) = (-1)^(n+1) n! sum_k 1 / (x + k)^(n+1); the tail past 10^6 terms is below 1e-13.
    x = 1.75
    for n in (1, 2, 4):
        k = np.arange(1_000_000, dtype=np.float64)
        series = (-1) ** (n + 1) * math.factorial(n) * np.sum(1.0 / (x + k) ** (n + 1))
        tail = (-1) ** (n + 1) * math.factorial(n) / (n * (x + 1_000_000) ** n)
        assert float(S.polygamma(n, x)) == pytest.approx(series + tail, rel=1e-12)
    assert float(S.digamma(1.0)) == pytest.approx(-0.5772156649015329, rel=1e-15)  # -Euler's gamma
    assert float(S.polygamma(1, 1.0)) == pytest.approx(math.pi ** 2 / 6, rel=1e-15)


def test_bessel_functions_differentiate_into_each_other() -> None:
    x = np.array([-4.0, -0.3, 0.7, 5.0, 25.0])
    np.testing.assert_allclose(jax.vmap(jax.grad(S.i0))(x), S.i1(x), rtol=1e-14)
    np.testing.assert_allclose(jax.vmap(jax.grad(S.i1))(x), S.i0(x) - S.i1(x) / x, rtol=1e-13)
    # I0'' = I1' = I0 - I1 / x, and I0 solves x y'' + y' - x y = 0
    d2 = jax.vmap(jax.grad(jax.grad(S.i0)))(x)
    np.testing.assert_allclose(x * d2 + S.i1(x) - x * S.i0(x), 0.0, atol=1e-12 * np.max(S.i0(x)))
    np.testing.assert_allclose(S.i0e(x), np.exp(-np.abs(x)) * S.i0(x), rtol=1e-14)
    np.testing.assert_allclose(S.i1e(x), np.exp(-np.abs(x)) * S.i1(x), rtol=1e-14)
    np.testing.assert_allclose(jax.vmap(jax.grad(S.i0e))(x), S.i1e(x) - np.sign(x) * S.i0e(x), rtol=1e-13)
    np.testing.assert_allclose(S.i0(np.array([0.0, 1.0])), [1.0, 1.2660658777520082], rtol=1e-15)


def test_normal_functions_invert_and_differentiate_into_each_other() -> None:
    x = np.array([-12.0, -3.0, -0.5, 0.0, 1.5, 6.0])
    # (not at 6, where ndtr is 1 - 1e-9 and rounding it costs ndtri eight digits)
    np.testing.assert_allclose(S.ndtri(S.ndtr(x[:-1])), x[:-1], rtol=1e-13, atol=1e-15)
    np.testing.assert_allclose(jax.vmap(jax.grad(S.ndtr))(x), T.norm.pdf(x), rtol=1e-14)
    np.testing.assert_allclose(jax.vmap(jax.grad(S.log_ndtr))(x), T.norm.pdf(x) / S.ndtr(x), rtol=1e-13)
    y = np.array([-0.99, -0.3, 1e-8, 0.6, 0.999999])
    np.testing.assert_allclose(S.erf(S.erfinv(y)), y, rtol=1e-15)
    np.testing.assert_allclose(jax.vmap(jax.grad(S.erfinv))(y) * (2 / math.sqrt(math.pi))
                               * np.exp(-np.asarray(S.erfinv(y)) ** 2), 1.0, rtol=1e-14)
    np.testing.assert_allclose(S.erfc(np.array([0.5, 10.0])), [1 - math.erf(0.5), math.erfc(10.0)], rtol=1e-15)
    # far in the left tail, where ndtr underflows, log_ndtr and its derivative stay finite
    # (references: mpmath, 40 digits)
    assert float(S.log_ndtr(-100.0)) == pytest.approx(-5005.524208694205, rel=1e-15)
    assert float(jax.grad(S.log_ndtr)(-100.0)) == pytest.approx(100.00999800099926, rel=1e-11)


def test_incomplete_gamma_has_closed_forms_at_integer_shapes() -> None:
    x = np.array([0.1, 1.0, 4.0, 30.0])
    # P(1, x) = 1 - e^-x; P(2, x) = 1 - (1 + x) e^-x; P(1/2, x) = erf(sqrt x)
    np.testing.assert_allclose(S.gammainc(1.0, x), -np.expm1(-x), rtol=1e-14)
    np.testing.assert_allclose(S.gammaincc(2.0, x), (1 + x) * np.exp(-x), rtol=1e-13)
    np.testing.assert_allclose(S.gammainc(0.5, x), [math.erf(math.sqrt(v)) for v in x], rtol=1e-14)
    np.testing.assert_allclose(S.gammainc(3.0, x) + S.gammaincc(3.0, x), 1.0, rtol=1e-15)
    # d/dx P(a, x) = x^(a-1) e^-x / Gamma(a), and its derivative
    a = 2.5
    density = x ** (a - 1) * np.exp(-x) / math.gamma(a)
    np.testing.assert_allclose(jax.vmap(jax.grad(S.gammainc, 1), (None, 0))(a, x), density, rtol=1e-13)
    np.testing.assert_allclose(jax.vmap(jax.grad(jax.grad(S.gammaincc, 1), 1), (None, 0))(a, x),
                               -density * ((a - 1) / x - 1), rtol=1e-12)


def test_gamma_beta_and_multigammaln_closed_forms() -> None:
    x = np.array([0.5, 3.0, 6.5, -0.5, -2.5])
    np.testing.assert_allclose(S.gamma(x), [math.gamma(v) for v in x], rtol=1e-14)
    np.testing.assert_allclose(S.gammaln(x), [math.lgamma(v) for v in x], rtol=1e-15)
    assert float(S.beta(2.0, 3.0)) == pytest.approx(1 / 12, rel=1e-14)
    assert float(S.betaln(0.5, 0.5)) == pytest.approx(math.log(math.pi), rel=1e-15)
    # Gamma_2(a) = sqrt(pi) Gamma(a) Gamma(a - 1/2)
    assert float(S.multigammaln(3.0, 2)) == pytest.approx(
        0.5 * math.log(math.pi) + math.lgamma(3.0) + math.lgamma(2.5), rel=1e-15)


def test_logarithmic_products() -> None:
    assert float(S.xlogy(2.0, 3.0)) == pytest.approx(2 * math.log(3.0), rel=1e-15)
    assert float(S.xlog1py(2.0, 1e-10)) == pytest.approx(2e-10, rel=1e-9)
    np.testing.assert_array_equal(S.xlogy(np.zeros(4), np.array([0.0, 2.0, np.inf, -1.0])), 0.0)
    np.testing.assert_array_equal(S.xlog1py(np.zeros(3), np.array([-1.0, 2.0, -3.0])), 0.0)
    np.testing.assert_array_equal(S.entr(np.array([0.0, -1.0])), [0.0, -np.inf])
    assert float(S.entr(0.5)) == pytest.approx(0.5 * math.log(2.0), rel=1e-15)


def test_multivariate_normal_matches_jax() -> None:
    ref = REFERENCES["multivariate_normal"]
    x, mean, cov = (np.asarray(ref[k]) for k in ("x", "mean", "cov"))
    np.testing.assert_allclose(T.multivariate_normal.logpdf(x, mean, cov), ref["value"], rtol=1e-13)
    np.testing.assert_allclose(T.multivariate_normal.pdf(x, mean, cov), np.exp(ref["value"]), rtol=1e-13)
    np.testing.assert_allclose(T.multivariate_normal.logpdf(x, mean, 0.7), ref["scalar_cov_value"], rtol=1e-13)
    np.testing.assert_allclose(T.multivariate_normal.logpdf(np.array([0.3, -1.0]), 0.2, 1.7), ref["univariate_value"],
                               rtol=1e-13)

    def total(x, mean, cov):
        return jnp.sum(T.multivariate_normal.logpdf(x, mean, cov))

    grads = jax.grad(total, (0, 1, 2))(x, mean, cov)
    np.testing.assert_allclose(grads[0], ref["grad_x"], rtol=1e-12)
    np.testing.assert_allclose(grads[1], ref["grad_mean"], rtol=1e-12)
    # The Cholesky rule symmetrises the covariance's cotangent, as JAX's does.
    np.testing.assert_allclose(grads[2], ref["grad_cov"], rtol=1e-11, atol=1e-13)
    np.testing.assert_allclose(jax.hessian(total, 1)(x, mean, cov), ref["hessian_mean"], rtol=1e-12)
    with pytest.raises(ShapeError, match="covariance of shape"):
        T.multivariate_normal.logpdf(x, mean, np.eye(2))


def test_distributions_outside_their_support_are_minus_infinity() -> None:
    np.testing.assert_array_equal(T.poisson.logpmf(np.array([2.5, -1.0]), 2.0), -np.inf)
    assert float(T.poisson.pmf(0.0, 2.0)) == pytest.approx(math.exp(-2.0), rel=1e-15)
    assert float(T.gamma.logpdf(-1.0, 2.0)) == -np.inf
    np.testing.assert_array_equal(T.beta.logpdf(np.array([-0.1, 1.5]), 2.0, 3.0), -np.inf)
    assert float(T.norm.ppf(0.975)) == pytest.approx(1.959963984540054, rel=1e-14)


# ----------------------------------------------------------------------------- finite differences

# (function, arguments inside its domain, away from poles and kinks)
FD_CASES: dict[str, tuple[Callable[..., Any], tuple[np.ndarray, ...]]] = {
    "gammaln": (S.gammaln, (np.array([0.4, 1.7, 6.0, -1.5]),)),
    "digamma": (S.digamma, (np.array([0.4, 1.7, 6.0, -1.5]),)),
    "polygamma2": (lambda x: S.polygamma(2, x), (np.array([0.6, 3.0, 12.0]),)),
    "gamma": (S.gamma, (np.array([0.6, 2.2, -0.4]),)),
    "beta": (S.beta, (np.array([0.7, 2.0]), np.array([1.5, 3.0]))),
    "betaln": (S.betaln, (np.array([0.7, 2.0]), np.array([1.5, 3.0]))),
    "erfc": (S.erfc, (np.array([-1.5, 0.2, 2.0]),)),
    "erfinv": (S.erfinv, (np.array([-0.8, 0.1, 0.6]),)),
    "erfcinv": (S.erfcinv, (np.array([0.2, 0.9, 1.3, 1.8]),)),
    "xlogy": (S.xlogy, (np.array([0.5, -2.0]), np.array([1.5, 3.0]))),
    "xlog1py": (S.xlog1py, (np.array([0.5, -2.0]), np.array([0.5, -0.3]))),
    "entr": (S.entr, (np.array([0.2, 1.5]),)),
    "i0": (S.i0, (np.array([-2.0, 0.5, 3.0]),)),
    "i1": (S.i1, (np.array([-2.0, 0.5, 3.0]),)),
    "i0e": (S.i0e, (np.array([-2.0, 0.5, 25.0]),)),
    "i1e": (S.i1e, (np.array([-2.0, 0.5, 25.0]),)),
    "ndtr": (S.ndtr, (np.array([-2.0, 0.3, 1.0]),)),
    "ndtri": (S.ndtri, (np.array([0.05, 0.4, 0.8]),)),
    "log_ndtr": (S.log_ndtr, (np.array([-25.0, -3.0, 0.3, 4.0]),)),
    "gammainc": (lambda x: S.gammainc(np.array([0.8, 2.5, 4.0]), x), (np.array([0.5, 3.0, 2.0]),)),
    "gammaincc": (lambda x: S.gammaincc(np.array([0.8, 2.5, 4.0]), x), (np.array([0.5, 3.0, 2.0]),)),
    "multigammaln": (lambda a: S.multigammaln(a, 4), (np.array([2.0, 5.5]),)),
    "norm.logpdf": (T.norm.logpdf, (np.array([0.3, -1.0]), np.array(0.2), np.array(1.4))),
    "t.logpdf": (T.t.logpdf, (np.array([0.3, -1.0]), np.array(4.5), np.array(0.1), np.array(1.2))),
    "gamma.logpdf": (T.gamma.logpdf, (np.array([0.7, 3.0]), np.array(2.5))),
    "beta.logpdf": (T.beta.logpdf, (np.array([0.2, 0.7]), np.array(2.5), np.array(1.5))),
    "poisson.logpmf": (lambda mu: T.poisson.logpmf(np.array([0.0, 3.0]), mu), (np.array([0.5, 4.0]),)),
    "multivariate_normal.logpdf": (
        lambda x, mean: T.multivariate_normal.logpdf(x, mean, np.array([[2.0, 0.3], [0.3, 1.0]])),
        (np.array([[0.3, -1.0], [1.0, 0.5]]), np.array([0.1, 0.2]))),
}


@pytest.mark.parametrize("name", sorted(FD_CASES))
def test_first_and_second_derivatives_match_finite_differences(name: str) -> None:
    fn, args = FD_CASES[name]
    check_grads(fn, args, order=2, modes=("fwd", "rev"))


# ----------------------------------------------------------------------------- transformations


@pytest.mark.parametrize("name", sorted(FD_CASES))
def test_jit_agrees_with_eager_evaluation_and_vmap_with_a_loop(name: str) -> None:
    fn, args = FD_CASES[name]

    def loss(*a: Any) -> Any:
        return jnp.sum(fn(*a))

    np.testing.assert_allclose(jax.jit(fn)(*args), fn(*args), rtol=1e-15)
    np.testing.assert_allclose(jax.jit(jax.grad(loss))(*args), jax.grad(loss)(*args), rtol=1e-14)
    np.testing.assert_allclose(jax.jit(jax.hessian(loss))(*args), jax.hessian(loss)(*args), rtol=1e-13)
    batch = np.stack([args[0], args[0] * 1.01])  # the first argument batched, the others shared
    in_axes = (0,) + (None,) * (len(args) - 1)
    looped = [fn(b, *args[1:]) for b in batch]
    np.testing.assert_allclose(jax.vmap(fn, in_axes)(batch, *args[1:]), looped, rtol=1e-14)
    grads = [jax.grad(loss)(b, *args[1:]) for b in batch]
    np.testing.assert_allclose(jax.vmap(jax.grad(loss), in_axes)(batch, *args[1:]), grads, rtol=1e-13)


def test_float32_operands_give_float32_results_close_to_float64() -> None:
    x = np.array([0.3, 1.5, 4.0], dtype=np.float32)
    for fn in (S.gammaln, S.digamma, S.erfc, S.i0e, S.ndtr, S.log_ndtr):
        out = fn(x)
        assert out.dtype == np.float32
        np.testing.assert_allclose(out, fn(x.astype(np.float64)), rtol=2e-6, atol=1e-7)
    assert S.polygamma(1, x).dtype == np.float32 and S.gammainc(np.float32(2.0), x).dtype == np.float32


def test_without_x64_second_derivatives_stay_float32() -> None:
    functions = [S.gammaln, S.digamma, S.i0, S.i1, S.i0e, S.i1e, S.log_ndtr, S.ndtri, S.erfinv, S.erfcinv, S.entr,
                 lambda v: S.polygamma(2, v), lambda v: S.gammaincc(2.0, v), lambda v: S.xlogy(v, v),
                 lambda v: T.t.logpdf(v, 3.0), lambda v: S.multigammaln(v + 2, 2)]
    x = np.array([0.11, 0.4, 0.9], dtype=np.float32)
    engine.config.update("jax_enable_x64", False)
    try:
        for fn in functions:
            second = jax.vmap(jax.grad(jax.grad(fn)))(x)
            assert second.dtype == np.float32
            engine.config.update("jax_enable_x64", True)
            np.testing.assert_allclose(second, jax.vmap(jax.grad(jax.grad(fn)))(x.astype(np.float64)), rtol=1e-4)
            engine.config.update("jax_enable_x64", False)
    finally:
        engine.config.update("jax_enable_x64", True)


# ----------------------------------------------------------------------------- conventions and refusals


def test_values_at_poles_and_domain_edges_follow_jax() -> None:
    poles = np.array([0.0, -1.0, -2.0])
    np.testing.assert_array_equal(S.gammaln(poles), np.inf)
    assert np.isnan(S.digamma(poles)).all()
    np.testing.assert_array_equal(S.polygamma(1, poles), np.inf)
    assert np.isnan(S.polygamma(2, poles)).all()
    assert float(S.gamma(0.0)) == np.inf and np.isnan(S.gamma(-1.0))
    np.testing.assert_array_equal(S.ndtri(np.array([0.0, 1.0])), [-np.inf, np.inf])
    np.testing.assert_array_equal(S.erfinv(np.array([-1.0, 1.0])), [-np.inf, np.inf])
    assert np.isnan(S.ndtri(np.array([-0.1, 1.1]))).all() and np.isnan(S.erfinv(1.5))
    np.testing.assert_array_equal(S.erfcinv(np.array([0.0, 2.0])), [np.inf, -np.inf])
    np.testing.assert_array_equal(S.gammainc(np.array([1.0, 0.0]), np.array([0.0, 1.0])), [0.0, 1.0])
    assert np.isnan(S.gammainc(-1.0, 1.0)) and np.isnan(S.gammainc(1.0, -1.0))


def test_derivatives_at_non_differentiable_points() -> None:
    # i0 is smooth and even: i0'(0) = 0 (JAX's composition exp(|x|) i0e(x) gives 1 there).
    assert float(jax.grad(S.i0)(0.0)) == 0.0
    assert float(jax.grad(S.i1)(0.0)) == 0.5 and float(jax.grad(S.i1e)(0.0)) == 0.5
    assert float(jax.grad(jax.grad(S.i1))(0.0)) == 0.0
    assert float(_nth_derivative(S.i1, 3)(0.0)) == pytest.approx(3 / 8, rel=1e-15)  # I1 = x/2 + x^3/16 + ...
    # i0e has a kink at 0; its derivative there is 0, as JAX's (sign(0) = 0)
    assert float(jax.grad(S.i0e)(0.0)) == 0.0
    # xlogy at x == 0: the derivative in x is log(y) where y > 0; 0 (JAX: -inf and NaN) at y == 0
    assert tuple(float(g) for g in jax.grad(S.xlogy, (0, 1))(0.0, 2.0)) == pytest.approx((math.log(2.0), 0.0))
    assert tuple(float(g) for g in jax.grad(S.xlogy, (0, 1))(0.0, 0.0)) == (0.0, 0.0)
    # entr at 0: 0 (the one-sided derivative is +inf, which JAX returns)
    assert float(jax.grad(S.entr)(0.0)) == 0.0


def test_derivatives_that_are_not_defined_are_refused() -> None:
    with pytest.raises(DifferentiationError, match="differentiable in x only"):
        jax.grad(S.gammainc)(1.5, 2.0)
    with pytest.raises(DifferentiationError, match="differentiable in x only"):
        jax.jvp(lambda a: S.gammaincc(a, 2.0), (1.5,), (1.0,))
    with pytest.raises(DifferentiationError, match="the order n"):
        jax.grad(lambda n: polygamma_p(n, jnp.asarray(2.0)))(1.0)
    with pytest.raises(TypeError, match="must be an integer"):
        S.polygamma(1.0, 2.0)
    with pytest.raises(TypeError, match="positive Python integer"):
        S.multigammaln(2.0, 0)


def test_the_primitives_travel_in_graph_documents_and_refuse_non_float_operands() -> None:
    def fn(x: Any) -> Any:
        return S.gammaln(x) + S.polygamma(2, x) * S.i1e(x) + S.gammaincc(2.0, x) + S.erfinv(x / 8) + S.log_ndtr(x)

    x = np.array([0.5, 2.0, 3.5])
    doc = json.loads(json.dumps(jax.make_graph(fn)(x).to_json()))
    assert {"lgamma", "polygamma", "bessel_i1e", "igammac", "erf_inv", "log_ndtr"} <= {n["op"] for n in doc["nodes"]}
    np.testing.assert_allclose(np.asarray(load_graph(doc)(x)), fn(x), rtol=1e-15)
    with pytest.raises(DtypeError, match="real floating-point"):
        lgamma_p(jnp.asarray(np.array([1 + 1j])))
    with pytest.raises(DtypeError, match="real floating-point"):
        jax.jit(lambda a: igamma_p(a, a))(jnp.asarray(np.array([1, 2])))


def test_multigammaln_refuses_a_dimension_over_the_element_budget() -> None:
    with engine.core.element_budget(1000), pytest.raises(LimitExceeded):
        S.multigammaln(np.ones(10), 200)
