"""Blocked plans: a loss summed over the rows of large data, computed one block of rows at a time.

The gradient of `sum_i loss(x_i; params)` over a large data matrix X (a regression, an MLP over a
large batch) reads X twice when run as one straight-line plan: once for the forward pass (X @ W)
and once for the backward pass (X.T @ dz), each a pass over memory. Computed a block of rows at a
time instead, the block read by the forward pass is still in cache when the backward pass reads
it, so the data comes from memory once. `blocked_plan` recognises this structure in an optimised
graph and returns a plan that loops over row blocks; `engine.plan.compile_plan` calls it first.

What is blocked. A candidate row count N is a dimension of the graph's largest inputs and
constants. A source (input or constant) with exactly one axis of size N is *row-indexed* along
it. Every equation is then classified:
- uniform: all its operands are uniform (not row-indexed): computed once, before the loop;
- row-wise: it commutes with taking a block of rows, so it runs per block: elementwise
  primitives (their record's batching rule is `_batch_elementwise`), reductions and scans along
  other axes (batching rule `_batch_shift_axes`), reshape, broadcast_to, transpose and
  concatenate that keep the row axis whole, and matrix products with the rows on the left
  operand's row axis, the right operand's column axis or a batch axis;
- a sum over rows: reduce_sum over the row axis, or a matrix product contracting the row axis
  (X.T @ dz). Its per-block results are added up across blocks;
- after the sums: anything that reads a sum over rows and no row-indexed value (a mean's
  division by N, the negation of a loss): computed once, after the loop.
A graph is blocked only when every equation fits one of these, no row-wise value feeds on a sum
over rows (a softmax over axis 0, which needs its sum before the rows can be finished), every
output is uniform or computed after the sums (never per row), and the row-indexed data is at
least `THRESHOLD_BYTES`. Anything else (a sort, cumsum, max or gather along the rows, a per-row
output, X.T @ X inside a row-wise computation) leaves the graph to the ordinary plan. The block
graph's shapes are checked again with every primitive's shape rule before it is compiled.

Sizes. `THRESHOLD_BYTES`: 16 MiB of distinct row-indexed data (about 20,000 rows of 100 float64
features; a constant that is another's transpose counts once). Below it nothing changes: every
plan over smaller data is the ordinary one, bit for bit. Over it, the data is far larger than
L2, and blocking pays (a 25000x100 regression was already faster blocked). Blocks hold about
`BLOCK_BYTES` (1 MiB) of distinct row-indexed data, a multiple of `ROW_ALIGN` rows (so BLAS
kernels see the same row groups as in one product over all the rows), at least
`MIN_BLOCK_ROWS`; a remainder of less than half a block joins the last block. The block size
trades the per-block cost of each NumPy call (about 0.4 us, some 25 calls per block for the
regression, 3 with engine._fused) against the block's staying in L2 (1 MiB per core on the
development machine, whose lscpu says "2 MiB (2 instances)") until the backward pass reads it.
On the 100000x100 regression, one block's plan run over and over in cache costs least per row at
1024-1280 rows (0.8-1 MiB: 3.4 ms for all the rows, against 4.2 ms at 512 rows and 3.6 ms at
1856). Streamed from memory, interleaved sweeps on the shared development machine found 1, 1.5
and 2 MiB blocks clearly faster than 256-512 KiB and 3-4 MiB ones, but could not rank them among
themselves; with engine._fused, 1 MiB stayed best (1.42x np_fwd against 1.44x at 768 KiB, 1.46x
at 1.5 MiB and 1.52x at 512 KiB, one interleaved run). With the forward product in C as well, 1
and 2 MiB tied (0.63x and 0.64x np_fwd), ahead of 512 KiB (0.73x) and 4 MiB (0.76x).

The body. Each block's plan is the ordinary plan of the block graph, rewritten first by
`engine.fused.fuse` when the C extension engine._fused is built: runs of float64 elementwise
operations become one call running NumPy's own ufunc loops chunk by chunk in L1 (the same bits),
a product summing over the rows with a vector (X.T @ dz) is added up in C in an order of its
own, as is a sum over rows of a chain's value (bound 1), and a product of the rows with a vector
(X @ w, the pass that streams the block from memory) takes each row's dot product in C in an
order of its own (bound 2). Without the extension the body is one NumPy call per equation.

Switching it off: set the environment variable NABLA_BLOCKED_PLANS=0 (read at each compile), or
compile inside `with engine.blocked.unblocked():`. A blocked plan carries its layout as the
attribute `blocking` (a `Blocking`); an ordinary plan has no such attribute.

Rounding: the bound. The blocked plan computes the same operations on the same values as the
unblocked one, element for element, except in two places.
1. A sum over rows, S = t_1 + ... + t_n (n: the number of terms added into each result; for a
   product contracting the rows, t_i = a_i * b_i), is added up in a different order: per block,
   then block after block. Any order of floating-point additions (a binary tree of depth at most
   n - 1) computes S with error at most gamma_(n-1) * sum_i |t_i|, and a dot product with error at
   most gamma_n * sum_i |a_i b_i| (Higham, Accuracy and Stability of Numerical Algorithms, 2nd ed.,
   sections 3.1 and 4.2), where gamma_n = n*u / (1 - n*u) and u = eps/2 is the unit roundoff.
   Both plans are such orders of the same terms, so

       |S_blocked - S_unblocked| <= 2 * gamma_n * sum_i |t_i|  <=  1.01 * n * eps * sum_i |t_i|

   (the second form for n * eps <= 0.01, as 2 gamma_n = n eps / (1 - n eps / 2)). With
   engine._fused built, a product contracting the rows with a vector adds a block's terms in the
   order engine/_fused.c documents (each group of four rows pairwise, then added to the running
   sum), and the BLAS's order otherwise: orders of the same terms either way, so the bound is the
   same, and likewise for a sum over rows of an elementwise result, which the C chain computing
   that result adds up chunk by chunk (engine/fused.py). Chains run in C change no other bit.
   Operations after the sums then act on these values: an exact one (negation, reshape) keeps the
   difference, a multiplication by c (1/N for a mean) scales it by |c| and rounds both results
   once more (about eps * |result| more), and so does an addition of a uniform value.
2. A row-wise matrix product runs on a block of rows rather than on all of them. Each row's dot
   product is still the same K products, but added in another order: with engine._fused built, a
   product of the rows with a vector (the regression's X @ w) is computed in C in the order
   engine/_fused.c documents; otherwise, and for products with a matrix, the BLAS chooses its
   kernel by the operands' shape and may add them in a different order for a block (seen with
   OpenBLAS for small blocks). Either way such a row can differ by at most
   2 * gamma_K * sum_k |x_ik w_k|, the size of that dot product's own rounding error in either
   plan; later row-wise operations propagate it as they propagate that rounding. Blocks of
   `ROW_ALIGN` multiples and of at least half a block keep BLAS on the same kernels in the common
   cases (without engine._fused, the regression's rows are bit-identical).
tests/test_blocked_plans.py checks bound 1 against the unblocked plan on random data.
"""

