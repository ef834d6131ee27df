"""engine.numpy.linalg breadth (issue 15): svd, eigh, eig, qr, pinv, lstsq, matrix_power and the
singular-value norms.

Values are NumPy's (the same LAPACK routines, so the same signs of singular vectors, eigenvectors
and Q). Derivatives are checked three ways, in float64:

* against JAX: the value, the gradient and a Hessian-vector product of each function of REFERENCE
  below were computed with JAX 0.10.2 (float64, CPU) by tests/data/derive_linalg_reference.py and
  stored in tests/data/linalg_jax_reference.json (JAX is not called here). The functions are
  invariant under the sign (and order) conventions of the factors, so they compare derivatives,
  not conventions;
* against finite differences, to second order in both modes (engine.test_util.check_grads);
* against closed forms (d tr = I through eigenvalues, the nuclear norm's U V^T, ...).
"""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jsonschema
import numpy as np
import pytest

import engine
import engine.numpy as jnp
from engine.errors import DifferentiationError, InvalidArgumentError, ShapeError
from engine.expr import compile_expression
from engine.serialize import FORMAT, SCHEMA_PATH, GraphFormatError, GraphFunction, graph_to_json, load_graph
from engine.test_util import check_grads

pytestmark = pytest.mark.usefixtures("x64")  # every test computes in float64 (tests/conftest.py)


# Inputs: a tall matrix, its transpose (wide), a non-symmetric square matrix whose eigenvalues
# are real and distinct, and fixed weights that make the test functions non-trivial.
TALL = np.array([[0.9, -0.4, 0.3], [0.2, 1.1, -0.7], [-0.5, 0.6, 0.8], [0.4, 0.1, -0.2]])
WIDE = TALL.T.copy()
SQUARE = np.array([[2.0, 0.5, -0.3], [0.4, -1.0, 0.6], [0.1, 0.3, 0.7]])
ROW_WEIGHTS4 = np.array([0.3, -1.2, 0.8, 0.5])
ROW_WEIGHTS3 = np.array([0.7, -0.4, 1.3])
COLUMN_WEIGHTS = np.array([1.5, -0.5, 0.25])
RHS = np.array([1.0, -2.0, 0.5, 3.0])


def _sign_free_svd(lib: Any, a: Any, full_matrices: bool = False) -> Any:
    """Depends on U and Vh only through u_i v_i^T, which no sign convention changes."""
    u, s, vh = lib.linalg.svd(a, full_matrices=full_matrices)
    k = s.shape[0]
    return lib.sum(lib.sin((u[:, :k] * COLUMN_WEIGHTS[:k]) @ vh[:k])) + lib.sum(s ** 3)


def _sign_free_eigh(lib: Any, a: Any) -> Any:
    w, v = lib.linalg.eigh(a)
    return lib.sum(w ** 3) + lib.sum(v ** 2 * ROW_WEIGHTS3[:, None] * w[None, :])


def _sign_free_eig(lib: Any, a: Any) -> Any:
    w, v = lib.linalg.eig(a)  # the order of the eigenvalues does not matter either
    return lib.sum(w ** 3) + lib.sum(v ** 2 * ROW_WEIGHTS3[:, None] * w[None, :])


def _sign_free_qr(lib: Any, a: Any, mode: str = "reduced") -> Any:
    q, r = lib.linalg.qr(a, mode=mode)
    k = r.shape[0]
    return lib.sum(lib.sin((q * COLUMN_WEIGHTS[:k]) @ r)) + lib.sum(r ** 2 * COLUMN_WEIGHTS[:k, None])


