"""Readable text for graphs, in the spirit of a printed jaxpr."""

from __future__ import annotations

from typing import Any

import numpy as np

from engine.core import Graph, Literal, Var, short_dtype


def _name(n: int) -> str:
    letters = "abcdefghijklmnopqrstuvwxyz"
    out = ""
    n += 1
    while n:
        n, r = divmod(n - 1, 26)
        out = letters[r] + out
    return out


def _attr_text(value: Any) -> str:
    if isinstance(value, tuple) and value and isinstance(value[0], tuple):
        return "(" + ", ".join(_attr_text(v) for v in value) + ")"
    return repr(value).replace("'", "")


def format_graph(graph: Graph) -> str:
    names: dict[Var, str] = {}

    def name(v: Var) -> str:
        if v not in names:
            names[v] = _name(len(names))
        return names[v]

    def decl(v: Var) -> str:
        return f"{name(v)}:{v.aval.str_short()}"

    def atom(a: Any) -> str:
        if isinstance(a, Literal):
            value = np.asarray(a.value).item()
            return f"{value}:{short_dtype(a.aval.dtype)}[]"
        return name(a)

    consts = " ".join(decl(v) for v in graph.constvars)
    ins = " ".join(decl(v) for v in graph.invars)
    lines = [f"{{ lambda {consts}; {ins}. let"]
    for eqn in graph.eqns:
        outs = " ".join(decl(v) for v in eqn.outputs)
        attrs = ""
        shown = {k: v for k, v in eqn.attrs.items() if not k.startswith("_")}
        if shown:
            attrs = "[" + " ".join(f"{k}={_attr_text(v)}" for k, v in shown.items()) + "]"
        args = " ".join(atom(a) for a in eqn.inputs)
        lines.append(f"    {outs} = {eqn.prim.name}{attrs} {args}")
    outs = ", ".join(atom(a) for a in graph.outvars)
    lines.append(f"  in ({outs},) }}")
    return "\n".join(lines)
