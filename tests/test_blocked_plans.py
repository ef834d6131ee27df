"""Blocked plans (engine/blocked.py): a loss summed over the rows of large data is computed one
block of rows at a time, and agrees with the ordinary (unblocked) plan within the stated bound.

The bound (engine/blocked.py's docstring): a sum over rows S = t_1 + ... + t_n is added up per
block and then across blocks, another order of the same terms, so

    |S_blocked - S_unblocked| <= 2 gamma_n sum_i |t_i| <= 1.01 n eps sum_i |t_i|   (n eps <= 0.01),

and an operation after the sums (the negation of a loss, a mean's division by N, an added penalty)
rounds its result once more, about eps |result| (the negation is exact). The terms t_i are written out in closed form
below: the per-row losses, and for a gradient X.T @ dz the products X_ik dz_i (so
sum_i |t_i| = |X|.T @ |dz|). Graphs that are not sums over rows, and data under the threshold,
keep the ordinary plan.

A blocked plan's body runs its elementwise chains and its products with a vector in C when
engine._fused is built (engine/fused.py): the chains give NumPy's bits, the products summing over
rows add their terms in another order (bound 1 again), and the row-wise products X @ w add each
row's K terms in another order (bound 2: at most 2 gamma_K sum_k |x_ik w_k| per row, which the
smooth per-row loss carries into its terms far inside the bound 1 tolerance checked here;
tests/test_fused.py checks bound 2 itself). The bound tests run both ways (`implementation`), and
the chains are checked to change no bit.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import engine
import engine.blocked as blocked
import engine.fused as fused
import engine.numpy as jnp
from engine.core import deadline
from engine.errors import DeadlineExceeded
from engine.plan import compile_plan
from engine.tree_util import tree_leaves, tree_unflatten

ROWS, FEATURES = 40_000, 100  # 32 MB of float64 data: over the 16 MiB threshold


@pytest.fixture(params=["C", "NumPy"])
def implementation(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Blocked plans with engine._fused's kernels, and without them (as where no compiler built the
    extension: NumPy's calls one by one)."""
    if request.param == "C" and fused._kernels is None:
        pytest.skip("engine._fused is not built")
    if request.param == "NumPy":
        monkeypatch.setattr(fused, "_kernels", None)
    return request.param


