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

# A cooperative deadline check is emitted every this many equations.
DEADLINE_EVERY = 32

# Arithmetic is written as Python operators: the same NumPy operation as the ufunc call, but on
# NumPy scalars it skips the ufunc machinery (about 60 ns instead of 600 ns).
_OPERATORS = {
    "add": "{0} + {1}", "sub": "{0} - {1}", "mul": "{0} * {1}", "div": "{0} / {1}", "neg": "-{0}",
    "lt": "{0} < {1}", "le": "{0} <= {1}", "gt": "{0} > {1}", "ge": "{0} >= {1}",
}


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

    for k, eqn in enumerate(graph.eqns):
        operands = [atom(a) for a in eqn.inputs]
        outs = [name_of(v) for v in eqn.outputs]
        target = outs[0] if len(outs) == 1 and not eqn.prim.multiple_results else "(" + ", ".join(outs) + ",)"
        template = _OPERATORS.get(eqn.prim.name)
        if eqn.prim.name == "integer_pow" and eqn.attrs["y"] in (2, 3):
            template = " * ".join(["{0}"] * eqn.attrs["y"])
        if template is not None:
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
        if check_deadlines and k % DEADLINE_EVERY == DEADLINE_EVERY - 1:
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
