"""Execution plans: a graph lowered to straight-line Python that calls NumPy directly.

The generated function has one local variable per graph variable, no dictionary lookups and no
dispatch: each equation becomes one call of its primitive's implementation (attributes bound in
advance), a ufunc writing into a dying operand's buffer, or a Python operator, as the primitive's
record says (`Primitive.plan`); and a variable is deleted right after its last use so
intermediates are freed as early as possible. The source is generated from our own IR only:
names are `v<number>`, callables and constants are passed in through the function's namespace,
never spelled out as text.

Scalar float64 arithmetic as Python floats. A graph with many 0-d float64 operations (a scalar
recurrence and its gradient) spends its time in NumPy's per-call overhead, not in arithmetic.
Such operations are also generated as Python float expressions: +, -, *, / and negation are the
same IEEE double operations in Python as in NumPy, and sin, cos, sqrt and abs use the `math`
functions only where this process has checked that they return NumPy's bits (`_math_twin`).
Single-use intermediates are written inline into the expression that uses them (no local
variable, and the float is freed at once). Values cross to NumPy (np.float64) wherever a NumPy
operation or an output reads them. Two cases run the call again by the plain NumPy plan, so that
every input gives NumPy's bits: Python raises instead of returning inf or NaN (x / 0.0, sin(inf),
sqrt(-1)); or a NaN reaches a crossing. IEEE arithmetic fixes every result except which of two
NaN operands comes out (its sign and payload), and that differs between NumPy's scalar
arithmetic, its ufuncs, and CPython's generic and specialised float operations; every operation
on Python floats propagates NaN, so a computation that produced one shows it at a crossing.
A graph made only of such arithmetic is compiled further, when engine._fused is built, into one
call into C with the same operations and the same NaN rule (engine/scalar_program.py).

Chains. With engine._fused built, a run of float64 elementwise operations on arrays of one shape
becomes one call that runs NumPy's own loops for them a chunk at a time (engine/fused.py): the same
bits, one call instead of several, and no intermediate arrays.
"""

from __future__ import annotations

import functools
import keyword
import math
import re
from collections.abc import Callable
from typing import Any

import numpy as np

from engine.core import Graph, Literal, Tracer, Var, check_deadline

# A cooperative deadline check is emitted every this many equations, and after every equation
# whose cost grows faster than its operands' size (`Plan.superlinear`: a chain of large products
# must not run on for 32 steps past its deadline).
DEADLINE_EVERY = 32

# Python float arithmetic is used for a graph with at least this many 0-d float64 operations, and
# when it needs at most one conversion between NumPy and Python per two of them; below that the
# plain NumPy plan is as fast.
MIN_FLOAT_OPERATIONS = 8
# Inline expressions nest at most this deep (Python's compiler recurses on nesting).
MAX_INLINE_DEPTH = 24

_FLOAT64 = np.dtype(np.float64)
# Operator templates that mean the same on Python floats as on NumPy float64 scalars: operands,
# parentheses and single + - * / only (no **, //, comparisons).
_ARITHMETIC_TEMPLATE = re.compile(r"(?:\{\d+\}|[-+*/ ()])+")
# What Python float arithmetic raises where NumPy returns inf or nan.
_FLOAT_ERRORS = (ZeroDivisionError, OverflowError, ValueError)

try:  # NumPy >= 2: the error state is a context variable; setting it directly is ~5x cheaper
    from numpy._core.umath import _extobj_contextvar, _make_extobj
except ImportError:  # pragma: no cover - other NumPy versions take the public context manager
    _extobj_contextvar = _make_extobj = None
# (set, reset, make) of NumPy's error state, for callers running `run.plan` themselves; None
# where only np.errstate is available.
FP_ERROR_STATE = None if _make_extobj is None else (_extobj_contextvar.set, _extobj_contextvar.reset, _make_extobj)


def errors_ignored(plan: Callable[..., list[Any]]) -> Callable[..., list[Any]]:
    """`plan` run with NumPy's floating-point warnings off (as `np.errstate(all="ignore")`, which
    costs ~0.7 µs a call; the buffer size and error callback in force are kept)."""
    if _make_extobj is None:  # pragma: no cover
        def ignoring(*values: Any) -> list[Any]:
            with np.errstate(all="ignore"):
                return plan(*values)
        return ignoring
    set_state, reset_state, make = _extobj_contextvar.set, _extobj_contextvar.reset, _make_extobj

    def ignoring(*values: Any) -> list[Any]:
        token = set_state(make(all="ignore"))
        try:
            return plan(*values)
        finally:
            reset_state(token)
    return ignoring


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


