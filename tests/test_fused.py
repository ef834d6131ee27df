"""engine/fused.py and its C extension engine._fused: a chain of float64 ufuncs computed a chunk at a
time by NumPy's own loops gives NumPy's bits, element for element; a product summing over rows with
a vector adds its terms in the documented order.

Every primitive `fused.float64_ufunc` routes through the C path is checked against the ufunc called
from Python on the whole array, on lengths around the chunk size and the vector widths (odd tails),
with array, scalar (0-d) and literal operands, reading its operands directly and in place over a
scratch buffer, on random and special values (zeros of both signs, denormals, infinities, NaN,
extremes), bit for bit.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import engine.fused as fused
from engine.core import Eqn, Graph, Literal, ShapedArray, Var
from engine.primitive import DECLARED
from engine.primitives import neg_p

needs_kernels = pytest.mark.skipif(fused._kernels is None, reason="engine._fused is not built")
ROUTED = [p for p in DECLARED if fused.float64_ufunc(p) is not None]
CHUNK = fused._kernels.CHUNK if fused._kernels is not None else 512
# Around the vector widths (2, 4, 8 float64), the chunk size and a blocked plan's block sizes.
LENGTHS = [2, 3, 5, 7, 8, 9, 15, 16, 17, 31, 33, 63, 65, CHUNK - 1, CHUNK, CHUNK + 1, 2 * CHUNK + 3, 1216, 3001]
F8 = np.dtype(np.float64)
REPO = Path(__file__).resolve().parents[1]


def test_the_routed_primitives() -> None:
    """The primitives computed by a float64 ufunc: every elementwise one with a ufunc spelling,
    and tanh and log (whose float32 results are XLA's, float64 NumPy's)."""
    names = {p.name for p in ROUTED}
    assert {"add", "sub", "mul", "div", "neg", "tanh", "log", "exp", "sqrt", "max", "min"} <= names
    rng = np.random.default_rng(0)
    x = rng.uniform(0.01, 20.0, 1001)
    for p in ROUTED:
        if p.arity == 1:
            assert_same_bits(p.impl(x), fused.float64_ufunc(p)(x))


def values(n: int, seed: int) -> np.ndarray:
    """n float64 values: mostly ordinary magnitudes, some extreme, some special."""
    rng = np.random.default_rng(seed)
    specials = np.array([0.0, -0.0, 5e-324, -5e-324, 2.2250738585072014e-308, 1.0, -1.0, 0.5, 2.0, np.pi,
                         1e-300, 1e300, -1e300, 1.7976931348623157e308, np.inf, -np.inf, np.nan, 710.0, -745.0])
    pool = np.concatenate([rng.uniform(-4.0, 4.0, n), rng.uniform(-50.0, 50.0, n),
                           np.exp(rng.uniform(-700.0, 700.0, n)) * rng.choice([-1.0, 1.0], n),
                           rng.integers(0, 2**64, n, dtype=np.uint64).view(np.float64), specials])
    weights = np.concatenate([np.full(2 * n, 4.0), np.full(2 * n, 1.0),
                              np.full(specials.size, 4.0 * n / specials.size)])
    return rng.choice(pool, n, p=weights / weights.sum())


def assert_same_bits(got: np.ndarray, want: np.ndarray) -> None:
    got, want = np.asarray(got, F8), np.asarray(want, F8)
    assert got.shape == want.shape
    differ = got.view(np.uint64) != want.view(np.uint64)
    assert not differ.any(), f"{differ.sum()} of {differ.size} differ, first at {np.argmax(differ)}"


def _graph(invars: list[Var], eqns: list[Eqn], outvars: list[Var]) -> Graph:
    return Graph(invars, [], [], eqns, outvars)


def _chain(graph: Graph) -> Eqn:
    """The graph fused into one chain equation."""
    rewritten = fused.fuse(graph)
    assert len(rewritten.eqns) == 1 and rewritten.eqns[0].prim.name == "fused_chain", rewritten.eqns
    return rewritten.eqns[0]


# The operands of a binary primitive: an array, a 0-d value (passed with stride 0) or a literal.
FORMS = [("array", "array"), ("array", "scalar"), ("scalar", "array"), ("array", "literal"),
         ("literal", "array"), ("same",)]


@needs_kernels
@pytest.mark.parametrize("prim", ROUTED, ids=lambda p: p.name)
def test_every_routed_primitive_gives_numpys_bits(prim) -> None:
    ufunc = fused.float64_ufunc(prim)
    forms = [("array",)] if ufunc.nin == 1 else FORMS
    with np.errstate(all="ignore"):
        for n in LENGTHS:
            x, y = values(n, seed=n), values(n, seed=n + 1)
            for form in forms:
                shape = (n,)
                args, avals, atoms, numpy_operands = [], [], [], []
                for k, kind in enumerate(form if form != ("same",) else ("array",)):
                    v = (x, y)[k]
                    if kind == "array":
                        var = Var(ShapedArray(shape, F8))
                        args.append(v), avals.append(var), atoms.append(var), numpy_operands.append(v)
                    elif kind == "scalar":
                        var = Var(ShapedArray((), F8))
                        args.append(v[0]), avals.append(var), atoms.append(var), numpy_operands.append(v[0])
                    else:
                        atoms.append(Literal(v[0])), numpy_operands.append(v[0])
                if form == ("same",):
                    atoms, numpy_operands = atoms * 2, numpy_operands * 2
                want = ufunc(*numpy_operands)
                out = Var(ShapedArray(shape, F8))

                # Read from the operands, written to an output that the next step reads.
                negated = Var(ShapedArray(shape, F8))
                chain = _chain(_graph(avals, [Eqn(prim, atoms, [out], {}), Eqn(neg_p, [out], [negated], {})],
                                      [out, negated]))
                got, got_negated = chain.prim.impl(*args)
                assert_same_bits(got, want)
                assert_same_bits(got_negated, np.negative(want))

                # Read from a scratch buffer and written over it (the first array operand negated
                # first, so the primitive reads an intermediate that dies there).
                if form[0] == "array" or form == ("same",):
                    first = Var(ShapedArray(shape, F8))
                    inner = [first if a is atoms[0] else a for a in atoms]
                    result, final = Var(ShapedArray(shape, F8)), Var(ShapedArray(shape, F8))
                    chain = _chain(_graph(avals, [Eqn(neg_p, [atoms[0]], [first], {}),
                                                  Eqn(prim, inner, [result], {}),
                                                  Eqn(neg_p, [result], [final], {})], [final]))
                    assert chain.prim.impl.steps == 3
                    numpy_inner = [np.negative(numpy_operands[0]) if a is first else o
                                   for a, o in zip(inner, numpy_operands)]
                    assert_same_bits(chain.prim.impl(*args), np.negative(ufunc(*numpy_inner)))


@needs_kernels
def test_a_long_chain_with_several_outputs_reuses_scratch_and_matches_numpy() -> None:
    """The logistic loss's elementwise part, and its values read after the chain."""
    n = 3 * CHUNK + 17
    rng = np.random.default_rng(5)
    z, t = rng.standard_normal(n), (rng.random(n) > 0.5).astype(np.float64)
    from engine.primitives import add_p, div_p, log_p, mul_p, sub_p, tanh_p

    def var(shape=(n,)):
        return Var(ShapedArray(shape, F8))

    Z, T, b = var(), var(), var(())
    one, half, two = Literal(np.float64(1.0)), Literal(np.float64(0.5)), Literal(np.float64(2.0))
    s, h, th, p, q1, q0, omp, q, ell = (var() for _ in range(9))
    eqns = [Eqn(add_p, [Z, b], [s], {}), Eqn(div_p, [s, two], [h], {}), Eqn(tanh_p, [h], [th], {}),
            Eqn(add_p, [th, one], [p], {}), Eqn(mul_p, [half, p], [p := var()], {}),
            Eqn(mul_p, [p, T], [q1], {}), Eqn(sub_p, [one, p], [omp], {}), Eqn(sub_p, [one, T], [q0], {}),
            Eqn(mul_p, [omp, q0], [q0 := var()], {}), Eqn(add_p, [q1, q0], [q], {}), Eqn(log_p, [q], [ell], {})]
    chain = _chain(_graph([Z, T, b], eqns, [th, ell]))
    assert chain.outputs == [th, ell]
    given = {Z: z, T: t, b: np.float64(0.1)}
    got_th, got_ell = chain.prim.impl(*[given[v] for v in chain.inputs])
    want_th = np.tanh((z + np.float64(0.1)) / 2.0)
    pp = 0.5 * (want_th + 1.0)
    want_ell = np.log(pp * t + (1.0 - pp) * (1.0 - t))
    assert_same_bits(got_th, want_th)
    assert_same_bits(got_ell, want_ell)


