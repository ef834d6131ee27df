"""Primitives of the special functions of issue 15 (engine.scipy.special and engine.scipy.stats use them).

Only functions that no composition of other primitives computes accurately are primitives; each
derivative rule is written with primitives, most often another function of this family
(lgamma' = digamma, digamma' = polygamma(1, .), polygamma(n, .)' = polygamma(n + 1, .),
i0' = i1, ndtri' and erf_inv' through their own results), so derivatives compose to any order.
The NumPy kernels are engine.special_kernels. engine.numpy imports this module, which registers
the records, so a graph document naming them loads whenever the engine's facade is loaded
(engine.primitives cannot import it back: the engine's import graph is acyclic).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

from engine import special_kernels as K
from engine.core import ShapedArray
from engine.errors import DifferentiationError, DtypeError
from engine.primitive import Algebra, PerInput, Plan, Primitive, declare
from engine.primitives import (
    _batch_elementwise,
    _binary_rule,
    _unbroadcast,
    abs_p,
    exp_p,
    log_p,
    promote,
    sign_p,
    where,
)

_SQRT_PI = math.sqrt(math.pi)
_LOG_SQRT_2PI = 0.5 * math.log(2.0 * math.pi)


def _real_float_only(name: str) -> Callable[..., ShapedArray]:
    """The shape rule of an elementwise function of real floating-point operands of one dtype
    (the kernels are real: a complex operand is refused rather than losing its imaginary part)."""
    def rule(*operands: ShapedArray, **_: Any) -> ShapedArray:
        for x in operands:
            if x.dtype.kind != "f":
                raise DtypeError(f"`{name}` needs real floating-point operands, got {x.dtype}")
        return operands[0] if len(operands) == 1 else _binary_rule(name)(*operands)
    return rule


def _unary(name: str, impl: Callable[[np.ndarray], np.ndarray], rule: Callable[..., Any], doc: str) -> Primitive:
    """An elementwise function of a float operand; its JVP multiplies the tangent as its VJP does
    the cotangent."""
    return declare(name, impl=impl, abstract=_real_float_only(name), vjp=PerInput(rule), jvp=PerInput(rule),
                   batch=_batch_elementwise, plan=Plan(), algebra=Algebra(), arity=1, doc=doc)


def _refuse_first_operand(function: str, parameter: str) -> Callable[[list[Any], list[bool], dict[str, Any]], None]:
    """A guard for functions differentiable in their second operand only."""
    def guard(operands: list[Any], wanted: list[bool], attrs: dict[str, Any]) -> None:
        if wanted[0]:
            raise DifferentiationError(
                f"{function} is differentiable in x only: its derivative with respect to {parameter} is not "
                f"implemented. Pass {parameter} as a constant, or wrap it in stop_gradient.")
    return guard


def _binary_in_x(name: str, impl: Callable[[np.ndarray, np.ndarray], np.ndarray], rule: Callable[..., Any],
                 function: str, parameter: str, doc: str) -> Primitive:
    """An elementwise function f(parameter, x) with a derivative in x alone."""
    return declare(name, impl=impl, abstract=_real_float_only(name),
                   vjp=PerInput(None, lambda g, ans, a, x: _unbroadcast(rule(g, ans, a, x), x.shape)),
                   jvp=PerInput(None, rule), batch=_batch_elementwise, plan=Plan(), algebra=Algebra(), arity=2,
                   guard=_refuse_first_operand(function, parameter), doc=doc)


# ----------------------------------------------------------------------------- gamma family

lgamma_p = _unary("lgamma", K.lgamma, lambda g, ans, x: g * digamma_p(x),
                  "log |Gamma(x)|; +inf at the non-positive integers")
digamma_p = _unary("digamma", K.digamma, lambda g, ans, x: g * polygamma_p(promote(1.0, x)[0], x),
                   "the digamma function Gamma'(x) / Gamma(x); NaN at the non-positive integers")
polygamma_p = _binary_in_x(
    "polygamma", K.polygamma, lambda g, ans, n, x: g * polygamma_p(n + 1, x), "polygamma(n, x)", "the order n",
    "the n-th derivative of digamma at x, for integer-valued n >= 0 (NaN for other n)")


def _xlogy(a: Any, x: Any) -> Any:
    """a * log(x), 0 where a == 0 (also at x == 0)."""
    zero = a == 0
    return where(zero, 0.0, a * log_p(where(zero, 1.0, x)))


def _lower_gamma_density(a: Any, x: Any) -> Any:
    """d/dx of the regularised lower incomplete gamma function: x^(a-1) e^-x / Gamma(a)."""
    return exp_p(_xlogy(a - 1, x) - x - lgamma_p(a))


igamma_p = _binary_in_x("igamma", K.gammainc, lambda g, ans, a, x: g * _lower_gamma_density(a, x),
                        "gammainc(a, x)", "the shape a",
                        "the regularised lower incomplete gamma function P(a, x)")
igammac_p = _binary_in_x("igammac", K.gammaincc, lambda g, ans, a, x: -g * _lower_gamma_density(a, x),
                         "gammaincc(a, x)", "the shape a",
                         "the regularised upper incomplete gamma function Q(a, x) = 1 - P(a, x)")

# ----------------------------------------------------------------------------- error function family

erfc_p = _unary("erfc", K.erfc, lambda g, ans, x: g * (-2 / _SQRT_PI) * exp_p(-x * x),
                "1 - erf(x), accurate where erf(x) is near 1")
erf_inv_p = _unary("erf_inv", K.erfinv, lambda g, ans, x: g * (_SQRT_PI / 2) * exp_p(ans * ans),
                   "the inverse of erf on [-1, 1] (+-inf at +-1, NaN outside)")
ndtri_p = _unary("ndtri", K.ndtri, lambda g, ans, p: g * math.sqrt(2 * math.pi) * exp_p(0.5 * ans * ans),
                 "the inverse of the standard normal CDF on [0, 1] (+-inf at 1 and 0, NaN outside)")
# (log Phi)' = phi / Phi = exp(log phi(x) - log Phi(x)): finite in the far left tail, where phi
# and Phi both underflow.
log_ndtr_p = _unary("log_ndtr", K.log_ndtr, lambda g, ans, x: g * exp_p(-0.5 * x * x - ans - _LOG_SQRT_2PI),
                    "log of the standard normal CDF, accurate in both tails")

# ----------------------------------------------------------------------------- modified Bessel functions


# I0 - I1 / x = sum_k (2k + 1) / (2 k! (k + 1)!) (x^2 / 4)^k: near 0, where I1 / x cancels in
# the derivatives of the closed form, this series (to below 1e-18 for |x| < 1/10) is used instead.
_SLOPE_SERIES = tuple((2 * k + 1) / (2 * math.factorial(k) * math.factorial(k + 1)) for k in range(8))
_SERIES_BELOW = 0.1


def _i1_slope_series(x: Any) -> Any:
    quarter_square = x * x * 0.25
    total = _SLOPE_SERIES[-1] * quarter_square
    for coefficient in reversed(_SLOPE_SERIES[1:-1]):
        total = (total + coefficient) * quarter_square
    return total + _SLOPE_SERIES[0]


def _i1_derivative(ans: Any, x: Any) -> Any:
    # I1' = I0 - I1 / x (1/2 at 0).
    small = abs_p(x) < _SERIES_BELOW
    large_x = where(small, 1.0, x)
    return where(small, _i1_slope_series(where(small, x, 0.0)), bessel_i0_p(x) - ans / large_x)


def _i1e_derivative(ans: Any, x: Any) -> Any:
    # (e^-|x| I1)' = e^-|x| (I0 - I1 / x) - sign(x) i1e = i0e - i1e (sign(x) + 1 / x) (1/2 at 0).
    small = abs_p(x) < _SERIES_BELOW
    small_x, large_x = where(small, x, 0.0), where(small, 1.0, x)
    near = exp_p(-abs_p(small_x)) * _i1_slope_series(small_x) - sign_p(x) * ans
    return where(small, near, bessel_i0e_p(x) - ans * (sign_p(large_x) + 1 / large_x))


bessel_i0_p = _unary("bessel_i0", K.i0, lambda g, ans, x: g * bessel_i1_p(x),
                     "the modified Bessel function of the first kind of order 0")
bessel_i1_p = _unary("bessel_i1", K.i1, lambda g, ans, x: g * _i1_derivative(ans, x),
                     "the modified Bessel function of the first kind of order 1")
# (e^-|x| I0)' = i1e - sign(x) i0e; at 0 (a kink) sign(0) = 0 makes it 0, as JAX's.
bessel_i0e_p = _unary("bessel_i0e", K.i0e, lambda g, ans, x: g * (bessel_i1e_p(x) - sign_p(x) * ans),
                      "e^-|x| I0(x), the exponentially scaled modified Bessel function of order 0")
bessel_i1e_p = _unary("bessel_i1e", K.i1e, lambda g, ans, x: g * _i1e_derivative(ans, x),
                      "e^-|x| I1(x), the exponentially scaled modified Bessel function of order 1")