def compile_plan(graph: Graph, *, check_deadlines: bool = True,
                 chains: bool = True) -> Callable[[list[Any]], list[Any]]:
    """A function of the graph's inputs (raw NumPy values) returning its outputs (raw values).
    `chains`: runs of float64 elementwise operations as one call each (engine/fused.py; the same
    bits); false, one line per equation, as the plan generator writes it."""
    if any(isinstance(c, Tracer) for c in graph.consts):
        raise ValueError("a graph that captures traced values cannot be compiled to a plan")
    from engine.blocked import blocked_plan  # a sum over the rows of large data: block by block

    if (blocked := blocked_plan(graph, check_deadlines)) is not None:
        return blocked
    from engine.fused import fuse  # float64 elementwise chains: NumPy's loops, a chunk at a time
    from engine.scalar_program import compile_program  # 0-d float64 arithmetic only: one call into C

    graph = _without_uniform_constants(graph)
    if chains:  # chains only: products keep the BLAS's order, so every value keeps its bits
        graph = fuse(graph, products=False)
    source, plan = _generate(graph, check_deadlines, floats=False)
    numpy_source = source
    floats = _float_candidate(graph)
    program = compile_program(graph) if floats else None
    if program is not None:
        source, scalar_program = program
        plan = call = _running_program(scalar_program, errors_ignored(plan), check_deadlines)
    else:
        if floats:
            generated = _generate(graph, check_deadlines, floats=True)
            if generated is not None:
                source, fast = generated
                plan = _falling_back(fast, plan)
        call = errors_ignored(plan)

    def run(leaves: list[Any]) -> list[Any]:
        # 0-d inputs become NumPy scalars, which NumPy computes with far less overhead.
        return call(*[x[()] if type(x) is np.ndarray and x.ndim == 0 else x for x in leaves])

    run.source = source  # type: ignore[attr-defined]
    run.numpy_source = numpy_source  # type: ignore[attr-defined]  # a Python float plan's fallback
    run.plan = plan  # type: ignore[attr-defined]
    # The plan on values already as `run` passes them (0-d as NumPy scalars), warnings off.
    run.call = call  # type: ignore[attr-defined]
    run.may_share_inputs = outputs_may_share_inputs(graph)  # type: ignore[attr-defined]
    return run


def outputs_may_share_inputs(graph: Graph) -> bool:
    """Whether an output may share memory with an input: the input itself, a view of it, or the
    result of an operation that may return its operand (anything not known to make a new buffer)."""
    sharing = set(graph.invars)
    for eqn in graph.eqns:
        if not eqn.prim.plan.fresh_for(eqn.attrs) and any(isinstance(a, Var) and a in sharing for a in eqn.inputs):
            sharing.update(eqn.outputs)
    return any(isinstance(a, Var) and a in sharing for a in graph.outvars)


# ----------------------------------------------------------------------------- uniform constants

# Constants up to this many elements are checked for being uniform.
MAX_UNIFORM_ELEMENTS = 1 << 16


def _without_uniform_constants(graph: Graph) -> Graph:
    """The graph as its plan runs it. A constant array whose elements are all the same (a
    derivative's seed of ones, a coefficient broadcast to a shape), as an operand of a binary ufunc
    whose other operand already has the result's shape, is passed as that one scalar: the same
    operation on every element, without NumPy walking a broadcast array. Multiplying or dividing
    by such a constant 1 is skipped, x * 1.0 and x / 1.0 being x bit for bit."""
    values = {v: c for v, c in zip(graph.constvars, graph.consts)
              if type(c) is np.ndarray and c.ndim and 0 < c.size <= MAX_UNIFORM_ELEMENTS}
    if not values:
        return graph
    literals: dict[Var, Literal | None] = {}

    def uniform(a: Any) -> Literal | None:
        if not isinstance(a, Var) or a not in values:
            return None
        if a not in literals:
            c = np.ascontiguousarray(values[a])
            rows = c.reshape(-1).view(np.uint8).reshape(c.size, c.itemsize)
            literals[a] = Literal(c.reshape(-1)[0]) if (rows == rows[0]).all() else None
        return literals[a]

    subst: dict[Var, Any] = {}
    eqns = []
    for eqn in graph.eqns:
        inputs = [subst.get(a, a) if isinstance(a, Var) else a for a in eqn.inputs]
        ufunc = eqn.prim.plan.ufunc
        skipped = False
        if ufunc is not None and len(inputs) == 2 and not eqn.prim.multiple_results:
            out = eqn.outputs[0].aval
            for i in (0, 1):
                literal, other = uniform(inputs[i]), inputs[1 - i]
                if (literal is None or not isinstance(other, Var) or other.aval.shape != out.shape
                        or other.aval.dtype != literal.aval.dtype):
                    continue
                identity = eqn.prim.algebra.left_identity if i == 0 else eqn.prim.algebra.right_identity
                if (identity == 1.0 and ufunc in (np.multiply, np.divide) and literal.value == 1
                        and out.dtype == other.aval.dtype and out.dtype.kind in "fiu"):
                    subst[eqn.outputs[0]] = other
                    skipped = True
                    break
                inputs[i] = literal
        if not skipped:
            eqns.append(eqn if inputs == eqn.inputs else type(eqn)(eqn.prim, inputs, eqn.outputs, eqn.attrs))
    if len(eqns) == len(graph.eqns) and all(a is b for a, b in zip(eqns, graph.eqns)):
        return graph
    outvars = [subst.get(a, a) if isinstance(a, Var) else a for a in graph.outvars]
    return Graph(graph.invars, graph.constvars, graph.consts, eqns, outvars)