# name -> (function of (lib, x), input). `lib` is engine.numpy here and jax.numpy in the derivation.
REFERENCE: dict[str, tuple[Callable[[Any, Any], Any], np.ndarray]] = {
    "svd_tall": (_sign_free_svd, TALL),
    "svd_wide": (_sign_free_svd, WIDE),
    "svd_square_full": (lambda lib, a: _sign_free_svd(lib, a, full_matrices=True), SQUARE),
    "svd_values_only": (lambda lib, a: lib.sum(lib.exp(lib.linalg.svd(a, compute_uv=False))), TALL),
    "eigh_symmetrised": (_sign_free_eigh, SQUARE),  # eigh symmetrises its input first (as JAX)
    "eigvalsh": (lambda lib, a: lib.sum(lib.sin(lib.linalg.eigvalsh(a))), SQUARE),
    "eig_real": (_sign_free_eig, SQUARE),
    "qr_tall": (_sign_free_qr, TALL),
    "qr_square_complete": (lambda lib, a: _sign_free_qr(lib, a, "complete"), SQUARE),
    "qr_r_only": (lambda lib, a: lib.sum(lib.linalg.qr(a, mode="r") ** 2 * COLUMN_WEIGHTS[:, None]), TALL),
    "pinv_tall": (lambda lib, a: lib.sum(lib.sin(lib.linalg.pinv(a)) * ROW_WEIGHTS4), TALL),
    "pinv_wide": (lambda lib, a: lib.sum(lib.sin(lib.linalg.pinv(a)) * ROW_WEIGHTS4[:, None]), WIDE),
    "lstsq": (lambda lib, a: lib.sum(lib.sin(lib.linalg.lstsq(a, RHS)[0])) + lib.sum(lib.linalg.lstsq(a, RHS)[1]),
              TALL),
    "matrix_power_3": (lambda lib, a: lib.sum(lib.sin(lib.linalg.matrix_power(a, 3))), SQUARE),
    "matrix_power_-2": (lambda lib, a: lib.sum(lib.sin(lib.linalg.matrix_power(a, -2))), SQUARE),
    "norm_nuc": (lambda lib, a: lib.linalg.norm(a, "nuc"), TALL),
    "norm_2": (lambda lib, a: lib.linalg.norm(a, 2), TALL),
    "norm_-2": (lambda lib, a: lib.linalg.norm(a, -2), TALL),
    "norm_2_axes": (lambda lib, a: lib.sum(lib.linalg.norm(a.reshape(2, 2, 3), 2, axis=(0, 2))), TALL),
}

DATA = Path(__file__).parent / "data" / "linalg_jax_reference.json"
VALIDATOR = jsonschema.Draft202012Validator(json.loads(SCHEMA_PATH.read_text(encoding="utf-8")))


def hvp_direction(shape: tuple[int, ...]) -> np.ndarray:
    """The fixed direction of the stored Hessian-vector products."""
    return np.cos(np.arange(int(np.prod(shape)), dtype=np.float64) + 0.5).reshape(shape)


def _stored() -> dict[str, Any]:
    return json.loads(DATA.read_text())


@pytest.mark.parametrize("name", sorted(REFERENCE))
def test_value_gradient_and_second_derivative_match_jax(name: str) -> None:
    fn, x = REFERENCE[name]
    want = _stored()[name]
    f = lambda a: fn(jnp, a)  # noqa: E731
    xe = jnp.asarray(x)
    t = jnp.asarray(hvp_direction(x.shape))
    np.testing.assert_allclose(float(f(xe)), want["value"], rtol=1e-12)
    np.testing.assert_allclose(np.asarray(engine.grad(f)(xe)), np.array(want["grad"]), rtol=1e-9, atol=1e-11)
    hvp_rev = engine.grad(lambda a: jnp.vdot(engine.grad(f)(a), t))(xe)
    np.testing.assert_allclose(np.asarray(hvp_rev), np.array(want["hvp"]), rtol=1e-8, atol=1e-10)
    hvp_fwd = engine.jvp(engine.grad(f), (xe,), (t,))[1]  # forward over reverse
    np.testing.assert_allclose(np.asarray(hvp_fwd), np.array(want["hvp"]), rtol=1e-8, atol=1e-10)


@pytest.mark.parametrize("name", sorted(REFERENCE))
def test_derivatives_match_finite_differences_to_second_order(name: str) -> None:
    fn, x = REFERENCE[name]
    # A step of 1e-5 rather than the default 1e-4: these functions' third derivatives are large
    # enough (small singular values, sines of products) for the default's truncation error to show.
    check_grads(lambda a: fn(jnp, a), (jnp.asarray(x),), order=2, modes=("fwd", "rev"), eps=1e-5)


@pytest.mark.parametrize("name", ["svd_tall", "eigh_symmetrised", "eig_real", "qr_tall", "pinv_wide", "lstsq",
                                  "norm_nuc", "matrix_power_-2"])
def test_jit_agrees_with_eager(name: str) -> None:
    fn, x = REFERENCE[name]
    f = lambda a: fn(jnp, a)  # noqa: E731
    xe = jnp.asarray(x)
    np.testing.assert_allclose(float(engine.jit(f)(xe)), float(f(xe)), rtol=1e-13)
    np.testing.assert_allclose(np.asarray(engine.jit(engine.grad(f))(xe)), np.asarray(engine.grad(f)(xe)),
                               rtol=1e-12, atol=1e-14)


# ----------------------------------------------------------------------------- values are NumPy's


