"""The primitives: every operation the IR knows, each declared once as a complete record.

Each `declare(...)` below gives, side by side (engine.primitive describes the record):
- `impl`: the NumPy implementation on raw arrays;
- `abstract`: the shape/dtype rule, used for tracing and for inference before anything is allocated;
- `vjp` / `jvp`: the derivative rules, `rule(g, ans, *args, **attrs) -> cotangent` per operand
  and `rule(t, ans, *args, **attrs) -> tangent contribution` (a rule returning None contributes
  a symbolic zero);
- `batch`: how to apply it to operands carrying a leading batch axis;
- `plan`: how the plan compiler writes it as Python; `algebra`: what the optimiser may assume;
- `facade`: the engine.numpy function it is exposed as, for those exposed one to one.

Rules are written with the operations at the end of this module (each the primitive call that
the engine.numpy function of the same name makes) and with Python operators on arrays (which
engine.numpy installs), so that when they run under a trace they record graph nodes, and
derivatives of derivatives come for free. This module imports nothing above the IR.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

from engine import _xla_f32, dtypes, primitive
from engine.array import Array
from engine.core import ShapedArray, Tracer, bind, check_elements
from engine.errors import DifferentiationError, DtypeError, NotBatchable, ShapeError
from engine.indexing import index_dims, index_to_numpy, indexed_shape, selects_repeatedly
from engine.primitive import (
    Algebra,
    Derivative,
    Facade,
    InvalidAttributes,
    Linear,
    PerInput,
    Plan,
    Primitive,
    declare,
)

Rule = Callable[..., Any] | None
# The registries, at their usual address (engine.primitives.PRIMITIVES).
PRIMITIVES = primitive.PRIMITIVES
DECLARED = primitive.DECLARED

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
        g = reduce_sum(g, axes)
    return reshape(g, shape) if g.shape != shape else g


def _norm_axes(axes: tuple[int, ...], ndim: int, op: str) -> tuple[int, ...]:
    out = []
    for a in axes:
        if not -ndim <= a < max(ndim, 1) or (ndim == 0 and a not in (0, -1)):
            raise ShapeError(f"`{op}`: axis {a} is out of bounds for an array of {ndim} dimensions")
        out.append(a % ndim if ndim else 0)
    if len(set(out)) != len(out):
        raise ShapeError(f"`{op}`: repeated axis in {axes}")
    return tuple(sorted(out))


# ----------------------------------------------------------------------------- batching rules
# A batched value carries the batch as its leading axis. Most rules only shift axes in the
# attributes, because NumPy's own broadcasting handles the extra leading axis once operands are
# aligned. A rule raises NotBatchable for a case it cannot do in one pass (the caller then runs
# the equation once per example).


def _batch_align(x: Any, batched: bool, rank: int) -> Any:
    """x as an array of rank 1 + rank with the batch leading (size 1 when x is unbatched)."""
    if batched:
        extra = rank - (x.ndim - 1)
        if extra > 0:
            x = reshape(x, (x.shape[0],) + (1,) * extra + tuple(x.shape[1:]))
        return x
    extra = rank - x.ndim
    return reshape(x, (1,) * (1 + extra) + tuple(x.shape))


def with_batch_axis(x: Any, batched: bool, n: int) -> Any:
    """x with its batch axis materialised (an unbatched value is broadcast to n copies)."""
    if batched:
        return x
    return broadcast_to(reshape(x, (1,) + tuple(x.shape)), (n,) + tuple(x.shape))


def _batch_elementwise(prim: Primitive, args: list[Any], batched: list[bool], attrs: dict[str, Any], n: int) -> Any:
    rank = max(a.ndim - (1 if b else 0) for a, b in zip(args, batched))
    aligned = [_batch_align(a, b, rank) for a, b in zip(args, batched)]
    return bind(prim, tuple(aligned), attrs)


def _batch_shift_axes(prim: Primitive, args: list[Any], batched: list[bool], attrs: dict[str, Any], n: int) -> Any:
    """Reductions and scans: the operand's axes move up by one past the batch axis."""
    new = dict(attrs)
    if "axes" in new:
        new["axes"] = tuple(a + 1 for a in new["axes"])
    if "axis" in new:
        new["axis"] = new["axis"] + 1 if new["axis"] >= 0 else new["axis"]
    return bind(prim, (args[0],), new)


def _batch_reshape(prim: Primitive, args: list[Any], batched: list[bool], attrs: dict[str, Any], n: int) -> Any:
    return bind(prim, (args[0],), {"shape": (n,) + tuple(attrs["shape"])})


def _batch_transpose(prim: Primitive, args: list[Any], batched: list[bool], attrs: dict[str, Any], n: int) -> Any:
    return bind(prim, (args[0],), {"perm": (0,) + tuple(p + 1 for p in attrs["perm"])})


def _batch_broadcast(prim: Primitive, args: list[Any], batched: list[bool], attrs: dict[str, Any], n: int) -> Any:
    shape = tuple(attrs["shape"])
    return bind(prim, (_batch_align(args[0], True, len(shape)),), {"shape": (n,) + shape})


def _batch_concatenate(prim: Primitive, args: list[Any], batched: list[bool], attrs: dict[str, Any], n: int) -> Any:
    full = [with_batch_axis(a, b, n) for a, b in zip(args, batched)]
    return bind(prim, tuple(full), {"axis": attrs["axis"] + 1})


def _indexed_batch_attrs(attrs: dict[str, Any], batched_indices: list[bool]) -> dict[str, Any]:
    """The attributes of an indexing equation with a leading batch axis, when one pass can do it."""
    index = attrs["index"]
    if any(batched_indices):
        raise NotBatchable("batched index arrays")
    kinds = [item[0] for item in index]
    has_arrays = "array" in kinds
    advanced = [i for i, k in enumerate(kinds) if k == "array" or (has_arrays and k == "int")]
    if advanced and advanced != list(range(advanced[0], advanced[-1] + 1)):
        raise NotBatchable("separated advanced indices move the batch axis")
    new_attrs = dict(attrs)
    new_attrs["index"] = (("slice", None, None, None),) + tuple(index)
    return new_attrs


def _batch_gather(prim: Primitive, args: list[Any], batched: list[bool], attrs: dict[str, Any], n: int) -> Any:
    return bind(prim, tuple(args), _indexed_batch_attrs(attrs, batched[1:]))


def _batch_index_update(prim: Primitive, args: list[Any], batched: list[bool], attrs: dict[str, Any],
                        n: int) -> Any:
    new_attrs = _indexed_batch_attrs(attrs, batched[2:])
    x = with_batch_axis(args[0], batched[0], n)
    y = args[1]
    if batched[1]:
        target = indexed_shape(tuple(args[0].shape[1:] if batched[0] else args[0].shape), attrs["index"],
                               [tuple(a.shape) for a in args[2:]])
        y = _batch_align(y, True, len(target))
    else:
        y = _batch_align(y, False, y.ndim)
    return bind(prim, (x, y) + tuple(args[2:]), new_attrs)


def _batch_matmul(prim: Primitive, args: list[Any], batched: list[bool], attrs: dict[str, Any], n: int) -> Any:
    """A batch of matrix products against one fixed matrix is folded into a single product."""
    a, b = args
    if batched == [False, True] and a.ndim == 2 and b.ndim == 3 and b.shape[2] == 1:
        # A batch of matrix-vector products: (n, k, 1) -> (k, n) is a transposed view, no copy.
        cols = transpose(reshape(b, (n, b.shape[1])), (1, 0))
        out = bind(prim, (a, cols), attrs)  # (m, n)
        return reshape(transpose(out, (1, 0)), (n, a.shape[0], 1))
    if batched == [False, True] and a.ndim == 2 and b.ndim == 3:
        k, p = b.shape[1], b.shape[2]
        wide = reshape(transpose(b, (1, 0, 2)), (k, n * p))
        out = bind(prim, (a, wide), attrs)
        return transpose(reshape(out, (a.shape[0], n, p)), (1, 0, 2))
    if batched == [True, False] and a.ndim == 3 and b.ndim == 2:
        tall = reshape(a, (n * a.shape[1], a.shape[2]))
        return reshape(bind(prim, (tall, b), attrs), (n, a.shape[1], b.shape[1]))
    return _batch_matrix_operands(prim, args, batched, attrs, n)


def _batch_matrix_operands(prim: Primitive, args: list[Any], batched: list[bool], attrs: dict[str, Any],
                           n: int) -> Any:
    # Leading (batch) dimensions broadcast in matmul and NumPy's linalg: align their ranks.
    rank = max(a.ndim - (1 if b else 0) for a, b in zip(args, batched))
    aligned = [_batch_align(a, b, rank) if b else a for a, b in zip(args, batched)]
    return bind(prim, tuple(aligned), attrs)


