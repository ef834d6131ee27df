"""The graph IR and the tracing machinery that builds it.

A `Graph` is a flat SSA list of equations (`Eqn`) over typed variables (`Var`), in the spirit of a
jaxpr. Python functions become graphs by running them on `Tracer` objects: every operation on a
tracer goes through `bind`, which appends an equation to the innermost active `Trace`.
Outside any trace, `bind` simply runs the primitive's NumPy implementation (eager mode).

Traces nest (grad of grad, jit of grad): each has a level, an operation joins the trace of its
highest-level argument, and tracers of enclosing traces met there are captured as graph inputs
("closure conversion"), so each graph is a closed function of its inputs and captures.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from engine.array import Array
from engine.errors import (
    ConcretizationError,
    DeadlineExceeded,
    EscapedTracerError,
    TracerArrayConversionError,
)
from engine.limits import LimitExceeded
from engine.tree_util import PyTreeDef, tree_flatten, tree_unflatten

if TYPE_CHECKING:  # the record type is a layer above the IR; only its annotations are needed here
    from engine.primitive import Primitive


@dataclass(frozen=True, slots=True)
class ShapedArray:
    """The abstract value of an array: what tracing and shape inference know about it."""

    shape: tuple[int, ...]
    dtype: np.dtype

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) if self.shape else 1

    def str_short(self) -> str:
        return f"{short_dtype(self.dtype)}[{','.join(map(str, self.shape))}]"


_SHORT = {
    "float16": "f16", "float32": "f32", "float64": "f64", "int8": "i8", "int16": "i16",
    "int32": "i32", "int64": "i64", "uint8": "u8", "uint16": "u16", "uint32": "u32",
    "uint64": "u64", "bool": "bool", "complex64": "c64", "complex128": "c128",
}


def short_dtype(dtype: np.dtype) -> str:
    return _SHORT.get(np.dtype(dtype).name, np.dtype(dtype).name)


class Var:
    """A variable of the IR: defined once, by a graph input or by one equation."""

    __slots__ = ("aval", "count")
    _counter = itertools.count()

    def __init__(self, aval: ShapedArray) -> None:
        self.aval = aval
        self.count = next(Var._counter)

    def __repr__(self) -> str:
        return f"Var({self.count}:{self.aval.str_short()})"


class Literal:
    """A small constant written inline in an equation (a scalar)."""

    __slots__ = ("value", "aval")

    def __init__(self, value: np.ndarray | np.generic) -> None:
        self.value = value
        self.aval = ShapedArray(np.shape(value), np.asarray(value).dtype)

    def __repr__(self) -> str:
        return f"Literal({self.value!r})"


Atom = Var | Literal


@dataclass(slots=True)
class Eqn:
    prim: Primitive
    inputs: list[Atom]
    outputs: list[Var]
    attrs: dict[str, Any]


@dataclass
class Graph:
    """A closed function: `outputs = f(inputs)` given values for `constvars`.

    `constvars` are bound to `consts`: NumPy arrays captured from the Python closure, or (only while
    the enclosing trace is alive) tracers of an enclosing trace. A graph traced from a Python
    function (`make_graph`) also knows how its flat inputs and outputs are structured as pytrees
    (`in_tree`, `out_tree`); one read from a document, or named for one, knows its parameters'
    names (`param_names`).
    """

    invars: list[Var]
    constvars: list[Var]
    consts: list[Any]
    eqns: list[Eqn]
    outvars: list[Atom]
    in_tree: PyTreeDef | None = None
    out_tree: PyTreeDef | None = None
    param_names: list[str] | None = None

    @property
    def num_nodes(self) -> int:
        return len(self.eqns)

    def to_json(self, encoding: str = "json") -> dict[str, Any]:
        """The `nabla.graph/1` document of this graph (see engine.serialize)."""
        # The serialiser is a layer above the IR (it imports this module): imported on use.
        from engine.serialize import graph_to_json

        return graph_to_json(self, self.param_names, encoding)

    def __call__(self, *args: Any) -> Any:
        """Evaluate on arrays (or on tracers, so a graph can be transformed like a function).

        Arguments follow the traced function's signature when the graph remembers it.
        """
        # Bringing Python numbers and lists in is engine.numpy's job, a layer above the IR.
        from engine.numpy._base import asarray

        if self.in_tree is not None:
            leaves, tree = tree_flatten(args)
            if tree != self.in_tree:
                raise TypeError(f"this graph takes arguments structured as {self.in_tree}, got {tree}")
        else:
            leaves = list(args)
        if len(leaves) != len(self.invars):
            raise TypeError(f"this graph takes {len(self.invars)} array argument(s), got {len(leaves)}")
        leaves = [x if isinstance(x, Tracer) else asarray(x) for x in leaves]
        for i, (v, x) in enumerate(zip(self.invars, leaves)):
            if tuple(x.shape) != v.aval.shape or x.dtype != v.aval.dtype:
                raise TypeError(f"argument {i} must be {v.aval.str_short()}, got {x.dtype.name}{list(x.shape)}")
        outs = eval_graph(self, leaves)
        if self.out_tree is not None:
            return tree_unflatten(self.out_tree, outs)
        return outs[0] if len(outs) == 1 else tuple(outs)

    def __str__(self) -> str:
        # The printer is a layer above the IR (it imports this module): imported on use.
        from engine.graph_printer import format_graph

        return format_graph(self)

    __repr__ = __str__


class Trace:
    """A graph under construction. Tracers of this trace are its variables seen by user code."""

    def __init__(self, level: int, concrete: bool) -> None:
        self.level = level
        # Concrete traces also compute every value as they go, so Python control flow on traced
        # values works (as under an eager jax.grad); abstract ones (jit, make_graph) do not.
        self.concrete = concrete
        self.active = True
        self.invars: list[Var] = []
        self.eqns: list[Eqn] = []
        self.constvars: list[Var] = []
        self.consts: list[Any] = []
        self._captured: dict[int, Var] = {}
        # Values of this trace's variables, computed as it went (concrete traces only).
        self.values: dict[Var, Any] = {}

    def new_input(self, aval: ShapedArray, value: Any = None) -> Tracer:
        var = Var(aval)
        self.invars.append(var)
        if value is not None:
            self.values[var] = value
        return Tracer(self, var, value)

    def atom_for(self, x: Any) -> Atom:
        """The IR atom standing for an argument of an operation emitted into this trace."""
        if isinstance(x, Tracer):
            if x._trace is self:
                return x._var
            key = id(x)
        else:  # an Array: a concrete constant
            value = x._value
            if np.ndim(value) == 0 and value.dtype.kind != "V":
                return Literal(value)
            key = id(value)
        var = self._captured.get(key)
        if var is None:
            var = Var(aval_of(x))
            self._captured[key] = var
            self.constvars.append(var)
            self.consts.append(x)  # keeps the object alive, so its id is not reused
        return var

    def to_graph(self, outputs: list[Any]) -> Graph:
        outvars = [self.atom_for(o) for o in outputs]
        # C order, as a graph read back from JSON has it (matmul rounds differently on views)
        consts = [np.asarray(c._value, order="C") if not isinstance(c, Tracer) else c for c in self.consts]
        return Graph(list(self.invars), list(self.constvars), consts, list(self.eqns), outvars)


class _LocalStack(threading.local):
    """A stack per thread: concurrent requests trace and compute in separate threads."""

    def __init__(self, *initial: Any) -> None:
        self.items = list(initial)

    def append(self, item: Any) -> None:
        self.items.append(item)

    def pop(self) -> Any:
        return self.items.pop()

    def __getitem__(self, i: int) -> Any:
        return self.items[i]

    def __len__(self) -> int:
        return len(self.items)


_trace_stack = _LocalStack()

# The most elements any single array may have while an `element_budget` is in force (None: no
# bound). Shapes are inferred before anything runs, so an oversized result is refused before it
# is allocated, whether the operation is traced or computed eagerly.
_element_budget = _LocalStack(None)


class element_budget:  # noqa: N801 - used as a context manager
    """Within this context, refuse to create any array of more than `limit` elements."""

    def __init__(self, limit: int | None) -> None:
        self.limit = limit

    def __enter__(self) -> None:
        _element_budget.append(self.limit)

    def __exit__(self, *exc: Any) -> None:
        _element_budget.pop()


_deadline = _LocalStack(None)


class deadline:  # noqa: N801 - used as a context manager
    """Within this context, computation stops with DeadlineExceeded after `seconds`.

    Threads cannot be killed, so the check is cooperative: it runs before every primitive that
    is computed, and a single primitive is bounded by the element budget.
    """

    def __init__(self, seconds: float | None) -> None:
        self.seconds = seconds

    def __enter__(self) -> None:
        _deadline.append(None if self.seconds is None else time.monotonic() + self.seconds)

    def __exit__(self, *exc: Any) -> None:
        _deadline.pop()


def check_deadline() -> None:
    limit = _deadline[-1]
    if limit is not None and time.monotonic() > limit:
        raise DeadlineExceeded("the computation ran past its time limit and was stopped")


# Under an element budget (a service request) arrays also have at most this many dimensions.
MAX_BUDGETED_DIMENSIONS = 32


def check_elements(shape: tuple[int, ...], what: str) -> None:
    limit = _element_budget[-1]
    if limit is None:
        return
    if len(shape) > MAX_BUDGETED_DIMENSIONS:
        raise LimitExceeded(f"{what} would have {len(shape)} dimensions, over the limit of "
                            f"{MAX_BUDGETED_DIMENSIONS} (max_dimensions)", limit="max_dimensions",
                            value=len(shape), maximum=MAX_BUDGETED_DIMENSIONS)
    size = 1
    for n in shape:
        size *= int(n)
    if size > limit:
        raise LimitExceeded(f"{what} would have shape {tuple(shape)}: {size} elements, over the limit of "
                            f"{limit} (max_array_elements)", limit="max_array_elements", value=size,
                            maximum=limit)


def new_trace(concrete: bool) -> Trace:
    trace = Trace(len(_trace_stack), concrete)
    _trace_stack.append(trace)
    return trace


def end_trace(trace: Trace) -> None:
    popped = _trace_stack.pop()
    assert popped is trace, "traces must end in the order they began"
    trace.active = False


class ShapeDtypeStruct:
    """An abstract argument: only a shape and a dtype (for shape inference without data)."""

    __slots__ = ("shape", "dtype")
    _value = None  # never concrete

    def __init__(self, shape: Any, dtype: Any) -> None:
        self.shape = tuple(int(n) for n in shape)
        self.dtype = np.dtype(dtype)

    @property
    def aval(self) -> ShapedArray:
        return ShapedArray(self.shape, self.dtype)

    def __repr__(self) -> str:
        return f"ShapeDtypeStruct(shape={self.shape}, dtype={self.dtype.name})"


def aval_of(x: Any) -> ShapedArray:
    if isinstance(x, Tracer):
        return x._var.aval
    if isinstance(x, ShapeDtypeStruct):
        return ShapedArray(x.shape, x.dtype)
    value = x._value
    return ShapedArray(value.shape, value.dtype)


class Tracer:
    """A traced array: a variable of the graph being built, and its value when that is known."""

    __slots__ = ("_trace", "_var", "value")
    __array_priority__ = 1000

    def __init__(self, trace: Trace, var: Var, value: Any = None) -> None:
        self._trace = trace
        self._var = var
        self.value = value

    @property
    def aval(self) -> ShapedArray:
        return self._var.aval

    @property
    def shape(self) -> tuple[int, ...]:
        return self._var.aval.shape

    @property
    def dtype(self) -> np.dtype:
        return self._var.aval.dtype

    @property
    def ndim(self) -> int:
        return len(self._var.aval.shape)

    @property
    def size(self) -> int:
        return self._var.aval.size

    def __repr__(self) -> str:
        return f"Traced<{self._var.aval.str_short()}>"

    # Operators and NumPy-style methods (x + y, x.sum(), x.at[...]) are installed by engine.numpy,
    # the same ones as on Array. What follows is what only a tracer does: it refuses to become a
    # Python value while its value is unknown, and to enter plain NumPy at all.

    def _concrete(self, kind: str) -> np.ndarray:
        if self.value is not None:
            return np.asarray(self.value)
        raise ConcretizationError(
            f"a traced value ({self!r}) was converted to a Python {kind} inside a function being "
            f"traced abstractly (jit, make_graph, or a graph sent to the service). Its value is not "
            "known until the graph runs, so Python control flow cannot depend on it. Use "
            "`jnp.where` to choose between values, or pass the value as a static argument "
            "(`jit(f, static_argnums=...)`)."
        )

    def __bool__(self) -> bool:
        return self._concrete("bool").__bool__()

    def __float__(self) -> float:
        return self._concrete("float").__float__()

    def __int__(self) -> int:
        return self._concrete("int").__int__()

    def __complex__(self) -> complex:
        return self._concrete("complex").__complex__()

    def __index__(self) -> int:
        return self._concrete("index").__index__()

    def item(self, *args: Any) -> Any:
        return self._concrete("float").item(*args)

    def tolist(self) -> Any:
        return self._concrete("float").tolist() if self.value is None else self.value.tolist()

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        raise TracerArrayConversionError(
            f"a traced value ({self!r}) was passed to a NumPy function. NumPy functions do not record "
            "operations, so the derivative through them would be silently lost. Use the same function "
            "from `engine.numpy` (import engine.numpy as jnp) instead."
        )

    def __iter__(self) -> Any:
        if self.ndim == 0:
            raise TypeError("iteration over a 0-dimensional traced array")
        return (self[i] for i in range(self.shape[0]))

    def __len__(self) -> int:
        if self.ndim == 0:
            raise TypeError("len() of a 0-dimensional traced array")
        return self.shape[0]

    def __hash__(self) -> int:
        raise TypeError("traced arrays are unhashable")

    def __getattr__(self, name: str) -> Any:
        raise AttributeError(
            f"traced array {self!r} has no attribute {name!r}. Arrays in traced functions support "
            "NumPy's array methods that engine.numpy implements (shape, dtype, ndim, size, T, "
            "reshape, sum, mean, astype, at, ...); call the function from `engine.numpy` instead."
        )


def bind(prim: Primitive, args: tuple[Any, ...], attrs: dict[str, Any]) -> Any:
    """Apply a primitive to Arrays and Tracers: compute it eagerly, or record it in a trace."""
    top: Trace | None = None
    for a in args:
        if isinstance(a, Tracer):
            t = a._trace
            if not t.active:
                raise EscapedTracerError(
                    f"a traced value ({a!r}) from a transformation that has already finished was "
                    f"used in `{prim.name}`. Values computed inside a function being transformed "
                    "must be returned from it rather than stored in globals or closures."
                )
            if top is None or t.level > top.level:
                top = t
    if top is None:
        if _element_budget[-1] is not None:
            _check_out_avals(prim, prim.abstract(*[aval_of(a) for a in args], **attrs))
        if _deadline[-1] is not None:
            check_deadline()
        try:
            out = prim.impl(*[a._value for a in args], **attrs)
        except (ValueError, TypeError, IndexError):
            # NumPy's own message (e.g. a broadcast failure): raise the shape rule's clearer one.
            prim.abstract(*[aval_of(a) for a in args], **attrs)
            raise
        if prim.multiple_results:
            return tuple(Array(np.asarray(o)) if not isinstance(o, np.generic) else Array(o) for o in out)
        return Array(out if isinstance(out, (np.ndarray, np.generic)) else np.asarray(out))
    if _deadline[-1] is not None:  # tracing a large program takes time too
        check_deadline()
    return emit(top, prim, args, attrs)


def _check_out_avals(prim: Primitive, out_avals: Any) -> None:
    for av in out_avals if prim.multiple_results else [out_avals]:
        check_elements(av.shape, f"the result of `{prim.name}`")


def emit(trace: Trace, prim: Primitive, args: tuple[Any, ...], attrs: dict[str, Any]) -> Any:
    avals = [aval_of(a) for a in args]
    out_avals = prim.abstract(*avals, **attrs)
    if _element_budget[-1] is not None:
        _check_out_avals(prim, out_avals)
    inputs = [trace.atom_for(a) for a in args]
    value = None
    if trace.concrete:
        raw = [concrete_value(a) for a in args]
        if all(r is not None for r in raw):
            value = prim.impl(*raw, **attrs)
    if prim.multiple_results:
        outs = [Var(av) for av in out_avals]
        trace.eqns.append(Eqn(prim, inputs, outs, attrs))
        values = value if value is not None else [None] * len(outs)
        if value is not None:
            trace.values.update(zip(outs, values))
        return tuple(Tracer(trace, v, val) for v, val in zip(outs, values))
    out = Var(out_avals)
    trace.eqns.append(Eqn(prim, inputs, [out], attrs))
    if value is not None:
        trace.values[out] = value
    return Tracer(trace, out, value)


def concrete_value(x: Any) -> Any:
    """The NumPy value of an Array or a concrete Tracer; None for an abstract tracer."""
    if isinstance(x, Tracer):
        return x.value
    return x._value


def eval_graph(graph: Graph, args: list[Any], consts: list[Any] | None = None) -> list[Any]:
    """Run a graph on Arrays (computing) or on Tracers (re-recording it into an outer trace)."""
    env: dict[Var, Any] = {}
    for v, a in zip(graph.invars, args):
        env[v] = a
    for v, c in zip(graph.constvars, graph.consts if consts is None else consts):
        env[v] = c if isinstance(c, (Tracer, Array)) else Array(c)

    def read(atom: Atom) -> Any:
        if isinstance(atom, Literal):
            return Array(atom.value)
        return env[atom]

    for eqn in graph.eqns:
        out = bind(eqn.prim, tuple(read(a) for a in eqn.inputs), eqn.attrs)
        if eqn.prim.multiple_results:
            for v, o in zip(eqn.outputs, out):
                env[v] = o
        else:
            env[eqn.outputs[0]] = out
    return [read(a) for a in graph.outvars]


def trace_flat(
    fun: Callable[..., list[Any]], in_avals: list[ShapedArray], in_values: list[Any] | None = None
) -> tuple[Graph, list[Any]]:
    """Trace `fun` (flat arrays in, flat list out) into a Graph.

    With `in_values` the trace is concrete: values are computed while tracing and returned too.
    """
    trace = new_trace(concrete=in_values is not None)
    try:
        values = in_values if in_values is not None else [None] * len(in_avals)
        tracers = [trace.new_input(av, val) for av, val in zip(in_avals, values)]
        outs = fun(*tracers)
        graph = trace.to_graph(outs)
    finally:
        end_trace(trace)
    out_values = [concrete_value(o) if isinstance(o, Tracer) and o._trace is trace else None for o in outs]
    return graph, out_values
