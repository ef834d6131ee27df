"""The primitive table: every operation the IR knows, declared once.

Each `Primitive` carries, side by side:
- `impl`: its NumPy implementation on raw arrays;
- `abstract`: its shape/dtype rule, used for tracing and for inference before anything is allocated;
- `vjp`: one rule per input, `rule(g, ans, *args, **attrs) -> cotangent` (None: no gradient flows);
- `jvp`: one rule per input, `rule(t, ans, *args, **attrs) -> tangent contribution`.

Rules are written with the engine's own differentiable operations (`engine.numpy`), so when
they run under a trace they record graph nodes, and derivatives of derivatives come for free.
A rule that returns None contributes a symbolic zero.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

import engine.numpy as jnp
from engine import _xla_f32
from engine.core import ShapedArray, bind
from engine.errors import DtypeError, ShapeError

Rule = Callable[..., Any] | None


@dataclass(eq=False)
class Primitive:
    name: str
    impl: Callable[..., Any]
    abstract: Callable[..., Any]
    vjp: tuple[Rule, ...] | None = None
    jvp: tuple[Rule, ...] | None = None
    multiple_results: bool = False
    # Attribute names and a short description, published by the service (GET /v1/ops).
    attr_names: tuple[str, ...] = ()
    arity: int | None = None  # None: variadic
    doc: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def __call__(self, *args: Any, **attrs: Any) -> Any:
        return bind(self, args, attrs)

    def __repr__(self) -> str:
        return self.name


PRIMITIVES: dict[str, Primitive] = {}


def defprim(
    name: str,
    impl: Callable[..., Any],
    abstract: Callable[..., Any],
    vjp: list[Rule] | None = None,
    jvp: list[Rule] | None = None,
    *,
    arity: int | None = None,
    attrs: tuple[str, ...] = (),
    multiple_results: bool = False,
    doc: str = "",
) -> Primitive:
    if name in PRIMITIVES:
        raise ValueError(f"primitive {name!r} is declared twice")
    prim = Primitive(
        name, impl, abstract, tuple(vjp) if vjp is not None else None,
        tuple(jvp) if jvp is not None else None, multiple_results, attrs, arity, doc,
    )
    PRIMITIVES[name] = prim
    return prim


# ----------------------------------------------------------------------------- shape rules

def _same(x: ShapedArray, **_: Any) -> ShapedArray:
    return x


def _float_only(name: str) -> Callable[..., ShapedArray]:
    def rule(x: ShapedArray, **_: Any) -> ShapedArray:
        if x.dtype.kind not in "fc":
            raise DtypeError(f"`{name}` needs a floating-point operand, got {x.dtype}")
        return x
    return rule


def broadcast_shapes(*shapes: tuple[int, ...], op: str = "operation") -> tuple[int, ...]:
    try:
        return tuple(np.broadcast_shapes(*shapes))
    except ValueError:
        listed = " and ".join(str(tuple(s)) for s in shapes)
        raise ShapeError(
            f"`{op}` got operands of shapes {listed}, which do not broadcast together: trailing "
            "dimensions must be equal or 1. Reshape or transpose an operand so they line up."
        ) from None


def _binary_rule(name: str, out_dtype: np.dtype | None = None) -> Callable[..., ShapedArray]:
    def rule(x: ShapedArray, y: ShapedArray, **_: Any) -> ShapedArray:
        if x.dtype != y.dtype:
            raise DtypeError(f"`{name}` needs operands of one dtype, got {x.dtype} and {y.dtype}")
        return ShapedArray(broadcast_shapes(x.shape, y.shape, op=name), out_dtype or x.dtype)
    return rule


def _unbroadcast(g: Any, shape: tuple[int, ...]) -> Any:
    """Sum a cotangent over the axes broadcasting added, so it has the operand's shape again."""
    if g is None or g.shape == shape:
        return g
    lead = g.ndim - len(shape)
    axes = tuple(range(lead)) + tuple(
        i + lead for i, n in enumerate(shape) if n == 1 and g.shape[i + lead] != 1
    )
    if axes:
        g = jnp.sum(g, axis=axes)
    return jnp.reshape(g, shape) if g.shape != shape else g


def _norm_axes(axes: tuple[int, ...], ndim: int, op: str) -> tuple[int, ...]:
    out = []
    for a in axes:
        if not -ndim <= a < max(ndim, 1) or (ndim == 0 and a not in (0, -1)):
            raise ShapeError(f"`{op}`: axis {a} is out of bounds for an array of {ndim} dimensions")
        out.append(a % ndim if ndim else 0)
    if len(set(out)) != len(out):
        raise ShapeError(f"`{op}`: repeated axis in {axes}")
    return tuple(sorted(out))


# ----------------------------------------------------------------------------- elementwise unary

def _unary(name: str, impl: Callable, vjp: Rule, jvp: Rule | None = None, *, floats: bool = True,
           doc: str = "") -> Primitive:
    """An elementwise primitive; its JVP is its VJP's rule applied to the tangent unless given."""
    return defprim(name, impl, _float_only(name) if floats else _same, [vjp],
                   [jvp if jvp is not None else vjp], arity=1, doc=doc)


def _zero_rule(g: Any, ans: Any, *args: Any, **attrs: Any) -> None:
    return None


def _f32_kernel(x: Any, float32_kernel: Callable[[Any], Any], default: Callable[[Any], Any]) -> Any:
    """float32 tanh and log evaluated as JAX's CPU backend does, bit for bit (engine._xla_f32), so
    float32 results, and finite differences of them, agree with JAX's; other dtypes use NumPy."""
    if np.result_type(x) == np.float32:
        return float32_kernel(x)
    return default(x)