def _batch_leading(prim: Primitive, args: list[Any], batched: list[bool], attrs: dict[str, Any], n: int) -> Any:
    """Functions of the last two axes (matrix inverse, determinant, ...): the batch is one more
    leading axis, which they already accept."""
    return bind(prim, (args[0],), attrs)


def _batch_einsum(prim: Primitive, args: list[Any], batched: list[bool], attrs: dict[str, Any], n: int) -> Any:
    lhs, _, out = attrs["spec"].partition("->")
    terms = lhs.split(",")
    used = set(attrs["spec"])
    letter = next(c for c in "zyxwvutsrqponmlkjihgfedcbaZYXWVUTSRQPONMLKJIHGFEDCBA" if c not in used)
    terms = [letter + t if b else t for t, b in zip(terms, batched)]
    return bind(prim, tuple(args), {"spec": ",".join(terms) + "->" + letter + out})


# ----------------------------------------------------------------------------- algebra helpers


def _same_type(atom: Any, out: Any) -> bool:
    return atom.aval.shape == out.aval.shape and atom.aval.dtype == out.aval.dtype


def _same_type_identity(inputs: list[Any], out: Any, attrs: dict[str, Any]) -> bool:
    """A shape or dtype change that changes nothing."""
    return _same_type(inputs[0], out)


# ----------------------------------------------------------------------------- elementwise unary


def _unary(name: str, impl: Callable, vjp: Rule, jvp: Rule | None = None, *, doc: str, floats: bool = True,
           plan: Plan = Plan(), algebra: Algebra = Algebra(), facade: str | None = None,
           abstract: Callable[..., ShapedArray] | None = None) -> Primitive:
    """An elementwise primitive; its JVP is its VJP's rule applied to the tangent unless given."""
    abstract = abstract or (_float_only(name) if floats else _same)
    return declare(name, impl=impl, abstract=abstract, vjp=PerInput(vjp),
                   jvp=PerInput(jvp if jvp is not None else vjp), batch=_batch_elementwise, plan=plan,
                   algebra=algebra, arity=1, doc=doc, facade=Facade(facade) if facade else None)


def _ufunc(fn: Any, operator: str | None = None) -> Plan:
    """An elementwise NumPy ufunc: its result is a new buffer, and may reuse a dying operand's."""
    return Plan(ufunc=fn, operator=operator, fresh=True)


def _zero_rule(g: Any, ans: Any, *args: Any, **attrs: Any) -> None:
    return None


def _f32_kernel(x: Any, float32_kernel: Callable[[Any], Any], default: Callable[[Any], Any]) -> Any:
    """float32 tanh and log evaluated as JAX's CPU backend does, bit for bit (engine._xla_f32), so
    float32 results, and finite differences of them, agree with JAX's; other dtypes use NumPy."""
    dtype = getattr(x, "dtype", None)  # an array's own: np.result_type costs more than a small tanh
    if (dtype if dtype is not None else np.result_type(x)) == np.float32:
        return float32_kernel(x)
    return default(x)


def _logistic(x: np.ndarray) -> np.ndarray:
    # 0.5 * (1 + tanh(x/2)) never overflows, unlike 1 / (1 + exp(-x)).
    half = np.asarray(0.5, dtype=np.result_type(x))
    return half * (np.tanh(x * half) + 1)


_erf_scalar = np.frompyfunc(math.erf, 1, 1)


def _erf(x: np.ndarray) -> np.ndarray:
    # NumPy has no erf; the C library's is correctly rounded to within an ulp in double precision.
    dtype = np.result_type(x)
    return np.asarray(_erf_scalar(np.asarray(x, dtype=np.float64)), dtype=np.float64).astype(dtype)


neg_p = _unary("neg", np.negative, lambda g, ans, x: -g, floats=False, plan=_ufunc(np.negative, "-{0}"),
               algebra=Algebra(involution=True, ring="neg"), doc="-x")
exp_p = _unary("exp", np.exp, lambda g, ans, x: g * ans, plan=_ufunc(np.exp), facade="exp", doc="e ** x")
expm1_p = _unary("expm1", np.expm1, lambda g, ans, x: g * (ans + 1), plan=_ufunc(np.expm1), facade="expm1",
                 doc="e ** x - 1, accurate near 0")
log_p = _unary("log", lambda x: _f32_kernel(x, _xla_f32.log, np.log), lambda g, ans, x: g / x, facade="log",
               doc="natural logarithm")
log1p_p = _unary("log1p", np.log1p, lambda g, ans, x: g / (x + 1), plan=_ufunc(np.log1p), facade="log1p",
                 doc="log(1 + x), accurate near 0")
sin_p = _unary("sin", np.sin, lambda g, ans, x: g * cos_p(x), plan=_ufunc(np.sin), facade="sin", doc="sine")
cos_p = _unary("cos", np.cos, lambda g, ans, x: -g * sin_p(x), plan=_ufunc(np.cos), facade="cos", doc="cosine")
tan_p = _unary("tan", np.tan, lambda g, ans, x: g * (1 + ans * ans), facade="tan", doc="tangent")
asin_p = _unary("asin", np.arcsin, lambda g, ans, x: g * (1 / sqrt_p(1 - x * x)), facade="arcsin",
                doc="inverse sine")
acos_p = _unary("acos", np.arccos, lambda g, ans, x: -g * (1 / sqrt_p(1 - x * x)), facade="arccos",
                doc="inverse cosine")
atan_p = _unary("atan", np.arctan, lambda g, ans, x: g / (1 + x * x), facade="arctan", doc="inverse tangent")
sinh_p = _unary("sinh", np.sinh, lambda g, ans, x: g * cosh_p(x), facade="sinh", doc="hyperbolic sine")
cosh_p = _unary("cosh", np.cosh, lambda g, ans, x: g * sinh_p(x), facade="cosh", doc="hyperbolic cosine")
tanh_p = _unary("tanh", lambda x: _f32_kernel(x, _xla_f32.tanh, np.tanh), lambda g, ans, x: g * (1 - ans * ans),
                facade="tanh", doc="hyperbolic tangent")
asinh_p = _unary("asinh", np.arcsinh, lambda g, ans, x: g * (1 / sqrt_p(x * x + 1)), facade="arcsinh",
                 doc="inverse hyperbolic sine")
acosh_p = _unary("acosh", np.arccosh, lambda g, ans, x: g * (1 / (sqrt_p(x - 1) * sqrt_p(x + 1))),
                 facade="arccosh", doc="inverse hyperbolic cosine")
atanh_p = _unary("atanh", np.arctanh, lambda g, ans, x: g / (1 - x * x), facade="arctanh",
                 doc="inverse hyperbolic tangent")
# sqrt'(0) = inf, as in JAX.
sqrt_p = _unary("sqrt", np.sqrt, lambda g, ans, x: g / (ans * 2), plan=_ufunc(np.sqrt), facade="sqrt",
                doc="square root")
logistic_p = _unary("logistic", lambda x: _logistic(x), lambda g, ans, x: g * ans * (1 - ans),
                    doc="1 / (1 + e ** -x), without overflow")
# abs'(0) = 1 (JAX's convention: the derivative of the x >= 0 branch).
def _real_abs_abstract(x: ShapedArray) -> ShapedArray:
    if x.dtype.kind == "c":  # |z| is real and its rule is not this one: jnp.abs takes hypot of the parts
        raise DtypeError(f"the `abs` op takes real operands, got {x.dtype}; for a complex z use "
                         "hypot(real(z), imag(z)), as jnp.abs does")
    return x


abs_p = _unary("abs", np.abs, lambda g, ans, x: where(x >= 0, g, -g), floats=False, plan=_ufunc(np.abs),
               abstract=_real_abs_abstract, doc="|x|")
sign_p = _unary("sign", np.sign, _zero_rule, floats=False, doc="-1, 0 or 1; its derivative is zero")
floor_p = _unary("floor", np.floor, _zero_rule, facade="floor", doc="round down; its derivative is zero")
ceil_p = _unary("ceil", np.ceil, _zero_rule, facade="ceil", doc="round up; its derivative is zero")
# Rounds half to even, like jnp.round.
round_p = _unary("round", np.round, _zero_rule, doc="round half to even; its derivative is zero")
erf_p = _unary("erf", lambda x: _erf(x), lambda g, ans, x: g * (2 / math.sqrt(math.pi)) * exp_p(-x * x),
               facade="erf", doc="the error function")
trunc_p = _unary("trunc", np.trunc, _zero_rule, facade="trunc", doc="round towards zero; its derivative is zero")


