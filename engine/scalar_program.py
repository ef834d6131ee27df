"""Scalar programs: a graph made only of 0-d float64 arithmetic, run as one call into C.

A scalar recurrence and its gradient (`x = sin(x) * 1.01 + 0.1 * x * x`, two hundred times) is a
graph of a few thousand 0-d float64 operations. engine.plan writes such operations as Python float
expressions, which leaves CPython's cost per operation: about 15 ns for each addition or product,
most of it making a float object. When every operation of the graph is such arithmetic, and the C
extension engine._fused is built, `compile_program` turns the graph into an
`engine._fused.ScalarProgram` instead: a list of operations on a file of double registers, run in
one call, a few nanoseconds per operation.

The same bits as NumPy's plan. The operations are exactly those engine.plan computes as Python
floats (`engine.plan._float_template`): +, -, *, / and negation, which are the same IEEE double
operations in C as in NumPy, and sin, cos, sqrt and abs only where engine.plan._math_twin has
checked that the C library's function (which CPython's math module calls, and so does the program)
returns NumPy's bits in this process. Every template is parsed with Python's own precedence
(negation binds tighter than * and /, which bind tighter than + and -, all left to right), so each
operation's operands are the ones the Python expression would use. Where Python raises (x / 0.0,
sin(inf), sqrt(-1)), C returns inf or NaN: an infinity is NumPy's too, and a NaN in any output makes
the program return None, after which NumPy's plan computes the call (which of two NaNs comes out of
an operation differs between implementations; every operation here propagates a NaN to the
outputs, so none is hidden).

Deadlines: a program runs to its end once started (it is straight-line code, a few nanoseconds per
operation, as long as the graph); the plan checks the deadline before starting it.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import numpy as np

from engine.core import Graph, Literal, Var
from engine.fused import _kernels  # engine.fused configures the extension (None where it is not built)

_FLOAT64 = np.dtype(np.float64)
# engine/_fused.c's operation codes.
_BINARY = {"+": 0, "-": 1, "*": 2, "/": 3}
_NEGATE = 4
_FUNCTIONS = {"sin": 5, "cos": 6, "sqrt": 7, "absolute": 8}
_NAMES = {code: symbol for symbol, code in _BINARY.items()}
_FUNCTION_NAMES = {code: name for name, code in _FUNCTIONS.items()}
_TOKEN = re.compile(r"\s*(?:\{(\d+)\}|_m_(\w+)\(|([-+*/()]))")


class _NotAProgram(Exception):
    """The graph or a template is not something a scalar program computes."""


class _Builder:
    """Registers and operations of a program being built."""

    def __init__(self, n_fixed: int) -> None:
        self.n_registers = n_fixed
        self.ops: list[tuple[int, int, int, int]] = []

    def emit(self, code: int, a: int, b: int = 0) -> int:
        dst = self.n_registers
        self.n_registers += 1
        self.ops.append((code, dst, a, b))
        return dst


def _tokens(template: str) -> list[tuple[str, Any]]:
    tokens, at = [], 0
    while at < len(template):
        if template[at:].strip() == "":
            break
        match = _TOKEN.match(template, at)
        if match is None:
            raise _NotAProgram(f"cannot read {template!r}")
        operand, function, symbol = match.groups()
        tokens.append(("operand", int(operand)) if operand is not None else
                      ("function", function) if function is not None else ("symbol", symbol))
        at = match.end()
    return tokens


def _compile_template(template: str, operands: list[int], builder: _Builder) -> int:
    """The operations computing the Python expression `template` over registers `operands`; the
    register holding its value."""
    tokens = _tokens(template)
    position = 0

    def peek() -> tuple[str, Any] | None:
        return tokens[position] if position < len(tokens) else None

    def take() -> tuple[str, Any]:
        nonlocal position
        if position >= len(tokens):
            raise _NotAProgram(f"{template!r} ends early")
        position += 1
        return tokens[position - 1]

    def expression() -> int:  # term (('+' | '-') term)*
        value = term()
        while peek() in (("symbol", "+"), ("symbol", "-")):
            value = builder.emit(_BINARY[take()[1]], value, term())
        return value

    def term() -> int:  # unary (('*' | '/') unary)*
        value = unary()
        while peek() in (("symbol", "*"), ("symbol", "/")):
            value = builder.emit(_BINARY[take()[1]], value, unary())
        return value

    def unary() -> int:  # '-' unary | '+' unary | primary
        if peek() == ("symbol", "-"):
            take()
            return builder.emit(_NEGATE, unary())
        if peek() == ("symbol", "+"):
            raise _NotAProgram("unary plus")
        return primary()

    def primary() -> int:
        kind, value = take()
        if kind == "operand":
            return operands[value]
        if kind == "function":
            if value not in _FUNCTIONS:
                raise _NotAProgram(f"no C twin for {value}")
            inner = expression()
            if take() != ("symbol", ")"):
                raise _NotAProgram(f"unbalanced {template!r}")
            return builder.emit(_FUNCTIONS[value], inner)
        if (kind, value) == ("symbol", "("):
            inner = expression()
            if take() != ("symbol", ")"):
                raise _NotAProgram(f"unbalanced {template!r}")
            return inner
        raise _NotAProgram(f"unexpected {value!r} in {template!r}")

    result = expression()
    if position != len(tokens):
        raise _NotAProgram(f"trailing text in {template!r}")
    return result


def _scalar_float64(a: Any) -> bool:
    return a.aval.shape == () and a.aval.dtype == _FLOAT64


def compile_program(graph: Graph) -> tuple[str, Callable[..., list[Any] | None]] | None:
    """A listing and the ScalarProgram computing `graph`, when every input, constant, output and
    operation of it is 0-d float64 arithmetic engine.plan writes as Python floats; else None. The
    program returns the outputs as NumPy scalars, or None when one is NaN (run NumPy's plan)."""
    from engine.plan import _float_template  # engine.plan imports this module when compiling

    if _kernels is None or not graph.eqns:
        return None
    if not all(_scalar_float64(v) for v in [*graph.invars, *graph.constvars]):
        return None
    if not all(isinstance(a, Var | Literal) and _scalar_float64(a) for a in graph.outvars):
        return None
    templates = [_float_template(eqn) for eqn in graph.eqns]
    if any(t is None for t in templates):
        return None
    register: dict[Any, int] = {v: i for i, v in enumerate(graph.invars)}
    constants: list[float] = []
    literal_register: dict[bytes, int] = {}
    for v, c in zip(graph.constvars, graph.consts):
        register[v] = len(graph.invars) + len(constants)
        constants.append(float(np.asarray(c)))
    # Literals become constant registers too: gather them before the first operation's register.
    for a in [x for eqn in graph.eqns for x in eqn.inputs] + list(graph.outvars):
        if isinstance(a, Literal):
            key = np.float64(a.value).tobytes()
            if key not in literal_register:
                literal_register[key] = len(graph.invars) + len(constants)
                constants.append(float(a.value))
    builder = _Builder(len(graph.invars) + len(constants))

    def operand(a: Any) -> int:
        return literal_register[np.float64(a.value).tobytes()] if isinstance(a, Literal) else register[a]

    try:
        for eqn, template in zip(graph.eqns, templates):
            register[eqn.outputs[0]] = _compile_template(template, [operand(a) for a in eqn.inputs], builder)
    except _NotAProgram:
        return None
    outputs = tuple(operand(a) for a in graph.outvars)
    program = _kernels.ScalarProgram(len(graph.invars), tuple(constants), builder.n_registers,
                                     tuple(builder.ops), outputs)
    return _listing(len(graph.invars), constants, builder.ops, outputs), program


def _listing(n_inputs: int, constants: list[float], ops: list[tuple[int, int, int, int]],
             outputs: tuple[int, ...]) -> str:
    """The program as text (a plan's `source`), one line per operation."""
    lines = [f"# a scalar program (engine._fused.ScalarProgram): r0..r{n_inputs - 1} the inputs"
             if n_inputs else "# a scalar program (engine._fused.ScalarProgram)"]
    lines += [f"r{n_inputs + i} = {value!r}" for i, value in enumerate(constants)]
    for code, dst, a, b in ops:
        if code in _NAMES:
            lines.append(f"r{dst} = r{a} {_NAMES[code]} r{b}")
        elif code == _NEGATE:
            lines.append(f"r{dst} = -r{a}")
        else:
            lines.append(f"r{dst} = {_FUNCTION_NAMES[code]}(r{a})")
    lines.append("return [" + ", ".join(f"r{r}" for r in outputs) + "]")
    return "\n".join(lines) + "\n"