def test_svd_values_and_signs_are_numpys() -> None:
    for a in (TALL, WIDE, SQUARE):
        for full in (True, False):
            u, s, vh = jnp.linalg.svd(jnp.asarray(a), full_matrices=full)
            nu, ns, nvh = np.linalg.svd(a, full_matrices=full)
            np.testing.assert_allclose(np.asarray(u), nu, atol=1e-14)
            np.testing.assert_allclose(np.asarray(s), ns, atol=1e-14)
            np.testing.assert_allclose(np.asarray(vh), nvh, atol=1e-14)
    np.testing.assert_allclose(np.asarray(jnp.linalg.svd(jnp.asarray(TALL), compute_uv=False)),
                               np.linalg.svd(TALL, compute_uv=False), atol=1e-14)


def test_eigh_eig_and_qr_values_and_signs_are_numpys() -> None:
    sym = (SQUARE + SQUARE.T) / 2
    w, v = jnp.linalg.eigh(jnp.asarray(sym))
    nw, nv = np.linalg.eigh(sym)
    np.testing.assert_allclose(np.asarray(w), nw, atol=1e-14)
    np.testing.assert_allclose(np.asarray(v), nv, atol=1e-14)
    # symmetrize_input=False reads one triangle, as NumPy's UPLO does
    for uplo in ("L", "U"):
        w, v = jnp.linalg.eigh(jnp.asarray(SQUARE), UPLO=uplo, symmetrize_input=False)
        nw, nv = np.linalg.eigh(SQUARE, UPLO=uplo)
        np.testing.assert_allclose(np.asarray(w), nw, atol=1e-14)
        np.testing.assert_allclose(np.abs(np.asarray(v)), np.abs(nv), atol=1e-13)
    w, v = jnp.linalg.eig(jnp.asarray(SQUARE))
    nw, nv = np.linalg.eig(SQUARE)
    assert np.asarray(w).dtype == np.float64
    np.testing.assert_allclose(np.asarray(w), nw, atol=1e-14)
    np.testing.assert_allclose(np.asarray(v), nv, atol=1e-14)
    for a in (TALL, WIDE, SQUARE):
        for mode in ("reduced", "complete"):
            q, r = jnp.linalg.qr(jnp.asarray(a), mode=mode)
            nq, nr = np.linalg.qr(a, mode=mode)
            np.testing.assert_allclose(np.asarray(q), nq, atol=1e-14)
            np.testing.assert_allclose(np.asarray(r), nr, atol=1e-14)
        np.testing.assert_allclose(np.asarray(jnp.linalg.qr(jnp.asarray(a), mode="r")), np.linalg.qr(a, mode="r"),
                                   atol=1e-14)


def test_pinv_lstsq_matrix_power_and_norms_are_numpys() -> None:
    for a in (TALL, WIDE, SQUARE):
        np.testing.assert_allclose(np.asarray(jnp.linalg.pinv(jnp.asarray(a))), np.linalg.pinv(a), atol=1e-13)
    rank_deficient = np.outer([1.0, 2.0, -1.0, 0.5], [0.3, -0.2, 1.0])
    np.testing.assert_allclose(np.asarray(jnp.linalg.pinv(jnp.asarray(rank_deficient))),
                               np.linalg.pinv(rank_deficient), atol=1e-13)
    x, resid, rank, s = jnp.linalg.lstsq(jnp.asarray(TALL), jnp.asarray(RHS))
    nx, nresid, nrank, ns = np.linalg.lstsq(TALL, RHS, rcond=None)
    np.testing.assert_allclose(np.asarray(x), nx, atol=1e-13)
    np.testing.assert_allclose(np.asarray(resid), nresid, atol=1e-13)
    assert int(rank) == nrank == 3
    np.testing.assert_allclose(np.asarray(s), ns, atol=1e-14)
    b2 = np.stack([RHS, RHS ** 2], axis=1)
    x, resid, rank, _ = jnp.linalg.lstsq(jnp.asarray(rank_deficient), jnp.asarray(b2), numpy_resid=True)
    nx, nresid, nrank, _ = np.linalg.lstsq(rank_deficient, b2, rcond=None)
    np.testing.assert_allclose(np.asarray(x), nx, atol=1e-12)
    assert int(rank) == nrank == 1 and np.asarray(resid).shape == nresid.shape == (0,)
    for n in (-3, -1, 0, 1, 2, 5):
        np.testing.assert_allclose(np.asarray(jnp.linalg.matrix_power(jnp.asarray(SQUARE), n)),
                                   np.linalg.matrix_power(SQUARE, n), rtol=1e-12, atol=1e-13)
    integer = np.array([[1, 2], [3, 4]])
    assert np.asarray(jnp.linalg.matrix_power(jnp.asarray(integer), 3)).tolist() == \
        np.linalg.matrix_power(integer, 3).tolist()
    for ord_ in ("nuc", 2, -2, 1, -1, np.inf, -np.inf, "fro"):
        np.testing.assert_allclose(float(jnp.linalg.norm(jnp.asarray(TALL), ord_)), np.linalg.norm(TALL, ord_),
                                   rtol=1e-13)
    stack = np.stack([TALL, 2 * TALL[::-1]])
    for ord_ in ("nuc", 2, -2):
        got = jnp.linalg.norm(jnp.asarray(stack), ord_, axis=(2, 1), keepdims=True)
        np.testing.assert_allclose(np.asarray(got), np.linalg.norm(stack, ord_, axis=(2, 1), keepdims=True),
                                   rtol=1e-13)


