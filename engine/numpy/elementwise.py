"""Elementwise functions of engine.numpy: NumPy names and broadcasting, JAX dtype rules."""

from __future__ import annotations

import builtins
import math
from typing import Any

import numpy as np

from engine import primitives as P
from engine.numpy._base import ArrayLike, asarray, promote, promote_float


def _float_unary(prim: P.Primitive, name: str):
    def fn(x: ArrayLike) -> Any:
        (x,) = promote_float(x)
        return prim(x)

    fn.__name__ = fn.__qualname__ = name
    fn.__doc__ = f"Elementwise `{name}` (integers are promoted to the default float dtype)."
    return fn


exp = _float_unary(P.exp_p, "exp")
expm1 = _float_unary(P.expm1_p, "expm1")
log = _float_unary(P.log_p, "log")
log1p = _float_unary(P.log1p_p, "log1p")
sin = _float_unary(P.sin_p, "sin")
cos = _float_unary(P.cos_p, "cos")
tan = _float_unary(P.tan_p, "tan")
arcsin = _float_unary(P.asin_p, "arcsin")
arccos = _float_unary(P.acos_p, "arccos")
arctan = _float_unary(P.atan_p, "arctan")
sinh = _float_unary(P.sinh_p, "sinh")
cosh = _float_unary(P.cosh_p, "cosh")
tanh = _float_unary(P.tanh_p, "tanh")
arcsinh = _float_unary(P.asinh_p, "arcsinh")
arccosh = _float_unary(P.acosh_p, "arccosh")
arctanh = _float_unary(P.atanh_p, "arctanh")
sqrt = _float_unary(P.sqrt_p, "sqrt")
floor = _float_unary(P.floor_p, "floor")
ceil = _float_unary(P.ceil_p, "ceil")
trunc = _float_unary(P.trunc_p, "trunc")
erf = _float_unary(P.erf_p, "erf")
logistic = _float_unary(P.logistic_p, "logistic")


def round(x: ArrayLike, decimals: int = 0) -> Any:  # noqa: A001 - NumPy's name
    """Round half to even, like numpy.round."""
    x = asarray(x)
    if x.dtype.kind not in "fc":
        return x
    if decimals == 0:
        return P.round_p(x)
    factor = 10.0 ** decimals
    return P.round_p(x * factor) / factor


around = round


def negative(x: ArrayLike) -> Any:
    return P.neg_p(asarray(x))


def positive(x: ArrayLike) -> Any:
    return asarray(x)


def abs(x: ArrayLike) -> Any:  # noqa: A001 - NumPy's name
    x = asarray(x)
    if x.dtype == np.bool_:
        return x
    return P.abs_p(x)


absolute = abs


def sign(x: ArrayLike) -> Any:
    return P.sign_p(asarray(x))


def square(x: ArrayLike) -> Any:
    return _integer_pow(asarray(x), 2)


def reciprocal(x: ArrayLike) -> Any:
    (x,) = promote_float(x)
    return 1 / x


def _integer_pow(x: Any, y: int) -> Any:
    return P.integer_pow_p(x, y=int(y))


def add(x: ArrayLike, y: ArrayLike) -> Any:
    x, y = promote(x, y)
    if x.dtype == np.bool_:
        return P.PRIMITIVES["or"](x, y)
    return P.add_p(x, y)


def subtract(x: ArrayLike, y: ArrayLike) -> Any:
    x, y = promote(x, y)
    if x.dtype == np.bool_:
        raise TypeError("subtracting booleans is not supported (as in NumPy); use logical_xor, "
                        "or convert with .astype(int) first")
    return P.sub_p(x, y)


def multiply(x: ArrayLike, y: ArrayLike) -> Any:
    x, y = promote(x, y)
    if x.dtype == np.bool_:
        return P.PRIMITIVES["and"](x, y)
    return P.mul_p(x, y)


def divide(x: ArrayLike, y: ArrayLike) -> Any:
    x, y = promote_float(x, y)
    return P.div_p(x, y)


true_divide = divide


def floor_divide(x: ArrayLike, y: ArrayLike) -> Any:
    x, y = promote(x, y)
    if x.dtype.kind in "iu":
        return P.floor_divide_int_p(x, y)
    return floor(P.div_p(x, y))


def remainder(x: ArrayLike, y: ArrayLike) -> Any:
    """x mod y with the sign of y, like numpy.mod."""
    x, y = promote(x, y)
    r = P.rem_p(x, y)
    zero = np.zeros((), x.dtype)
    fix = logical_and(r != zero, (r < zero) != (y < zero))
    return where(fix, r + y, r)


mod = remainder