@needs_kernels
def test_operands_laid_out_otherwise_are_read_densely() -> None:
    """A strided operand is copied first; an unaligned one (a view into a MessagePack body) is read
    through a staging buffer a chunk at a time: the same values, never misread."""
    from engine.primitives import mul_p, tanh_p
    n = 1001
    a, b, m, out = (Var(ShapedArray((n,), F8)) for _ in range(4))
    chain = _chain(_graph([a, b], [Eqn(mul_p, [a, b], [m], {}), Eqn(tanh_p, [m], [out], {})], [out]))
    assert chain.inputs == [a, b]
    x = values(2 * n, 1)
    y = values(n, 2)
    unaligned = np.frombuffer(b"\0" + y.tobytes(), np.float64, offset=1)
    assert not unaligned.flags.aligned
    with np.errstate(all="ignore"):
        assert_same_bits(chain.prim.impl(x[::2], unaligned), np.tanh(x[::2] * y))
        # both operands unaligned (two staging slots), over two chunks and a partial third
        other = np.frombuffer(b"\0\0\0" + x[:n].tobytes(), np.float64, offset=3)
        assert_same_bits(chain.prim.impl(other, unaligned), np.tanh(x[:n] * y))
        assert_same_bits(chain.prim.impl(unaligned, x[:n]), np.tanh(y * x[:n]))
        with pytest.raises(TypeError):
            chain.prim.impl(x[:n].astype(np.float32), y)
        with pytest.raises(ValueError):
            chain.prim.impl(x[: n - 1], y)


