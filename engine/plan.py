"""Execution plans: a graph lowered to straight-line Python that calls NumPy directly.

The generated function has one local variable per graph variable, no dictionary lookups and no
dispatch: each equation becomes one call of its primitive's implementation (attributes bound in
advance), and a variable is deleted right after its last use so intermediates are freed as early
as possible. The source is generated from our own IR only: names are `v<number>`, callables
and constants are passed in through the function's namespace, never spelled out as text.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import numpy as np

from engine.core import Graph, Literal, Tracer, Var, check_deadline

# A cooperative deadline check is emitted every this many equations, and before every equation
# whose cost grows faster than its operands' size (a chain of large products must not run on for
# 32 steps past its deadline).
DEADLINE_EVERY = 32
_SUPERLINEAR = frozenset({"matmul", "einsum", "solve", "inv", "cholesky", "det", "det_sign", "logabsdet"})

# Elementwise primitives that are NumPy ufuncs: they can write into a dying operand's buffer.
_UFUNCS = {
    "add": np.add, "sub": np.subtract, "mul": np.multiply, "div": np.divide, "neg": np.negative,
    "exp": np.exp, "sin": np.sin, "cos": np.cos, "sqrt": np.sqrt, "max": np.maximum, "min": np.minimum,
    "expm1": np.expm1, "log1p": np.log1p, "abs": np.abs,
}
# Primitives whose result may share memory with an operand (views): an operand seen by one of
# these is never overwritten, since a live view of it might read the change.
_MAY_ALIAS = {"reshape", "transpose", "broadcast_to", "gather", "stop_gradient", "convert_element_type"}

# Arithmetic is written as Python operators: the same NumPy operation as the ufunc call, but on
# NumPy scalars it skips the ufunc machinery (about 60 ns instead of 600 ns).
_OPERATORS = {
    "add": "{0} + {1}", "sub": "{0} - {1}", "mul": "{0} * {1}", "div": "{0} / {1}", "neg": "-{0}",
    "lt": "{0} < {1}", "le": "{0} <= {1}", "gt": "{0} > {1}", "ge": "{0} >= {1}",
}


def _reusable_operand(eqn: Any, k: int, last_use: dict[Var, int], owned: set[Var]) -> Var | None:
    """An operand whose buffer the result can overwrite: same shape and dtype as the result,
    owned by the plan, and dead after this equation."""
    if eqn.prim.name not in _UFUNCS or eqn.prim.multiple_results:
        return None
    out = eqn.outputs[0].aval
    if not out.shape:
        return None  # NumPy scalars are immutable
    for a in eqn.inputs:
        if (isinstance(a, Var) and a in owned and last_use.get(a) == k and a.aval.shape == out.shape
                and a.aval.dtype == out.dtype and sum(b is a for b in eqn.inputs) == 1):
            return a
    return None


def compile_plan(graph: Graph, *, check_deadlines: bool = True) -> Callable[[list[Any]], list[Any]]:
    """A function of the graph's inputs (raw NumPy values) returning its outputs (raw values)."""
    if any(isinstance(c, Tracer) for c in graph.consts):
        raise ValueError("a graph that captures traced values cannot be compiled to a plan")
    names: dict[Var, str] = {}
    namespace: dict[str, Any] = {"_check_deadline": check_deadline}
    lines: list[str] = []

    def name_of(v: Var) -> str:
        if v not in names:
            names[v] = f"v{len(names)}"
        return names[v]

    params = [name_of(v) for v in graph.invars]
    for i, (v, c) in enumerate(zip(graph.constvars, graph.consts)):
        value = np.asarray(c)
        namespace[f"c{i}"] = value[()] if value.ndim == 0 else value  # scalars stay NumPy scalars
        names[v] = f"c{i}"

    literal_names: dict[tuple, str] = {}

    def atom(a: Any) -> str:
        if isinstance(a, Literal):
            value = a.value
            key = (np.asarray(value).dtype.str, np.asarray(value).tobytes())
            if key not in literal_names:
                literal_names[key] = f"k{len(literal_names)}"
                namespace[literal_names[key]] = value
            return literal_names[key]
        return names[a]

    # Last use of each variable, so it can be deleted right after.
    last_use: dict[Var, int] = {}
    for k, eqn in enumerate(graph.eqns):
        for a in eqn.inputs:
            if isinstance(a, Var):
                last_use[a] = k
    outputs = {a for a in graph.outvars if isinstance(a, Var)}
    invars = set(graph.invars)
    # Buffers this plan allocated itself and nobody else can see: results of ufuncs and
    # products (never graph inputs, constants, or anything a view was taken of).
    aliased = {a for eqn in graph.eqns if eqn.prim.name in _MAY_ALIAS for a in eqn.inputs if isinstance(a, Var)}
    owned = {eqn.outputs[0] for eqn in graph.eqns
             if eqn.prim.name in _UFUNCS or eqn.prim.name in ("matmul", "select")
             or (eqn.prim.name == "integer_pow" and eqn.attrs["y"] not in (0, 1))}  # x**1 is x itself
    owned -= aliased | outputs

    for k, eqn in enumerate(graph.eqns):
        operands = [atom(a) for a in eqn.inputs]
        outs = [name_of(v) for v in eqn.outputs]
        target = outs[0] if len(outs) == 1 and not eqn.prim.multiple_results else "(" + ", ".join(outs) + ",)"
        template = _OPERATORS.get(eqn.prim.name)
        if eqn.prim.name == "integer_pow" and eqn.attrs["y"] in (2, 3):
            template = " * ".join(["{0}"] * eqn.attrs["y"])
        reuse = _reusable_operand(eqn, k, last_use, owned)
        if reuse is not None:
            # Write the result into an operand that dies here: no new allocation.
            ufunc_name = f"u_{eqn.prim.name}"
            namespace[ufunc_name] = _UFUNCS[eqn.prim.name]
            lines.append(f"{target} = {ufunc_name}({', '.join(operands)}, out={names[reuse]})")
            # The result now owns the buffer, unless it is an output or a view will be taken of
            # it (overwriting it later would change what the view reads).
            if eqn.outputs[0] not in outputs and eqn.outputs[0] not in aliased:
                owned.add(eqn.outputs[0])
        elif template is not None:
            lines.append(f"{target} = {template.format(*operands)}")
        else:
            fn_name = f"f{k}"
            impl = eqn.prim.impl
            namespace[fn_name] = functools.partial(impl, **eqn.attrs) if eqn.attrs else impl
            lines.append(f"{target} = {fn_name}({', '.join(operands)})")
        dead = sorted({names[a] for a in eqn.inputs if isinstance(a, Var) and last_use.get(a) == k
                       and a not in outputs and a not in invars and names[a].startswith("v")})
        if dead:
            lines.append(f"del {', '.join(dead)}")
        if check_deadlines and (k % DEADLINE_EVERY == DEADLINE_EVERY - 1 or eqn.prim.name in _SUPERLINEAR):
            lines.append("_check_deadline()")
    result = ", ".join(atom(a) for a in graph.outvars)
    body = "\n    ".join(lines) if lines else "pass"
    source = f"def plan({', '.join(params)}):\n    {body}\n    return [{result}]\n"
    code = compile(source, "<nabla plan>", "exec")
    exec(code, namespace)  # noqa: S102 - generated from our own IR; no client text reaches it
    plan = namespace["plan"]

    def run(leaves: list[Any]) -> list[Any]:
        # 0-d inputs become NumPy scalars, which NumPy computes with far less overhead.
        values = [x[()] if type(x) is np.ndarray and x.ndim == 0 else x for x in leaves]
        with np.errstate(all="ignore"):
            return plan(*values)

    run.source = source  # type: ignore[attr-defined]
    run.plan = plan  # type: ignore[attr-defined]
    return run