def _integer_pow_impl(x: np.ndarray, y: int) -> np.ndarray:
    if y == 0:
        return np.ones_like(x)
    if y == 1:
        return x
    if x.dtype.kind not in "fc":
        return np.power(x, y)  # exact (integer products wrap the same in any order)
    # As JAX computes it (and XLA after it): square-and-multiply, one rounding per product, then
    # the reciprocal for a negative power. np.power calls the C library's pow, which rounds x ** y
    # once and so differs in the last bit for cubes and higher powers.
    n, acc = abs(y), None
    while n:
        if n & 1:
            acc = x if acc is None else acc * x
        n >>= 1
        if n:
            x = x * x
    return np.reciprocal(acc) if y < 0 else acc


def _integer_pow_deriv(g: Any, ans: Any, x: Any, *, y: int) -> Any:
    if y == 0:
        return None
    if y == 1:
        return g
    return g * (integer_pow(x, y - 1) * y)


integer_pow_p = declare(
    "integer_pow", impl=_integer_pow_impl, abstract=_same, vjp=PerInput(_integer_pow_deriv),
    jvp=PerInput(_integer_pow_deriv), batch=_batch_elementwise,
    # Squares and cubes as the products the implementation computes (x * x, then times x); x ** 1
    # is x itself, and x ** 0 a constant, so neither is a buffer of its own.
    plan=Plan(operator=lambda attrs: " * ".join(["{0}"] * attrs["y"]) if attrs["y"] in (2, 3) else None,
              fresh=lambda attrs: attrs["y"] not in (0, 1)),
    algebra=Algebra(identity=lambda inputs, out, attrs: attrs["y"] == 1, ring="integer_pow"),
    arity=1, attrs=("y",), doc="x ** y for a static integer y",
)


# ----------------------------------------------------------------------------- elementwise binary


def _binary(name: str, impl: Callable, vjp: list[Rule], jvp: list[Rule] | None = None, *, doc: str,
            out_dtype: np.dtype | None = None, plan: Plan = Plan(), algebra: Algebra = Algebra(),
            facade: Facade | None = None) -> Primitive:
    return declare(name, impl=impl, abstract=_binary_rule(name, out_dtype), vjp=PerInput(*vjp),
                   jvp=PerInput(*(jvp if jvp is not None else vjp)), batch=_batch_elementwise, plan=plan,
                   algebra=algebra, arity=2, doc=doc, facade=facade)


def _tie_weight(x: Any, y: Any) -> Any:
    """1 where x wins a max, 0.5 on ties (JAX splits the gradient), 0 where y wins."""
    return convert(where(x > y, 1.0, where(x == y, 0.5, 0.0)), x.dtype)


def _pow_vjp_y(g: Any, ans: Any, x: Any, y: Any) -> Any:
    # d(x**y)/dy = log(x) * x**y, taken as 0 where x == 0 (the limit along y > 0).
    safe_log = convert(where(x == 0, 0.0, log_p(where(x == 0, 1.0, x))), x.dtype)
    return g * safe_log * ans


def _pow_vjp_x(g: Any, ans: Any, x: Any, y: Any) -> Any:
    # y * x**(y-1), with 0**(0-1) taken as 0 so that d(x**0)/dx is 0 at x == 0. Only x == y == 0
    # is masked: masking every y == 0 would zero d2/dxdy = 1/x there.
    at_zero = (x == 0) & (y == 0)
    return g * convert(where(at_zero, 0.0, y * pow_p(x, where(at_zero, 1.0, y) - 1)), x.dtype)


add_p = _binary("add", np.add, [lambda g, ans, x, y: _unbroadcast(g, x.shape),
                                lambda g, ans, x, y: _unbroadcast(g, y.shape)],
                [lambda t, ans, x, y: broadcast_to(t, ans.shape),
                 lambda t, ans, x, y: broadcast_to(t, ans.shape)],
                plan=_ufunc(np.add, "{0} + {1}"),
                algebra=Algebra(commutative=True, left_identity=0.0, right_identity=0.0, ring="add"), doc="x + y")
sub_p = _binary("sub", np.subtract, [lambda g, ans, x, y: _unbroadcast(g, x.shape),
                                     lambda g, ans, x, y: _unbroadcast(-g, y.shape)],
                [lambda t, ans, x, y: broadcast_to(t, ans.shape),
                 lambda t, ans, x, y: broadcast_to(-t, ans.shape)],
                plan=_ufunc(np.subtract, "{0} - {1}"), algebra=Algebra(right_identity=0.0, ring="sub"), doc="x - y")
mul_p = _binary("mul", np.multiply, [lambda g, ans, x, y: _unbroadcast(g * y, x.shape),
                                     lambda g, ans, x, y: _unbroadcast(g * x, y.shape)],
                [lambda t, ans, x, y: t * y, lambda t, ans, x, y: x * t],
                plan=_ufunc(np.multiply, "{0} * {1}"),
                algebra=Algebra(commutative=True, left_identity=1.0, right_identity=1.0, ring="mul"), doc="x * y")
div_p = _binary("div", np.divide, [lambda g, ans, x, y: _unbroadcast(g / y, x.shape),
                                   lambda g, ans, x, y: _unbroadcast(-g * ans / y, y.shape)],
                [lambda t, ans, x, y: broadcast_to(t / y, ans.shape),
                 lambda t, ans, x, y: -t * ans / y],
                plan=_ufunc(np.divide, "{0} / {1}"), algebra=Algebra(right_identity=1.0), doc="x / y")
pow_p = _binary("pow", np.power, [lambda g, ans, x, y: _unbroadcast(_pow_vjp_x(g, ans, x, y), x.shape),
                                  lambda g, ans, x, y: _unbroadcast(_pow_vjp_y(g, ans, x, y), y.shape)],
                [lambda t, ans, x, y: _pow_vjp_x(t, ans, x, y),
                 lambda t, ans, x, y: _pow_vjp_y(t, ans, x, y)], doc="x ** y")
max_p = _binary("max", np.maximum,
                [lambda g, ans, x, y: _unbroadcast(g * _tie_weight(x, y), x.shape),
                 lambda g, ans, x, y: _unbroadcast(g * _tie_weight(y, x), y.shape)],
                [lambda t, ans, x, y: t * _tie_weight(x, y), lambda t, ans, x, y: t * _tie_weight(y, x)],
                plan=_ufunc(np.maximum), algebra=Algebra(commutative=True),
                doc="elementwise maximum; ties split the derivative evenly")
min_p = _binary("min", np.minimum,
                [lambda g, ans, x, y: _unbroadcast(g * _tie_weight(y, x), x.shape),
                 lambda g, ans, x, y: _unbroadcast(g * _tie_weight(x, y), y.shape)],
                [lambda t, ans, x, y: t * _tie_weight(y, x), lambda t, ans, x, y: t * _tie_weight(x, y)],
                plan=_ufunc(np.minimum), algebra=Algebra(commutative=True),
                doc="elementwise minimum; ties split the derivative evenly")
atan2_p = _binary("atan2", np.arctan2,
                  [lambda g, ans, x, y: _unbroadcast(g * y / (x * x + y * y), x.shape),
                   lambda g, ans, x, y: _unbroadcast(-g * x / (x * x + y * y), y.shape)],
                  [lambda t, ans, x, y: t * y / (x * x + y * y),
                   lambda t, ans, x, y: -t * x / (x * x + y * y)],
                  doc="the angle of the point (y, x): atan2(x, y) is atan(x / y) in the right quadrant")


def _nonzero(h: Any) -> Any:
    """h with its zeros replaced by ones: a divisor that is never 0 (and so never a NaN source)."""
    return where(h == 0, 1.0, h)


# hypot(x, y) = sqrt(x**2 + y**2), computed by NumPy without overflow. Its derivative is x / hypot
# (y / hypot for y), taken as 0 at the origin, as JAX's is.
hypot_p = _binary("hypot", np.hypot,
                  [lambda g, ans, x, y: _unbroadcast(g * x / _nonzero(ans), x.shape),
                   lambda g, ans, x, y: _unbroadcast(g * y / _nonzero(ans), y.shape)],
                  [lambda t, ans, x, y: t * x / _nonzero(ans), lambda t, ans, x, y: t * y / _nonzero(ans)],
                  plan=_ufunc(np.hypot), algebra=Algebra(commutative=True), facade=Facade("hypot"),
                  doc="sqrt(x**2 + y**2) without overflow; its derivative is 0 at the origin")


def _rem_quotient(ans: Any, x: Any, y: Any) -> Any:
    # trunc(x / y) = (x - fmod(x, y)) / y, an integer up to rounding: round it, since trunc of a
    # quotient that rounded to just below the integer would be off by one.
    return round_p((x - ans) / y)


rem_p = _binary("rem", np.fmod,
                [lambda g, ans, x, y: _unbroadcast(g, x.shape),
                 lambda g, ans, x, y: _unbroadcast(-g * _rem_quotient(ans, x, y), y.shape)],
                [lambda t, ans, x, y: broadcast_to(t, ans.shape),
                 lambda t, ans, x, y: -t * _rem_quotient(ans, x, y)],
                doc="remainder of x / y with the sign of x (C's fmod)")