def test_batched_factorisations_and_vmap_agree_with_a_loop() -> None:
    stack = np.stack([TALL, TALL ** 2 - 0.3, np.cos(TALL)])
    f = lambda a: _sign_free_svd(jnp, a) + _sign_free_qr(jnp, a) + jnp.sum(jnp.sin(jnp.linalg.pinv(a)))  # noqa: E731
    looped = [np.asarray(engine.grad(f)(jnp.asarray(a))) for a in stack]
    np.testing.assert_allclose(np.asarray(engine.vmap(engine.grad(f))(jnp.asarray(stack))), np.stack(looped),
                               rtol=1e-12, atol=1e-14)
    squares = np.stack([SQUARE, SQUARE.T + np.eye(3)])
    g = lambda a: _sign_free_eigh(jnp, a) + _sign_free_eig(jnp, a)  # noqa: E731
    looped = [np.asarray(engine.grad(g)(jnp.asarray(a))) for a in squares]
    np.testing.assert_allclose(np.asarray(engine.vmap(engine.grad(g))(jnp.asarray(squares))), np.stack(looped),
                               rtol=1e-12, atol=1e-14)
    # the primitives take leading batch axes themselves, as NumPy's linalg does
    u, s, vh = jnp.linalg.svd(jnp.asarray(stack), full_matrices=False)
    np.testing.assert_allclose(np.asarray(u) * np.asarray(s)[:, None, :] @ np.asarray(vh), stack, atol=1e-14)


# ----------------------------------------------------------------------------- closed forms


def test_closed_forms_including_repeated_values() -> None:
    # Through the eigenvalues alone, derivatives exist at repeated eigenvalues: d sum(w) = d trace.
    eye = jnp.eye(3, dtype=jnp.float64)
    np.testing.assert_allclose(np.asarray(engine.grad(lambda a: jnp.sum(jnp.linalg.eigvalsh(a)))(eye)), np.eye(3))
    # d sum(w^2) = d |A|_F^2 = 2 A for a symmetric A (the gradient is symmetrised, as JAX's)
    sym = (SQUARE + SQUARE.T) / 2
    np.testing.assert_allclose(np.asarray(engine.grad(lambda a: jnp.sum(jnp.linalg.eigvalsh(a) ** 2))(sym)),
                               2 * sym, atol=1e-13)
    # symmetrize_input=False: the matrix is the one the lower triangle defines, so only that
    # triangle has a derivative; sum(w^2) = |M|_F^2 counts each off-diagonal element twice.
    lower = engine.grad(lambda a: jnp.sum(jnp.linalg.eigvalsh(a, symmetrize_input=False) ** 2))(jnp.asarray(SQUARE))
    np.testing.assert_allclose(np.asarray(lower), 2 * np.tril(SQUARE) + 2 * np.tril(SQUARE, -1), atol=1e-13)
    # The nuclear norm's gradient is U V^T, also at an orthogonal matrix (all singular values 1).
    q = np.linalg.qr(SQUARE)[0]
    np.testing.assert_allclose(np.asarray(engine.grad(lambda a: jnp.linalg.norm(a, "nuc"))(jnp.asarray(q))), q,
                               atol=1e-14)
    u, _, vh = np.linalg.svd(TALL, full_matrices=False)
    np.testing.assert_allclose(np.asarray(engine.grad(lambda a: jnp.linalg.norm(a, "nuc"))(jnp.asarray(TALL))),
                               u @ vh, atol=1e-14)
    # The 2-norm's gradient is u_1 v_1^T.
    np.testing.assert_allclose(np.asarray(engine.grad(lambda a: jnp.linalg.norm(a, 2))(jnp.asarray(TALL))),
                               np.outer(u[:, 0], vh[0]), atol=1e-14)
    # pinv's derivative (Golub-Pereyra) holds at repeated singular values: at an orthogonal Q,
    # pinv = Q^T, so d pinv(Q)[dQ] = dQ^T when dQ keeps Q orthogonal to first order... in general
    # it is -P dA P + ..., checked here against finite differences.
    check_grads(lambda a: jnp.linalg.pinv(a), (jnp.asarray(q),), order=2, modes=("fwd", "rev"))
    # matrix_power(a, -1) is inv(a): d = -inv(a) dA inv(a)
    inv = np.linalg.inv(SQUARE)
    t = hvp_direction((3, 3))
    got = engine.jvp(lambda a: jnp.linalg.matrix_power(a, -1), (jnp.asarray(SQUARE),), (jnp.asarray(t),))[1]
    np.testing.assert_allclose(np.asarray(got), -inv @ t @ inv, atol=1e-13)


