"""jit's fast paths give, bit for bit, what its slow path and eager evaluation give.

A compiled function called again with arguments of the same kinds takes a fast path: NumPy
arrays, NumPy scalars and Python numbers are converted by a converter recorded for their type,
shape and dtype (engine/jit.py), not by asarray. The plan compiler (engine/plan.py) runs long
chains of 0-d float64 arithmetic as Python floats, and passes a constant whose elements are all
equal as one scalar. These tests pin that none of it changes a single bit or dtype: against jit
called with engine arrays, against eager evaluation, and against the plain NumPy plan, with x64 on
and off, over random inputs that include inf, NaN and -0.0.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest

import engine
import engine.numpy as jnp
import engine.plan
import engine.scalar_program
from engine.core import eval_graph
from engine.plan import _math_twin, compile_plan, errors_ignored
from engine.tree_util import tree_leaves, tree_structure

RNG = np.random.default_rng(16)
PAYLOAD_NAN = np.array([0xFFF8000000000123], np.uint64).view(np.float64)[0].item()
SPECIALS = [0.0, -0.0, math.inf, -math.inf, math.nan, -math.nan, PAYLOAD_NAN, 1e308, -1e308, 5e-324, 1.0, -1.0, 0.5]


@pytest.fixture(params=[False, True], ids=["x32", "x64"])
def x64_mode(request: pytest.FixtureRequest) -> Iterator[bool]:
    previous = engine.config.jax_enable_x64
    engine.config.update("jax_enable_x64", request.param)
    yield request.param
    engine.config.update("jax_enable_x64", previous)


def bits(tree: Any) -> tuple:
    """Structure, and each leaf's type, dtype, shape and bytes: equal exactly when bit-identical."""
    return (tree_structure(tree),) + tuple(
        (type(x), np.asarray(x).dtype.str, np.shape(x), np.asarray(x).tobytes()) for x in tree_leaves(tree))


def as_engine(x: Any) -> Any:
    return jnp.asarray(x)


# ----------------------------------------------------------------------------- arguments of every kind

ARGUMENTS = {
    "float64 array": lambda: RNG.standard_normal(5),
    "float32 array": lambda: RNG.standard_normal(5).astype(np.float32),
    "int32 array": lambda: RNG.integers(-5, 5, 5).astype(np.int32),
    "int64 array": lambda: RNG.integers(-5, 5, 5),
    "bool array": lambda: RNG.random(5) > 0.5,
    "Fortran-order float64 matrix": lambda: np.asfortranarray(RNG.standard_normal((5, 5))),
    "strided view": lambda: RNG.standard_normal(10)[::2],
    "0-d float64 array": lambda: np.array(RNG.standard_normal()),
    "0-d float32 array": lambda: np.array(RNG.standard_normal(), np.float32),
    "0-d int64 array": lambda: np.array(3),
    "Python float": lambda: float(RNG.standard_normal()),
    "Python int": lambda: 3,
    "Python bool": lambda: True,
    "Python complex": lambda: 0.5 - 2j,
    "NumPy float64": lambda: np.float64(RNG.standard_normal()),
    "NumPy float32": lambda: np.float32(RNG.standard_normal()),
    "NumPy int64": lambda: np.int64(-4),
    "NumPy int32": lambda: np.int32(7),
}


def mixed(x: Any, y: Any) -> Any:
    # Every dtype in, a float out: sin promotes integers and booleans to the default float.
    return jnp.sin(x) * 2 + jnp.cos(y) / 3, x


@pytest.mark.parametrize("kind", sorted(ARGUMENTS))
def test_numpy_arguments_give_the_bits_of_engine_arrays_and_of_eager(kind: str, x64_mode: bool) -> None:
    x, y = ARGUMENTS[kind](), ARGUMENTS[kind]()
    compiled = engine.jit(mixed)
    first = compiled(x, y)  # the slow path: asarray, trace, compile
    again = compiled(x, y)  # the fast path recorded by the first call
    engine_arrays = compiled(as_engine(x), as_engine(y))
    eager = mixed(as_engine(x), as_engine(y))
    assert bits(again) == bits(first) == bits(engine_arrays) == bits(eager)
    assert isinstance(again[1], engine.Array)