class _NaNSeen(Exception):
    """A Python float computation produced a NaN."""


def _nan_seen() -> Any:
    raise _NaNSeen


def _falling_back(fast: Callable[..., list[Any]], exact: Callable[..., list[Any]]) -> Callable[..., list[Any]]:
    def plan(*values: Any) -> list[Any]:
        try:
            return fast(*values)
        except (*_FLOAT_ERRORS, _NaNSeen):
            # Python raised where NumPy gives inf or nan (x / 0.0, sin(inf)), or a NaN came out:
            # NumPy's plan then computes every value, as without Python floats.
            return exact(*values)
    return plan


def _running_program(program: Callable[..., list[Any] | None], exact: Callable[..., list[Any]],
                     check_deadlines: bool) -> Callable[..., list[Any]]:
    """A plan running a scalar program (engine/scalar_program.py), and NumPy's plan when the
    program reports a NaN. The program runs to its end once started: the deadline is checked first."""
    def plan(*values: Any) -> list[Any]:
        if check_deadlines:
            check_deadline()
        results = program(*values)
        return exact(*values) if results is None else results
    return plan


# ----------------------------------------------------------------------------- Python floats


@functools.cache
def _math_twin(ufunc: Any) -> Callable[[float], float] | None:
    """The `math` function (or builtin) returning the same bits as `ufunc` on float64 scalars in
    this process, or None. NumPy computes some functions with its own SIMD code, which differs
    from the C library in the last bit for some inputs, and which ones depends on the build and
    the CPU; so each twin is checked here, once, on a large sample (a differing implementation
    differs on a fraction of all inputs, and shows up on such a sample)."""
    twin = {np.sin: math.sin, np.cos: math.cos, np.sqrt: math.sqrt, np.absolute: abs}.get(ufunc)
    if twin is None:
        return None
    rng = np.random.default_rng(20261202)
    raw = rng.integers(0, 2**64, 4096, dtype=np.uint64).view(np.float64)
    specials = [0.0, -0.0, 5e-324, -5e-324, 2.2250738585072014e-308, 1e-300, 1.0, -1.0, 0.5, math.pi,
                -math.pi, math.pi / 2, 1e22, 1e300, -1e300, 1.7976931348623157e308, math.nan, -math.nan]
    sample = np.concatenate([
        rng.uniform(-4.0, 4.0, 8192), rng.uniform(-100.0, 100.0, 4096), rng.standard_normal(4096) * 1e6,
        np.exp(rng.uniform(-700.0, 700.0, 4096)) * rng.choice([-1.0, 1.0], 4096),
        raw[np.isfinite(raw)], np.array(specials)])
    with np.errstate(all="ignore"):
        for x in sample.tolist():
            try:
                got = twin(x)
            except _FLOAT_ERRORS:
                continue  # such inputs run NumPy's plan (`_falling_back`)
            want = ufunc(np.float64(x))
            if math.isnan(got) and np.isnan(want):
                continue  # a NaN never leaves a Python float plan (it reruns NumPy's)
            if np.float64(got).tobytes() != want.tobytes():
                return None
    return twin


