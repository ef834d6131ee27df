"""Fused execution: float64 elementwise chains in C, in every plan; sums over rows and products with a
vector in C, in a blocked plan's body (engine/blocked.py).

A blocked plan runs its body once per block of ~1000 rows. Called one by one from Python, the body's
elementwise operations (twenty for a logistic regression's loss and gradient) cost more in per-call
overhead, and in writing whole intermediate arrays, than in arithmetic. The same holds for any plan
over small arrays (the tutorial's float64 gradient took 13.7 us one NumPy call per operation and
7.3 us with its chains), so engine.plan.compile_plan fuses the chains of every plan
(`products=False`: nothing but chains, no bit changes). `fuse` rewrites a graph before it is
compiled to a plan:

- Chains. A run of consecutive equations that are each one float64 ufunc on operands of one shape
  (or single values) becomes one equation, computed by an `engine._fused.Chain`: the same ufunc
  loops, in the same order, on 512 elements at a time, the intermediates in scratch buffers that
  stay in L1. The loops are NumPy's own (the strided loop the ufunc itself calls for float64
  operands, from `ufunc._resolve_dtypes_and_context` and `ufunc._get_strided_loop`), a single
  value is passed with stride 0 as NumPy passes a 0-d operand, and every element is computed from
  the same operands by the same loop: the results are NumPy's, bit for bit (tests/test_fused.py
  checks every primitive routed here against the ufunc on the whole array). A chain also takes in
  the reshapes around it that only relabel its operands or results (the same elements in C order),
  and a sum over rows of all of one of its values, which it adds up chunk by chunk (four running
  sums interleaved within a chunk, then the chunks in order).
- Sums over rows of a product with a vector (X.T @ dz per block, a gradient's main cost after the
  forward product) are computed by `engine._fused.contract_right` / `contract_left`, reading the
  block once, in order (engine/_fused.c gives the order of the additions). Operands laid out
  otherwise go to np.matmul.
- Row-wise products with a vector (X @ w per block, the forward pass: the one that reads the block
  from memory) are computed by `engine._fused.row_product`, each row's dot product in an order of its
  own (engine/_fused.c). The BLAS's gemv read the streamed block at about a third of the memory's
  speed on the development machine (8.6 ms for a 100000x100 matrix, against 3.3 ms for this loop
  and for NumPy's sum of the same matrix).
The sums over rows are thus added up in other orders than NumPy's and the BLAS's, which
engine/blocked.py's bound 1 allows, and the row-wise dot products too, which its bound 2 allows;
everything else keeps its bits.

Without the C extension (no compiler at install) `fuse` returns the graph unchanged: the body is one
NumPy call per equation. `IMPLEMENTATION` names the one in use.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from typing import Any

import numpy as np

from engine.core import Eqn, Graph, Literal, Var
from engine.primitive import Algebra, Plan, Primitive
from engine.primitives import _batch_elementwise, log_p, matmul_p, reduce_sum_p, reshape_p, tanh_p

try:
    from engine import _fused as _kernels
except ImportError:  # pragma: no cover - exercised where no C compiler was available at install
    _kernels = None

IMPLEMENTATION: str = "C (engine._fused)" if _kernels is not None else "NumPy, one call per operation"


def _dense(x: Any) -> np.ndarray:
    """x's elements as an aligned C-contiguous array (a copy changes no value)."""
    return np.require(x, None, ("C", "A"))


if _kernels is not None:
    _kernels.configure(np.empty, _dense, np.matmul, np.float64)

_F8 = np.dtype(np.float64)
# A chain of fewer operations is left to NumPy's calls (no gain from one).
MIN_CHAIN = 2
# A longer run is cut into chains of at most this many operations: a plan checks its deadline
# after each chain (as after a matrix product), so no call runs more operations than this unchecked.
MAX_CHAIN = 16
# What engine._fused.Chain returns at most: arrays, and sums.
MAX_CHAIN_OUTPUTS = 8
# Primitives whose implementation is a NumPy ufunc on float64 operands without being spelled as
# one in their plan record (on float32 they compute XLA's functions: engine/_xla_f32.py).
_FLOAT64_UFUNCS = {tanh_p: np.tanh, log_p: np.log}
# Where a chain's step reads or writes (engine/_fused.c's enum).
_OPERAND, _SCRATCH, _OUTPUT, _CONSTANT = 0, 1, 2, 3