def sum_in_chunks(x: np.ndarray) -> np.float64:
    """The sum of x in engine._fused's documented order: per chunk, four interleaved running sums
    (the elements i mod 4), then (s0 + s1) + (s2 + s3), the chunks' sums added in order."""
    total = np.float64(0.0)
    for start in range(0, x.size, CHUNK):
        chunk = x[start:start + CHUNK]
        lanes = [np.float64(0.0)] * 4
        for i, value in enumerate(chunk):
            lanes[i % 4] = lanes[i % 4] + value
        total = total + ((lanes[0] + lanes[1]) + (lanes[2] + lanes[3]))
    return total


@needs_kernels
def test_a_chain_takes_in_reshapes_and_sums_over_rows() -> None:
    """A reshape before the chain (the chain reads its operand), a sum of a chain value over every
    axis that is a sum over rows (added up chunk by chunk), and a reshape after the chain (the
    value's only other use): one equation, the same elements and NumPy's bits for the arrays."""
    from engine.primitives import exp_p, mul_p, reduce_sum_p, reshape_p
    n = 2 * CHUNK + 37
    column, flat, e, m, summed, reshaped, unused = (Var(ShapedArray(shape, F8)) for shape in
                                                    [(n, 1), (n,), (n,), (n,), (), (n, 1), ()])
    eqns = [Eqn(reshape_p, [column], [flat], {"shape": (n,)}), Eqn(exp_p, [flat], [e], {}),
            Eqn(mul_p, [e, Literal(np.float64(-0.5))], [m], {}), Eqn(reduce_sum_p, [m], [summed], {"axes": (0,)}),
            Eqn(reshape_p, [m], [reshaped], {"shape": (n, 1)}), Eqn(reduce_sum_p, [e], [unused], {"axes": (0,)})]
    graph = _graph([column], eqns, [summed, reshaped, unused])
    rewritten = fused.fuse(graph, sums_over_rows=[summed])
    assert [q.prim.name for q in rewritten.eqns] == ["fused_chain", "reduce_sum"]
    chain = rewritten.eqns[0]
    assert chain.inputs == [column] and chain.outputs == [e, reshaped, summed]
    x = np.random.default_rng(3).uniform(-3.0, 3.0, (n, 1))
    got_e, got_reshaped, got_sum = chain.prim.impl(x)
    want = np.exp(x[:, 0]) * np.float64(-0.5)
    assert_same_bits(got_e, np.exp(x[:, 0]))
    assert got_reshaped.shape == (n, 1)
    assert_same_bits(got_reshaped[:, 0], want)
    assert type(got_sum) is np.float64
    assert_same_bits(got_sum, sum_in_chunks(want))
    # A sum that is not a sum over rows stays NumPy's, and the value it reads is returned as it is.
    assert [q.prim.name for q in fused.fuse(graph).eqns] == ["fused_chain", "reduce_sum", "reshape", "reduce_sum"]