def _float_template(eqn: Any) -> str | None:
    """The equation as a Python float expression over `{0}`, `{1}` (Python floats), or None when
    it is not float64 scalar arithmetic that Python computes bit for bit as NumPy does."""
    if eqn.prim.multiple_results or eqn.prim.python_code:
        return None
    out = eqn.outputs[0].aval
    if out.shape != () or out.dtype != _FLOAT64:
        return None
    if not all(a.aval.shape == () and a.aval.dtype == _FLOAT64 for a in eqn.inputs):
        return None
    template = eqn.prim.plan.operator_for(eqn.attrs)
    if template is not None:
        if _ARITHMETIC_TEMPLATE.fullmatch(template) and "**" not in template and "//" not in template:
            return template
        return None
    ufunc = eqn.prim.plan.ufunc
    if ufunc is not None and len(eqn.inputs) == 1 and _math_twin(ufunc) is not None:
        return f"_m_{ufunc.__name__}({{0}})"
    return None


def _float_candidate(graph: Graph) -> bool:
    if any(eqn.prim.python_code for eqn in graph.eqns):
        return False  # the fallback runs the graph twice: never user code
    count = 0
    for eqn in graph.eqns:
        out = eqn.outputs[0].aval
        if not eqn.prim.multiple_results and out.shape == () and out.dtype == _FLOAT64:
            count += 1
    return count >= MIN_FLOAT_OPERATIONS


# ----------------------------------------------------------------------------- generation