from __future__ import annotations

import contextlib
import math
import os
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from engine import fused
from engine import plan as plans
from engine.core import Eqn, Graph, Literal, ShapedArray, Tracer, Var, check_deadline
from engine.plan import compile_plan
from engine.primitives import (
    _batch_elementwise,
    _batch_shift_axes,
    broadcast_p,
    concatenate_p,
    matmul_p,
    reduce_sum_p,
    reshape_p,
    transpose_p,
)

# Distinct row-indexed data (inputs and constants with the row axis) below this many bytes is not
# blocked.
THRESHOLD_BYTES = 16 << 20
# The row-indexed data of one block: about this many bytes (it must stay in L2 between the
# forward and the backward pass).
BLOCK_BYTES = 1 << 20
# Blocks are a multiple of this many rows, and at least MIN_BLOCK_ROWS.
ROW_ALIGN = 64
MIN_BLOCK_ROWS = 256

_ENV_SWITCH = "NABLA_BLOCKED_PLANS"


@dataclass(frozen=True)
class Blocking:
    """How a blocked plan splits its rows: `rows` in blocks of `block_rows` (the last block has
    `last_block_rows`), reading `row_bytes` bytes of distinct row-indexed data."""

    rows: int
    block_rows: int
    last_block_rows: int
    blocks: int
    row_bytes: int


class _Switch(threading.local):
    def __init__(self) -> None:
        self.off = 0