_BOOL = np.dtype(bool)


def _predicate(name: str, impl: Callable, doc: str, operator: str | None = None, commutative: bool = False,
               arity: int = 2) -> Primitive:
    """A comparison or logical operation: a boolean result, which carries no derivative."""
    abstract = _binary_rule(name, _BOOL) if arity == 2 else (lambda x: ShapedArray(x.shape, _BOOL))
    return declare(name, impl=impl, abstract=abstract, vjp=None, jvp=None, batch=_batch_elementwise,
                   plan=Plan(operator=operator), algebra=Algebra(commutative=commutative), arity=arity, doc=doc)


_COMPARISON = "comparison; its result carries no derivative"
eq_p = _predicate("eq", np.equal, _COMPARISON, commutative=True)
ne_p = _predicate("ne", np.not_equal, _COMPARISON, commutative=True)
lt_p = _predicate("lt", np.less, _COMPARISON, "{0} < {1}")
le_p = _predicate("le", np.less_equal, _COMPARISON, "{0} <= {1}")
gt_p = _predicate("gt", np.greater, _COMPARISON, "{0} > {1}")
ge_p = _predicate("ge", np.greater_equal, _COMPARISON, "{0} >= {1}")
and_p = _predicate("and", np.logical_and, "logical operation on booleans", commutative=True)
or_p = _predicate("or", np.logical_or, "logical operation on booleans", commutative=True)
xor_p = _predicate("xor", np.logical_xor, "logical operation on booleans", commutative=True)
not_p = _predicate("not", np.logical_not, "logical negation of booleans", arity=1)
isfinite_p = _predicate("isfinite", np.isfinite, "whether x is neither infinite nor NaN", arity=1)
isnan_p = _predicate("isnan", np.isnan, "whether x is NaN", arity=1)
floor_divide_int_p = declare(
    "floor_divide_int", impl=np.floor_divide, abstract=_binary_rule("floor_divide"), vjp=None, jvp=None,
    batch=_batch_elementwise, plan=Plan(), algebra=Algebra(), arity=2, doc="integer floor division; no derivative",
)


def _select_abstract(p: ShapedArray, x: ShapedArray, y: ShapedArray) -> ShapedArray:
    if p.dtype != _BOOL:
        raise DtypeError(f"`select` needs a boolean condition, got {p.dtype}")
    if x.dtype != y.dtype:
        raise DtypeError(f"`select` needs branches of one dtype, got {x.dtype} and {y.dtype}")
    return ShapedArray(broadcast_shapes(p.shape, x.shape, y.shape, op="where"), x.dtype)


# where(p, x, y): the cotangent goes to the chosen branch only. A NaN in the branch not chosen
# still poisons the gradient through that branch's own rule (JAX's "double where" applies).
select_p = declare(
    "select", impl=np.where, abstract=_select_abstract,
    vjp=PerInput(None, lambda g, ans, p, x, y: _unbroadcast(where(p, g, zeros((), g.dtype)), x.shape),
                 lambda g, ans, p, x, y: _unbroadcast(where(p, zeros((), g.dtype), g), y.shape)),
    jvp=PerInput(None, lambda t, ans, p, x, y: where(p, broadcast_to(t, ans.shape), zeros((), t.dtype)),
                 lambda t, ans, p, x, y: where(p, zeros((), t.dtype), broadcast_to(t, ans.shape))),
    batch=_batch_elementwise, plan=Plan(fresh=True), algebra=Algebra(), arity=3, doc="where(condition, x, y)",
)


def _convert_abstract(x: ShapedArray, *, dtype: str) -> ShapedArray:
    return ShapedArray(x.shape, np.dtype(dtype))


def _convert_deriv(g: Any, ans: Any, x: Any, *, dtype: str) -> Any:
    if x.dtype.kind not in "fc" or np.dtype(dtype).kind not in "fc":
        return None
    return convert(g, x.dtype)


def _convert_jvp(t: Any, ans: Any, x: Any, *, dtype: str) -> Any:
    if x.dtype.kind not in "fc" or np.dtype(dtype).kind not in "fc":
        return None
    return convert(t, np.dtype(dtype))


def _convert_impl(x: np.ndarray, dtype: str) -> np.ndarray:
    x = np.asarray(x)
    if x.dtype.kind == "c" and np.dtype(dtype).kind != "c":
        x = x.real  # as JAX: complex to real keeps the real part (NumPy's cast would warn)
    return x.astype(dtype)


convert_p = declare(
    "convert_element_type", impl=_convert_impl, abstract=_convert_abstract,
    vjp=PerInput(_convert_deriv), jvp=PerInput(_convert_jvp), batch=_batch_elementwise, plan=Plan(view=True),
    algebra=Algebra(identity=_same_type_identity), arity=1, attrs=("dtype",), doc="x converted to another dtype",
)
stop_gradient_p = declare(
    "stop_gradient", impl=lambda x: x, abstract=_same, vjp=PerInput(None), jvp=PerInput(None),
    batch=_batch_elementwise, plan=Plan(view=True), algebra=Algebra(), arity=1,
    doc="identity whose derivative is zero",
)


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
    return broadcast_to(reshape(g, _keepdims_shape(x_shape, axes)), x_shape)


def _sum_impl(x: np.ndarray, axes: tuple[int, ...]) -> np.ndarray:
    # The ufunc's reduce directly: np.sum's Python-level dispatch costs more than a small sum.
    return np.add.reduce(x, axis=axes, dtype=_integer_dtype(x)) if axes else x


def _integer_dtype(x: np.ndarray) -> np.dtype | None:
    """The dtype to accumulate in: an integer operand's own, as the shape rules promise (NumPy's
    sums and products would widen int32 to int64); None leaves other dtypes to NumPy."""
    return x.dtype if x.dtype.kind in "iu" else None


reduce_sum_p = declare(
    "reduce_sum", impl=_sum_impl, abstract=_reduce_abstract("reduce_sum"),
    vjp=PerInput(lambda g, ans, x, *, axes: _expand_reduced(g, x.shape, axes)),
    jvp=PerInput(lambda t, ans, x, *, axes: reduce_sum(t, axes)), batch=_batch_shift_axes, plan=Plan(),
    algebra=Algebra(identity=lambda inputs, out, attrs: not attrs["axes"]), arity=1, attrs=("axes",),
    doc="sum over the given axes",
)


def _minmax_deriv(g: Any, ans: Any, x: Any, *, axes: tuple[int, ...]) -> Any:
    # Ties share the cotangent equally, as in JAX.
    hits = convert(x == _expand_reduced(ans, x.shape, axes), g.dtype)
    counts = _expand_reduced(reduce_sum(hits, axes), x.shape, axes)
    return _expand_reduced(g, x.shape, axes) * hits / counts


def _minmax_jvp(t: Any, ans: Any, x: Any, *, axes: tuple[int, ...]) -> Any:
    hits = convert(x == _expand_reduced(ans, x.shape, axes), t.dtype)
    return reduce_sum(t * hits, axes) / reduce_sum(hits, axes)


def _reduction(name: str, impl: Callable, vjp: Derivative, jvp: Derivative, doc: str,
               out_dtype: Callable[[np.dtype], np.dtype] = lambda d: d) -> Primitive:
    return declare(name, impl=impl, abstract=_reduce_abstract(name, out_dtype), vjp=vjp, jvp=jvp,
                   batch=_batch_shift_axes, plan=Plan(), algebra=Algebra(), arity=1, attrs=("axes",), doc=doc)


reduce_max_p = _reduction("reduce_max", lambda x, axes: np.maximum.reduce(x, axis=axes), PerInput(_minmax_deriv),
                          PerInput(_minmax_jvp), "maximum over the given axes; ties share the derivative")
reduce_min_p = _reduction("reduce_min", lambda x, axes: np.minimum.reduce(x, axis=axes), PerInput(_minmax_deriv),
                          PerInput(_minmax_jvp), "minimum over the given axes; ties share the derivative")