neg_p = _unary("neg", np.negative, lambda g, ans, x: -g, floats=False)
exp_p = _unary("exp", np.exp, lambda g, ans, x: g * ans)
expm1_p = _unary("expm1", np.expm1, lambda g, ans, x: g * (ans + 1))
log_p = _unary("log", lambda x: _f32_kernel(x, _xla_f32.log, np.log), lambda g, ans, x: g / x)
log1p_p = _unary("log1p", np.log1p, lambda g, ans, x: g / (x + 1))
sin_p = _unary("sin", np.sin, lambda g, ans, x: g * jnp.cos(x))
cos_p = _unary("cos", np.cos, lambda g, ans, x: -g * jnp.sin(x))
tan_p = _unary("tan", np.tan, lambda g, ans, x: g * (1 + ans * ans))
asin_p = _unary("asin", np.arcsin, lambda g, ans, x: g * jnp.reciprocal(jnp.sqrt(1 - x * x)))
acos_p = _unary("acos", np.arccos, lambda g, ans, x: -g * jnp.reciprocal(jnp.sqrt(1 - x * x)))
atan_p = _unary("atan", np.arctan, lambda g, ans, x: g / (1 + x * x))
sinh_p = _unary("sinh", np.sinh, lambda g, ans, x: g * jnp.cosh(x))
cosh_p = _unary("cosh", np.cosh, lambda g, ans, x: g * jnp.sinh(x))
tanh_p = _unary("tanh", lambda x: _f32_kernel(x, _xla_f32.tanh, np.tanh), lambda g, ans, x: g * (1 - ans * ans))
asinh_p = _unary("asinh", np.arcsinh, lambda g, ans, x: g * jnp.reciprocal(jnp.sqrt(x * x + 1)))
acosh_p = _unary("acosh", np.arccosh,
                 lambda g, ans, x: g * jnp.reciprocal(jnp.sqrt(x - 1) * jnp.sqrt(x + 1)))
atanh_p = _unary("atanh", np.arctanh, lambda g, ans, x: g / (1 - x * x))
# sqrt'(0) = inf, as in JAX.
sqrt_p = _unary("sqrt", np.sqrt, lambda g, ans, x: g / (ans * 2))
logistic_p = _unary("logistic", lambda x: _logistic(x), lambda g, ans, x: g * ans * (1 - ans))
# abs'(0) = 1 (JAX's convention: the derivative of the x >= 0 branch).
abs_p = _unary("abs", np.abs, lambda g, ans, x: jnp.where(x >= 0, g, -g), floats=False)
sign_p = _unary("sign", np.sign, _zero_rule, floats=False)
floor_p = _unary("floor", np.floor, _zero_rule)
ceil_p = _unary("ceil", np.ceil, _zero_rule)
# Rounds half to even, like jnp.round.
round_p = _unary("round", np.round, _zero_rule)
erf_p = _unary("erf", lambda x: _erf(x),
               lambda g, ans, x: g * (2 / math.sqrt(math.pi)) * jnp.exp(-x * x))


def _logistic(x: np.ndarray) -> np.ndarray:
    # 0.5 * (1 + tanh(x/2)) never overflows, unlike 1 / (1 + exp(-x)).
    half = np.asarray(0.5, dtype=np.result_type(x))
    return half * (np.tanh(x * half) + 1)


_erf_scalar = np.frompyfunc(math.erf, 1, 1)


def _erf(x: np.ndarray) -> np.ndarray:
    # NumPy has no erf; the C library's is correctly rounded to within an ulp in double precision.
    dtype = np.result_type(x)
    return np.asarray(_erf_scalar(np.asarray(x, dtype=np.float64)), dtype=np.float64).astype(dtype)


def _integer_pow_impl(x: np.ndarray, y: int) -> np.ndarray:
    if y == 2:
        return x * x
    if y == 0:
        return np.ones_like(x)
    if y == 1:
        return x
    if y < 0:
        return np.reciprocal(np.power(x, -y)) if x.dtype.kind in "fc" else np.power(x, y)
    return np.power(x, y)


def _integer_pow_deriv(g: Any, ans: Any, x: Any, *, y: int) -> Any:
    if y == 0:
        return None
    if y == 1:
        return g
    return g * (jnp._integer_pow(x, y - 1) * y)


integer_pow_p = defprim(
    "integer_pow", _integer_pow_impl, _same, [_integer_pow_deriv], [_integer_pow_deriv],
    arity=1, attrs=("y",), doc="x ** y for a static integer y",
)


# ----------------------------------------------------------------------------- elementwise binary

def _binary(name: str, impl: Callable, vjp: list[Rule], jvp: list[Rule] | None = None,
            out_dtype: np.dtype | None = None, doc: str = "") -> Primitive:
    return defprim(name, impl, _binary_rule(name, out_dtype), vjp, jvp if jvp is not None else vjp,
                   arity=2, doc=doc)


def _tie_weight(x: Any, y: Any) -> Any:
    """1 where x wins a max, 0.5 on ties (JAX splits the gradient), 0 where y wins."""
    return jnp.where(x > y, 1.0, jnp.where(x == y, 0.5, 0.0)).astype(x.dtype)


def _pow_vjp_y(g: Any, ans: Any, x: Any, y: Any) -> Any:
    # d(x**y)/dy = log(x) * x**y, taken as 0 where x == 0 (the limit along y > 0).
    safe_log = jnp.where(x == 0, 0.0, jnp.log(jnp.where(x == 0, 1.0, x))).astype(x.dtype)
    return g * safe_log * ans