def float64_ufunc(prim: Primitive) -> Any:
    """The ufunc that computes `prim` on float64 operands, or None."""
    if prim.multiple_results or prim.batch is not _batch_elementwise:
        return None
    ufunc = prim.plan.ufunc if prim.plan.ufunc is not None else _FLOAT64_UFUNCS.get(prim)
    if not isinstance(ufunc, np.ufunc) or ufunc.nout != 1 or ufunc.nin not in (1, 2):
        return None
    return ufunc if _float64_loop(ufunc) is not None else None


@functools.cache
def _float64_loop(ufunc: np.ufunc) -> tuple[Any, ...] | None:
    """Whether NumPy has a float64 loop for `ufunc`: all operands and the result float64."""
    try:
        dtypes, _ = ufunc._resolve_dtypes_and_context((_F8,) * (ufunc.nin + 1))
    except (TypeError, AttributeError, ValueError):
        return None
    return dtypes if all(d == _F8 for d in dtypes) else None


def _loop_capsule(ufunc: np.ufunc, strides: tuple[int, ...]) -> Any:
    """NumPy's strided loop of `ufunc` for float64 operands with these byte strides (0: a single
    value), in its call-info capsule. A new capsule per step: NumPy ties the loop's data to it."""
    _, capsule = ufunc._resolve_dtypes_and_context((_F8,) * (ufunc.nin + 1))
    ufunc._get_strided_loop(capsule, fixed_strides=strides)
    return capsule


def _single(aval: Any) -> bool:
    return aval.size == 1


def _fusable(eqn: Eqn) -> tuple[int, ...] | None:
    """The shape of a chain `eqn` can join (its result's), or None."""
    if float64_ufunc(eqn.prim) is None or len(eqn.outputs) != 1:
        return None
    out = eqn.outputs[0].aval
    if out.dtype != _F8 or not out.shape or out.size <= 1 or len(eqn.inputs) != float64_ufunc(eqn.prim).nin:
        return None
    for a in eqn.inputs:
        if a.aval.dtype != _F8:
            return None
        if isinstance(a, Literal):
            if a.aval.size != 1:
                return None
        elif not (a.aval.shape == out.shape or (_single(a.aval) and a.aval.ndim <= out.ndim)):
            return None
    return out.shape


def _chains(eqns: list[Eqn]) -> list[tuple[int, int]]:
    """(start, stop) of each run of consecutive fusable equations of one shape, cut into pieces of
    at most MAX_CHAIN."""
    runs, start, shape = [], 0, None
    for k, eqn in enumerate(eqns + [None]):
        here = _fusable(eqn) if eqn is not None else None
        if here != shape or here is None or k - start == MAX_CHAIN:
            if shape is not None and k - start >= MIN_CHAIN:
                runs.append((start, k))
            start, shape = k, here
    return runs


def _chain_eqn(eqns: list[Eqn], results: dict[Var, Var], sums: dict[Var, Var], sources: dict[Var, Var]) -> Eqn:
    """One equation computing `eqns` (a chain) with an engine._fused.Chain. `results`: the chain's
    values read after it, each returned as the variable it maps to (itself, or a reshape of it);
    `sums`: variables that are the sum of all elements of a chain value (`sums[out] = value`),
    returned after the arrays; `sources`: operands read as another variable with the same
    elements in C order (the operand of a reshape the chain absorbed)."""
    produced = {e.outputs[0] for e in eqns}
    operands: list[Var] = []
    constants: list[float] = []
    constant_index: dict[bytes, int] = {}
    last_use: dict[Var, int] = {}
    for k, e in enumerate(eqns):
        for a in e.inputs:
            if isinstance(a, Var):
                last_use[a] = k
                if a not in produced and a not in operands:
                    operands.append(a)
    outputs = [e.outputs[0] for e in eqns if e.outputs[0] in results]
    output_index = {v: j for j, v in enumerate(outputs)}
    summed = list(sums.items())
    sum_index = {value: j for j, (_, value) in enumerate(summed)}
    place: dict[Var, tuple[int, int]] = {v: (_OPERAND, i) for i, v in enumerate(operands)}
    free: list[int] = []
    scratch_count = 0
    steps = []
    for k, e in enumerate(eqns):
        ufunc = float64_ufunc(e.prim)
        reads = []
        for a in e.inputs:
            if isinstance(a, Literal):
                value = float(np.asarray(a.value).reshape(-1)[0])
                key = np.float64(value).tobytes()
                if key not in constant_index:
                    constant_index[key] = len(constants)
                    constants.append(value)
                reads.append((_CONSTANT, constant_index[key]))
            else:
                reads.append(place[a])
        # Scratch buffers read here for the last time can hold the result (in place, as the
        # plan's out= does).
        for a in dict.fromkeys(x for x in e.inputs if isinstance(x, Var)):
            if last_use[a] == k and place[a][0] == _SCRATCH:
                free.append(place[a][1])
        out = e.outputs[0]
        if out in output_index:
            place[out] = (_OUTPUT, output_index[out])
        elif out not in last_use and out not in sum_index:
            continue  # a value nothing reads
        else:
            if not free:
                free.append(scratch_count)
                scratch_count += 1
            place[out] = (_SCRATCH, free.pop())
        strides = tuple(0 if p[0] == _CONSTANT or (p[0] == _OPERAND and _single(operands[p[1]].aval)) else 8
                        for p in reads) + (8,)
        steps.append((_loop_capsule(ufunc, strides), sum_index.get(out, -1), *reads, place[out]))
    size = eqns[0].outputs[0].aval.size
    returned = [results[v] for v in outputs]
    chain = _kernels.Chain(tuple(_single(v.aval) for v in operands), tuple(constants), size,
                           tuple(tuple(v.aval.shape) for v in returned), scratch_count, tuple(steps), len(summed))
    prim = _chain_primitive(chain, len(returned) + len(summed) > 1, [e.prim.name for e in eqns])
    return Eqn(prim, [sources.get(v, v) for v in operands], returned + [out for out, _ in summed], {})