def _generate(graph: Graph, check_deadlines: bool, *, floats: bool) -> tuple[str, Callable[..., list[Any]]] | None:
    """The plan's source and function; with `floats`, 0-d float64 arithmetic as Python floats
    (None when the graph has too little of it to gain)."""
    names: dict[Var, str] = {}
    namespace: dict[str, Any] = {"_check_deadline": check_deadline, "_f64": np.float64, "_nan_seen": _nan_seen}
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

    def atom(a: Any, array_operand: bool = False) -> str:
        if isinstance(a, Literal):
            value = a.value
            # Beside an array, a NumPy scalar literal is passed as a 0-d array: the same dtype
            # and values, and ufuncs take it with less overhead.
            as_array = array_operand and isinstance(value, np.generic)
            key = (np.asarray(value).dtype.str, np.asarray(value).tobytes(), as_array)
            if key not in literal_names:
                literal_names[key] = f"k{len(literal_names)}"
                if as_array:
                    value = np.asarray(value)
                    value.flags.writeable = False
                namespace[literal_names[key]] = value
            return literal_names[key]
        return names[a]

    # Last use of each variable, so it can be deleted right after.
    last_use: dict[Var, int] = {}
    uses: dict[Var, int] = {}
    for k, eqn in enumerate(graph.eqns):
        for a in eqn.inputs:
            if isinstance(a, Var):
                last_use[a] = k
                uses[a] = uses.get(a, 0) + 1
    for a in graph.outvars:
        if isinstance(a, Var):
            uses[a] = uses.get(a, 0) + 1
    outputs = {a for a in graph.outvars if isinstance(a, Var)}
    invars = set(graph.invars)
    # Buffers this plan allocated itself and nobody else can see: fresh results (of ufuncs and
    # products; never graph inputs, constants, or anything a view was taken of). An operand of
    # an equation whose result may be a view of it is never overwritten, since a live view of it
    # might read the change.
    aliased = {a for eqn in graph.eqns if eqn.prim.plan.view for a in eqn.inputs if isinstance(a, Var)}
    owned = {eqn.outputs[0] for eqn in graph.eqns if eqn.prim.plan.fresh_for(eqn.attrs)}
    owned -= aliased | outputs

    # Python float values: a pending inline expression (single use) and its nesting depth, or a
    # local variable's name; float copies of NumPy scalars; names bound as keyword defaults.
    pending: dict[Var, tuple[str, int]] = {}
    float_names: dict[Var, str] = {}
    float_literals: dict[tuple, str] = {}
    defaults: list[str] = []
    crossings = 0
    float_ops = 0

    def float_operand(a: Any) -> tuple[str, int]:
        """Operand `a` of a Python float expression, and its nesting depth."""
        nonlocal crossings
        if isinstance(a, Literal):
            key = (np.asarray(a.value).tobytes(),)
            if key not in float_literals:
                float_literals[key] = f"q{len(float_literals)}"
                namespace[float_literals[key]] = float(a.value)
                defaults.append(float_literals[key])
            return float_literals[key], 0
        if a in pending:
            text, depth = pending.pop(a)
            return f"({text})", depth
        if a not in float_names:
            # A NumPy scalar (an input, constant or NumPy result) read as a Python float: exact.
            float_names[a] = f"p{names[a]}"
            if a in invars or names[a].startswith("v"):
                lines.append(f"{float_names[a]} = float({names[a]})")
                crossings += 1
            else:
                namespace[float_names[a]] = float(namespace[names[a]])
                defaults.append(float_names[a])
        return float_names[a], 0

    def numpy_operand(a: Any, array_operand: bool = False) -> str:
        """Operand `a` of a NumPy operation: a Python float becomes np.float64 once."""
        nonlocal crossings
        if isinstance(a, Var) and a not in names and (a in pending or a in float_names):
            if a in pending:
                float_names[a] = f"s{len(float_names)}"
                lines.append(f"{float_names[a]} = {pending.pop(a)[0]}")
            text = float_names[a]
            # A NaN leaves only through NumPy's plan (see the module docstring).
            lines.append(f"{name_of(a)} = _f64({text}) if {text} == {text} else _nan_seen()")
            crossings += 1
        return atom(a, array_operand)

    for k, eqn in enumerate(graph.eqns):
        template = _float_template(eqn) if floats else None
        if template is not None:
            float_ops += 1
            if template.startswith("_m_"):
                fn = template[:template.index("(")]
                if fn not in namespace:
                    namespace[fn] = _math_twin(getattr(np, fn[3:]))
                    defaults.append(fn)
            texts = []
            depth = 0
            for i, a in enumerate(eqn.inputs):
                if template.count(f"{{{i}}}") > 1 and a in pending:
                    # Used more than once by the template (x * x * x): computed once, named.
                    text, _ = pending.pop(a)
                    float_names[a] = f"s{len(float_names)}"
                    lines.append(f"{float_names[a]} = {text}")
                text, d = float_operand(a)
                texts.append(text)
                depth = max(depth, d)
            text = template.format(*texts)
            out = eqn.outputs[0]
            if uses.get(out, 0) == 1 and depth < MAX_INLINE_DEPTH:
                pending[out] = (text, depth + 1)
            else:
                float_names[out] = f"s{len(float_names)}"
                lines.append(f"{float_names[out]} = {text}")
        else:
            # Arithmetic written as a Python operator is the same NumPy operation as the ufunc
            # call, but on NumPy scalars it skips the ufunc machinery (about 60 ns instead of 600 ns).
            template = eqn.prim.plan.operator_for(eqn.attrs)
            reuse = _reusable_operand(eqn, k, last_use, owned)
            # Literals go in as 0-d arrays only to NumPy's own ufuncs and operators on arrays.
            ufunc_call = template is not None or reuse is not None or (
                eqn.prim.plan.ufunc is not None and eqn.prim.impl is eqn.prim.plan.ufunc)
            array_result = any(v.aval.shape for v in eqn.outputs)
            operands = [numpy_operand(a, ufunc_call and array_result) for a in eqn.inputs]
            outs = [name_of(v) for v in eqn.outputs]
            target = outs[0] if len(outs) == 1 and not eqn.prim.multiple_results else "(" + ", ".join(outs) + ",)"
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
                if all(name.isidentifier() and not keyword.iskeyword(name) for name in eqn.attrs):
                    # Attributes as keyword arguments bound to names: a direct call, ~0.1 µs less
                    # than calling a functools.partial.
                    namespace[fn_name] = impl
                    for j, (name, value) in enumerate(eqn.attrs.items()):
                        namespace[f"t{k}_{j}"] = value
                        operands.append(f"{name}=t{k}_{j}")
                else:
                    namespace[fn_name] = functools.partial(impl, **eqn.attrs)
                lines.append(f"{target} = {fn_name}({', '.join(operands)})")
        dead = sorted({names[a] for a in eqn.inputs if isinstance(a, Var) and a in names and last_use.get(a) == k
                       and a not in outputs and a not in invars and names[a].startswith("v")})
        if dead:
            lines.append(f"del {', '.join(dead)}")
        if check_deadlines and (k % DEADLINE_EVERY == DEADLINE_EVERY - 1 or eqn.prim.plan.superlinear):
            lines.append("_check_deadline()")
    result = ", ".join(numpy_operand(a) for a in graph.outvars)
    if floats and (float_ops < MIN_FLOAT_OPERATIONS or 2 * crossings > float_ops):
        return None
    body = "\n    ".join(lines) if lines else "pass"
    signature = ", ".join(params + (["*"] + [f"{d}={d}" for d in defaults] if defaults else []))
    source = f"def plan({signature}):\n    {body}\n    return [{result}]\n"
    code = compile(source, "<nabla plan>", "exec")
    exec(code, namespace)  # noqa: S102 - generated from our own IR; no client text reaches it
    return source, namespace["plan"]
