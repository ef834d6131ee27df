"""engine.numpy: NumPy's API over the engine's arrays, with JAX's semantics.

Every function accepts Arrays, tracers, NumPy arrays, Python scalars and nested lists. Outside a
transformation it computes at once; inside one it records the operation in the graph.
"""

from __future__ import annotations

import numpy as _np

from engine import primitives_special as _primitives_special  # noqa: F401 - registers lgamma, ... (engine.scipy)
from engine.array import Array
from engine.numpy import elementwise as _elementwise
from engine.numpy import fft, linalg
from engine.numpy import methods as _methods
from engine.numpy._base import array, asarray
from engine.numpy.complex_parts import conj, conjugate, imag, real
from engine.numpy.construction import (
    append,
    array_split,
    atleast_3d,
    c_,
    column_stack,
    cross,
    diff,
    dsplit,
    fliplr,
    flipud,
    hsplit,
    index_exp,
    kron,
    pad,
    r_,
    roll,
    rollaxis,
    rot90,
    row_stack,
    s_,
    tril,
    triu,
    vsplit,
)
from engine.numpy.contractions import (
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
    abs,
    absolute,
    add,
    arctan2,
    around,
    clip,
    divide,
    equal,
    exp2,
    float_power,
    floor_divide,
    fmod,
    greater,
    greater_equal,
    isfinite,
    isinf,
    isnan,
    less,
    less_equal,
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
    square,
    stop_gradient,
    subtract,
    true_divide,
    where,
)
from engine.numpy.float_functions import (
    allclose,
    deg2rad,
    degrees,
    fabs,
    fmax,
    fmin,
    frexp,
    isclose,
    logaddexp2,
    nan_to_num,
    rad2deg,
    radians,
    sinc,
)
from engine.numpy.reductions import (
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
from engine.numpy.sorting import (
    argpartition,
    argsort,
    argwhere,
    flatnonzero,
    msort,
    nonzero,
    partition,
    select,
    sort,
    take_along_axis,
)

_methods.install()
# The functions generated from the primitives' records (exp, log, sin, ..., hypot: see
# engine.numpy.elementwise), exported with the hand-written ones above.
globals().update(_elementwise.FROM_RECORDS)


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