def _only_in_plans(*args: Any, **kwargs: Any) -> Any:
    raise TypeError("fused equations exist only inside a compiled plan: no shape rule, no batching")


def _chain_primitive(chain: Any, several: bool, names: list[str]) -> Primitive:
    # A record of its own per chain (never declared or registered): the plan calls the chain
    # itself, with no Python frame in between. `superlinear`: the plan checks its deadline after
    # each chain, which does the work of up to MAX_CHAIN equations.
    return Primitive(name="fused_chain", impl=chain, abstract=_only_in_plans, vjp=None, jvp=None,
                     batch=_only_in_plans, plan=Plan(fresh=True, superlinear=True), algebra=Algebra(), arity=None,
                     attr_names=(), doc="a chain of float64 ufuncs: " + ", ".join(names),
                     multiple_results=several)


def _contraction_primitive(name: str, impl: Any, doc: str) -> Primitive:
    return Primitive(name=name, impl=impl, abstract=_only_in_plans, vjp=None, jvp=None, batch=_only_in_plans,
                     plan=Plan(fresh=True, superlinear=True), algebra=Algebra(), arity=2, attr_names=(), doc=doc)


if _kernels is not None:
    contract_right_p = _contraction_primitive(
        "contract_rows_right", _kernels.contract_right, "a @ d summing over the rows, for a vector d (n, 1)")
    contract_left_p = _contraction_primitive(
        "contract_rows_left", _kernels.contract_left, "d @ a summing over the rows, for a vector d (1, n)")


def _contraction(eqn: Eqn) -> Eqn | None:
    """A product summing over rows with a vector, as a contraction in C, or None."""
    if eqn.prim is not matmul_p or len(eqn.inputs) != 2:
        return None
    a, b = eqn.inputs
    if not all(isinstance(x, Var) and x.aval.dtype == _F8 and x.aval.ndim == 2 for x in (a, b)):
        return None
    if eqn.outputs[0].aval.dtype != _F8:
        return None
    (a_rows, a_cols), (b_rows, b_cols) = a.aval.shape, b.aval.shape
    if a_cols == b_rows and b_cols == 1:  # (K, n) @ (n, 1): the rows are a's columns
        return Eqn(contract_right_p, [a, b], eqn.outputs, {})
    if a_cols == b_rows and a_rows == 1:  # (1, n) @ (n, K)
        return Eqn(contract_left_p, [a, b], eqn.outputs, {})
    return None


if _kernels is not None:
    row_product_p = _contraction_primitive(
        "row_products", _kernels.row_product, "a @ w for a vector w (K, 1) or (K,): one dot product per row")


def _row_product(eqn: Eqn) -> Eqn | None:
    """A product of rows with a vector (each row's dot product with w), in C, or None."""
    if eqn.prim is not matmul_p or len(eqn.inputs) != 2 or eqn.outputs[0].aval.dtype != _F8:
        return None
    a, w = eqn.inputs
    if not all(isinstance(x, Var) and x.aval.dtype == _F8 for x in (a, w)) or a.aval.ndim != 2:
        return None
    if w.aval.shape == (a.aval.shape[1], 1) or w.aval.shape == (a.aval.shape[1],):
        return Eqn(row_product_p, [a, w], eqn.outputs, {})
    return None