@needs_kernels
def test_a_chain_whose_only_result_is_a_sum() -> None:
    from engine.primitives import exp_p, mul_p, reduce_sum_p
    n = CHUNK + 3
    x, e, m, total = (Var(ShapedArray(shape, F8)) for shape in [(n,), (n,), (n,), ()])
    graph = _graph([x], [Eqn(exp_p, [x], [e], {}), Eqn(mul_p, [e, e], [m], {}),
                         Eqn(reduce_sum_p, [m], [total], {"axes": (0,)})], [total])
    chain = _chain_after(fused.fuse(graph, sums_over_rows=[total]))
    assert chain.outputs == [total] and not chain.prim.multiple_results
    value = np.linspace(-2.0, 2.0, n)
    got = chain.prim.impl(value)
    assert type(got) is np.float64
    assert_same_bits(got, sum_in_chunks(np.exp(value) * np.exp(value)))


def _chain_after(rewritten: Graph) -> Eqn:
    assert [q.prim.name for q in rewritten.eqns] == ["fused_chain"]
    return rewritten.eqns[0]


def test_what_stays_outside_a_chain() -> None:
    """Only float64 ufuncs on operands of the result's shape or single values join a chain, and a
    chain needs two of them."""
    from engine.primitives import add_p, exp_p, mul_p
    n = 64
    a, c, d = (Var(ShapedArray((n, 4), F8)) for _ in range(3))
    b = Var(ShapedArray((4,), F8))
    broadcast = _graph([a, b], [Eqn(add_p, [a, b], [c], {}), Eqn(exp_p, [c], [d], {})], [d])
    assert [e.prim.name for e in fused.fuse(broadcast).eqns] == ["add", "exp"] or fused._kernels is None
    single = _graph([a], [Eqn(exp_p, [a], [c], {})], [c])
    assert fused.fuse(single) is single
    a32, c32, d32 = (Var(ShapedArray((n,), np.dtype(np.float32))) for _ in range(3))
    float32 = _graph([a32], [Eqn(exp_p, [a32], [c32], {}), Eqn(mul_p, [c32, c32], [d32], {})], [d32])
    assert fused.fuse(float32) is float32