def test_eigenvalue_derivatives_at_repeated_eigenvalues_are_not_finite_through_eigenvectors() -> None:
    """The documented convention: eigenvector (and singular vector) derivatives need distinct
    values; at repeated ones they come out non-finite rather than silently wrong."""
    with np.errstate(divide="ignore", invalid="ignore"):  # the 1 / (w_j - w_i) of equal eigenvalues
        g = engine.grad(lambda a: jnp.sum(jnp.linalg.eigh(a)[1] * ROW_WEIGHTS3[:, None]))(
            jnp.eye(3, dtype=jnp.float64))
    assert not np.all(np.isfinite(np.asarray(g)))


# ----------------------------------------------------------------------------- refusals


def test_refusals_say_what_to_do() -> None:
    rotation = jnp.asarray(np.array([[0.0, -1.0], [1.0, 0.0]]))
    with pytest.raises(InvalidArgumentError, match="complex eigenvalues"):
        jnp.linalg.eig(rotation)
    with pytest.raises(DifferentiationError, match="full_matrices"):
        engine.grad(lambda a: jnp.sum(jnp.linalg.svd(a)[1]))(jnp.asarray(TALL))
    # the same matrix's singular values are differentiable through the reduced form
    engine.grad(lambda a: jnp.sum(jnp.linalg.svd(a, full_matrices=False)[1]))(jnp.asarray(TALL))
    with pytest.raises(DifferentiationError, match="wide"):
        engine.grad(lambda a: jnp.sum(jnp.linalg.qr(a)[1]))(jnp.asarray(WIDE))
    with pytest.raises(DifferentiationError, match="complete"):
        engine.jvp(lambda a: jnp.linalg.qr(a, mode="complete")[0], (jnp.asarray(TALL),), (jnp.asarray(TALL),))
    with pytest.raises(ShapeError):
        jnp.linalg.svd(jnp.asarray(RHS))
    with pytest.raises(ShapeError):
        jnp.linalg.eigh(jnp.asarray(TALL))
    with pytest.raises(ShapeError):
        jnp.linalg.matrix_power(jnp.asarray(TALL), 2)
    with pytest.raises(InvalidArgumentError):
        jnp.linalg.matrix_power(jnp.asarray(SQUARE), 1.5)
    with pytest.raises(InvalidArgumentError):
        jnp.linalg.qr(jnp.asarray(SQUARE), mode="economic")


# ----------------------------------------------------------------------------- expression language


def test_expression_functions() -> None:
    source = "jnp.sum(linalg.svd(a, full_matrices=False)[1]) + linalg.norm(a, ord='nuc') + jnp.sum(linalg.pinv(a))"
    f = compile_expression(source, ["a"])
    xe = jnp.asarray(TALL)
    want = 2 * np.linalg.svd(TALL, compute_uv=False).sum() + np.linalg.pinv(TALL).sum()
    np.testing.assert_allclose(float(f(xe)), want, rtol=1e-13)
    u, _, vh = np.linalg.svd(TALL, full_matrices=False)
    p = np.linalg.pinv(TALL)
    ones = np.ones_like(p)
    # d sum(pinv) for a full-column-rank A: -P^T 1 P^T + (I - A P) 1^T P P^T
    d_pinv = -p.T @ ones @ p.T + (np.eye(4) - TALL @ p) @ ones.T @ p @ p.T
    np.testing.assert_allclose(np.asarray(engine.grad(f)(xe)), 2 * u @ vh + d_pinv, atol=1e-12)


# ----------------------------------------------------------------------------- the graph format