@pytest.mark.parametrize("kind", ["float64 array", "float32 array", "Python float", "0-d float64 array",
                                  "NumPy float64", "NumPy float32", "Fortran-order float64 matrix"])
def test_gradients_with_numpy_arguments_match_engine_arrays(kind: str, x64_mode: bool) -> None:
    w, b = ARGUMENTS[kind](), ARGUMENTS["Python float"]()
    grad = engine.jit(engine.grad(lambda w, b: jnp.sum(jnp.tanh(w * b + 1) ** 2 / (1 + w * w)), (0, 1)))
    results = [grad(w, b), grad(w, b), grad(as_engine(w), as_engine(b)), grad(as_engine(w), as_engine(b))]
    eager = engine.grad(lambda w, b: jnp.sum(jnp.tanh(w * b + 1) ** 2 / (1 + w * w)), (0, 1))(
        as_engine(w), as_engine(b))
    assert all(bits(r) == bits(eager) for r in results)
    assert results[0][0].dtype == (np.float32 if not x64_mode or np.asarray(w).dtype == np.float32 else np.float64)


def test_the_x64_switch_is_part_of_the_fast_path_key() -> None:
    compiled = engine.jit(lambda x, n: x * 2 + n)
    previous = engine.config.jax_enable_x64
    try:
        for on in (False, True, False, True):
            engine.config.update("jax_enable_x64", on)
            for _ in range(2):  # slow path, then fast path
                out = compiled(0.1, 3)
                assert out.dtype == (np.float64 if on else np.float32)
                assert out.tobytes() == (np.float64(0.1) * 2 + 3 if on else np.float32(0.1) * 2 + 3).tobytes()
            for _ in range(2):
                assert compiled(np.arange(3.0), np.int64(1)).dtype == (np.float64 if on else np.float32)
    finally:
        engine.config.update("jax_enable_x64", previous)


def test_pytree_arguments_of_numpy_leaves_take_the_fast_path_with_the_same_bits(x64: None) -> None:
    params = {"w": RNG.standard_normal((300, 20)), "b": RNG.standard_normal(20), "scale": 0.5}
    data = RNG.standard_normal((7, 300))

    def loss(p: dict) -> Any:
        return jnp.mean(jnp.tanh(jnp.dot(data, p["w"]) + p["b"]) * p["scale"])

    grad = engine.jit(engine.grad(loss))
    expected = bits(engine.grad(loss)({k: as_engine(v) for k, v in params.items()}))
    for _ in range(3):
        assert bits(grad(params)) == expected


def test_output_structures_are_built_alike_on_both_paths(x64: None) -> None:
    shapes = {"leaf": lambda x: x * 2, "tuple": lambda x: (x, x * 2), "list": lambda x: [x + 1, x * 3],
              "dict": lambda x: {"a": x, "b": (x * 2, [x])}, "none": lambda x: (x * 2, None)}
    x = RNG.standard_normal(4)
    for name, fn in shapes.items():
        compiled = engine.jit(fn)
        slow, fast = compiled(x), compiled(x)
        assert bits(slow) == bits(fast) == bits(fn(as_engine(x))), name


# ----------------------------------------------------------------------------- the caller's arrays


@pytest.mark.parametrize("size", [3, 5000])
def test_an_output_never_shares_memory_with_the_callers_array(size: int, x64: None) -> None:
    # x * ones is x itself in the plan, so the output would be the input without asarray's copy.
    functions = [lambda x: x, lambda x: x * jnp.ones(size), lambda x: x.reshape(-1, 1), lambda x: (x, jnp.sum(x))]
    for fn in functions:
        compiled = engine.jit(fn)
        for _ in range(2):
            x = RNG.standard_normal(size)
            out = compiled(x)
            before = bits(out)
            x[:] = 7.0  # the caller changes its array afterwards
            assert bits(out) == before