def test_the_engine_runs_blocked_plans_without_the_extension() -> None:
    """Where engine._fused cannot be imported, engine.fused says so and blocked plans run NumPy's
    calls; their results are those of the plan without the C kernels."""
    script = """
import sys
sys.modules["engine._fused"] = None  # import engine._fused raises ImportError
import numpy as np
import engine, engine.fused, engine.numpy as jnp
assert engine.fused.IMPLEMENTATION == "NumPy, one call per operation", engine.fused.IMPLEMENTATION
engine.config.update("jax_enable_x64", True)
rng = np.random.default_rng(0)
X, T = rng.standard_normal((30_000, 100)), (rng.random(30_000) > 0.5) * 1.0
Xe, Te = jnp.asarray(X), jnp.asarray(T)
def loss(W):
    p = 0.5 * (jnp.tanh(jnp.dot(Xe, W) / 2) + 1)
    return -jnp.sum(jnp.log(p * Te + (1 - p) * (1 - Te)))
W = rng.standard_normal(100) / 10
grad = engine.jit(engine.grad(loss))
g = np.asarray(grad(jnp.asarray(W)))
((_, _, plan),) = grad._cache.values()
assert plan.blocking.blocks >= 2
t = np.tanh(X @ W / 2)
q = 0.5 * (t + 1) * T + (1 - 0.5 * (t + 1)) * (1 - T)
np.testing.assert_allclose(g, X.T @ (-(2 * T - 1) / q * 0.25 * (1 - t * t)), rtol=1e-9, atol=1e-9)
print("ok")
"""
    result = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr[-3000:]


def test_without_the_extension_nothing_is_rewritten(monkeypatch: pytest.MonkeyPatch) -> None:
    from engine.primitives import exp_p, mul_p
    a, c, d = (Var(ShapedArray((100,), F8)) for _ in range(3))
    graph = _graph([a], [Eqn(exp_p, [a], [c], {}), Eqn(mul_p, [c, c], [d], {})], [d])
    monkeypatch.setattr(fused, "_kernels", None)
    assert fused.fuse(graph) is graph


# ----------------------------------------------------------------------------- contractions


def contraction_in_order(a: np.ndarray, d: np.ndarray) -> np.ndarray:
    """sum_i a[i] * d[i] in engine._fused's documented order: per group of four rows
    ((t0 + t1) + (t2 + t3)) added to the running sum, then the remaining rows one by one."""
    n, K = a.shape
    total = np.zeros(K)
    full = n - n % 4
    for i in range(0, full, 4):
        t = [a[i + j] * d[i + j] for j in range(4)]
        total = total + ((t[0] + t[1]) + (t[2] + t[3]))
    for i in range(full, n):
        total = total + a[i] * d[i]
    return total


@needs_kernels
@pytest.mark.parametrize("K", [1, 3, 4, 5, 8, 31, 32, 33, 100])
def test_contractions_add_in_the_documented_order(K: int) -> None:
    kernels = fused._kernels
    for n in (1, 2, 3, 4, 5, 7, 8, 64, 1216, 1219):
        rng = np.random.default_rng(n * K)
        block = np.ascontiguousarray(rng.standard_normal((n + 3, K + 2))[:n, 1:K + 1])  # rows apart
        rows = rng.standard_normal((n + 3, K + 2))[:n, 1:K + 1]  # a strided block (row stride > K)
        d = rng.standard_normal(n) * np.exp(rng.uniform(-30, 30, n))
        for a in (block, rows):
            want = contraction_in_order(a, d)
            right = kernels.contract_right(a.T, d.reshape(n, 1))
            left = kernels.contract_left(d.reshape(1, n), a)
            assert right.shape == (K, 1) and left.shape == (1, K)
            assert_same_bits(right[:, 0], want)
            assert_same_bits(left[0], want)


# (kernel, a, its vector operand) -> np.matmul's operands in order: a's rows contracted, or a's rows
# each multiplied with the vector.
KERNELS_AND_OPERANDS = {
    "contract_right": lambda a, v: (a.T, v),
    "row_product": lambda a, v: (a, v),
}