def test_graph_documents_name_each_result_of_a_factorisation() -> None:
    f = lambda a: _sign_free_svd(jnp, a) + _sign_free_qr(jnp, a) + jnp.sum(jnp.linalg.pinv(a))  # noqa: E731
    xe = jnp.asarray(TALL)
    doc = graph_to_json(engine.make_graph(f)(xe))
    svd_node = next(n for n in doc["nodes"] if n["op"] == "svd")
    assert svd_node["attrs"] == {"full_matrices": False} and len(svd_node["results"]) == 3
    VALIDATOR.validate(doc)
    loaded = GraphFunction(json.loads(json.dumps(doc)))
    np.testing.assert_allclose(float(loaded(xe)), float(f(xe)), rtol=1e-14)
    assert graph_to_json(load_graph(doc), ["p0"]) == doc  # read and written again: identical
    np.testing.assert_allclose(np.asarray(engine.grad(loaded)(xe)), np.asarray(engine.grad(f)(xe)), rtol=1e-12)


def _svd_document(**node_fields: Any) -> dict[str, Any]:
    node = {"id": "n0", "op": "svd", "inputs": ["a"], "attrs": {"full_matrices": False}, **node_fields}
    return {"format": FORMAT, "params": [{"name": "a", "shape": [4, 3], "dtype": "float64"}],
            "nodes": [node, {"id": "n1", "op": "reduce_sum", "inputs": ["s"], "attrs": {"axes": [0]}}],
            "outputs": ["n1"]}


def test_graph_documents_with_wrong_results_are_refused() -> None:
    ok = _svd_document(results=["u", "s", "vt"])
    np.testing.assert_allclose(float(GraphFunction(ok)(jnp.asarray(TALL))), np.linalg.svd(TALL)[1].sum(), rtol=1e-14)
    with pytest.raises(GraphFormatError, match="results"):
        GraphFunction(_svd_document())  # no names for the results
    with pytest.raises(GraphFormatError, match="already used"):
        GraphFunction(_svd_document(results=["u", "a", "vt"]))
    with pytest.raises(GraphFormatError, match="has 3 results"):
        GraphFunction(_svd_document(results=["u", "s"]))(jnp.asarray(TALL))
    referring_to_the_id = _svd_document(results=["u", "s", "vt"])
    referring_to_the_id["nodes"][1]["inputs"] = ["n0"]
    with pytest.raises(GraphFormatError, match="several results"):
        GraphFunction(referring_to_the_id)
    one_result = _svd_document(results=["u", "s", "vt"])
    one_result["nodes"][1]["results"] = ["x"]
    with pytest.raises(GraphFormatError, match="one result"):
        GraphFunction(one_result)


# ----------------------------------------------------------------------------- det at singular matrices

# det is a polynomial: its gradient is the cofactor matrix (the adjugate transposed), defined at
# every matrix. JAX returns it at singular matrices too; these values are JAX 0.10.2's (float64).
RANK_2 = np.array([[1.0, 2.0, 3.0], [2.0, 4.0, 6.0], [1.0, 0.0, 1.0]])
SINGULAR_GRADIENTS = {
    "2x2 rank 1": (np.array([[1.0, 2.0], [2.0, 4.0]]), [[4.0, -2.0], [-2.0, 1.0]]),
    "3x3 rank 2": (RANK_2, [[4.0, 4.0, -4.0], [-2.0, -2.0, 2.0], [0.0, 0.0, 0.0]]),
    "3x3 rank 1": (np.outer([1.0, 2.0, 3.0], [1.0, 1.0, 2.0]), np.zeros((3, 3))),
    "zero": (np.zeros((3, 3)), np.zeros((3, 3))),
    # 4x4 and larger go through the SVD (row 2 = row 0 + row 1; then rows 0 and 1 proportional)
    "4x4 rank 3": (np.array([[2.0, 1.0, 0.0, 3.0], [1.0, 3.0, 1.0, 0.0], [3.0, 4.0, 1.0, 3.0], [0.0, 1.0, 2.0, 1.0]]),
                   [[-16.0, 8.0, -8.0, 8.0], [-16.0, 8.0, -8.0, 8.0], [16.0, -8.0, 8.0, -8.0], [0.0, 0.0, 0.0, 0.0]]),
    "4x4 rank 2": (np.array([[1.0, 2.0, 3.0, 4.0], [2.0, 4.0, 6.0, 8.0], [0.0, 1.0, 0.0, 1.0], [1.0, 3.0, 3.0, 5.0]]),
                   np.zeros((4, 4))),
}


@pytest.mark.parametrize("name", SINGULAR_GRADIENTS)
def test_the_gradient_of_det_at_a_singular_matrix_is_its_cofactor_matrix(name: str) -> None:
    a, expected = SINGULAR_GRADIENTS[name]
    np.testing.assert_allclose(engine.grad(jnp.linalg.det)(a), expected, atol=1e-13)
    np.testing.assert_allclose(engine.jit(engine.grad(jnp.linalg.det))(a), expected, atol=1e-13)
    # forward mode: d det(a)[t] = sum(cofactors * t)
    t = np.arange(a.size, dtype=float).reshape(a.shape) - 2.0
    _, tangent = engine.jvp(jnp.linalg.det, (a,), (t,))
    assert float(tangent) == pytest.approx(float(np.sum(np.asarray(expected) * t)), abs=1e-12)