def _sums_everything(eqn: Eqn) -> bool:
    """A float64 reduce_sum over every axis of its operand."""
    x, out = eqn.inputs[0], eqn.outputs[0]
    if eqn.prim is not reduce_sum_p or not isinstance(x, Var) or x.aval.dtype != _F8 or out.aval.dtype != _F8:
        return False
    ndim = x.aval.ndim
    return sorted({a % ndim for a in eqn.attrs["axes"]}) == list(range(ndim)) if ndim else False


def _relabels(eqn: Eqn) -> bool:
    """A reshape of a float64 variable: the same elements in C order."""
    return eqn.prim is reshape_p and isinstance(eqn.inputs[0], Var) and eqn.inputs[0].aval.dtype == _F8


def fuse(graph: Graph, sums_over_rows: Iterable[Var] = (), *, products: bool = True) -> Graph:
    """`graph` with its elementwise float64 chains as single equations and, unless `products` is
    false, its products with a vector in C: those producing `sums_over_rows` summing over the rows,
    the others (row-wise in a block's graph) one dot product per row; `graph` itself when there is
    nothing to rewrite or the C extension is not built.

    A chain also takes in a reshape just before it whose result only it reads (it reads the
    reshape's operand, the same elements in C order), a sum over rows (in `sums_over_rows`) of all
    of one of its values (added up chunk by chunk, an order bound 1 of engine/blocked.py allows),
    and a reshape after it that is the only other use of one of its values (which it then returns
    in that shape)."""
    if _kernels is None:
        return graph
    sums = set(sums_over_rows)
    eqns = list(graph.eqns)
    graph_outputs = {a for a in graph.outvars if isinstance(a, Var)}
    uses: dict[Var, list[int]] = {}
    definer: dict[Var, int] = {}
    for k, e in enumerate(eqns):
        for a in e.inputs:
            if isinstance(a, Var):
                uses.setdefault(a, []).append(k)
        for v in e.outputs:
            definer[v] = k
    absorbed: set[int] = set()
    chains: dict[int, tuple[int, Eqn]] = {}
    for start, stop in _chains(eqns):
        run = range(start, stop)
        produced = [eqns[k].outputs[0] for k in run]
        sources: dict[Var, Var] = {}
        taken: set[int] = set()  # the reshapes and sums this chain takes in, if it is made
        for k in run:
            for a in eqns[k].inputs:
                d = definer.get(a) if isinstance(a, Var) else None
                if (d is not None and d not in absorbed and d not in taken and _relabels(eqns[d])
                        and a not in graph_outputs and all(u in run for u in uses[a])):
                    sources[a] = eqns[d].inputs[0]
                    taken.add(d)
        results: dict[Var, Var] = {}
        summed: dict[Var, Var] = {}
        for v in produced:
            later = [u for u in uses.get(v, []) if u >= stop]
            for u in list(later):
                if _sums_everything(eqns[u]) and eqns[u].outputs[0] in sums and v not in summed.values():
                    summed[eqns[u].outputs[0]] = v
                    taken.add(u)
                    later.remove(u)
            if (len(later) == 1 and v not in graph_outputs and _relabels(eqns[later[0]])
                    and eqns[later[0]].outputs[0].aval.dtype == _F8):
                results[v] = eqns[later[0]].outputs[0]
                taken.add(later[0])
            elif later or v in graph_outputs:
                results[v] = v
        if not results and not summed or len(results) > MAX_CHAIN_OUTPUTS or len(summed) > MAX_CHAIN_OUTPUTS:
            continue  # nothing to return, or more than a chain returns: NumPy's calls one by one
        absorbed |= taken
        chains[start] = (stop, _chain_eqn(eqns[start:stop], results, summed, sources))
    rewritten: list[Eqn] = []
    changed = bool(chains)
    k = 0
    while k < len(eqns):
        if k in chains:
            stop, fused = chains[k]
            rewritten.append(fused)
            k = stop
            continue
        eqn = eqns[k]
        k += 1
        if k - 1 in absorbed:
            continue
        if not products:
            rewritten.append(eqn)
            continue
        product = _contraction(eqn) if eqn.outputs[0] in sums else _row_product(eqn)
        rewritten.append(product or eqn)
        changed |= product is not None
    if not changed:
        return graph
    return Graph(list(graph.invars), list(graph.constvars), list(graph.consts), rewritten, list(graph.outvars))