@needs_kernels
@pytest.mark.parametrize("kernel", KERNELS_AND_OPERANDS)
def test_products_of_other_layouts_are_numpys_matmul(kernel: str) -> None:
    """Operands the C loop does not read (a's rows not dense, float32, a matrix rather than a vector)
    go to np.matmul, and so do mismatched shapes, which it refuses."""
    call, operands = getattr(fused._kernels, kernel), KERNELS_AND_OPERANDS[kernel]
    rng = np.random.default_rng(1)
    a = rng.standard_normal((50, 7))
    vector = rng.standard_normal((50 if kernel == "contract_right" else 7, 1))
    column_major = np.asfortranarray(a)  # a row's elements not adjacent
    assert_same_bits(call(*operands(column_major, vector)), np.matmul(*operands(column_major, vector)))
    f32, v32 = a.astype(np.float32), vector.astype(np.float32)
    np.testing.assert_array_equal(call(*operands(f32, v32)), np.matmul(*operands(f32, v32)))
    wide = rng.standard_normal((vector.shape[0], 2))
    assert_same_bits(call(*operands(a, wide)), np.matmul(*operands(a, wide)))
    with pytest.raises(ValueError):
        call(*operands(a, rng.standard_normal((vector.shape[0] - 1, 1))))

# ----------------------------------------------------------------------------- row products


