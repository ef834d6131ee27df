"""engine.numpy: NumPy's API over the engine's arrays, with JAX's semantics.

Every function accepts Arrays, tracers, NumPy arrays, Python scalars and nested lists. Outside a
transformation it computes at once; inside one it records the operation in the graph.
"""

from __future__ import annotations

import numpy as _np

from engine.array import Array
from engine.numpy import linalg  # noqa: E402  (needs the functions above)
from engine.numpy import methods as _methods  # noqa: E402
from engine.numpy._base import array, asarray
from engine.numpy._base import convert as _convert
from engine.numpy.contractions import (
    _einsum,
    diag,
    diagonal,
    dot,
    einsum,
    inner,
    matmul,
    outer,
    tensordot,
    trace,
    vdot,
)
from engine.numpy.creation import (
    arange,
    empty,
    eye,
    full,
    full_like,
    identity,
    linspace,
    ones,
    ones_like,
    zeros,
    zeros_like,
)
from engine.numpy.elementwise import (
    _integer_pow,
    abs,
    absolute,
    add,
    arccos,
    arccosh,
    arcsin,
    arcsinh,
    arctan,
    arctan2,
    arctanh,
    around,
    ceil,
    clip,
    cos,
    cosh,
    divide,
    equal,
    erf,
    exp,
    exp2,
    expm1,
    float_power,
    floor,
    floor_divide,
    fmod,
    greater,
    greater_equal,
    isfinite,
    isinf,
    isnan,
    less,
    less_equal,
    log,
    log1p,
    log2,
    log10,
    logaddexp,
    logical_and,
    logical_not,
    logical_or,
    logical_xor,
    maximum,
    minimum,
    mod,
    multiply,
    negative,
    not_equal,
    positive,
    power,
    reciprocal,
    remainder,
    round,
    sign,
    sin,
    sinh,
    sqrt,
    square,
    stop_gradient,
    subtract,
    tan,
    tanh,
    true_divide,
    trunc,
    where,
)
from engine.numpy.reductions import (
    _cumsum,
    _reduce_prod,
    _reduce_sum,
    all,
    amax,
    amin,
    any,
    argmax,
    argmin,
    cumsum,
    logsumexp,
    max,
    mean,
    min,
    prod,
    std,
    sum,
    var,
)
from engine.numpy.shapes import (
    atleast_1d,
    atleast_2d,
    broadcast_arrays,
    broadcast_to,
    concatenate,
    expand_dims,
    flip,
    hstack,
    moveaxis,
    ravel,
    repeat,
    reshape,
    split,
    squeeze,
    stack,
    swapaxes,
    take,
    tile,
    transpose,
    vstack,
)

_methods.install()


def _solve(a, b):
    from engine.primitives import solve_p

    return solve_p(a, b)


def _inv(a):
    from engine.primitives import inv_p

    return inv_p(a)


def ndim(a) -> int:
    return asarray(a).ndim


def shape(a) -> tuple:
    return tuple(asarray(a).shape)


def size(a) -> int:
    return asarray(a).size


ndarray = Array
float16 = _np.float16
float32 = _np.float32
float64 = _np.float64
int8 = _np.int8
int16 = _np.int16
int32 = _np.int32
int64 = _np.int64
uint8 = _np.uint8
uint32 = _np.uint32
bool_ = _np.bool_
complex64 = _np.complex64
complex128 = _np.complex128
dtype = _np.dtype
pi = _np.pi
e = _np.e
inf = _np.inf
nan = _np.nan
newaxis = None
finfo = _np.finfo
iinfo = _np.iinfo