def _data(rows: int = ROWS, features: int = FEATURES, dtype: type = np.float64, seed: int = 0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((rows, features)).astype(dtype)
    T = (rng.random(rows) > 0.5).astype(dtype)
    W = (rng.standard_normal(features) / np.sqrt(features)).astype(dtype)
    return X, T, W, dtype(0.1)


def _plans(fn, *args):
    """fn's optimised graph at args compiled as compile_plan does (the service's way, deadlines
    checked) and with blocking switched off, and a function running a plan on args."""
    graph = engine.optimize(engine.make_graph(fn)(*args))
    plan = compile_plan(graph)
    with blocked.unblocked():
        reference = compile_plan(graph)
    assert not hasattr(reference, "blocking")
    leaves = [x._value for x in tree_leaves(args)]
    return plan, reference, lambda p: tree_unflatten(graph.out_tree, p(leaves))


def _logistic(X, T, *, mean: bool = False, penalty: float = 0.0):
    Xe, Te = jnp.asarray(X), jnp.asarray(T)

    def loss(W, b):
        p = 0.5 * (jnp.tanh((jnp.dot(Xe, W) + b) / 2) + 1)
        rows = jnp.log(p * Te + (1 - p) * (1 - Te))
        data = -(jnp.mean(rows) if mean else jnp.sum(rows))
        return data + penalty * jnp.sum(W * W)
    return loss


def _logistic_terms(X, T, W, b):
    """Per row: the loss term log q_i and dz_i, the derivative of -log q_i by the row's logit."""
    t = np.tanh((X @ W + b) / 2)
    p = 0.5 * (t + 1)
    q = p * T + (1 - p) * (1 - T)
    return np.log(q), -(2 * T - 1) / q * 0.25 * (1 - t * t)


def _assert_within(got, want, terms_abs_sum, n: int, eps: float, after: int = 0) -> None:
    """|got - want| <= 1.01 n eps sum|t_i| + after * eps * |want| (after: operations that round,
    applied after the sum)."""
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    bound = 1.01 * n * eps * np.asarray(terms_abs_sum) + after * eps * np.abs(want)
    assert np.all(np.abs(got - want) <= bound), (np.max(np.abs(got - want) - bound), np.max(bound))


# ----------------------------------------------------------------------------- blocked, within the bound


@pytest.mark.usefixtures("x64", "implementation")
@pytest.mark.parametrize("penalty", [0.0, 0.01])
def test_regression_value_and_gradient_are_blocked_within_the_bound(penalty: float) -> None:
    X, T, W, b = _data()
    plan, reference, run = _plans(engine.value_and_grad(_logistic(X, T, penalty=penalty), (0, 1)),
                                     jnp.asarray(W), jnp.asarray(b))
    layout = plan.blocking
    assert layout.rows == ROWS and layout.blocks >= 2 and layout.block_rows % blocked.ROW_ALIGN == 0
    # The captured X.T (the gradient's X.T @ dz) is read as the transpose of X's blocks: X once.
    assert layout.row_bytes < X.nbytes + 4 * T.nbytes
    (value, (gW, gb)), (value_u, (gW_u, gb_u)) = run(plan), run(reference)

    ell, dz = _logistic_terms(X, T, W, b)
    eps = np.finfo(np.float64).eps
    after = 2 if penalty else 0  # the penalty's addition and its product with W
    _assert_within(value, value_u, np.sum(np.abs(ell)), ROWS, eps, after)
    _assert_within(gW, gW_u, np.abs(X).T @ np.abs(dz), ROWS, eps, after)
    _assert_within(gb, gb_u, np.sum(np.abs(dz)), ROWS, eps)
    # and they are the closed-form gradient
    np.testing.assert_allclose(gW, X.T @ dz + 2 * penalty * W, rtol=1e-10, atol=1e-9)
    np.testing.assert_allclose(gb, np.sum(dz), rtol=1e-10)
    np.testing.assert_allclose(value, -np.sum(ell) + penalty * np.sum(W * W), rtol=1e-12)


@pytest.mark.usefixtures("x64", "implementation")
def test_a_mean_loss_divides_the_summed_rows_by_the_full_row_count() -> None:
    """1/N belongs to the whole data, not to a block: the mean's division happens after the loop
    (the value) or is folded into every row's cotangent (the gradient)."""
    X, T, W, b = _data(seed=1)
    plan, reference, run = _plans(engine.value_and_grad(_logistic(X, T, mean=True), (0, 1)),
                                     jnp.asarray(W), jnp.asarray(b))
    assert plan.blocking.blocks >= 2
    (value, (gW, gb)), (value_u, (gW_u, gb_u)) = run(plan), run(reference)
    ell, dz = _logistic_terms(X, T, W, b)
    eps = np.finfo(np.float64).eps
    _assert_within(value, value_u, np.sum(np.abs(ell)) / ROWS, ROWS, eps, after=1)
    _assert_within(gW, gW_u, np.abs(X).T @ np.abs(dz) / ROWS, ROWS, eps)
    _assert_within(gb, gb_u, np.sum(np.abs(dz)) / ROWS, ROWS, eps)
    np.testing.assert_allclose(value, -np.mean(ell), rtol=1e-12)
    np.testing.assert_allclose(gW, X.T @ dz / ROWS, rtol=1e-10, atol=1e-12)


@pytest.mark.usefixtures("implementation")
def test_float32_regression_within_the_float32_bound() -> None:
    X, T, W, b = _data(50_000, 100, np.float32, seed=2)  # 20 MB
    plan, reference, run = _plans(engine.grad(_logistic(X, T), (0, 1)), jnp.asarray(W), jnp.asarray(b))
    assert plan.blocking.blocks >= 2
    (gW, gb), (gW_u, gb_u) = run(plan), run(reference)
    assert gW.dtype == np.float32 and gW_u.dtype == np.float32
    X64, T64, W64 = (a.astype(np.float64) for a in (X, T, W))
    _, dz = _logistic_terms(X64, T64, W64, float(b))
    eps = float(np.finfo(np.float32).eps)
    _assert_within(gW, gW_u, np.abs(X64).T @ np.abs(dz), 50_000, eps)
    _assert_within(gb, gb_u, np.sum(np.abs(dz)), 50_000, eps)


@pytest.mark.usefixtures("x64", "implementation")
def test_mlp_over_a_large_batch_passed_as_an_argument() -> None:
    """A two-layer MLP, mean cross-entropy over log_softmax along the classes (a max and a sum
    within each row), the batch an argument of the function rather than a captured constant."""
    rng = np.random.default_rng(3)
    rows, d, h, c = 100_000, 20, 16, 5
    X = rng.standard_normal((rows, d))
    Y = np.eye(c)[rng.integers(0, c, rows)]
    W1, b1 = rng.standard_normal((d, h)) / np.sqrt(d), 0.1 * rng.standard_normal(h)
    W2, b2 = rng.standard_normal((h, c)) / np.sqrt(h), 0.1 * rng.standard_normal(c)
    Ye = jnp.asarray(Y)

    def loss(params, X):
        hidden = jnp.tanh(jnp.dot(X, params[0]) + params[1])
        out = jnp.dot(hidden, params[2]) + params[3]
        return -jnp.mean(jnp.sum(engine.nn.log_softmax(out, axis=1) * Ye, axis=1))

    params = [jnp.asarray(a) for a in (W1, b1, W2, b2)]
    plan, reference, run = _plans(engine.value_and_grad(loss), params, jnp.asarray(X))
    assert plan.blocking.rows == rows and plan.blocking.blocks >= 2
    got, want = run(plan), run(reference)

    # The hand-written forward and backward pass, for the terms of each sum over rows.
    hid = np.tanh(X @ W1 + b1)
    out = hid @ W2 + b2
    log_soft = out - out.max(axis=1, keepdims=True)
    log_soft -= np.log(np.exp(log_soft).sum(axis=1, keepdims=True))
    d2 = (np.exp(log_soft) - Y) / rows
    d1 = (d2 @ W2.T) * (1 - hid ** 2)
    eps = np.finfo(np.float64).eps
    value, (gW1, gb1, gW2, gb2) = got
    value_u, (gW1_u, gb1_u, gW2_u, gb2_u) = want
    _assert_within(value, value_u, np.sum(np.abs(np.sum(log_soft * Y, axis=1))) / rows, rows, eps, after=1)
    _assert_within(gW1, gW1_u, np.abs(X).T @ np.abs(d1), rows, eps)
    _assert_within(gb1, gb1_u, np.sum(np.abs(d1), axis=0), rows, eps)
    _assert_within(gW2, gW2_u, np.abs(hid).T @ np.abs(d2), rows, eps)
    _assert_within(gb2, gb2_u, np.sum(np.abs(d2), axis=0), rows, eps)
    np.testing.assert_allclose(gW1, X.T @ d1, rtol=1e-9, atol=1e-13)
    np.testing.assert_allclose(gW2, hid.T @ d2, rtol=1e-9, atol=1e-13)


@pytest.mark.usefixtures("x64", "implementation")
def test_jit_uses_the_blocked_plan() -> None:
    X, T, W, b = _data(seed=4)
    grad = engine.jit(engine.grad(_logistic(X, T), (0, 1)))
    gW, gb = grad(jnp.asarray(W), jnp.asarray(b))
    ((_, _, plan),) = grad._cache.values()
    assert plan.blocking.blocks >= 2
    _, dz = _logistic_terms(X, T, W, b)
    np.testing.assert_allclose(np.asarray(gW), X.T @ dz, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(float(gb), np.sum(dz), rtol=1e-10)


def _mlp(rows: int = 40_000, d: int = 100, h: int = 16, c: int = 5):
    rng = np.random.default_rng(10)
    X, Y = rng.standard_normal((rows, d)), np.eye(c)[rng.integers(0, c, rows)]
    params = [rng.standard_normal((d, h)) / np.sqrt(d), 0.1 * rng.standard_normal(h),
              rng.standard_normal((h, c)) / np.sqrt(h), 0.1 * rng.standard_normal(c)]
    Xe, Ye = jnp.asarray(X), jnp.asarray(Y)

    def loss(p):
        hidden = jnp.tanh(jnp.dot(Xe, p[0]) + p[1])
        return -jnp.mean(jnp.sum(engine.nn.log_softmax(jnp.dot(hidden, p[2]) + p[3], axis=1) * Ye, axis=1))
    return engine.value_and_grad(loss), [jnp.asarray(a) for a in params]


@pytest.mark.usefixtures("x64")
@pytest.mark.skipif(fused._kernels is None, reason="engine._fused is not built")
@pytest.mark.parametrize("workload", ["regression", "MLP"])
def test_chains_in_c_change_no_bit(workload: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """With its elementwise chains in C (and its sums over rows left to NumPy), a blocked plan's
    every output has the bits of the plan calling NumPy once per operation."""
    if workload == "regression":
        X, T, W, b = _data(seed=9)
        fn, args = engine.value_and_grad(_logistic(X, T, penalty=0.01), (0, 1)), (jnp.asarray(W), jnp.asarray(b))
    else:
        fn, params = _mlp()
        args = (params,)
    graph = engine.optimize(engine.make_graph(fn)(*args))
    leaves = [x._value for x in tree_leaves(args)]
    real_fuse = fused.fuse
    rewritten = []

    def chains_only(g, sums_over_rows=(), products=True):
        result = real_fuse(g, products=False)
        rewritten.append(result is not g)
        return result

    monkeypatch.setattr(fused, "fuse", chains_only)
    with_chains = compile_plan(graph)
    assert any(rewritten)  # the blocks' bodies (the plans before and after the loop may have no chain)
    monkeypatch.setattr(fused, "fuse", lambda g, sums_over_rows=(), products=True: g)
    numpy_calls = compile_plan(graph)
    assert with_chains.blocking == numpy_calls.blocking
    for got, want in zip(with_chains(leaves), numpy_calls(leaves)):
        np.testing.assert_array_equal(np.asarray(got).view(np.uint64), np.asarray(want).view(np.uint64))


# ----------------------------------------------------------------------------- left as they are


@pytest.mark.usefixtures("x64", "implementation")
def test_data_under_the_threshold_keeps_the_ordinary_plan_bit_for_bit() -> None:
    X, T, W, b = _data(2_000, 100)  # 1.6 MB
    plan, reference, run = _plans(engine.value_and_grad(_logistic(X, T), (0, 1)), jnp.asarray(W), jnp.asarray(b))
    assert not hasattr(plan, "blocking")
    assert plan.source == reference.source
    for got, want in zip(tree_leaves(run(plan)), tree_leaves(run(reference))):
        np.testing.assert_array_equal(got, want)


def _rows_coupled(name: str, X: np.ndarray, T: np.ndarray):
    Xe, Te = jnp.asarray(X), jnp.asarray(T)
    return {
        "an output per row": lambda W: jnp.tanh(jnp.dot(Xe, W)),
        "a running sum along the rows": lambda W: jnp.sum(jnp.cumsum(jnp.tanh(jnp.dot(Xe, W))) * Te),
        "a sort along the rows": lambda W: jnp.sum(jnp.sort(jnp.dot(Xe, W)) * Te),
        "X.T @ X inside a row-wise computation": lambda W: jnp.sum(jnp.tanh(Xe @ (Xe.T @ (Xe @ W)) / len(X))),
        "a softmax over axis 0": lambda W: jnp.sum(engine.nn.softmax(jnp.dot(Xe, W), axis=0) * Te),
        "a max over the rows": lambda W: jnp.max(jnp.dot(Xe, W)),
        "a row-wise value after a sum over rows": lambda W: jnp.sum(jnp.dot(Xe, W) - jnp.mean(jnp.dot(Xe, W)) ** 2),
    }[name]


@pytest.mark.usefixtures("x64")
@pytest.mark.parametrize("name", ["an output per row", "a running sum along the rows", "a sort along the rows",
                                  "X.T @ X inside a row-wise computation", "a softmax over axis 0",
                                  "a max over the rows", "a row-wise value after a sum over rows"])
def test_graphs_coupling_rows_keep_the_ordinary_plan(name: str) -> None:
    X, T, W, _ = _data(seed=5)
    fn = _rows_coupled(name, X, T)
    transform = engine.jacfwd if name == "an output per row" else engine.value_and_grad
    for f in (fn, transform(fn)):
        plan, reference, run = _plans(f, jnp.asarray(W))
        assert not hasattr(plan, "blocking"), name
        assert plan.source == reference.source


@pytest.mark.usefixtures("x64")
def test_the_switch_turns_blocking_off(monkeypatch: pytest.MonkeyPatch) -> None:
    X, T, W, b = _data(seed=6)
    f = engine.grad(_logistic(X, T), (0, 1))
    monkeypatch.setenv("NABLA_BLOCKED_PLANS", "0")
    plan, _, _ = _plans(f, jnp.asarray(W), jnp.asarray(b))
    assert not hasattr(plan, "blocking")
    monkeypatch.setenv("NABLA_BLOCKED_PLANS", "1")
    plan, _, _ = _plans(f, jnp.asarray(W), jnp.asarray(b))
    assert plan.blocking.blocks >= 2


# ----------------------------------------------------------------------------- deadlines


@pytest.mark.usefixtures("x64")
def test_the_deadline_is_checked_between_blocks(monkeypatch: pytest.MonkeyPatch) -> None:
    X, T, W, b = _data(seed=7)
    f = engine.grad(_logistic(X, T), (0, 1))
    plan, _, run = _plans(f, jnp.asarray(W), jnp.asarray(b))
    blocks = plan.blocking.blocks
    checks = []

    def stop_at_the_third_block() -> None:
        checks.append(None)
        if len(checks) == 3:
            raise DeadlineExceeded("stopped")

    monkeypatch.setattr(blocked, "check_deadline", stop_at_the_third_block)
    with pytest.raises(DeadlineExceeded):
        run(plan)
    assert len(checks) == 3  # two blocks ran, the third was refused
    checks.clear()
    monkeypatch.setattr(blocked, "check_deadline", lambda: checks.append(None))
    run(plan)
    assert len(checks) == blocks


@pytest.mark.usefixtures("x64")
def test_a_past_deadline_stops_a_blocked_plan() -> None:
    X, T, W, b = _data(seed=8)
    plan, _, run = _plans(engine.grad(_logistic(X, T), (0, 1)), jnp.asarray(W), jnp.asarray(b))
    assert plan.blocking.blocks >= 2
    with deadline(0.0), pytest.raises(DeadlineExceeded):
        run(plan)
    with deadline(60.0):
        run(plan)


# ----------------------------------------------------------------------------- the benchmark


def test_the_benchmark_runs_and_checks_its_gradients() -> None:
    """benchmarks/blocked_bench.py --quick: blocked and unblocked gradients both agree with the
    hand-written one (it exits non-zero otherwise), and the table says how the rows were split."""
    root = Path(__file__).resolve().parents[1]
    result = subprocess.run([sys.executable, str(root / "benchmarks" / "blocked_bench.py"), "--quick"], cwd=root,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "nabla / np_fwd" in result.stdout and "nabla_unblocked / np_fwd" in result.stdout
    assert "logistic regression (30000x100)" in result.stdout and " blocks of " in result.stdout