def row_products_in_order(a: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Each row's dot product with w in engine._fused's documented order: term k (a rounded product)
    into running sum k mod 8, in the order of k, then ((s0 + s4) + (s2 + s6)) + ((s1 + s5) + (s3 + s7))."""
    n, K = a.shape
    s = np.zeros((8, n))
    for k in range(K):
        s[k % 8] = s[k % 8] + a[:, k] * w[k]
    return ((s[0] + s[4]) + (s[2] + s[6])) + ((s[1] + s[5]) + (s[3] + s[7]))


@needs_kernels
@pytest.mark.parametrize("K", [0, 1, 3, 4, 7, 8, 9, 15, 16, 17, 100])
def test_row_products_add_in_the_documented_order(K: int) -> None:
    kernels = fused._kernels
    for n in (0, 1, 2, 3, 5, 64, 1216):
        rng = np.random.default_rng(n * 131 + K)
        scale = np.exp(rng.uniform(-30, 30, (n + 3, K + 2)))  # magnitudes far apart: the order shows
        dense = np.ascontiguousarray((rng.standard_normal((n + 3, K + 2)) * scale)[:n, 1:K + 1])
        strided = (rng.standard_normal((n + 3, K + 2)) * scale)[:n, 1:K + 1]  # row stride > K
        w = rng.standard_normal(K) * np.exp(rng.uniform(-30, 30, K))
        for a in (dense, strided):
            want = row_products_in_order(a, w)
            column = kernels.row_product(a, w.reshape(K, 1))
            vector = kernels.row_product(a, w)
            assert column.shape == (n, 1) and vector.shape == (n,)
            assert_same_bits(column[:, 0], want)
            assert_same_bits(vector, want)


@needs_kernels
def test_row_products_stay_within_the_dot_product_bound_of_numpys() -> None:
    """Another order of the same K products as the BLAS's: |ours - BLAS| <= 2 gamma_K sum_k |a_k w_k|
    (engine/blocked.py's bound 2)."""
    rng = np.random.default_rng(5)
    a = rng.standard_normal((2000, 100)) * np.exp(rng.uniform(-5, 5, (2000, 100)))
    w = rng.standard_normal(100)
    eps, K = np.finfo(np.float64).eps, a.shape[1]
    gamma = K * eps / 2 / (1 - K * eps / 2)
    got, want = fused._kernels.row_product(a, w), a @ w
    assert np.all(np.abs(got - want) <= 2 * gamma * (np.abs(a) @ np.abs(w)))


@needs_kernels
def test_row_wise_products_with_a_vector_are_rewritten_unless_asked_not_to() -> None:
    """In a block's graph, a product of the rows with a vector becomes a row product in C; one with a
    matrix stays the BLAS's, and `products=False` leaves every product alone."""
    from engine.primitives import matmul_p
    n, K = 1216, 100
    x, w, m = Var(ShapedArray((n, K), F8)), Var(ShapedArray((K, 1), F8)), Var(ShapedArray((K, 3), F8))
    z, y = Var(ShapedArray((n, 1), F8)), Var(ShapedArray((n, 3), F8))
    graph = _graph([x, w, m], [Eqn(matmul_p, [x, w], [z], {}), Eqn(matmul_p, [x, m], [y], {})], [z, y])
    assert [e.prim.name for e in fused.fuse(graph).eqns] == ["row_products", "matmul"]
    assert fused.fuse(graph, products=False) is graph


def test_the_extension_refuses_to_run_before_it_is_configured() -> None:
    """engine.fused configures engine._fused on import (NumPy's allocator and scalar type); used
    before that, the extension raises instead of crashing."""
    script = """
import numpy as np
from engine import _fused
for attempt in (lambda: _fused.row_product(np.ones((3, 2)), np.ones(2)),
                lambda: _fused.contract_right(np.ones((2, 3)), np.ones((3, 1))),
                lambda: _fused.ScalarProgram(1, (), 2, ((4, 1, 0, 0),), (1,))):
    try:
        attempt()
    except RuntimeError as e:
        assert "engine.fused" in str(e), e
    else:
        raise SystemExit("no error")
print("ok")
"""
    if fused._kernels is None:
        pytest.skip("engine._fused is not built")
    result = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and result.stdout.strip() == "ok", (result.returncode, result.stderr[-2000:])


@needs_kernels
def test_long_runs_are_cut_into_chains_each_followed_by_a_deadline_check() -> None:
    """A chain does the work of up to MAX_CHAIN equations in one call; the plan checks its
    deadline after each one, so no call runs more operations than that unchecked."""
    from engine.plan import compile_plan
    from engine.primitives import sin_p
    n = 2 * fused.MAX_CHAIN + 8
    vs = [Var(ShapedArray((100,), F8)) for _ in range(n + 1)]
    graph = _graph([vs[0]], [Eqn(sin_p, [vs[k]], [vs[k + 1]], {}) for k in range(n)], [vs[-1]])
    rewritten = fused.fuse(graph)
    assert [e.prim.impl.steps for e in rewritten.eqns] == [fused.MAX_CHAIN, fused.MAX_CHAIN, 8]
    body = [line.strip() for line in compile_plan(graph).source.splitlines()[1:-1]]
    calls = [k for k, line in enumerate(body) if "= f" in line]
    assert len(calls) == 3
    for k in calls:  # the call, perhaps a `del` of what it read, then the check
        assert "_check_deadline()" in body[k + 1:k + 3], body
    x = values(100, 4)
    want = compile_plan(graph, chains=False)([x])[0]
    assert_same_bits(compile_plan(graph)([x])[0], want)


@needs_kernels
def test_a_run_with_more_results_than_a_chain_returns_stays_numpys_calls() -> None:
    from engine.plan import compile_plan
    from engine.primitives import exp_p
    n = fused.MAX_CHAIN_OUTPUTS + 2
    vs = [Var(ShapedArray((50,), F8)) for _ in range(n + 1)]
    graph = _graph([vs[0]], [Eqn(exp_p, [vs[k]], [vs[k + 1]], {}) for k in range(n)], vs[1:])  # every value an output
    assert fused.fuse(graph) is graph
    x = np.linspace(-1.0, 1.0, 50)
    for got, want in zip(compile_plan(graph)([x]), compile_plan(graph, chains=False)([x])):
        assert_same_bits(got, want)