def fmod(x: ArrayLike, y: ArrayLike) -> Any:
    x, y = promote(x, y)
    return P.rem_p(x, y)


def power(x: ArrayLike, y: ArrayLike) -> Any:
    if isinstance(y, (int, np.integer)) and not isinstance(y, bool) and builtins.abs(int(y)) < 2**31:
        x = asarray(x)
        if x.dtype == np.bool_:
            x = asarray(x, np.int32)
        if int(y) < 0 and x.dtype.kind in "iu":
            raise ValueError("integers to negative integer powers are not allowed")
        return _integer_pow(x, int(y))
    x, y = promote(x, y)
    return P.pow_p(x, y)


def float_power(x: ArrayLike, y: ArrayLike) -> Any:
    x, y = promote_float(x, y)
    return P.pow_p(x, y)


def maximum(x: ArrayLike, y: ArrayLike) -> Any:
    """Elementwise maximum; at ties the derivative is split evenly between x and y (as in JAX)."""
    x, y = promote(x, y)
    return P.max_p(x, y)


def minimum(x: ArrayLike, y: ArrayLike) -> Any:
    x, y = promote(x, y)
    return P.min_p(x, y)


def clip(x: ArrayLike, min: ArrayLike | None = None, max: ArrayLike | None = None,  # noqa: A002
         *, a_min: ArrayLike | None = None, a_max: ArrayLike | None = None) -> Any:
    lo = min if min is not None else a_min
    hi = max if max is not None else a_max
    x = asarray(x)
    if lo is not None:
        x = maximum(x, lo)
    if hi is not None:
        x = minimum(x, hi)
    return x


def arctan2(y: ArrayLike, x: ArrayLike) -> Any:
    y, x = promote_float(y, x)
    return P.atan2_p(y, x)


def where(condition: ArrayLike, x: ArrayLike | None = None, y: ArrayLike | None = None) -> Any:
    """Choose x where condition holds, else y. Only the chosen branch receives a cotangent, but a
    NaN derivative inside the other branch still propagates (wrap its input in a where too)."""
    if x is None or y is None:
        raise ValueError("where needs both x and y: the one-argument form's shape depends on "
                         "values; use jnp.nonzero on a concrete array instead")
    c = asarray(condition)
    if c.dtype != np.bool_:
        c = c != np.zeros((), c.dtype)
    x, y = promote(x, y)
    return P.select_p(c, x, y)


def logaddexp(x: ArrayLike, y: ArrayLike) -> Any:
    """log(exp(x) + exp(y)) without overflow; derivative exp(x - result) (0.5 at ties)."""
    x, y = promote_float(x, y)
    from engine.numpy.reductions import _finite_shift

    shift = _finite_shift(maximum(x, y))
    return shift + log(exp(x - shift) + exp(y - shift))


def exp2(x: ArrayLike) -> Any:
    (x,) = promote_float(x)
    return exp(x * math.log(2.0))


def log2(x: ArrayLike) -> Any:
    return log(x) / math.log(2.0)


def log10(x: ArrayLike) -> Any:
    return log(x) / math.log(10.0)


def isnan(x: ArrayLike) -> Any:
    return P.isnan_p(asarray(x))


def isfinite(x: ArrayLike) -> Any:
    return P.isfinite_p(asarray(x))


def isinf(x: ArrayLike) -> Any:
    x = asarray(x)
    return logical_and(logical_not(isfinite(x)), logical_not(isnan(x)))


def _compare(name: str):
    prim = P.PRIMITIVES[name]

    def fn(x: ArrayLike, y: ArrayLike) -> Any:
        x, y = promote(x, y)
        return prim(x, y)

    return fn


equal = _compare("eq")
not_equal = _compare("ne")
less = _compare("lt")
less_equal = _compare("le")
greater = _compare("gt")
greater_equal = _compare("ge")


def _logical(name: str):
    prim = P.PRIMITIVES[name]

    def fn(x: ArrayLike, y: ArrayLike) -> Any:
        return prim(_as_bool(x), _as_bool(y))

    return fn


def _as_bool(x: ArrayLike) -> Any:
    x = asarray(x)
    return x if x.dtype == np.bool_ else x != np.zeros((), x.dtype)


logical_and = _logical("and")
logical_or = _logical("or")
logical_xor = _logical("xor")


def logical_not(x: ArrayLike) -> Any:
    return P.not_p(_as_bool(x))


def stop_gradient(x: ArrayLike) -> Any:
    """The value of x, treated as a constant by every derivative."""
    from engine.tree_util import tree_map

    return tree_map(lambda leaf: P.stop_gradient_p(asarray(leaf)), x)