def _pow_vjp_x(g: Any, ans: Any, x: Any, y: Any) -> Any:
    # y * x**(y-1), with 0**(0-1) taken as 0 so that d(x**0)/dx is 0 at x == 0. Only x == y == 0
    # is masked: masking every y == 0 would zero d2/dxdy = 1/x there.
    at_zero = (x == 0) & (y == 0)
    return g * jnp.where(at_zero, 0.0, y * jnp.power(x, jnp.where(at_zero, 1.0, y) - 1)).astype(x.dtype)


add_p = _binary("add", np.add, [lambda g, ans, x, y: _unbroadcast(g, x.shape),
                                lambda g, ans, x, y: _unbroadcast(g, y.shape)],
                [lambda t, ans, x, y: jnp.broadcast_to(t, ans.shape),
                 lambda t, ans, x, y: jnp.broadcast_to(t, ans.shape)])
sub_p = _binary("sub", np.subtract, [lambda g, ans, x, y: _unbroadcast(g, x.shape),
                                     lambda g, ans, x, y: _unbroadcast(-g, y.shape)],
                [lambda t, ans, x, y: jnp.broadcast_to(t, ans.shape),
                 lambda t, ans, x, y: jnp.broadcast_to(-t, ans.shape)])
mul_p = _binary("mul", np.multiply, [lambda g, ans, x, y: _unbroadcast(g * y, x.shape),
                                     lambda g, ans, x, y: _unbroadcast(g * x, y.shape)],
                [lambda t, ans, x, y: t * y, lambda t, ans, x, y: x * t])
div_p = _binary("div", np.divide, [lambda g, ans, x, y: _unbroadcast(g / y, x.shape),
                                   lambda g, ans, x, y: _unbroadcast(-g * ans / y, y.shape)],
                [lambda t, ans, x, y: jnp.broadcast_to(t / y, ans.shape),
                 lambda t, ans, x, y: -t * ans / y])
pow_p = _binary("pow", np.power, [lambda g, ans, x, y: _unbroadcast(_pow_vjp_x(g, ans, x, y), x.shape),
                                  lambda g, ans, x, y: _unbroadcast(_pow_vjp_y(g, ans, x, y), y.shape)],
                [lambda t, ans, x, y: _pow_vjp_x(t, ans, x, y),
                 lambda t, ans, x, y: _pow_vjp_y(t, ans, x, y)])
max_p = _binary("max", np.maximum,
                [lambda g, ans, x, y: _unbroadcast(g * _tie_weight(x, y), x.shape),
                 lambda g, ans, x, y: _unbroadcast(g * _tie_weight(y, x), y.shape)],
                [lambda t, ans, x, y: t * _tie_weight(x, y), lambda t, ans, x, y: t * _tie_weight(y, x)])
min_p = _binary("min", np.minimum,
                [lambda g, ans, x, y: _unbroadcast(g * _tie_weight(y, x), x.shape),
                 lambda g, ans, x, y: _unbroadcast(g * _tie_weight(x, y), y.shape)],
                [lambda t, ans, x, y: t * _tie_weight(y, x), lambda t, ans, x, y: t * _tie_weight(x, y)])
atan2_p = _binary("atan2", np.arctan2,
                  [lambda g, ans, x, y: _unbroadcast(g * y / (x * x + y * y), x.shape),
                   lambda g, ans, x, y: _unbroadcast(-g * x / (x * x + y * y), y.shape)],
                  [lambda t, ans, x, y: t * y / (x * x + y * y),
                   lambda t, ans, x, y: -t * x / (x * x + y * y)])


def _rem_quotient(ans: Any, x: Any, y: Any) -> Any:
    # trunc(x / y) = (x - fmod(x, y)) / y, an integer up to rounding: round it, since trunc of a
    # quotient that rounded to just below the integer would be off by one.
    return jnp.round((x - ans) / y)


rem_p = _binary("rem", np.fmod,
                [lambda g, ans, x, y: _unbroadcast(g, x.shape),
                 lambda g, ans, x, y: _unbroadcast(-g * _rem_quotient(ans, x, y), y.shape)],
                [lambda t, ans, x, y: jnp.broadcast_to(t, ans.shape),
                 lambda t, ans, x, y: -t * _rem_quotient(ans, x, y)])

_BOOL = np.dtype(bool)
for _name, _impl in [("eq", np.equal), ("ne", np.not_equal), ("lt", np.less), ("le", np.less_equal),
                     ("gt", np.greater), ("ge", np.greater_equal)]:
    defprim(_name, _impl, _binary_rule(_name, _BOOL), None, None, arity=2,
            doc="comparison; its result carries no derivative")
for _name, _impl in [("and", np.logical_and), ("or", np.logical_or), ("xor", np.logical_xor)]:
    defprim(_name, _impl, _binary_rule(_name, _BOOL), None, None, arity=2,
            doc="logical operation on booleans")
not_p = defprim("not", np.logical_not, lambda x: ShapedArray(x.shape, _BOOL), None, None, arity=1)
isfinite_p = defprim("isfinite", np.isfinite, lambda x: ShapedArray(x.shape, _BOOL), None, None, arity=1)
isnan_p = defprim("isnan", np.isnan, lambda x: ShapedArray(x.shape, _BOOL), None, None, arity=1)
trunc_p = _unary("trunc", np.trunc, _zero_rule)
floor_divide_int_p = defprim("floor_divide_int", np.floor_divide, _binary_rule("floor_divide"), None, None,
                             arity=2, doc="integer floor division; no derivative")