_switch = _Switch()


@contextlib.contextmanager
def unblocked() -> Iterator[None]:
    """Plans compiled in this context (in this thread) are never blocked."""
    _switch.off += 1
    try:
        yield
    finally:
        _switch.off -= 1


def enabled() -> bool:
    return _switch.off == 0 and os.environ.get(_ENV_SWITCH, "1").strip().lower() not in ("0", "false", "no", "off")


# ----------------------------------------------------------------------------- analysis

_SUM = "sum"  # the class of a value computed from sums over rows (after the loop)


class _NotBlockable(Exception):
    pass


def _nbytes(aval: ShapedArray) -> int:
    return aval.size * aval.dtype.itemsize


def _axes_of_size(shape: tuple[int, ...], n: int) -> list[int]:
    return [i for i, d in enumerate(shape) if d == n]


@dataclass
class _Layout:
    """The classification of a graph for one row count: per variable, None (uniform), an int
    (row-indexed along that axis) or _SUM; per equation, its part."""

    rows: int
    kind: dict[Var, Any]
    prologue: list[Eqn]
    body: list[Eqn]  # row-wise equations and the sums over rows, in graph order
    seeds: list[Var]  # results of sums over rows (added up across blocks)
    epilogue: list[Eqn]
    sources: list[Var]  # row-indexed constants, then row-indexed inputs


def _kind(kinds: dict[Var, Any], a: Any) -> Any:
    return None if isinstance(a, Literal) else kinds[a]


def _elementwise_axis(eqn: Eqn, kinds: list[Any]) -> int:
    out = eqn.outputs[0].aval
    rank = out.ndim
    axis = None
    for a, k in zip(eqn.inputs, kinds):
        if k is not None:
            pos = k + rank - a.aval.ndim
            if axis is not None and pos != axis:
                raise _NotBlockable("operands with their rows on different axes")
            axis = pos
    for a, k in zip(eqn.inputs, kinds):
        if k is None:
            pos = axis - (rank - a.aval.ndim)
            if pos >= 0 and a.aval.shape[pos] != 1:
                raise _NotBlockable("a uniform operand spans the row axis")
    return axis


def _named_axes(eqn: Eqn) -> tuple[int, ...]:
    ndim = eqn.inputs[0].aval.ndim
    if "axes" in eqn.attrs:
        named = tuple(eqn.attrs["axes"])
    elif "axis" in eqn.attrs:
        named = (eqn.attrs["axis"],)
    else:
        raise _NotBlockable("an axis-wise primitive without axes")
    return tuple(a % ndim for a in named) if ndim else tuple(named)


def _reshape_axis(eqn: Eqn, axis: int, rows: int) -> int:
    src, dst = eqn.inputs[0].aval.shape, tuple(eqn.attrs["shape"])
    before, after = math.prod(src[:axis]), math.prod(src[axis + 1:])
    found = [b for b in _axes_of_size(dst, rows) if math.prod(dst[:b]) == before and math.prod(dst[b + 1:]) == after]
    if len(found) != 1:
        raise _NotBlockable("a reshape that splits or merges the row axis")
    return found[0]


def _matmul_kind(eqn: Eqn, kinds: list[Any]) -> Any:
    """The row axis of a product's result, or _SUM when it contracts the rows."""
    a, b = eqn.inputs
    ka, kb = kinds
    rank = eqn.outputs[0].aval.ndim
    places = []
    for x, k, matrix_axes in ((a, ka, {"rows": -2, "inner": -1}), (b, kb, {"inner": -2, "rows": -1})):
        if k is None:
            places.append(None)
            continue
        nd = x.aval.ndim
        if k == nd + matrix_axes["inner"]:
            places.append("inner")
        elif k == nd + matrix_axes["rows"]:
            places.append(rank + matrix_axes["rows"])
        else:  # a batch axis
            places.append(k + rank - nd)
    if places[0] == "inner" or places[1] == "inner":
        if places[0] != "inner" or places[1] != "inner":
            raise _NotBlockable("a product contracting rows with a uniform operand")
        return _SUM
    axis = places[0] if places[0] is not None else places[1]
    if places[0] is not None and places[1] is not None and places[0] != places[1]:
        raise _NotBlockable("a product of operands with rows on different axes")
    for x, k in ((a, ka), (b, kb)):
        if k is None and axis < rank - 2:  # a uniform operand must not span a batch row axis
            pos = axis - (rank - x.aval.ndim)
            if pos >= 0 and x.aval.shape[pos] != 1:
                raise _NotBlockable("a uniform operand spans the row axis")
    return axis


