"""Execution plans: a graph lowered to straight-line Python that calls NumPy directly.

The generated function has one local variable per graph variable, no dictionary lookups and no
dispatch: each equation becomes one call of its primitive's implementation (attributes bound in
advance), a ufunc writing into a dying operand's buffer, or a Python operator, as the primitive's
record says (`Primitive.plan`); and a variable is deleted right after its last use so
intermediates are freed as early as possible. The source is generated from our own IR only:
names are `v<number>`, callables and constants are passed in through the function's namespace,
never spelled out as text.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import numpy as np

from engine.core import Graph, Literal, Tracer, Var, check_deadline

# A cooperative deadline check is emitted every this many equations, and after every equation
# whose cost grows faster than its operands' size (`Plan.superlinear`: a chain of large products
# must not run on for 32 steps past its deadline).
DEADLINE_EVERY = 32


def _reusable_operand(eqn: Any, k: int, last_use: dict[Var, int], owned: set[Var]) -> Var | None:
    """An operand whose buffer the result can overwrite: same shape and dtype as the result,
    owned by the plan, and dead after this equation."""
    if eqn.prim.plan.ufunc is None or eqn.prim.multiple_results:
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
    # Buffers this plan allocated itself and nobody else can see: fresh results (of ufuncs and
    # products; never graph inputs, constants, or anything a view was taken of). An operand of
    # an equation whose result may be a view of it is never overwritten, since a live view of it
    # might read the change.
    aliased = {a for eqn in graph.eqns if eqn.prim.plan.view for a in eqn.inputs if isinstance(a, Var)}
    owned = {eqn.outputs[0] for eqn in graph.eqns if eqn.prim.plan.fresh_for(eqn.attrs)}
    owned -= aliased | outputs

    for k, eqn in enumerate(graph.eqns):
        operands = [atom(a) for a in eqn.inputs]
        outs = [name_of(v) for v in eqn.outputs]
        target = outs[0] if len(outs) == 1 and not eqn.prim.multiple_results else "(" + ", ".join(outs) + ",)"
        # Arithmetic written as a Python operator is the same NumPy operation as the ufunc call,
        # but on NumPy scalars it skips the ufunc machinery (about 60 ns instead of 600 ns).
        template = eqn.prim.plan.operator_for(eqn.attrs)
        reuse = _reusable_operand(eqn, k, last_use, owned)
        if reuse is not None:
            # Write the result into an operand that dies here: no new allocation.
            ufunc_name = f"u_{eqn.prim.name}"
            namespace[ufunc_name] = eqn.prim.plan.ufunc
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
        if check_deadlines and (k % DEADLINE_EVERY == DEADLINE_EVERY - 1 or eqn.prim.plan.superlinear):
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
