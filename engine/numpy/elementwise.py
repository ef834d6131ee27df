"""Elementwise functions of engine.numpy: NumPy names and broadcasting, JAX dtype rules.

A primitive whose record names a facade function (`facade=Facade("hypot")` in
engine/primitives.py) gets it here, generated from the record: its operands promoted to one dtype
(and to a float one for `promote="float"`), then the primitive applied. `FROM_RECORDS` holds
those functions; engine.numpy and the expression language export every one of them.
"""

from __future__ import annotations

import builtins
import math
from collections.abc import Callable
from typing import Any

import numpy as np

from engine import primitives as P
from engine.numpy._base import ArrayLike, asarray, promote, promote_float
from engine.numpy.complex_parts import complex_abs
from engine.numpy.sorting import nonzero
from engine.tree_util import tree_map


def _from_record(prim: P.Primitive) -> Callable[..., Any]:
    name, to_float = prim.facade.name, prim.facade.promote == "float"
    conversion = promote_float if to_float else promote
    if prim.arity == 1:
        def fn(x: ArrayLike) -> Any:
            return prim(*conversion(x))
    elif prim.arity == 2:
        def fn(x1: ArrayLike, x2: ArrayLike) -> Any:  # NumPy's names for a binary ufunc's operands
            return prim(*conversion(x1, x2))
    else:
        raise TypeError(f"primitive {prim.name!r}: only unary and binary primitives get a facade function")

    fn.__name__ = fn.__qualname__ = name
    fn.__doc__ = (f"Elementwise `{name}`: {prim.doc} (" + ("integers are promoted to the default float dtype)"
                                                            if to_float else "operands are promoted to one dtype)"))
    return fn


FROM_RECORDS: dict[str, Callable[..., Any]] = {p.facade.name: _from_record(p) for p in P.DECLARED if p.facade}
globals().update(FROM_RECORDS)  # exp, log, sin, ..., hypot: module attributes like the functions below


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
    if x.dtype.kind == "c":  # |z| is real: hypot of the parts
        return complex_abs(x)
    return P.abs_p(x)


absolute = abs


def sign(x: ArrayLike) -> Any:
    return P.sign_p(asarray(x))


def square(x: ArrayLike) -> Any:
    return P.integer_pow(asarray(x), 2)


def reciprocal(x: ArrayLike) -> Any:
    (x,) = promote_float(x)
    return 1 / x


def add(x: ArrayLike, y: ArrayLike) -> Any:
    x, y = promote(x, y)
    if x.dtype == np.bool_:
        return P.or_p(x, y)
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
        return P.and_p(x, y)
    return P.mul_p(x, y)


def divide(x: ArrayLike, y: ArrayLike) -> Any:
    x, y = promote_float(x, y)
    return P.div_p(x, y)


true_divide = divide


def floor_divide(x: ArrayLike, y: ArrayLike) -> Any:
    x, y = promote(x, y)
    if x.dtype.kind in "iu":
        return P.floor_divide_int_p(x, y)
    return P.floor_p(P.div_p(x, y))


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
        return P.integer_pow(x, int(y))
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


def where(condition: ArrayLike, x: ArrayLike | None = None, y: ArrayLike | None = None, *, size: int | None = None,
          fill_value: Any = None) -> Any:
    """Choose x where condition holds, else y. Only the chosen branch receives a cotangent, but a
    NaN derivative inside the other branch still propagates (wrap its input in a where too)."""
    if x is None and y is None:  # where(condition): nonzero(condition), traced only with a size
        return nonzero(condition, size=size, fill_value=fill_value)
    if x is None or y is None:
        raise ValueError("where takes one argument (the indices where it holds) or three (condition, x, y), "
                         "not two: give both x and y")
    c = asarray(condition)
    if c.dtype != np.bool_:
        c = c != np.zeros((), c.dtype)
    x, y = promote(x, y)
    return P.select_p(c, x, y)


def logaddexp(x: ArrayLike, y: ArrayLike) -> Any:
    """log(exp(x) + exp(y)) without overflow; derivative exp(x - result) (0.5 at ties)."""
    x, y = promote_float(x, y)
    shift = finite_shift(maximum(x, y))
    return shift + P.log_p(P.exp_p(x - shift) + P.exp_p(y - shift))


def exp2(x: ArrayLike) -> Any:
    (x,) = promote_float(x)
    return P.exp_p(x * math.log(2.0))


def log2(x: ArrayLike) -> Any:
    (x,) = promote_float(x)
    return P.log_p(x) / math.log(2.0)


def log10(x: ArrayLike) -> Any:
    (x,) = promote_float(x)
    return P.log_p(x) / math.log(10.0)


def isnan(x: ArrayLike) -> Any:
    return P.isnan_p(asarray(x))


def isfinite(x: ArrayLike) -> Any:
    return P.isfinite_p(asarray(x))


def isinf(x: ArrayLike) -> Any:
    x = asarray(x)
    return logical_and(logical_not(isfinite(x)), logical_not(isnan(x)))


def _compare(prim: P.Primitive):
    def fn(x: ArrayLike, y: ArrayLike) -> Any:
        x, y = promote(x, y)
        return prim(x, y)

    return fn


equal = _compare(P.eq_p)
not_equal = _compare(P.ne_p)
less = _compare(P.lt_p)
less_equal = _compare(P.le_p)
greater = _compare(P.gt_p)
greater_equal = _compare(P.ge_p)


def _logical(prim: P.Primitive):
    def fn(x: ArrayLike, y: ArrayLike) -> Any:
        return prim(_as_bool(x), _as_bool(y))

    return fn


def _as_bool(x: ArrayLike) -> Any:
    x = asarray(x)
    return x if x.dtype == np.bool_ else x != np.zeros((), x.dtype)


logical_and = _logical(P.and_p)
logical_or = _logical(P.or_p)
logical_xor = _logical(P.xor_p)


def logical_not(x: ArrayLike) -> Any:
    return P.not_p(_as_bool(x))


def stop_gradient(x: ArrayLike) -> Any:
    """The value of x, treated as a constant by every derivative."""
    return tree_map(lambda leaf: P.stop_gradient_p(asarray(leaf)), x)


def finite_shift(m: Any) -> Any:
    """A constant shift for log-sum-exp: the max where finite, else 0; never differentiated."""
    return stop_gradient(where(isfinite(m), m, np.zeros((), m.dtype)))