def _row_kind(eqn: Eqn, kinds: list[Any], rows: int) -> Any:
    """The class of a row-wise equation's result: its row axis, or _SUM for a sum over rows."""
    prim = eqn.prim
    if prim.multiple_results:
        raise _NotBlockable(f"`{prim.name}` has several results")
    if prim.batch is _batch_elementwise:
        return _elementwise_axis(eqn, kinds)
    if prim.batch is _batch_shift_axes:
        (axis,) = kinds
        named = _named_axes(eqn)
        if axis in named:
            out = eqn.outputs[0].aval
            if prim is reduce_sum_p and out.dtype == eqn.inputs[0].aval.dtype and out.dtype.kind in "fciu":
                return _SUM
            raise _NotBlockable(f"`{prim.name}` along the rows")
        if eqn.outputs[0].aval.ndim == eqn.inputs[0].aval.ndim:
            return axis
        return axis - sum(1 for a in named if a < axis)
    if prim is reshape_p:
        return _reshape_axis(eqn, kinds[0], rows)
    if prim is transpose_p:
        return tuple(eqn.attrs["perm"]).index(kinds[0])
    if prim is broadcast_p:
        return kinds[0] + eqn.outputs[0].aval.ndim - eqn.inputs[0].aval.ndim
    if prim is concatenate_p:
        ndim = eqn.outputs[0].aval.ndim
        if any(k is None for k in kinds) or len(set(kinds)) != 1 or kinds[0] == eqn.attrs["axis"] % ndim:
            raise _NotBlockable("a concatenation along or across the rows")
        return kinds[0]
    if prim is matmul_p:
        return _matmul_kind(eqn, kinds)
    raise _NotBlockable(f"`{prim.name}` is not known to be row-wise")


def _uniform_broadcast(eqn: Eqn, rows: int) -> int | None:
    """broadcast_to of a uniform value onto a new row axis (a mean's cotangent, 1/N per row):
    row-wise, so it is broadcast to a block rather than to every row."""
    shape = tuple(eqn.attrs["shape"])
    axes = _axes_of_size(shape, rows)
    if len(axes) != 1:
        return None
    pos = axes[0] - (len(shape) - eqn.inputs[0].aval.ndim)
    if pos >= 0 and eqn.inputs[0].aval.shape[pos] != 1:
        return None
    return axes[0]


def _analyse(graph: Graph, rows: int) -> _Layout:
    kinds: dict[Var, Any] = {}
    sources = []
    for v in list(graph.constvars) + list(graph.invars):  # constants first: see _compile
        axes = _axes_of_size(v.aval.shape, rows)
        if len(axes) > 1:
            raise _NotBlockable("a source with several axes of the row count")
        kinds[v] = axes[0] if axes else None
        if axes:
            sources.append(v)
    if sum(_nbytes(v.aval) for v in sources) < THRESHOLD_BYTES:
        raise _NotBlockable("too little row-indexed data")
    prologue, body, seeds, epilogue = [], [], [], []
    for eqn in graph.eqns:
        ks = [_kind(kinds, a) for a in eqn.inputs]
        if any(k is _SUM for k in ks):
            if any(k is not None and k is not _SUM for k in ks):
                raise _NotBlockable(f"`{eqn.prim.name}` mixes a sum over rows with row-wise values")
            epilogue.append(eqn)
            result: Any = _SUM
        elif all(k is None for k in ks):
            result = None
            if eqn.prim is broadcast_p:
                result = _uniform_broadcast(eqn, rows)
            (body if result is not None else prologue).append(eqn)
        else:
            result = _row_kind(eqn, ks, rows)
            body.append(eqn)
            if result is _SUM:
                seeds.append(eqn.outputs[0])
        for v in eqn.outputs:
            if isinstance(result, int) and v.aval.shape[result] != rows:
                raise _NotBlockable("a row-wise result without the row axis")
            kinds[v] = result
    for v in graph.outvars:
        k = _kind(kinds, v)
        if k is not None and k is not _SUM:
            raise _NotBlockable("an output per row")
    if not seeds:
        raise _NotBlockable("no sum over rows")
    return _Layout(rows, kinds, prologue, body, seeds, epilogue, sources)