def test_large_arrays_are_read_in_place_only_when_that_changes_nothing(x64: None) -> None:
    grad = engine.jit(engine.grad(lambda a: jnp.sum(jnp.tanh(jnp.dot(a, a.T)) * a[0, 0])))
    base = RNG.standard_normal((80, 90))
    for layout in (base, np.asfortranarray(base), base[:, :], np.concatenate([base, base])[::2]):
        keep = layout.copy()
        assert bits(grad(layout)) == bits(grad(layout)) == bits(grad(as_engine(layout)))
        np.testing.assert_array_equal(layout, keep)  # never written into


# ----------------------------------------------------------------------------- warnings and error state


def test_plans_raise_no_floating_point_warnings_and_restore_the_error_state(x64: None) -> None:
    recip = engine.jit(lambda x: 1.0 / x + jnp.log(x))
    before = np.geterr()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for _ in range(2):
            assert np.isnan(recip(np.zeros(3))).all() or np.isinf(recip(np.zeros(3))).all()
            assert np.isinf(np.asarray(recip(0.0))) or np.isnan(np.asarray(recip(0.0)))
    assert np.geterr() == before


def test_errors_ignored_keeps_the_buffer_size_in_force() -> None:
    def state() -> list[Any]:
        return [np.getbufsize(), np.geterr()]

    previous = np.getbufsize()
    np.setbufsize(16384)
    try:
        size, errors = errors_ignored(state)()
        assert size == 16384 and set(errors.values()) == {"ignore"}
    finally:
        np.setbufsize(previous)


# ----------------------------------------------------------------------------- Python-float plans


def chain(x: Any) -> Any:
    for _ in range(30):
        x = jnp.sin(x) * 1.01 + 0.1 * x * x
    return x


def guarded(x: Any) -> Any:
    # Division (ZeroDivisionError in Python at x == 0.5), sqrt, cos, negation and a cube.
    for _ in range(4):
        x = jnp.sqrt(x * x + 1.0) / (x - 0.5) - jnp.cos(x) * x ** 3 + -x
    return x


def selecting(x: Any) -> Any:
    # abs's derivative selects with `where`, whose implementation returns 0-d arrays: NumPy adds
    # such an array to a scalar through the ufunc, which keeps the other of two NaNs.
    for _ in range(4):
        x = jnp.sqrt(jnp.abs(x) + 1.0) / (x - 0.5) - jnp.cos(x) * x ** 3 + -x
    return x


FAST_FORMS = ["C program", "Python floats"]


def plans(fn: Callable[[Any], Any], monkeypatch: pytest.MonkeyPatch, form: str = "Python floats") -> tuple[Any, Any]:
    """fn's gradient graph compiled in a fast form (a scalar program in C where the graph is all 0-d
    float64 arithmetic, or Python floats, as where engine._fused is not built), and as the plain
    NumPy plan."""
    graph = engine.optimize(engine.make_graph(engine.grad(fn))(np.float64(0.3)))
    if form == "C program" and engine.scalar_program._kernels is None:
        pytest.skip("engine._fused is not built")
    with monkeypatch.context() as m:
        if form == "Python floats":
            m.setattr(engine.scalar_program, "_kernels", None)
        fast = compile_plan(graph)
    with monkeypatch.context() as m:
        m.setattr(engine.plan, "MIN_FLOAT_OPERATIONS", 10**9)
        numpy_only = compile_plan(graph)
    assert "float(" not in numpy_only.source and "scalar program" not in numpy_only.source
    return fast, numpy_only


def scalar_inputs(n: int) -> list[float]:
    return SPECIALS + [0.5, 1.5, -0.5] + RNG.standard_normal(n).tolist() + (RNG.standard_normal(n) * 1e3).tolist()