def _select_abstract(p: ShapedArray, x: ShapedArray, y: ShapedArray) -> ShapedArray:
    if p.dtype != _BOOL:
        raise DtypeError(f"`select` needs a boolean condition, got {p.dtype}")
    if x.dtype != y.dtype:
        raise DtypeError(f"`select` needs branches of one dtype, got {x.dtype} and {y.dtype}")
    return ShapedArray(broadcast_shapes(p.shape, x.shape, y.shape, op="where"), x.dtype)


# where(p, x, y): the cotangent goes to the chosen branch only. A NaN in the branch not chosen
# still poisons the gradient through that branch's own rule (JAX's "double where" applies).
select_p = defprim(
    "select", np.where, _select_abstract,
    [None, lambda g, ans, p, x, y: _unbroadcast(jnp.where(p, g, jnp.zeros((), g.dtype)), x.shape),
     lambda g, ans, p, x, y: _unbroadcast(jnp.where(p, jnp.zeros((), g.dtype), g), y.shape)],
    [None, lambda t, ans, p, x, y: jnp.where(p, jnp.broadcast_to(t, ans.shape), jnp.zeros((), t.dtype)),
     lambda t, ans, p, x, y: jnp.where(p, jnp.zeros((), t.dtype), jnp.broadcast_to(t, ans.shape))],
    arity=3, doc="where(condition, x, y)",
)


def _convert_abstract(x: ShapedArray, *, dtype: str) -> ShapedArray:
    return ShapedArray(x.shape, np.dtype(dtype))


def _convert_deriv(g: Any, ans: Any, x: Any, *, dtype: str) -> Any:
    if x.dtype.kind not in "fc" or np.dtype(dtype).kind not in "fc":
        return None
    return jnp._convert(g, x.dtype)


def _convert_jvp(t: Any, ans: Any, x: Any, *, dtype: str) -> Any:
    if x.dtype.kind not in "fc" or np.dtype(dtype).kind not in "fc":
        return None
    return jnp._convert(t, np.dtype(dtype))


convert_p = defprim(
    "convert_element_type", lambda x, dtype: np.asarray(x).astype(dtype), _convert_abstract,
    [_convert_deriv], [_convert_jvp], arity=1, attrs=("dtype",),
)

stop_gradient_p = defprim("stop_gradient", lambda x: x, _same, [None], [None], arity=1,
                          doc="identity whose derivative is zero")


# ----------------------------------------------------------------------------- reductions

def _reduce_abstract(name: str, out_dtype: Callable[[np.dtype], np.dtype] = lambda d: d):
    def rule(x: ShapedArray, *, axes: tuple[int, ...]) -> ShapedArray:
        axes_n = _norm_axes(axes, x.ndim, name)
        shape = tuple(n for i, n in enumerate(x.shape) if i not in axes_n)
        return ShapedArray(shape, out_dtype(x.dtype))
    return rule