def _candidate_rows(graph: Graph) -> list[int]:
    """Row counts to try: dimensions of the inputs and constants, those of the most data first."""
    weight: dict[int, int] = {}
    for v in list(graph.invars) + list(graph.constvars):
        for d in set(v.aval.shape):
            if d >= 2 * MIN_BLOCK_ROWS:
                weight[d] = weight.get(d, 0) + _nbytes(v.aval)
    return [d for d, w in sorted(weight.items(), key=lambda item: -item[1]) if w >= THRESHOLD_BYTES]


# ----------------------------------------------------------------------------- block graphs


def _block_size(layout: _Layout, read_bytes: int) -> tuple[int, int, int]:
    """(rows per block, rows of the last block, number of blocks) for `read_bytes` of distinct
    row-indexed data."""
    rows = layout.rows
    per_row = max(1, read_bytes // rows)
    block = max(MIN_BLOCK_ROWS, (BLOCK_BYTES // per_row) // ROW_ALIGN * ROW_ALIGN)
    blocks = rows // block
    if blocks < 2:
        raise _NotBlockable("fewer than two blocks")
    last = rows - (blocks - 1) * block
    if last - block >= block // 2:  # a remainder of at least half a block is a block of its own
        blocks += 1
        last -= block
    return block, last, blocks


def _block_attrs(eqn: Eqn, out_axis: Any, rows: int, block: int) -> dict[str, Any]:
    if eqn.prim is reshape_p or eqn.prim is broadcast_p:
        shape = list(eqn.attrs["shape"])
        if shape[out_axis] != rows:
            raise _NotBlockable(f"`{eqn.prim.name}` to a shape without the rows")
        shape[out_axis] = block
        return {**eqn.attrs, "shape": tuple(shape)}
    return eqn.attrs


def _with_rows(aval: ShapedArray, axis: int, block: int) -> ShapedArray:
    shape = list(aval.shape)
    shape[axis] = block
    return ShapedArray(tuple(shape), aval.dtype)


def _block_graph(graph: Graph, layout: _Layout, block: int, uniform_in: list[Var]) -> Graph:
    """The body for `block` rows: inputs are the uniform values it reads, then each row-indexed
    source's block; outputs are the per-block sums over rows."""
    kinds = layout.kind
    new: dict[Var, Var] = {}

    def atom(a: Any) -> Any:
        if isinstance(a, Literal) or kinds[a] is None:
            return a
        return new[a]

    for v in layout.sources:
        new[v] = Var(_with_rows(v.aval, kinds[v], block))
    eqns = []
    for eqn in layout.body:
        inputs = [atom(a) for a in eqn.inputs]
        out = eqn.outputs[0]
        kind = kinds[out]
        out_aval = out.aval if kind is _SUM else _with_rows(out.aval, kind, block)
        attrs = _block_attrs(eqn, kind, layout.rows, block)
        # The block graph must be well-typed by the primitives' own shape rules.
        try:
            inferred = eqn.prim.abstract(*[x.aval for x in inputs], **attrs)
        except (ValueError, TypeError) as e:  # ShapeError, DtypeError
            raise _NotBlockable(f"`{eqn.prim.name}` refuses a block's shapes") from e
        if inferred.shape != out_aval.shape or inferred.dtype != out_aval.dtype:
            raise _NotBlockable(f"`{eqn.prim.name}` does not keep its shape on a block")
        new[out] = Var(out_aval)
        eqns.append(Eqn(eqn.prim, inputs, [new[out]], attrs))
    const_set = set(graph.constvars)
    consts = {v: c for v, c in zip(graph.constvars, graph.consts)}
    invars = [v for v in uniform_in if v not in const_set] + [new[v] for v in layout.sources]
    constvars = [v for v in uniform_in if v in const_set]
    return Graph(invars, constvars, [consts[v] for v in constvars], eqns, [new[v] for v in layout.seeds])


def _reads(eqns: list[Eqn]) -> list[Var]:
    seen: dict[Var, None] = {}
    for eqn in eqns:
        for a in eqn.inputs:
            if isinstance(a, Var):
                seen.setdefault(a)
    return list(seen)


def _subgraph(graph: Graph, invars: list[Var], eqns: list[Eqn], outvars: list[Any]) -> Graph:
    """A graph of some of `graph`'s equations; the constants they read stay constants."""
    const_index = {v: i for i, v in enumerate(graph.constvars)}
    used = [v for v in dict.fromkeys(_reads(eqns) + [a for a in outvars if isinstance(a, Var)]) if v in const_index]
    return Graph(list(invars), used, [graph.consts[const_index[v]] for v in used], list(eqns), list(outvars))


# ----------------------------------------------------------------------------- the plan


def _slicer(axis: int) -> Callable[[Any, int, int], Any]:
    if axis == 0:
        return lambda x, start, stop: x[start:stop]
    lead = (slice(None),) * axis
    return lambda x, start, stop: x[lead + (slice(start, stop),)]


def _transposed_alias(graph: Graph, layout: _Layout, v: Var) -> tuple[Any, Callable] | None:
    """A constant equal to the transpose of another row-indexed constant (tracing X @ W's
    gradient captures X.T as a constant of its own): its block is read as the transpose of the
    other's block, so the data comes from memory once. Only for constants that feed products
    contracting the rows, where the layout changes no more than the order of the sum (bound 1)."""
    consts = dict(zip(graph.constvars, graph.consts))
    value = np.asarray(consts[v])
    if value.ndim != 2 or layout.kind[v] != 1 or value.dtype.itemsize not in (1, 2, 4, 8):
        return None
    for eqn in layout.body:
        contracting = eqn.prim is matmul_p and eqn.inputs[0] is v and layout.kind[eqn.outputs[0]] is _SUM
        if v in eqn.inputs and not contracting:
            return None
    bits = np.dtype(f"u{value.dtype.itemsize}")
    for other in layout.sources:
        if other is v or other not in consts or layout.kind[other] != 0:
            continue
        base = np.asarray(consts[other])
        if base.shape != value.shape[::-1] or base.dtype != value.dtype:
            continue
        step = 4096
        if all(np.array_equal(value[:, s:s + step].view(bits), base[s:s + step].view(bits).T)
               for s in range(0, base.shape[0], step)):
            return base, lambda x, start, stop: x[start:stop].T
    return None


def _compile(graph: Graph, layout: _Layout, check_deadlines: bool) -> Callable[[list[Any]], list[Any]]:
    kinds = layout.kind
    invar_index = {v: i for i, v in enumerate(graph.invars)}
    const_values = dict(zip(graph.constvars, graph.consts))
    # Row-indexed constants come first in a block's arguments (their blocks are views taken
    # once, here), then row-indexed inputs (sliced per call). A constant that is the transpose of
    # another is read from the other's blocks.
    const_sources = [v for v in layout.sources if v not in invar_index]
    input_sources = [v for v in layout.sources if v in invar_index]
    const_blockers: list[tuple[Any, Callable]] = []
    read_bytes = sum(_nbytes(v.aval) for v in input_sources)
    for v in const_sources:
        alias = _transposed_alias(graph, layout, v)
        if alias is None:
            const_blockers.append((np.asarray(const_values[v]), _slicer(kinds[v])))
            read_bytes += _nbytes(v.aval)
        else:
            const_blockers.append(alias)
    if read_bytes < THRESHOLD_BYTES:
        raise _NotBlockable("too little distinct row-indexed data")
    block, last, blocks = _block_size(layout, read_bytes)

    # What crosses from the prologue into the loop and from the loop into the epilogue.
    body_reads = [v for v in _reads(layout.body) if kinds[v] is None]
    epilogue_reads = [v for v in _reads(layout.epilogue) + [a for a in graph.outvars if isinstance(a, Var)]
                      if kinds[v] is None]
    consts = set(graph.constvars)
    carried = [v for v in dict.fromkeys(body_reads + epilogue_reads) if v not in consts]
    uniform_inputs = [v for v in graph.invars if kinds[v] is None]
    body_graphs = [_block_graph(graph, layout, block, body_reads)]
    if last != block:
        body_graphs.append(_block_graph(graph, layout, last, body_reads))
    # Elementwise chains and products summing over rows with a vector run in C (engine/fused.py).
    fused_graphs = [fused.fuse(g, g.outvars) for g in body_graphs]
    prologue = _subgraph(graph, uniform_inputs, layout.prologue, carried)
    epilogue_in = list(layout.seeds) + [v for v in dict.fromkeys(epilogue_reads) if v not in consts]
    epilogue = _subgraph(graph, epilogue_in, layout.epilogue, list(graph.outvars))
    with unblocked():
        prologue_run = compile_plan(prologue, check_deadlines=check_deadlines)
        # Already fused above (chains and products): no second pass for chains.
        body_runs = [compile_plan(g, check_deadlines=check_deadlines, chains=False) for g in fused_graphs]
        epilogue_run = compile_plan(epilogue, check_deadlines=check_deadlines)
    prologue_fn, epilogue_fn = prologue_run.plan, epilogue_run.plan

    prologue_args = [invar_index[v] for v in uniform_inputs]
    carried_index = {v: i for i, v in enumerate(carried)}
    body_args = [carried_index[v] for v in body_reads if v not in consts]
    epilogue_args = [carried_index[v] for v in epilogue_in[len(layout.seeds):]]
    input_blockers = [(invar_index[v], _slicer(kinds[v])) for v in input_sources]
    # The loop, planned here: per block, its plan, its rows, and its constants' blocks.
    schedule = []
    for k in range(blocks):
        start, stop = k * block, (layout.rows if k == blocks - 1 else (k + 1) * block)
        fn = body_runs[-1 if k == blocks - 1 else 0].plan
        schedule.append((fn, start, stop, [cut(c, start, stop) for c, cut in const_blockers]))
    array_sums = [i for i, v in enumerate(layout.seeds) if v.aval.ndim]
    scalar_sums = [i for i, v in enumerate(layout.seeds) if not v.aval.ndim]

    def plan(*values: Any) -> list[Any]:
        uniform = prologue_fn(*[values[i] for i in prologue_args])
        fixed = [uniform[i] for i in body_args]
        row_inputs = [(values[i], cut) for i, cut in input_blockers]
        sums: list[Any] | None = None
        for fn, start, stop, const_blocks in schedule:
            if check_deadlines:
                check_deadline()
            parts = fn(*fixed, *const_blocks, *[cut(x, start, stop) for x, cut in row_inputs])
            if sums is None:  # the first block's results, in buffers of our own
                sums = [np.array(p) if isinstance(p, np.ndarray) else p for p in parts]
                continue
            for i in array_sums:
                np.add(sums[i], parts[i], out=sums[i])
            for i in scalar_sums:
                sums[i] = sums[i] + parts[i]
        return epilogue_fn(*sums, *[uniform[i] for i in epilogue_args])

    def run(leaves: list[Any]) -> list[Any]:
        values = [x[()] if type(x) is np.ndarray and x.ndim == 0 else x for x in leaves]
        with np.errstate(all="ignore"):
            return plan(*values)

    run.blocking = Blocking(layout.rows, block, last, blocks, read_bytes)  # type: ignore[attr-defined]
    run.source = "\n".join(  # type: ignore[attr-defined]
        [f"# before the blocks\n{prologue_run.source}"]
        + [f"# a block of {n} rows\n{r.source}" for n, r in zip((block, last), body_runs)]
        + [f"# after the blocks\n{epilogue_run.source}"])
    run.plan = plan  # type: ignore[attr-defined]
    # Whether an output may share memory with an input (engine.jit then copies the inputs): as
    # for the whole graph, since the loop adds only sums into buffers of its own.
    may_share = getattr(plans, "outputs_may_share_inputs", None)
    if may_share is not None:
        run.may_share_inputs = may_share(graph)  # type: ignore[attr-defined]
    return run


def blocked_plan(graph: Graph, check_deadlines: bool = True) -> Callable[[list[Any]], list[Any]] | None:
    """A plan computing `graph` one block of rows at a time, or None when the graph is not a sum
    over the rows of large enough data (see the module docstring)."""
    if not enabled() or any(isinstance(c, Tracer) for c in graph.consts):
        return None
    for rows in _candidate_rows(graph):
        try:
            layout = _analyse(graph, rows)
            return _compile(graph, layout, check_deadlines)
        except _NotBlockable:
            continue
    return None