@pytest.mark.parametrize("form", FAST_FORMS)
@pytest.mark.parametrize("fn", [chain, guarded, selecting], ids=["sin chain", "division, sqrt, cos", "abs"])
def test_fast_scalar_plans_give_the_numpy_plans_bits(fn: Callable, form: str, monkeypatch: pytest.MonkeyPatch,
                                                      x64: None) -> None:
    fast, numpy_only = plans(fn, monkeypatch, form)
    twins = all(_math_twin(u) is not None for u in (np.sin, np.cos, np.sqrt))
    if form == "C program" and fn is not selecting and twins:
        assert fast.source.startswith("# a scalar program")
    elif twins:  # `where` (abs's derivative) is not arithmetic: the graph stays a Python plan
        assert "float(" in fast.source and "_f64(" in fast.source
    # Many calls: CPython specialises float operations after a few, and its specialised addition
    # keeps the other of two NaNs than its generic one.
    for x in scalar_inputs(300) + SPECIALS * 20:
        for value in (np.float64(x), np.array(x), x):
            got, want = fast.call(*[value[()] if isinstance(value, np.ndarray) else value]), numpy_only([value])
            assert bits(got) == bits(want), x
            assert bits(fast([value])) == bits(want), x
            assert type(got[0]) is np.float64


@pytest.mark.parametrize("form", FAST_FORMS)
def test_division_by_zero_falls_back_to_numpys_infinity(form: str, monkeypatch: pytest.MonkeyPatch, x64: None) -> None:
    fast, numpy_only = plans(guarded, monkeypatch, form)
    got = fast([np.float64(0.5)])
    assert bits(got) == bits(numpy_only([np.float64(0.5)])) and not np.isfinite(got[0])


def test_the_sin_chain_is_written_as_python_expressions(monkeypatch: pytest.MonkeyPatch, x64: None) -> None:
    floats, numpy_only = plans(chain, monkeypatch, "Python floats")
    body = floats.source.splitlines()[1:]
    assert len(body) < len(numpy_only.source.splitlines()) / 2  # single-use values inline
    assert not any(line.strip().startswith("del") for line in body)  # Python floats need no deleting
    if _math_twin(np.sin) is not None:
        assert "_m_sin(" in floats.source


def test_the_sin_chain_is_one_scalar_program(monkeypatch: pytest.MonkeyPatch, x64: None) -> None:
    """Each equation of the chain's gradient graph (sin, cos, a product, a sum) is one operation of
    the program, and the listing says which."""
    if _math_twin(np.sin) is None or _math_twin(np.cos) is None:
        pytest.skip("NumPy's sin or cos differs from the C library's on this machine")
    graph = engine.optimize(engine.make_graph(engine.grad(chain))(np.float64(0.3)))
    program, _ = plans(chain, monkeypatch, "C program")
    body = program.source.splitlines()
    operations = [line for line in body[1:-1] if not line.split(" = ")[1][0].isdigit()]
    assert len(operations) == len(graph.eqns)
    for name in ("sin", "cos"):
        assert sum(f"= {name}(" in line for line in operations) == sum(e.prim.name == name for e in graph.eqns) > 25
    assert body[-1].startswith("return [r")


def test_a_program_stops_at_a_past_deadline(monkeypatch: pytest.MonkeyPatch, x64: None) -> None:
    from engine.core import deadline
    from engine.errors import DeadlineExceeded
    program, _ = plans(chain, monkeypatch, "C program")
    assert program.source.startswith("# a scalar program")
    with deadline(-1.0), pytest.raises(DeadlineExceeded):
        program([np.float64(0.3)])