def test_cofactors_are_det_times_the_inverse_transposed_where_that_exists() -> None:
    rng = np.random.default_rng(5)
    a = rng.standard_normal((4, 3, 3)) + 3 * np.eye(3)
    expected = np.linalg.det(a)[:, None, None] * np.linalg.inv(a).transpose(0, 2, 1)
    np.testing.assert_allclose(engine.grad(lambda m: jnp.sum(jnp.linalg.det(m)))(a), expected, rtol=1e-12)
    # a batch mixing singular and invertible matrices: each gets its own
    mixed = np.stack([RANK_2, a[0]])
    grads = np.asarray(engine.grad(lambda m: jnp.sum(jnp.linalg.det(m)))(mixed))
    np.testing.assert_allclose(grads[0], SINGULAR_GRADIENTS["3x3 rank 2"][1], atol=1e-14)
    np.testing.assert_allclose(grads[1], expected[0], rtol=1e-12)
    # 1x1: the cofactor of a number is 1; float32 stays float32
    assert np.asarray(engine.grad(jnp.linalg.det)(np.array([[-3.0]]))).tolist() == [[1.0]]
    assert engine.grad(jnp.linalg.det)(a[0].astype(np.float32)).dtype == np.float32
    with np.errstate(invalid="ignore"):
        # up to 3x3 each cofactor is a minor: NaN only where it reads the NaN (JAX gives the same);
        # larger matrices come from an SVD, which a NaN spoils entirely (JAX returns zeros there)
        small = np.asarray(engine.grad(jnp.linalg.det)(np.array([[np.nan, 1.0], [1.0, 1.0]])))
        np.testing.assert_array_equal(small, [[1.0, -1.0], [-1.0, np.nan]])
        large = np.eye(4)
        large[0, 0] = np.nan
        assert np.isnan(np.asarray(engine.grad(jnp.linalg.det)(large))).all()


def test_the_gradient_of_det_keeps_every_digit_of_a_badly_scaled_matrix() -> None:
    # cofactor(d r d) = det(d)^2 inv(d) cofactor(r) inv(d) for a diagonal d: powers of two make the
    # scaling exact, and r, well scaled, has accurate cofactors det(r) inv(r).T. Every entry of the
    # gradient, small ones included, keeps its relative accuracy (as JAX's LU-based one does).
    for n, seed in [(4, 0), (6, 1)]:
        scales = np.array([2.0**26, 1.0, 2.0**-26, 1.0, 2.0**13, 1.0][:n])
        r = np.random.default_rng(seed).standard_normal((n, n))
        a = scales[:, None] * r * scales[None, :]
        expected = np.prod(scales) ** 2 * (np.linalg.det(r) * np.linalg.inv(r).T) / np.outer(scales, scales)
        np.testing.assert_allclose(engine.grad(jnp.linalg.det)(a), expected, rtol=1e-12)


@pytest.mark.parametrize("dtype, n, exponent", [("float64", 4, -330), ("float64", 4, 266), ("float64", 6, 199),
                                                ("float32", 6, 24), ("float32", 4, -40)])
def test_det_gradients_out_of_dets_range_are_exact(dtype: str, n: int, exponent: int) -> None:
    # Entries about 2^exponent: det(a) itself over- or underflows, its cofactors do not. a = 2^k r
    # has cofactors 2^(k (n-1)) cofactor(r), exactly.
    r = np.random.default_rng(n).standard_normal((n, n))
    a = np.ldexp(r, exponent).astype(dtype)
    expected = np.ldexp(np.linalg.det(r) * np.linalg.inv(r).T, exponent * (n - 1))
    assert np.isfinite(expected).all() and (expected != 0).all()
    with np.errstate(over="ignore", under="ignore"):  # det(a), computed on the way, is out of range
        grad = np.asarray(engine.grad(jnp.linalg.det)(a))
    assert grad.dtype == dtype
    np.testing.assert_allclose(grad, expected.astype(dtype), rtol=1e-12 if dtype == "float64" else 3e-6)