def _keepdims_shape(shape: tuple[int, ...], axes: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(1 if i in axes else n for i, n in enumerate(shape))


def _expand_reduced(g: Any, x_shape: tuple[int, ...], axes: tuple[int, ...]) -> Any:
    return jnp.broadcast_to(jnp.reshape(g, _keepdims_shape(x_shape, axes)), x_shape)


def _sum_impl(x: np.ndarray, axes: tuple[int, ...]) -> np.ndarray:
    # The ufunc's reduce directly: np.sum's Python-level dispatch costs more than a small sum.
    return np.add.reduce(x, axis=axes) if axes else x


reduce_sum_p = defprim(
    "reduce_sum", _sum_impl, _reduce_abstract("reduce_sum"),
    [lambda g, ans, x, *, axes: _expand_reduced(g, x.shape, axes)],
    [lambda t, ans, x, *, axes: jnp._reduce_sum(t, axes)],
    arity=1, attrs=("axes",),
)


def _minmax_deriv(g: Any, ans: Any, x: Any, *, axes: tuple[int, ...]) -> Any:
    # Ties share the cotangent equally, as in JAX.
    hits = (x == _expand_reduced(ans, x.shape, axes)).astype(g.dtype)
    counts = _expand_reduced(jnp._reduce_sum(hits, axes), x.shape, axes)
    return _expand_reduced(g, x.shape, axes) * hits / counts


def _minmax_jvp(t: Any, ans: Any, x: Any, *, axes: tuple[int, ...]) -> Any:
    hits = (x == _expand_reduced(ans, x.shape, axes)).astype(t.dtype)
    return jnp._reduce_sum(t * hits, axes) / jnp._reduce_sum(hits, axes)


reduce_max_p = defprim("reduce_max", lambda x, axes: np.maximum.reduce(x, axis=axes),
                       _reduce_abstract("reduce_max"), [_minmax_deriv], [_minmax_jvp],
                       arity=1, attrs=("axes",))
reduce_min_p = defprim("reduce_min", lambda x, axes: np.minimum.reduce(x, axis=axes),
                       _reduce_abstract("reduce_min"), [_minmax_deriv], [_minmax_jvp],
                       arity=1, attrs=("axes",))


def _others_last(x: Any) -> Any:
    """Along the last axis, each element's product of the others, by a pairwise product tree:
    O(log n) operations and only multiplications (no division by x), so it is exact with any
    number of zeros or tiny values, and its own derivatives are right to every order."""
    n = x.shape[-1]
    if n <= 1:
        return jnp.ones(x.shape, x.dtype)
    if n % 2:
        x = jnp.concatenate([x, jnp.ones(tuple(x.shape[:-1]) + (1,), x.dtype)], axis=-1)
    pairs = jnp.reshape(x, tuple(x.shape[:-1]) + (x.shape[-1] // 2, 2))
    a, b = pairs[..., 0], pairs[..., 1]
    up = _others_last(a * b)  # for each pair, the product of all the other pairs
    out = jnp.reshape(jnp.stack([up * b, up * a], axis=-1), x.shape)
    return out[..., :n] if n % 2 else out


def _prod_others(ans: Any, x: Any, axes: tuple[int, ...]) -> Any:
    """For each element, the product of the other elements of its reduction group, zeros included."""
    if not axes:
        return jnp.ones(x.shape, x.dtype)
    kept = tuple(i for i in range(x.ndim) if i not in axes)
    perm = kept + tuple(axes)
    moved = jnp.transpose(x, perm)
    flat = jnp.reshape(moved, tuple(moved.shape[:len(kept)]) + (math.prod(x.shape[i] for i in axes),))
    others = jnp.reshape(_others_last(flat), moved.shape)
    return jnp.transpose(others, tuple(int(i) for i in np.argsort(perm)))


reduce_prod_p = defprim(
    "reduce_prod", lambda x, axes: np.prod(x, axis=axes), _reduce_abstract("reduce_prod"),
    [lambda g, ans, x, *, axes: _expand_reduced(g, x.shape, axes) * _prod_others(ans, x, axes)],
    [lambda t, ans, x, *, axes: jnp._reduce_sum(t * _prod_others(ans, x, axes), axes)],
    arity=1, attrs=("axes",),
)
reduce_and_p = defprim("reduce_and", lambda x, axes: np.all(x, axis=axes),
                       _reduce_abstract("reduce_and", lambda d: _BOOL), None, None,
                       arity=1, attrs=("axes",))
reduce_or_p = defprim("reduce_or", lambda x, axes: np.any(x, axis=axes),
                      _reduce_abstract("reduce_or", lambda d: _BOOL), None, None,
                      arity=1, attrs=("axes",))


def _arg_abstract(name: str):
    def rule(x: ShapedArray, *, axis: int) -> ShapedArray:
        (ax,) = _norm_axes((axis,), x.ndim, name)
        if x.shape[ax] == 0:
            raise ShapeError(f"`{name}` of an empty axis is undefined")
        from engine.dtypes import default_int
        return ShapedArray(tuple(n for i, n in enumerate(x.shape) if i != ax), default_int())
    return rule


argmax_p = defprim("argmax", lambda x, axis: np.argmax(x, axis=axis).astype(_default_int()),
                   _arg_abstract("argmax"), None, None, arity=1, attrs=("axis",))
argmin_p = defprim("argmin", lambda x, axis: np.argmin(x, axis=axis).astype(_default_int()),
                   _arg_abstract("argmin"), None, None, arity=1, attrs=("axis",))


def _default_int() -> np.dtype:
    from engine.dtypes import default_int

    return default_int()


def _cumsum_abstract(x: ShapedArray, *, axis: int, reverse: bool) -> ShapedArray:
    _norm_axes((axis,), x.ndim, "cumsum")
    return x


def _cumsum_impl(x: np.ndarray, axis: int, reverse: bool) -> np.ndarray:
    if reverse:
        return np.flip(np.cumsum(np.flip(x, axis), axis=axis), axis)
    return np.cumsum(x, axis=axis)


cumsum_p = defprim(
    "cumsum", _cumsum_impl, _cumsum_abstract,
    [lambda g, ans, x, *, axis, reverse: jnp._cumsum(g, axis, not reverse)],
    [lambda t, ans, x, *, axis, reverse: jnp._cumsum(t, axis, reverse)],
    arity=1, attrs=("axis", "reverse"),
)


# ----------------------------------------------------------------------------- shapes

def _reshape_abstract(x: ShapedArray, *, shape: tuple[int, ...]) -> ShapedArray:
    size = int(np.prod(shape, dtype=np.int64)) if shape else 1
    if size != x.size or any(n < 0 for n in shape):
        raise ShapeError(f"cannot reshape an array of shape {x.shape} ({x.size} elements) into {shape}")
    return ShapedArray(tuple(shape), x.dtype)


reshape_p = defprim(
    "reshape", lambda x, shape: np.asarray(x).reshape(shape), _reshape_abstract,
    [lambda g, ans, x, *, shape: jnp.reshape(g, x.shape)],
    [lambda t, ans, x, *, shape: jnp.reshape(t, shape)],
    arity=1, attrs=("shape",),
)


def _transpose_abstract(x: ShapedArray, *, perm: tuple[int, ...]) -> ShapedArray:
    if sorted(perm) != list(range(x.ndim)):
        raise ShapeError(f"transpose permutation {perm} does not fit an array of {x.ndim} dimensions")
    return ShapedArray(tuple(x.shape[p] for p in perm), x.dtype)


transpose_p = defprim(
    "transpose", lambda x, perm: np.asarray(x).transpose(perm), _transpose_abstract,
    [lambda g, ans, x, *, perm: jnp.transpose(g, tuple(np.argsort(perm)))],
    [lambda t, ans, x, *, perm: jnp.transpose(t, perm)],
    arity=1, attrs=("perm",),
)


def _broadcast_abstract(x: ShapedArray, *, shape: tuple[int, ...]) -> ShapedArray:
    if broadcast_shapes(x.shape, shape, op="broadcast_to") != tuple(shape):
        raise ShapeError(f"cannot broadcast an array of shape {x.shape} to {tuple(shape)}")
    return ShapedArray(tuple(shape), x.dtype)


broadcast_p = defprim(
    "broadcast_to", lambda x, shape: np.broadcast_to(x, shape), _broadcast_abstract,
    [lambda g, ans, x, *, shape: _unbroadcast(g, x.shape)],
    [lambda t, ans, x, *, shape: jnp.broadcast_to(t, shape)],
    arity=1, attrs=("shape",),
)


def _concat_abstract(*xs: ShapedArray, axis: int) -> ShapedArray:
    if not xs:
        raise ShapeError("concatenate needs at least one array")
    first = xs[0]
    if first.ndim == 0:
        raise ShapeError("zero-dimensional arrays cannot be concatenated")
    (ax,) = _norm_axes((axis,), first.ndim, "concatenate")
    for i, x in enumerate(xs[1:], 1):
        if x.dtype != first.dtype:
            raise DtypeError(f"concatenate: array {i} has dtype {x.dtype}, array 0 has {first.dtype}")
        if x.ndim != first.ndim or any(a != b for j, (a, b) in enumerate(zip(x.shape, first.shape)) if j != ax):
            raise ShapeError(f"concatenate along axis {axis}: array {i} has shape {x.shape}, "
                             f"which does not match array 0's shape {first.shape} off that axis")
    shape = list(first.shape)
    shape[ax] = sum(x.shape[ax] for x in xs)
    return ShapedArray(tuple(shape), first.dtype)


def _concat_vjp(i: int) -> Rule:
    def rule(g: Any, ans: Any, *xs: Any, axis: int) -> Any:
        ax = axis % g.ndim
        start = sum(x.shape[ax] for x in xs[:i])
        index = tuple([slice(None)] * ax + [slice(start, start + xs[i].shape[ax])])
        return g[index]
    return rule


class _ConcatRules(tuple):
    """Per-input rules for a variadic primitive: rule i is built on first use."""

    def __new__(cls, make: Callable[[int], Rule]):
        self = super().__new__(cls, ())
        self.make = make
        self.cache: dict[int, Rule] = {}
        return self

    def __getitem__(self, i: int) -> Rule:  # type: ignore[override]
        if i not in self.cache:
            self.cache[i] = self.make(i)
        return self.cache[i]


concatenate_p = defprim("concatenate", lambda *xs, axis: np.concatenate(xs, axis=axis),
                        _concat_abstract, None, None, attrs=("axis",))
concatenate_p.vjp = _ConcatRules(_concat_vjp)
concatenate_p.extra["linear_jvp"] = True  # tangent = concatenate(tangents), zeros filled in


# ----------------------------------------------------------------------------- indexing

def index_to_numpy(index: tuple, arrays: tuple[np.ndarray, ...]) -> tuple:
    """Turn a static index description (see engine.numpy.indexing) into a NumPy index."""
    out = []
    for item in index:
        kind = item[0]
        if kind == "int":
            out.append(item[1])
        elif kind == "slice":
            out.append(slice(item[1], item[2], item[3]))
        elif kind == "none":
            out.append(None)
        elif kind == "ellipsis":
            out.append(Ellipsis)
        else:  # ("array", k): the k-th dynamic index operand
            out.append(arrays[item[1]])
    return tuple(out)


def _gather_impl(x: np.ndarray, *arrays: np.ndarray, index: tuple) -> np.ndarray:
    return x[index_to_numpy(index, arrays)]


def _gather_abstract(x: ShapedArray, *arrays: ShapedArray, index: tuple) -> ShapedArray:
    from engine.numpy.indexing import indexed_shape

    return ShapedArray(indexed_shape(x.shape, index, [a.shape for a in arrays]), x.dtype)


def _gather_vjp(g: Any, ans: Any, x: Any, *arrays: Any, index: tuple) -> Any:
    return index_update_p(jnp.zeros(x.shape, g.dtype), g, *arrays, index=index, mode="add")


class _FirstOnly(tuple):
    """Rules for a primitive whose first input alone is differentiable (the rest are indices)."""

    def __new__(cls, rule: Rule):
        self = super().__new__(cls, (rule,))
        return self

    def __getitem__(self, i: int) -> Rule:  # type: ignore[override]
        return tuple.__getitem__(self, 0) if i == 0 else None


gather_p = defprim(
    "gather", _gather_impl, _gather_abstract,
    None, None, attrs=("index",), doc="x[index] with a static index and integer index arrays",
)
gather_p.vjp = _FirstOnly(_gather_vjp)
gather_p.jvp = _FirstOnly(lambda t, ans, x, *arrays, index: gather_p(t, *arrays, index=index))


def _index_update_impl(x: np.ndarray, y: np.ndarray, *arrays: np.ndarray, index: tuple, mode: str) -> np.ndarray:
    out = np.array(x, copy=True)
    idx = index_to_numpy(index, arrays)
    if mode == "set":
        out[idx] = y
    elif mode == "add":
        np.add.at(out, idx, y)
    elif mode == "mul":
        np.multiply.at(out, idx, y)
    else:
        raise ValueError(f"unknown index update mode {mode!r}")
    return out


def _index_update_abstract(x: ShapedArray, y: ShapedArray, *arrays: ShapedArray, index: tuple,
                           mode: str) -> ShapedArray:
    from engine.numpy.indexing import indexed_shape

    target = indexed_shape(x.shape, index, [a.shape for a in arrays])
    if broadcast_shapes(y.shape, target, op=f"at[...].{mode}") != tuple(target):
        raise ShapeError(f"at[...].{mode}: values of shape {y.shape} do not broadcast to the indexed "
                         f"shape {tuple(target)}")
    if x.dtype != y.dtype:
        raise DtypeError(f"at[...].{mode}: values of dtype {y.dtype} for an array of dtype {x.dtype}")
    return x


def _index_update_vjp(i: int) -> Rule:
    def rule(g: Any, ans: Any, x: Any, y: Any, *arrays: Any, index: tuple, mode: str) -> Any:
        if i == 0:
            if mode == "add":
                return g
            if mode == "set":
                return index_update_p(g, jnp.zeros(y.shape, g.dtype), *arrays, index=index, mode="set")
            return index_update_p(g, y, *arrays, index=index, mode="mul")
        if i == 1:
            picked = gather_p(g, *arrays, index=index)
            if mode == "mul":
                picked = picked * gather_p(x, *arrays, index=index)
            return _unbroadcast(picked, y.shape)
        return None
    return rule


def _index_update_jvp(i: int) -> Rule:
    def rule(t: Any, ans: Any, x: Any, y: Any, *arrays: Any, index: tuple, mode: str) -> Any:
        if i == 0:
            if mode == "add":
                return t
            if mode == "set":
                return index_update_p(t, jnp.zeros(y.shape, t.dtype), *arrays, index=index, mode="set")
            return index_update_p(t, y, *arrays, index=index, mode="mul")
        if i == 1:
            if mode == "mul":
                t = t * gather_p(x, *arrays, index=index)
            zeros = jnp.zeros(x.shape, t.dtype)
            mode_t = "set" if mode == "set" else "add"
            return index_update_p(zeros, jnp.broadcast_to(t, gather_p(zeros, *arrays, index=index).shape)
                                  if mode_t == "set" else t, *arrays, index=index, mode=mode_t)
        return None
    return rule


index_update_p = defprim("index_update", _index_update_impl, _index_update_abstract, None, None,
                         attrs=("index", "mode"), doc="x.at[index].set/add/multiply(y)")
index_update_p.vjp = _ConcatRules(_index_update_vjp)
index_update_p.jvp = _ConcatRules(_index_update_jvp)


# ----------------------------------------------------------------------------- contractions

def _matmul_abstract(a: ShapedArray, b: ShapedArray) -> ShapedArray:
    if a.dtype != b.dtype:
        raise DtypeError(f"matmul needs operands of one dtype, got {a.dtype} and {b.dtype}")
    if a.ndim < 2 or b.ndim < 2:
        raise ShapeError("the matmul primitive takes operands of at least two dimensions")
    if a.shape[-1] != b.shape[-2]:
        raise ShapeError(
            f"matmul: the operands' inner dimensions differ: {a.shape} @ {b.shape} "
            f"({a.shape[-1]} != {b.shape[-2]}). Transpose an operand or check the argument order."
        )
    batch = broadcast_shapes(a.shape[:-2], b.shape[:-2], op="matmul")
    return ShapedArray(batch + (a.shape[-2], b.shape[-1]), a.dtype)


def _mT(x: Any) -> Any:
    return jnp.swapaxes(x, -1, -2)


matmul_p = defprim(
    "matmul", np.matmul, _matmul_abstract,
    [lambda g, ans, a, b: _unbroadcast(jnp.matmul(g, _mT(b)), a.shape),
     lambda g, ans, a, b: _unbroadcast(jnp.matmul(_mT(a), g), b.shape)],
    [lambda t, ans, a, b: jnp.matmul(t, b), lambda t, ans, a, b: jnp.matmul(a, t)],
    arity=2, doc="matrix product of operands with two or more dimensions (batched)",
)


def _parse_einsum(spec: str, n: int) -> tuple[list[str], str]:
    lhs, _, out = spec.partition("->")
    terms = lhs.split(",")
    if len(terms) != n:
        raise ShapeError(f"einsum spec {spec!r} names {len(terms)} operands, got {n}")
    return terms, out


def _einsum_abstract(*ops: ShapedArray, spec: str) -> ShapedArray:
    terms, out = _parse_einsum(spec, len(ops))
    sizes: dict[str, int] = {}
    for i, (term, op) in enumerate(zip(terms, ops)):
        if len(term) != op.ndim:
            raise ShapeError(f"einsum: operand {i} has {op.ndim} dimensions but {term!r} names {len(term)}")
        for letter, n in zip(term, op.shape):
            if sizes.setdefault(letter, n) != n:
                raise ShapeError(f"einsum: index {letter!r} has size {sizes[letter]} and {n} in {spec!r}")
    if len({op.dtype for op in ops}) > 1:
        raise DtypeError(f"einsum needs operands of one dtype, got {[str(o.dtype) for o in ops]}")
    return ShapedArray(tuple(sizes[c] for c in out), ops[0].dtype)


def _einsum_vjp(i: int) -> Rule:
    def rule(g: Any, ans: Any, *ops: Any, spec: str) -> Any:
        terms, out = _parse_einsum(spec, len(ops))
        target = terms[i]
        if len(set(target)) != len(target):
            raise NotImplementedError("differentiating einsum with a repeated index in one operand "
                                      "(use jnp.diagonal/jnp.trace instead)")
        others = [t for j, t in enumerate(terms) if j != i]
        available = set(out).union(*others) if others else set(out)
        kept = "".join(c for c in target if c in available)
        grad = jnp._einsum(",".join([out] + others) + "->" + kept, g, *[o for j, o in enumerate(ops) if j != i])
        if kept != target:  # indices summed away inside this operand alone: broadcast back
            shape = [ops[i].shape[k] if c in kept else 1 for k, c in enumerate(target)]
            order = [c for c in target if c in kept]
            perm = tuple(kept.index(c) for c in order)
            grad = jnp.broadcast_to(jnp.reshape(jnp.transpose(grad, perm), shape), ops[i].shape)
        return grad
    return rule


def _einsum_jvp(i: int) -> Rule:
    def rule(t: Any, ans: Any, *ops: Any, spec: str) -> Any:
        args = list(ops)
        args[i] = t
        return jnp._einsum(spec, *args)
    return rule


einsum_p = defprim("einsum", lambda *ops, spec: np.einsum(spec, *ops, optimize=len(ops) > 2),
                   _einsum_abstract, None, None, attrs=("spec",), doc="explicit-output einsum")
einsum_p.vjp = _ConcatRules(_einsum_vjp)
einsum_p.jvp = _ConcatRules(_einsum_jvp)


# ----------------------------------------------------------------------------- linear algebra

def _square_abstract(name: str):
    def rule(a: ShapedArray) -> ShapedArray:
        if a.ndim < 2 or a.shape[-1] != a.shape[-2]:
            raise ShapeError(f"`{name}` needs square matrices in the last two dimensions, got shape {a.shape}")
        if a.dtype.kind not in "fc":
            raise DtypeError(f"`{name}` needs a floating-point matrix, got {a.dtype}")
        return a
    return rule


def _scalar_of_matrix(name: str):
    def rule(a: ShapedArray) -> ShapedArray:
        _square_abstract(name)(a)
        return ShapedArray(a.shape[:-2], a.dtype)
    return rule


def _solve_abstract(a: ShapedArray, b: ShapedArray) -> ShapedArray:
    _square_abstract("solve")(a)
    if b.ndim < 2 or b.shape[-2] != a.shape[-1]:
        raise ShapeError(f"solve: right-hand side of shape {b.shape} does not fit a matrix of shape {a.shape}")
    if a.dtype != b.dtype:
        raise DtypeError(f"solve needs operands of one dtype, got {a.dtype} and {b.dtype}")
    return ShapedArray(broadcast_shapes(a.shape[:-2], b.shape[:-2], op="solve") + b.shape[-2:], a.dtype)


solve_p = defprim(
    "solve", np.linalg.solve, _solve_abstract,
    [lambda g, ans, a, b: _unbroadcast(-jnp.matmul(jnp._solve(_mT(a), g), _mT(ans)), a.shape),
     lambda g, ans, a, b: _unbroadcast(jnp._solve(_mT(a), g), b.shape)],
    [lambda t, ans, a, b: -jnp._solve(a, jnp.matmul(t, ans)), lambda t, ans, a, b: jnp._solve(a, t)],
    arity=2, doc="solve(a, b) for matrices b",
)
inv_p = defprim(
    "inv", np.linalg.inv, _square_abstract("inv"),
    [lambda g, ans, a: -jnp.matmul(jnp.matmul(_mT(ans), g), _mT(ans))],
    [lambda t, ans, a: -jnp.matmul(jnp.matmul(ans, t), ans)],
    arity=1,
)


def _det_factor(ans: Any) -> Any:
    return jnp.expand_dims(jnp.expand_dims(ans, -1), -1)


det_p = defprim(
    "det", np.linalg.det, _scalar_of_matrix("det"),
    [lambda g, ans, a: _det_factor(g * ans) * _mT(jnp._inv(a))],
    [lambda t, ans, a: ans * jnp.trace(jnp._solve(a, t), axis1=-2, axis2=-1)],
    arity=1,
)
logabsdet_p = defprim(
    "logabsdet", lambda a: np.linalg.slogdet(a)[1], _scalar_of_matrix("logabsdet"),
    [lambda g, ans, a: _det_factor(g) * _mT(jnp._inv(a))],
    [lambda t, ans, a: jnp.trace(jnp._solve(a, t), axis1=-2, axis2=-1)],
    arity=1, doc="log|det a|",
)
detsign_p = defprim("det_sign", lambda a: np.linalg.slogdet(a)[0], _scalar_of_matrix("det_sign"),
                    [None], [None], arity=1, doc="sign of det a")


def _phi(x: Any) -> Any:
    """Lower triangle with the diagonal halved (the Cholesky derivative's projection)."""
    n = x.shape[-1]
    mask = np.tril(np.ones((n, n))) - 0.5 * np.eye(n)
    return x * jnp.asarray(mask.astype(x.dtype))


def _cholesky_vjp(g: Any, ans: Any, a: Any) -> Any:
    # Murray (2016): abar = L^-T phi(L^T Lbar) L^-1, symmetrised since only the lower part is read.
    eye = jnp.asarray(np.broadcast_to(np.eye(a.shape[-1], dtype=a.dtype), a.shape))
    linv = jnp._solve(ans, eye)
    s = jnp.matmul(jnp.matmul(_mT(linv), _phi(jnp.matmul(_mT(ans), g))), linv)
    return (s + _mT(s)) * 0.5


def _cholesky_jvp(t: Any, ans: Any, a: Any) -> Any:
    eye = jnp.asarray(np.broadcast_to(np.eye(a.shape[-1], dtype=a.dtype), a.shape))
    linv = jnp._solve(ans, eye)
    return jnp.matmul(ans, _phi(jnp.matmul(jnp.matmul(linv, t), _mT(linv))))


cholesky_p = defprim("cholesky", np.linalg.cholesky, _square_abstract("cholesky"),
                     [_cholesky_vjp], [_cholesky_jvp], arity=1,
                     doc="lower Cholesky factor of a symmetric positive-definite matrix")