def test_templates_compile_with_pythons_precedence() -> None:
    """Negation binds tighter than * and /, which bind tighter than + and -, left to right."""
    from engine import scalar_program
    if scalar_program._kernels is None:
        pytest.skip("engine._fused is not built")
    cases = {
        "-{0} * {1}": lambda a, b, c: (-a) * b,
        "{0} - {1} - {2}": lambda a, b, c: (a - b) - c,
        "{0} / {1} * {2}": lambda a, b, c: (a / b) * c,
        "{0} + {1} * {2}": lambda a, b, c: a + (b * c),
        "({0} + {1}) * -{2}": lambda a, b, c: (a + b) * (-c),
        "{0} * {0} * {0}": lambda a, b, c: (a * a) * a,
        "_m_sqrt({0} * {0} + {1}) / ({2} - {1})": lambda a, b, c: math.sqrt(a * a + b) / (c - b),
        "--{0}": lambda a, b, c: a,  # two negations: the value itself
    }
    values = [(1e16, 1.0, -1.0), (0.1, 0.2, 0.3), (3.0, 7.0, 1e-300), (-2.5, 1e308, 10.0)]
    for template, want in cases.items():
        builder = scalar_program._Builder(3)
        result = scalar_program._compile_template(template, [0, 1, 2], builder)
        program = scalar_program._kernels.ScalarProgram(3, (), builder.n_registers, tuple(builder.ops), (result,))
        for a, b, c in values:
            got = program(a, b, c)
            expected = want(a, b, c)
            if math.isnan(expected):
                assert got is None
            else:
                assert got is not None and np.float64(expected).tobytes() == got[0].tobytes(), (template, a, b, c)
    for bad in ["{0} ** {1}", "{0} // {1}", "_m_exp({0})", "({0}", "{0} +"]:
        with pytest.raises(scalar_program._NotAProgram):
            scalar_program._compile_template(bad, [0, 1], scalar_program._Builder(2))


def test_a_program_reads_only_registers_it_has_set() -> None:
    """Registers 0.. hold the inputs, then the constants; an operation may read only those and
    earlier results, and write only past them; an output must have been set."""
    from engine import scalar_program
    if scalar_program._kernels is None:
        pytest.skip("engine._fused is not built")
    make = scalar_program._kernels.ScalarProgram
    assert make(1, (2.0,), 3, ((2, 2, 0, 1),), (2,))(3.0) == [6.0]  # r2 = r0 * r1
    refused = [
        (1, (), 3, ((2, 2, 0, 1),), (2,)),  # reads r1, never set
        (1, (), 3, ((2, 0, 0, 0),), (0,)),  # writes over the input
        (1, (), 3, ((4, 2, 0, 0),), (1,)),  # an output never set
        (1, (), 3, ((9, 2, 0, 0),), (2,)),  # no such operation
        (1, (), 3, ((0, 2, 0, 5),), (2,)),  # no such register
    ]
    for args in refused:
        with pytest.raises(ValueError):
            make(*args)


def test_graphs_with_arrays_are_not_scalar_programs(x64: None) -> None:
    from engine.scalar_program import compile_program
    graph = engine.optimize(engine.make_graph(engine.grad(lambda x: jnp.sum(jnp.sin(x) * x)))(np.ones(3)))
    assert compile_program(graph) is None


def test_jit_of_the_scalar_chain_matches_eager_on_special_values(x64: None) -> None:
    grad = engine.jit(engine.grad(chain))
    eager = engine.grad(chain)
    for x in scalar_inputs(20):
        assert bits(grad(x)) == bits(grad(np.float64(x))) == bits(eager(jnp.asarray(x))), x


def test_float32_chains_stay_numpy_plans(monkeypatch: pytest.MonkeyPatch) -> None:
    graph = engine.optimize(engine.make_graph(engine.grad(chain))(np.float32(0.3)))
    assert "float(" not in compile_plan(graph).source


@pytest.mark.parametrize("ufunc", [np.sin, np.cos, np.sqrt, np.absolute, np.exp, np.tanh, np.log])
def test_a_math_twin_is_used_only_where_it_returns_numpys_bits(ufunc: Any) -> None:
    twin = _math_twin(ufunc)
    if ufunc in (np.exp, np.tanh, np.log):
        assert twin is None  # not offered: the C library and NumPy differ in the last bit
        return
    if twin is None:
        pytest.skip(f"NumPy's {ufunc.__name__} differs from the C library's on this machine")
    sample = np.concatenate([RNG.uniform(-10, 10, 20000), RNG.standard_normal(5000) * 1e8, SPECIALS])
    for x in sample.tolist():
        try:
            got = twin(x)
        except ValueError:
            continue  # math's domain errors: the plan falls back to NumPy's
        assert np.float64(got).tobytes() == ufunc(np.float64(x)).tobytes(), x