def test_a_batch_mixing_singular_invertible_and_non_finite_matrices() -> None:
    rng = np.random.default_rng(3)
    batch = rng.standard_normal((6, 4, 4))
    batch[1, 2] = 0.0                       # singular
    batch[3, 0] = batch[3, 1] + batch[3, 2]  # singular up to rounding
    batch[4, 0, 0] = np.nan
    with np.errstate(invalid="ignore"):  # det of the NaN matrix, computed on the way
        grads = np.asarray(engine.grad(lambda m: jnp.sum(jnp.linalg.det(m)))(batch))
        hessians = np.asarray(engine.hessian(lambda m: jnp.sum(jnp.linalg.det(m)))(batch))
    for k in (0, 2, 5):
        np.testing.assert_allclose(grads[k], np.linalg.det(batch[k]) * np.linalg.inv(batch[k]).T, rtol=1e-12)
    assert np.isnan(grads[4]).all()
    assert np.abs(grads[1][[0, 1, 3]]).max() == 0.0  # only the zero row's cofactors are nonzero
    for k in (0, 1, 2, 3, 5):
        np.testing.assert_allclose(hessians[k, :, :, k], _det_hessian_from_minors(batch[k]), atol=1e-12)


def test_an_infinity_in_a_singular_matrix_gives_nan_at_once() -> None:
    # OpenBLAS's SVD never returns for a matrix with an infinity: such a matrix must not reach it
    # (in the service, that would hold the event loop for good). A child process, so that a hang
    # fails this test instead of hanging the suite.
    script = ("import numpy as np, engine, engine.numpy as jnp; engine.config.update('jax_enable_x64', True); "
              "a = np.array([[np.inf, 1, 2, 3], [0, 0, 0, 0], [1, 2, 3, 5], [2, 1, 0, 1.0]]); "
              "g = engine.grad(jnp.linalg.det)(a); h = engine.hessian(jnp.linalg.det)(a); "
              "assert np.isnan(np.asarray(g)).all() and np.isnan(np.asarray(h)).all(); print('ok')")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                          cwd=Path(__file__).resolve().parent.parent)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-2000:]


def _det_hessian_from_minors(a: np.ndarray) -> np.ndarray:
    """d2 det / da_ij da_kl in closed form: 0 when i == k or j == l, else the signed determinant of
    a without rows i, k and columns j, l."""
    n = a.shape[0]
    hessian = np.zeros((n, n, n, n))
    for i, j, k, m in itertools.product(range(n), repeat=4):
        if i != k and j != m:
            rows = [r for r in range(n) if r not in (i, k)]
            cols = [c for c in range(n) if c not in (j, m)]
            sign = (-1) ** (k + m + (i - (k < i)) + (j - (m < j)))
            hessian[i, j, k, m] = sign * (np.linalg.det(a[np.ix_(rows, cols)]) if rows else 1.0)
    return hessian


NEAR_SINGULAR = np.array([[0.1, 0.2, 0.3, 0.4], [0.5, 0.6, 0.7, 0.9], [0.6, 0.8, 1.0, 1.3], [1.0, 0.0, 2.0, 1.0]])


@pytest.mark.parametrize("name", [*SINGULAR_GRADIENTS, "invertible 4x4", "identity", "singular up to rounding"])
def test_the_hessian_of_det_is_exact_at_every_matrix(name: str) -> None:
    # JAX 0.10.2, differentiating its LU factors, returns NaN for "4x4 rank 3" and is off by 6 for
    # "4x4 rank 2": the closed form of the minors is the reference here. "Singular up to rounding"
    # (row 2 = row 0 + row 1 in decimals) has LU pivots of 1e-17, not 0: through the inverse, its
    # Hessian was off by 0.9.
    a = {"invertible 4x4": np.random.default_rng(1).standard_normal((4, 4)), "identity": np.eye(5),
         "singular up to rounding": NEAR_SINGULAR}.get(name, SINGULAR_GRADIENTS.get(name, (None,))[0])
    expected = _det_hessian_from_minors(a)
    for hessian in (engine.hessian(jnp.linalg.det), engine.jacrev(engine.grad(jnp.linalg.det)),
                    engine.jit(engine.jacfwd(engine.grad(jnp.linalg.det)))):
        np.testing.assert_allclose(hessian(a), expected, atol=1e-12)


def test_third_derivatives_of_det_at_invertible_matrices_and_the_refusal_at_singular_ones() -> None:
    rng = np.random.default_rng(2)
    for a in (rng.standard_normal((3, 3)) + 3 * np.eye(3), rng.standard_normal((2, 5, 5)) + 4 * np.eye(5)):
        check_grads(lambda m: jnp.sum(jnp.linalg.det(m)), (a,), order=3, modes=("fwd", "rev"))
    # The third derivative goes through the inverse, which a singular matrix has not: refused,
    # never a silent NaN.
    third = engine.jacfwd(engine.hessian(jnp.linalg.det))
    with pytest.raises(np.linalg.LinAlgError):
        third(RANK_2)