def _others_last(x: Any) -> Any:
    """Along the last axis, each element's product of the others, by a pairwise product tree:
    O(log n) operations and only multiplications (no division by x), so it is exact with any
    number of zeros or tiny values, and its own derivatives are right to every order."""
    n = x.shape[-1]
    if n <= 1:
        return ones(x.shape, x.dtype)
    if n % 2:
        x = concatenate([x, ones(tuple(x.shape[:-1]) + (1,), x.dtype)], -1)
    pairs = reshape(x, tuple(x.shape[:-1]) + (x.shape[-1] // 2, 2))
    a, b = pairs[..., 0], pairs[..., 1]
    up = _others_last(a * b)  # for each pair, the product of all the other pairs
    out = reshape(stack([up * b, up * a], -1), x.shape)
    return out[..., :n] if n % 2 else out


def _prod_others(ans: Any, x: Any, axes: tuple[int, ...]) -> Any:
    """For each element, the product of the other elements of its reduction group, zeros included."""
    if not axes:
        return ones(x.shape, x.dtype)
    kept = tuple(i for i in range(x.ndim) if i not in axes)
    perm = kept + tuple(axes)
    moved = transpose(x, perm)
    flat = reshape(moved, tuple(moved.shape[:len(kept)]) + (math.prod(x.shape[i] for i in axes),))
    others = reshape(_others_last(flat), moved.shape)
    return transpose(others, tuple(int(i) for i in np.argsort(perm)))


reduce_prod_p = _reduction(
    "reduce_prod", lambda x, axes: np.prod(x, axis=axes, dtype=_integer_dtype(x)),
    PerInput(lambda g, ans, x, *, axes: _expand_reduced(g, x.shape, axes) * _prod_others(ans, x, axes)),
    PerInput(lambda t, ans, x, *, axes: reduce_sum(t * _prod_others(ans, x, axes), axes)),
    "product over the given axes (zeros included: no division)")
reduce_and_p = _reduction("reduce_and", lambda x, axes: np.all(x, axis=axes), None, None,
                          "whether every element is true, over the given axes", lambda d: _BOOL)
reduce_or_p = _reduction("reduce_or", lambda x, axes: np.any(x, axis=axes), None, None,
                         "whether any element is true, over the given axes", lambda d: _BOOL)


def _arg_abstract(name: str):
    def rule(x: ShapedArray, *, axis: int) -> ShapedArray:
        (ax,) = _norm_axes((axis,), x.ndim, name)
        if x.shape[ax] == 0:
            raise ShapeError(f"`{name}` of an empty axis is undefined")
        return ShapedArray(tuple(n for i, n in enumerate(x.shape) if i != ax), dtypes.default_int())
    return rule


argmax_p = declare("argmax", impl=lambda x, axis: np.argmax(x, axis=axis).astype(dtypes.default_int()),
                   abstract=_arg_abstract("argmax"), vjp=None, jvp=None, batch=_batch_shift_axes, plan=Plan(),
                   algebra=Algebra(), arity=1, attrs=("axis",), doc="index of the maximum along an axis")
argmin_p = declare("argmin", impl=lambda x, axis: np.argmin(x, axis=axis).astype(dtypes.default_int()),
                   abstract=_arg_abstract("argmin"), vjp=None, jvp=None, batch=_batch_shift_axes, plan=Plan(),
                   algebra=Algebra(), arity=1, attrs=("axis",), doc="index of the minimum along an axis")


def _cumsum_abstract(x: ShapedArray, *, axis: int, reverse: bool) -> ShapedArray:
    _norm_axes((axis,), x.ndim, "cumsum")
    return x


def _cumsum_impl(x: np.ndarray, axis: int, reverse: bool) -> np.ndarray:
    if reverse:
        return np.flip(np.cumsum(np.flip(x, axis), axis=axis, dtype=_integer_dtype(x)), axis)
    return np.cumsum(x, axis=axis, dtype=_integer_dtype(x))


cumsum_p = declare(
    "cumsum", impl=_cumsum_impl, abstract=_cumsum_abstract,
    vjp=PerInput(lambda g, ans, x, *, axis, reverse: cumsum_p(g, axis=axis, reverse=not reverse)),
    jvp=PerInput(lambda t, ans, x, *, axis, reverse: cumsum_p(t, axis=axis, reverse=reverse)),
    batch=_batch_shift_axes, plan=Plan(), algebra=Algebra(), arity=1, attrs=("axis", "reverse"),
    doc="running sum along an axis (from the end when reverse)",
)


# ----------------------------------------------------------------------------- shapes

def _reshape_abstract(x: ShapedArray, *, shape: tuple[int, ...]) -> ShapedArray:
    size = int(np.prod(shape, dtype=np.int64)) if shape else 1
    if size != x.size or any(n < 0 for n in shape):
        raise ShapeError(f"cannot reshape an array of shape {x.shape} ({x.size} elements) into {shape}")
    return ShapedArray(tuple(shape), x.dtype)


reshape_p = declare(
    "reshape", impl=lambda x, shape: np.asarray(x).reshape(shape), abstract=_reshape_abstract,
    vjp=PerInput(lambda g, ans, x, *, shape: reshape(g, x.shape)),
    jvp=PerInput(lambda t, ans, x, *, shape: reshape(t, shape)), batch=_batch_reshape, plan=Plan(view=True),
    # reshape(reshape(x, a), b) is reshape(x, b)
    algebra=Algebra(identity=_same_type_identity, compose=lambda inner, outer: outer),
    arity=1, attrs=("shape",), doc="the same elements in another shape (C order)",
)


def _transpose_abstract(x: ShapedArray, *, perm: tuple[int, ...]) -> ShapedArray:
    if sorted(perm) != list(range(x.ndim)):
        raise ShapeError(f"transpose permutation {perm} does not fit an array of {x.ndim} dimensions")
    return ShapedArray(tuple(x.shape[p] for p in perm), x.dtype)


transpose_p = declare(
    "transpose", impl=lambda x, perm: np.asarray(x).transpose(perm), abstract=_transpose_abstract,
    vjp=PerInput(lambda g, ans, x, *, perm: transpose(g, tuple(np.argsort(perm)))),
    jvp=PerInput(lambda t, ans, x, *, perm: transpose(t, perm)), batch=_batch_transpose, plan=Plan(view=True),
    algebra=Algebra(
        identity=lambda inputs, out, attrs: (_same_type(inputs[0], out)
                                             and tuple(attrs["perm"]) == tuple(range(out.aval.ndim))),
        # transpose(transpose(x, p), q) is one transpose by the composed permutation
        compose=lambda inner, outer: {"perm": tuple(inner["perm"][i] for i in outer["perm"])}),
    arity=1, attrs=("perm",), doc="axes permuted: result axis i is operand axis perm[i]",
)


def _broadcast_abstract(x: ShapedArray, *, shape: tuple[int, ...]) -> ShapedArray:
    if broadcast_shapes(x.shape, shape, op="broadcast_to") != tuple(shape):
        raise ShapeError(f"cannot broadcast an array of shape {x.shape} to {tuple(shape)}")
    return ShapedArray(tuple(shape), x.dtype)


broadcast_p = declare(
    "broadcast_to", impl=lambda x, shape: np.broadcast_to(x, shape), abstract=_broadcast_abstract,
    vjp=PerInput(lambda g, ans, x, *, shape: _unbroadcast(g, x.shape)),
    jvp=PerInput(lambda t, ans, x, *, shape: broadcast_to(t, shape)), batch=_batch_broadcast, plan=Plan(view=True),
    algebra=Algebra(identity=_same_type_identity), arity=1, attrs=("shape",),
    doc="x repeated along new or size-1 axes to a larger shape (NumPy's broadcasting)",
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


concatenate_p = declare(
    "concatenate", impl=lambda *xs, axis: np.concatenate(xs, axis=axis), abstract=_concat_abstract,
    vjp=PerInput.variadic(_concat_vjp), jvp=Linear(), batch=_batch_concatenate, plan=Plan(), algebra=Algebra(),
    arity=None, attrs=("axis",), doc="arrays joined along an existing axis",
)


# ----------------------------------------------------------------------------- indexing


def _gather_impl(x: np.ndarray, *arrays: np.ndarray, index: tuple) -> np.ndarray:
    return x[index_to_numpy(index, arrays)]


def _gather_abstract(x: ShapedArray, *arrays: ShapedArray, index: tuple) -> ShapedArray:
    return ShapedArray(indexed_shape(x.shape, index, [a.shape for a in arrays]), x.dtype)


def _gather_vjp(g: Any, ans: Any, x: Any, *arrays: Any, index: tuple) -> Any:
    return index_update_p(zeros(x.shape, g.dtype), g, *arrays, index=index, mode="add")


def _selects_everything(inputs: list[Any], out: Any, attrs: dict[str, Any]) -> bool:
    """x[:], x[...], x[0:n]: every element, in order."""
    index = attrs["index"]
    return len(inputs) == 1 and _same_type(inputs[0], out) and all(
        item[0] == "ellipsis" or (item[0] == "slice" and item[1] in (None, 0) and item[3] in (None, 1)
                                  and (item[2] is None or item[2] >= dim))
        for item, dim in zip(index, index_dims(index, inputs[0].aval.shape)))


gather_p = declare(
    "gather", impl=_gather_impl, abstract=_gather_abstract, vjp=PerInput.first_only(_gather_vjp),
    jvp=PerInput.first_only(lambda t, ans, x, *arrays, index: gather_p(t, *arrays, index=index)),
    batch=_batch_gather, plan=Plan(view=True), algebra=Algebra(identity=_selects_everything),
    arity=None, attrs=("index",), doc="x[index] with a static index and integer index arrays",
)


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
                return index_update_p(g, zeros(y.shape, g.dtype), *arrays, index=index, mode="set")
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
                return index_update_p(t, zeros(y.shape, t.dtype), *arrays, index=index, mode="set")
            return index_update_p(t, y, *arrays, index=index, mode="mul")
        if i == 1:
            if mode == "mul":
                t = t * gather_p(x, *arrays, index=index)
            zeros_x = zeros(x.shape, t.dtype)
            mode_t = "set" if mode == "set" else "add"
            return index_update_p(zeros_x, broadcast_to(t, gather_p(zeros_x, *arrays, index=index).shape)
                                  if mode_t == "set" else t, *arrays, index=index, mode=mode_t)
        return None
    return rule


def _index_update_guard(vals: list[Any], wanted: list[bool], attrs: dict[str, Any]) -> None:
    """Refuse a derivative the rules would get wrong, rather than return it.

    x.at[idx].multiply(y) with an element of x selected twice multiplies it by several entries of
    y; the rule for y's derivative leaves out the other factors (JAX refuses this case too).
    """
    if attrs["mode"] != "mul" or not wanted[1]:
        return
    repeated = selects_repeatedly(tuple(vals[0].shape), attrs["index"], vals[2:])
    if repeated is False:
        return
    why = ("selects an element more than once" if repeated else
           "is traced, so whether it selects an element more than once cannot be checked")
    raise DifferentiationError(
        f"x.at[idx].multiply(y) cannot be differentiated with respect to y when idx {why}: the "
        "derivative for each entry of y would need the other entries multiplied into the same "
        "element. Use indices without repeats (multiply repeated entries of y together first), "
        "pass the indices as constants rather than traced values, or wrap y in stop_gradient."
    )


index_update_p = declare(
    "index_update", impl=_index_update_impl, abstract=_index_update_abstract,
    vjp=PerInput.variadic(_index_update_vjp), jvp=PerInput.variadic(_index_update_jvp),
    batch=_batch_index_update, plan=Plan(), algebra=Algebra(), arity=None, attrs=("index", "mode"),
    guard=_index_update_guard, doc="x.at[index].set/add/multiply(y)",
)


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
    return swap_last_two(x)


# Products, solves and factorisations cost more than their operands' size: plans check the
# deadline after each.
_SUPERLINEAR = Plan(superlinear=True)

matmul_p = declare(
    "matmul", impl=np.matmul, abstract=_matmul_abstract,
    vjp=PerInput(lambda g, ans, a, b: _unbroadcast(matmul_p(g, _mT(b)), a.shape),
                 lambda g, ans, a, b: _unbroadcast(matmul_p(_mT(a), g), b.shape)),
    jvp=PerInput(lambda t, ans, a, b: matmul_p(t, b), lambda t, ans, a, b: matmul_p(a, t)),
    batch=_batch_matmul, plan=Plan(fresh=True, superlinear=True), algebra=Algebra(),
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
        grad = einsum_p(g, *[o for j, o in enumerate(ops) if j != i], spec=",".join([out] + others) + "->" + kept)
        if kept != target:  # indices summed away inside this operand alone: broadcast back
            shape = [ops[i].shape[k] if c in kept else 1 for k, c in enumerate(target)]
            order = [c for c in target if c in kept]
            perm = tuple(kept.index(c) for c in order)
            grad = broadcast_to(reshape(transpose(grad, perm), shape), ops[i].shape)
        return grad
    return rule


def _einsum_jvp(i: int) -> Rule:
    def rule(t: Any, ans: Any, *ops: Any, spec: str) -> Any:
        args = list(ops)
        args[i] = t
        return einsum_p(*args, spec=spec)
    return rule


def _check_einsum_spec(attrs: dict[str, Any], n_operands: int) -> None:
    """What a spec's syntax cannot say: one term per operand, each letter once per term (the
    derivative rules need that; take diagonals with gather first), and output letters that are
    distinct and name an operand's axis."""
    spec = attrs["spec"]
    lhs, _, out = spec.partition("->")
    terms = lhs.split(",")
    if len(terms) != n_operands:
        raise InvalidAttributes("spec", f"{spec!r} names {len(terms)} operand(s), but the node has "
                                        f"{n_operands} input(s)")
    for term in [*terms, out]:
        if len(set(term)) != len(term):
            raise InvalidAttributes("spec", f"{term!r} in {spec!r} repeats a letter; each letter may appear "
                                            "once per operand and in the output (take a diagonal with gather first)")
    unknown = sorted(set(out) - set(lhs))
    if unknown:
        raise InvalidAttributes("spec", f"output letter(s) {''.join(unknown)!r} of {spec!r} name no input axis")


einsum_p = declare(
    "einsum", impl=lambda *ops, spec: np.einsum(spec, *ops, optimize=len(ops) > 2), abstract=_einsum_abstract,
    vjp=PerInput.variadic(_einsum_vjp), jvp=PerInput.variadic(_einsum_jvp), batch=_batch_einsum,
    plan=_SUPERLINEAR, algebra=Algebra(), arity=None, attrs=("spec",), doc="explicit-output einsum",
    check_attrs=_check_einsum_spec,
)


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


def _matrix_function(name: str, impl: Callable, abstract: Callable, vjp: Rule, jvp: Rule, doc: str) -> Primitive:
    """A function of square matrices in the last two axes (leading axes are a batch)."""
    return declare(name, impl=impl, abstract=abstract, vjp=PerInput(vjp), jvp=PerInput(jvp), batch=_batch_leading,
                   plan=_SUPERLINEAR, algebra=Algebra(), arity=1, doc=doc)


solve_p = declare(
    "solve", impl=np.linalg.solve, abstract=_solve_abstract,
    vjp=PerInput(lambda g, ans, a, b: _unbroadcast(-matmul_p(solve_p(_mT(a), g), _mT(ans)), a.shape),
                 lambda g, ans, a, b: _unbroadcast(solve_p(_mT(a), g), b.shape)),
    jvp=PerInput(lambda t, ans, a, b: -solve_p(a, matmul_p(t, ans)), lambda t, ans, a, b: solve_p(a, t)),
    batch=_batch_matrix_operands, plan=_SUPERLINEAR, algebra=Algebra(), arity=2, doc="solve(a, b) for matrices b",
)
inv_p = _matrix_function(
    "inv", np.linalg.inv, _square_abstract("inv"),
    lambda g, ans, a: -matmul_p(matmul_p(_mT(ans), g), _mT(ans)),
    lambda t, ans, a: -matmul_p(matmul_p(ans, t), ans), "matrix inverse",
)


def _det_factor(ans: Any) -> Any:
    return expand_dims(expand_dims(ans, -1), -1)


def _sum_last_two(x: Any) -> Any:
    return reduce_sum_p(x, axes=(x.ndim - 2, x.ndim - 1))


def _cofactor(a: np.ndarray) -> np.ndarray:
    """The cofactor matrix of each matrix: adj(a) transposed, the derivative of det(a).

    Up to 3x3 each cofactor is written out as a minor (exact integers stay exact). Larger matrices
    are balanced first (`_balanced_apply`: rows and columns scaled by powers of two, exactly), so that
    neither a badly scaled matrix nor det's range costs digits, then take det(b) * inv(b).T from
    LAPACK's LU where its determinant is a nonzero finite number (accurate as JAX's), and the SVD
    where it is zero (`_svd_cofactors`, exact at singular matrices). A matrix with NaN or an
    infinity gets NaN cofactors (the SVD is never given one: OpenBLAS's may never return)."""
    a = np.asarray(a)
    n = a.shape[-1]
    if n == 0:
        return np.zeros_like(a)
    if n <= 3:
        return _small_cofactors(a)

    def cofactors(b: np.ndarray) -> np.ndarray:
        out = np.empty_like(b)
        d = np.linalg.det(b)
        lu = (d != 0) & np.isfinite(d)
        if lu.any():
            out[lu] = d[lu][:, None, None] * np.swapaxes(np.linalg.inv(b[lu]), -1, -2)
        if not lu.all():
            out[~lu] = _svd_cofactors(b[~lu])
        return out

    return _balanced_apply(cofactors, a)


def _cofactor_derivative(a: np.ndarray, t: np.ndarray) -> np.ndarray:
    """The derivative of the cofactors of a in the direction t: det's Hessian applied to t, a
    bilinear form symmetric in its two matrix arguments. Minors up to 3x3; above, balanced as in
    `_cofactor`, from the SVD (`_svd_cofactor_derivative`): exact at singular matrices and near
    them, where a formula through the inverse, tr(b t) c - c t^T b^T, cancels terms of the size of
    the inverse and loses eps * cond(a) of its accuracy."""
    a, t = np.broadcast_arrays(np.asarray(a), np.asarray(t))
    n = a.shape[-1]
    if n == 0:
        return np.zeros_like(t)
    if n <= 3:
        return _small_cofactors(a, t)
    return _balanced_apply(_svd_cofactor_derivative, a, t)


def _balanced_apply(cofactor_function: Callable[..., np.ndarray], a: np.ndarray, t: np.ndarray | None = None
                    ) -> np.ndarray:
    """cofactor_function(b) (or (b, t_b), for t of a's shape) for a balanced a = diag(2^r) b diag(2^c),
    scaled back.
    cofactor(a)_ij = 2^(sum r + sum c - r_i - c_j) cofactor(b)_ij, and the same for its derivative
    in t, with t_b = diag(2^-r) t diag(2^-c): powers of two, so every scaling is exact (an entry
    below 2^-1000 or so of its row's and column's largest may round: it weighs nothing beside
    them). Matrices with NaN or infinities are left out and get NaN."""
    n = a.shape[-1]
    batch = a.shape[:-2]
    flat = a.reshape(-1, n, n)
    out = np.full(flat.shape, np.nan, dtype=np.result_type(a, t) if t is not None else a.dtype)
    finite = np.isfinite(flat).all(axis=(-2, -1))
    if finite.any():
        m = flat[finite]
        with np.errstate(all="ignore"):
            rows = _exponents(np.abs(m).max(axis=-1))  # (k, n)
            m = _times_power_of_two(m, -rows[:, :, None])
            cols = _exponents(np.abs(m).max(axis=-2))
            m = _times_power_of_two(m, -cols[:, None, :])
            if t is None:
                result = cofactor_function(m)
            else:
                direction = _times_power_of_two(t.reshape(-1, n, n)[finite], -rows[:, :, None] - cols[:, None, :])
                result = cofactor_function(m, direction)
            total = rows.sum(axis=-1) + cols.sum(axis=-1)
            out[finite] = _times_power_of_two(result, total[:, None, None] - rows[:, :, None] - cols[:, None, :])
    return out.reshape(batch + (n, n))


def _exponents(magnitudes: np.ndarray) -> np.ndarray:
    """e with magnitudes = f 2^e, f in [0.5, 1); 0 for a zero (a zero row or column stays as it is)."""
    return np.frexp(magnitudes)[1].astype(np.int64)


def _times_power_of_two(x: np.ndarray, e: np.ndarray) -> np.ndarray:
    """x * 2^e, exactly (ldexp, for real and complex x alike)."""
    if np.iscomplexobj(x):
        out = np.empty(np.broadcast_shapes(x.shape, np.shape(e)), x.dtype)
        out.real, out.imag = np.ldexp(x.real, e), np.ldexp(x.imag, e)
        return out
    return np.ldexp(x, e).astype(x.dtype, copy=False)


def _svd_cofactors(a: np.ndarray) -> np.ndarray:
    """Cofactors from the SVD a = u diag(s) vh: det(u) det(vh) conj(u) diag(p) conj(vh), p_i the
    product of every singular value but s_i (prefix and suffix products, no division), so exact at
    singular matrices (rank n - 1: the adjugate's one nonzero term; lower rank: zero). Accurate
    relative to the largest cofactor only, which is why invertible matrices go through the LU."""
    u, s, vh = np.linalg.svd(a)
    before, after = _products_before_and_after(s)
    sign = np.linalg.det(u) * np.linalg.det(vh)
    return sign[..., None, None] * ((np.conj(u) * (before * after)[..., None, :]) @ np.conj(vh))


def _small_cofactors(a: np.ndarray, t: np.ndarray | None = None) -> np.ndarray:
    """Cofactors of 1x1, 2x2 and 3x3 matrices from their minors; with `t`, their derivative in
    the direction t (the minors' product rule)."""
    n = a.shape[-1]
    if n == 1:
        return np.ones_like(a) if t is None else np.zeros_like(t)
    if n == 2:
        if t is not None:
            return _small_cofactors(t)  # 2x2 cofactors are linear
        out = np.empty_like(a)
        out[..., 0, 0], out[..., 0, 1] = a[..., 1, 1], 0.0 - a[..., 1, 0]
        out[..., 1, 0], out[..., 1, 1] = 0.0 - a[..., 0, 1], a[..., 0, 0]
        return out
    out = np.empty_like(a if t is None else t)
    others = [[k for k in range(n) if k != i] for i in range(n)]
    for i in range(n):
        for j in range(n):
            (r0, r1), (c0, c1) = others[i], others[j]
            if t is None:
                minor = a[..., r0, c0] * a[..., r1, c1] - a[..., r0, c1] * a[..., r1, c0]
            else:
                minor = (t[..., r0, c0] * a[..., r1, c1] + a[..., r0, c0] * t[..., r1, c1]
                         - t[..., r0, c1] * a[..., r1, c0] - a[..., r0, c1] * t[..., r1, c0])
            out[..., i, j] = minor if (i + j) % 2 == 0 else 0.0 - minor  # (0.0, never -0.0, as JAX)
    return out


def _products_before_and_after(s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For each i, the product of s_0 .. s_(i-1) and of s_(i+1) .. s_(n-1) (prefix and suffix
    products, 1 where empty): no division, so zeros in s are exact."""
    ones = np.ones(s.shape[:-1] + (1,), s.dtype)
    before = np.cumprod(np.concatenate([ones, s[..., :-1]], axis=-1), axis=-1)
    after = np.cumprod(np.concatenate([ones, s[..., :0:-1]], axis=-1), axis=-1)[..., ::-1]
    return before, after


def _pair_products(s: np.ndarray) -> np.ndarray:
    """q[..., i, j]: the product of every value of s but s_i and s_j (i != j); 0 on the diagonal.
    From prefix, infix and suffix products: no division, so zeros in s are exact."""
    n = s.shape[-1]
    ones = np.ones(s.shape[:-1] + (1,), s.dtype)
    before, after = _products_before_and_after(s)
    q = np.zeros(s.shape + (n,), s.dtype)
    for i in range(n - 1):
        between = np.cumprod(np.concatenate([ones, s[..., i + 1:n - 1]], axis=-1), axis=-1)  # s_(i+1) .. s_(j-1)
        q[..., i, i + 1:] = before[..., i:i + 1] * between * after[..., i + 1:]
    return q + np.swapaxes(q, -1, -2)


def _svd_cofactor_derivative(a: np.ndarray, t: np.ndarray) -> np.ndarray:
    """From a = u diag(s) vh, where cofactor(u m vh) = det(u) det(vh) conj(u) cofactor(m) conj(vh):
    the derivative of a diagonal matrix's cofactors is D with D_ii = the sum over k != i of
    t'_kk q_ik and D_ij = -t'_ji q_ij, for t' = u^H t vh^H and q the products of the singular
    values but two (`_pair_products`). Exact at singular matrices."""
    n = a.shape[-1]
    u, s, vh = np.linalg.svd(a)
    uc, vc = np.conj(u), np.conj(vh)
    tp = np.swapaxes(uc, -1, -2) @ t @ np.swapaxes(vc, -1, -2)
    q = _pair_products(s)
    d = -np.swapaxes(tp, -1, -2) * q
    diagonal = np.arange(n)
    d[..., diagonal, diagonal] = (q * np.diagonal(tp, axis1=-2, axis2=-1)[..., None, :]).sum(axis=-1)
    sign = np.linalg.det(u) * np.linalg.det(vh)
    return sign[..., None, None] * (uc @ d @ vc)


def _cofactor_derivative_abstract(a: ShapedArray, t: ShapedArray) -> ShapedArray:
    _square_abstract("cofactor_derivative")(a)
    if t.shape[-2:] != a.shape[-2:] or t.dtype != a.dtype:
        raise ShapeError(f"cofactor_derivative: a direction of shape {t.shape} ({t.dtype}) for matrices of shape "
                         f"{a.shape} ({a.dtype})")
    return ShapedArray(broadcast_shapes(a.shape[:-2], t.shape[:-2], op="cofactor_derivative") + a.shape[-2:],
                       a.dtype)


def _cofactor_second(a: Any, t: Any, s: Any) -> Any:
    """The second derivative of the cofactors in the directions t and s, where a is invertible:
    with b = inv(a) and c = cofactor(a), -tr(b s b t) c + tr(b t) dc[s] - dc[s] t^T b^T
    + c t^T b^T s^T b^T. Symmetric in t and s (det's third derivative is)."""
    b = inv_p(a)
    c = cofactor_p(a)
    dc_s = cofactor_derivative_p(a, s)
    bt = _mT(b)
    return (_det_factor(-trace_last_two(matmul_p(matmul_p(b, s), matmul_p(b, t)))) * c
            + _det_factor(trace_last_two(matmul_p(b, t))) * dc_s
            - matmul_p(matmul_p(dc_s, _mT(t)), bt)
            + matmul_p(matmul_p(matmul_p(c, _mT(t)), bt), matmul_p(_mT(s), bt)))


# The cofactors' derivative is det's Hessian applied to a direction, symmetric: it is its own
# transpose, so the JVP and the VJP are the same primitive, and det's first and second
# derivatives are exact at singular matrices. Its own derivative in a (det's third) goes through
# the inverse: at an invertible matrix every order works; at a singular one, inv raises.
cofactor_p = _matrix_function(
    "cofactor", _cofactor, _square_abstract("cofactor"),
    lambda g, ans, a: cofactor_derivative_p(a, g),
    lambda t, ans, a: cofactor_derivative_p(a, t),
    "the cofactor matrix, adj(a) transposed (det's derivative)",
)
cofactor_derivative_p = declare(
    "cofactor_derivative", impl=_cofactor_derivative, abstract=_cofactor_derivative_abstract,
    vjp=PerInput(lambda g, ans, a, t: _unbroadcast(_cofactor_second(a, t, g), a.shape),
                 lambda g, ans, a, t: _unbroadcast(cofactor_derivative_p(a, g), t.shape)),
    jvp=PerInput(lambda d, ans, a, t: _cofactor_second(a, t, d), lambda d, ans, a, t: cofactor_derivative_p(a, d)),
    batch=_batch_matrix_operands, plan=_SUPERLINEAR, algebra=Algebra(), arity=2,
    doc="the derivative of cofactor(a) in the direction t (det's Hessian applied to t)",
)
det_p = _matrix_function(
    "det", np.linalg.det, _scalar_of_matrix("det"),
    lambda g, ans, a: _det_factor(g) * cofactor_p(a),
    lambda t, ans, a: _sum_last_two(cofactor_p(a) * t), "determinant",
)
logabsdet_p = _matrix_function(
    "logabsdet", lambda a: np.linalg.slogdet(a)[1], _scalar_of_matrix("logabsdet"),
    lambda g, ans, a: _det_factor(g) * _mT(inv_p(a)),
    lambda t, ans, a: trace_last_two(solve_p(a, t)), "log|det a|",
)
detsign_p = _matrix_function("det_sign", lambda a: np.linalg.slogdet(a)[0], _scalar_of_matrix("det_sign"),
                             None, None, "sign of det a")


def _phi(x: Any) -> Any:
    """Lower triangle with the diagonal halved (the Cholesky derivative's projection)."""
    n = x.shape[-1]
    mask = np.tril(np.ones((n, n))) - 0.5 * np.eye(n)
    return x * constant(mask.astype(x.dtype))


def _cholesky_vjp(g: Any, ans: Any, a: Any) -> Any:
    # Murray (2016): abar = L^-T phi(L^T Lbar) L^-1, symmetrised since only the lower part is read.
    eye = constant(np.broadcast_to(np.eye(a.shape[-1], dtype=a.dtype), a.shape))
    linv = solve_p(ans, eye)
    s = matmul_p(matmul_p(_mT(linv), _phi(matmul_p(_mT(ans), g))), linv)
    return (s + _mT(s)) * 0.5


def _cholesky_jvp(t: Any, ans: Any, a: Any) -> Any:
    eye = constant(np.broadcast_to(np.eye(a.shape[-1], dtype=a.dtype), a.shape))
    linv = solve_p(ans, eye)
    return matmul_p(ans, _phi(matmul_p(matmul_p(linv, t), _mT(linv))))


cholesky_p = declare(
    "cholesky", impl=np.linalg.cholesky, abstract=_square_abstract("cholesky"), vjp=PerInput(_cholesky_vjp),
    jvp=PerInput(_cholesky_jvp), batch=_batch_leading, plan=Plan(superlinear=True), algebra=Algebra(), arity=1,
    doc="lower Cholesky factor of a symmetric positive-definite matrix",
)


# ----------------------------------------------------------------------------- operations for rules
# Derivative and batching rules (above) and the engine's interpreters use these. Each makes the
# primitive calls that the engine.numpy function of the same name makes for the operands rules
# pass (engine values, and Python scalars that take their dtype), so derivatives are the same
# graphs whichever is used; engine.numpy builds on them.


def constant(value: np.ndarray) -> Array:
    """NumPy data as a read-only engine constant, as jnp.asarray brings it in (canonical dtype)."""
    value = np.asarray(value)
    target = dtypes.canonicalize(value.dtype)
    value = value.astype(target) if value.dtype != target else value.copy()
    value.flags.writeable = False
    return Array(value)


def zeros(shape: tuple[int, ...], dtype: Any) -> Array:
    """jnp.zeros: a read-only constant, refused past the element budget like any new array."""
    return _filled(np.zeros, shape, dtype)


def ones(shape: tuple[int, ...], dtype: Any) -> Array:
    return _filled(np.ones, shape, dtype)


def _filled(make: Callable[..., np.ndarray], shape: tuple[int, ...], dtype: Any) -> Array:
    dims = tuple(int(n) for n in shape)
    check_elements(dims, "a new array")
    value = make(dims, dtype=np.dtype(dtype))
    value.flags.writeable = False
    return Array(value)


def convert(x: Any, dtype: Any) -> Any:
    """x as `dtype` (x itself when it has that dtype already)."""
    if x.dtype == dtype:
        return x
    return convert_p(x, dtype=np.dtype(dtype).name)


def promote(*args: Any) -> list[Any]:
    """Engine values and Python scalars converted to one dtype by JAX's rules (Python scalars are
    weakly typed: they take the arrays' dtype). engine.numpy first brings any other value in."""
    if len(args) == 2:  # the common case, without the general machinery
        a, b = args
        if isinstance(a, (Array, Tracer)) and isinstance(b, (Array, Tracer)) and a.dtype == b.dtype:
            return [a, b]
    dtype = dtypes.result_type(*args)
    out = []
    for a in args:
        if isinstance(a, (Array, Tracer)):
            out.append(a if a.dtype == dtype else convert(a, dtype))
        else:
            out.append(Array(np.asarray(a, dtype=dtype)[()]))
    return out


def where(condition: Any, x: Any, y: Any) -> Any:
    """jnp.where for a boolean condition."""
    return select_p(condition, *promote(x, y))


def reshape(x: Any, shape: tuple[int, ...]) -> Any:
    shape = tuple(int(n) for n in shape)
    return x if tuple(x.shape) == shape else reshape_p(x, shape=shape)


def broadcast_to(x: Any, shape: tuple[int, ...]) -> Any:
    shape = tuple(int(n) for n in shape)
    return x if tuple(x.shape) == shape else broadcast_p(x, shape=shape)


def transpose(x: Any, perm: tuple[int, ...]) -> Any:
    perm = tuple(int(i) % x.ndim for i in perm)
    return x if perm == tuple(range(x.ndim)) else transpose_p(x, perm=perm)


def swap_last_two(x: Any) -> Any:
    """jnp.swapaxes(x, -1, -2)."""
    perm = list(range(x.ndim))
    perm[-1], perm[-2] = perm[-2], perm[-1]
    return transpose(x, perm)


def expand_dims(x: Any, axis: int) -> Any:
    shape = list(x.shape)
    shape.insert(int(axis) % (x.ndim + 1), 1)
    return reshape(x, tuple(shape))


def reduce_sum(x: Any, axes: tuple[int, ...]) -> Any:
    """The sum over `axes` (normalised and sorted); x itself for no axes."""
    return reduce_sum_p(x, axes=tuple(axes)) if axes else x


def integer_pow(x: Any, y: int) -> Any:
    return integer_pow_p(x, y=int(y))


def concatenate(xs: list[Any], axis: int) -> Any:
    xs = promote(*xs)
    if len(xs) == 1:
        return xs[0]
    return concatenate_p(*xs, axis=int(axis) % max(xs[0].ndim, 1))


def stack(xs: list[Any], axis: int = 0) -> Any:
    xs = promote(*xs)
    shapes = {tuple(x.shape) for x in xs}
    if len(shapes) > 1:
        raise ShapeError(f"all arrays passed to stack must have the same shape, got {sorted(shapes)}")
    ax = int(axis) % (xs[0].ndim + 1)
    return concatenate([expand_dims(x, ax) for x in xs], ax)


def trace_last_two(x: Any) -> Any:
    """jnp.trace(x, axis1=-2, axis2=-1): the sum of the diagonals of the last two axes."""
    rows = np.arange(min(x.shape[-2], x.shape[-1]))
    diagonal = gather_p(x, constant(rows), constant(rows.copy()),
                        index=(("ellipsis",), ("array", 0), ("array", 1)))
    return reduce_sum_p(diagonal, axes=(diagonal.ndim - 1,))