# ----------------------------------------------------------------------------- uniform constants


def test_uniform_constants_are_passed_as_scalars_and_ones_skipped(x64: None) -> None:
    A = RNG.standard_normal((12, 6))
    hessian = engine.hessian(lambda x: jnp.sum(jnp.tanh(jnp.dot(jnp.asarray(A), x)) ** 2))
    x = RNG.standard_normal(6)
    graph = engine.optimize(engine.make_graph(hessian)(x))
    plan = compile_plan(graph)
    uniform = [i for i, c in enumerate(graph.consts) if np.asarray(c).size > 1 and np.unique(c).size == 1]
    assert uniform  # the derivative's seeds and coefficients
    assert not any(f"c{i}" in plan.source for i in uniform)
    expected = eval_graph(graph, [jnp.asarray(x)])
    assert bits(plan([x])) == bits([np.asarray(e) for e in expected])
    np.testing.assert_allclose(plan([x])[0], (A.T * (2 * (1 - np.tanh(A @ x) ** 2) * (1 - 3 * np.tanh(A @ x) ** 2)))
                               @ A, rtol=1e-12)


def test_special_values_through_a_uniform_constant(x64: None) -> None:
    values = np.array(SPECIALS)
    for fn in (lambda x: x * jnp.ones(values.size), lambda x: x / jnp.ones(values.size),
               lambda x: x * jnp.full(values.size, -2.0) + jnp.full(values.size, -0.0)):
        out = engine.jit(fn)(values)
        assert bits(out) == bits(fn(jnp.asarray(values)))


# ----------------------------------------------------------------------------- integer powers


def square_and_multiply(x: np.ndarray, y: int) -> np.ndarray:
    """x ** y as JAX computes an integer power: square-and-multiply, each product rounded, then the
    reciprocal for a negative power."""
    n, acc = abs(y), None
    while n:
        if n & 1:
            acc = x if acc is None else acc * x
        n >>= 1
        if n:
            x = x * x
    return 1 / acc if y < 0 else acc


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("y", [2, 3, 4, 5, 7, 13, -1, -3])
def test_integer_powers_are_square_and_multiply_eager_and_jitted(y: int, dtype: type, x64: None) -> None:
    """Eager, jit (whose plan writes cubes as x * x * x) and JAX agree bit for bit; np.power, one
    rounding of the C library's pow, differs in the last bit for cubes and higher powers."""
    x = (RNG.standard_normal(4000) * 3).astype(dtype)
    want = square_and_multiply(x, y)
    eager = np.asarray(jnp.asarray(x) ** y)
    jitted = np.asarray(engine.jit(lambda v: v ** y)(jnp.asarray(x)))
    assert eager.dtype == jitted.dtype == dtype
    assert eager.tobytes() == want.tobytes() and jitted.tobytes() == want.tobytes()


def test_integer_powers_match_values_jax_computed(x64: None) -> None:
    """Values from jax.jit(lambda v: v ** y) with x64 on, where np.power gives the next float."""
    cases = [  # (x, y, JAX's x ** y, np.power's)
        ("-0x1.eab00c30c4d7fp+2", 3, "-0x1.c2b002ef661abp+8", "-0x1.c2b002ef661acp+8"),
        ("-0x1.b40c0bf5f2602p+0", 5, "-0x1.cacb0dc9299f9p+3", "-0x1.cacb0dc9299f7p+3"),
        ("-0x1.eab00c30c4d7fp+2", -3, "-0x1.22d3a6c5d0d7fp-9", "-0x1.22d3a6c5d0d7ep-9"),
    ]
    for x, y, jax_value, numpy_value in cases:
        got = float(np.asarray(jnp.asarray(np.float64(float.fromhex(x))) ** y))
        assert got == float.fromhex(jax_value) != float.fromhex(numpy_value)
    x32 = np.float32(float.fromhex("-0x1.75c34p-1"))
    assert float(np.asarray(jnp.asarray(x32) ** 3)) == float.fromhex("-0x1.8e5cacp-2")
