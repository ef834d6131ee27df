"""Primitives of the linear-algebra breadth of issue 15: matrix factorisations and the pseudo-inverse.

A factorisation cannot be composed from arithmetic, so each is a primitive with several results;
its derivative rules are JAX's (see docs/ENGINE.md for the conventions where they are undefined),
written with differentiable operations so that derivatives of any order come for free. Each rule
reads the factorisation's own results (`ans`), which under a trace are graph values with their own
derivatives. Imported at the end of engine.primitives, so every helper it uses is defined by then.

Leading axes are a batch throughout, as in NumPy's linalg.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from engine.core import ShapedArray
from engine.errors import DifferentiationError, DtypeError, InvalidArgumentError, ShapeError
from engine.primitive import Algebra, PerInput, Plan, WholeEquation, declare
from engine.primitives import (
    _batch_leading,
    _mT,
    broadcast_to,
    constant,
    expand_dims,
    gather_p,
    matmul_p,
    reduce_sum,
    reshape,
    solve_p,
    with_batch_axis,
)

_SUPERLINEAR = Plan(superlinear=True)

# ----------------------------------------------------------------------------- helpers for rules


def _matrix_abstract(name: str, a: ShapedArray) -> tuple[int, int]:
    if a.ndim < 2:
        raise ShapeError(f"`{name}` needs a matrix (or a batch of them) in the last two dimensions, got shape "
                         f"{a.shape}")
    if a.dtype.kind != "f":
        raise DtypeError(f"`{name}` needs a real floating-point matrix, got {a.dtype}")
    return a.shape[-2], a.shape[-1]


def _eye(n: int, dtype: Any) -> Any:
    return constant(np.eye(n, dtype=dtype))


def _diagonal(x: Any) -> Any:
    """x[..., i, i] for every i: the diagonals of the last two axes."""
    rows = np.arange(min(x.shape[-2], x.shape[-1]))
    return gather_p(x, constant(rows), constant(rows.copy()), index=(("ellipsis",), ("array", 0), ("array", 1)))


def _diag_matrix(v: Any) -> Any:
    """The diagonal matrices whose diagonals are v's last axis."""
    return expand_dims(v, -2) * _eye(v.shape[-1], v.dtype)


def _strictly_lower(x: Any) -> Any:
    n = x.shape[-1]
    return x * constant(np.tril(np.ones((x.shape[-2], n)), -1).astype(x.dtype))


def _reciprocal_gaps(values: Any, squared: bool = False) -> Any:
    """F[..., i, j] = 1 / (v_j - v_i) off the diagonal and 0 on it (v = values, or their squares).
    The identity added before the reciprocal keeps the diagonal finite (JAX builds it the same way);
    equal values off the diagonal give an infinity, which is why repeated values have no derivative."""
    v = values * values if squared else values
    eye = _eye(v.shape[-1], v.dtype)
    return 1.0 / (eye + expand_dims(v, -2) - expand_dims(v, -1)) - eye


def _add(a: Any, b: Any) -> Any:
    return b if a is None else a if b is None else a + b


# ----------------------------------------------------------------------------- svd


def _svd_impl(a: np.ndarray, full_matrices: bool) -> list[np.ndarray]:
    u, s, vt = np.linalg.svd(a, full_matrices=full_matrices)
    return [u, s, vt]


def _svd_abstract(a: ShapedArray, *, full_matrices: bool) -> list[ShapedArray]:
    m, n = _matrix_abstract("svd", a)
    k = min(m, n)
    batch = a.shape[:-2]
    u = (m, m) if full_matrices else (m, k)
    vt = (n, n) if full_matrices else (k, n)
    return [ShapedArray(batch + u, a.dtype), ShapedArray(batch + (k,), a.dtype), ShapedArray(batch + vt, a.dtype)]


def _svd_guard(vals: list[Any], wanted: list[bool], attrs: dict[str, Any]) -> None:
    m, n = vals[0].shape[-2:]
    if attrs["full_matrices"] and m != n and any(wanted):
        raise DifferentiationError(
            f"svd with full_matrices=True of a non-square {m}x{n} matrix has no derivative: the columns "
            "completing the orthonormal bases are arbitrary (JAX refuses this too). Use "
            "full_matrices=False, or compute_uv=False for the singular values alone."
        )


def _svd_jvp(tangents: list[Any], ans: Any, a: Any, *, full_matrices: bool) -> list[Any]:
    (da,) = tangents
    u, s, vt = ans
    m, n = a.shape[-2:]
    v = _mT(vt)
    ds_matrix = matmul_p(matmul_p(_mT(u), da), v)  # dS = U^T dA V
    ds = _diagonal(ds_matrix)
    f = _reciprocal_gaps(s, squared=True)
    s_row, s_col = expand_dims(s, -2), expand_dims(s, -1)
    du = matmul_p(u, f * (ds_matrix * s_row + s_col * _mT(ds_matrix)))
    dv = matmul_p(v, f * (s_col * ds_matrix + _mT(ds_matrix) * s_row))
    if m > n:  # the part of dA V outside U's columns
        dav = matmul_p(da, v)
        du = du + (dav - matmul_p(u, matmul_p(_mT(u), dav))) / s_row
    if n > m:
        dau = matmul_p(_mT(da), u)
        dv = dv + (dau - matmul_p(v, matmul_p(vt, dau))) / s_row
    return [du, ds, _mT(dv)]


def _svd_vjp(cotangents: tuple, ans: Any, needed: list[bool], a: Any, *, full_matrices: bool) -> list[Any]:
    gu, gs, gvt = cotangents
    u, s, vt = ans
    m, n = a.shape[-2:]
    s_row, s_col = expand_dims(s, -2), expand_dims(s, -1)
    g_dS = _diag_matrix(gs) if gs is not None else None  # the cotangent of dS = U^T dA V
    extra = None
    if gu is not None or gvt is not None:
        f = _reciprocal_gaps(s, squared=True)
    if gu is not None:
        utgu = matmul_p(_mT(u), gu)
        j = f * utgu
        g_dS = _add(g_dS, (j + _mT(j)) * s_row)
        if m > n:
            extra = matmul_p((gu - matmul_p(u, utgu)) / s_row, vt)
    if gvt is not None:
        v = _mT(vt)
        gv = _mT(gvt)
        k = f * matmul_p(vt, gv)
        g_dS = _add(g_dS, s_col * (k + _mT(k)))
        if n > m:
            extra = _add(extra, matmul_p(u, (gvt - matmul_p(matmul_p(gvt, v), vt)) / s_col))
    if g_dS is None:
        return [extra]
    return [_add(matmul_p(matmul_p(u, g_dS), vt), extra)]


svd_p = declare(
    "svd", impl=_svd_impl, abstract=_svd_abstract, vjp=WholeEquation(_svd_vjp), jvp=WholeEquation(_svd_jvp),
    batch=_batch_leading, plan=_SUPERLINEAR, algebra=Algebra(), arity=1, attrs=("full_matrices",),
    multiple_results=True, guard=_svd_guard,
    doc="singular value decomposition a = u @ diag(s) @ vt: (u, s, vt), s descending (NumPy's signs)",
)


# ----------------------------------------------------------------------------- eigh


def _eigh_impl(a: np.ndarray) -> list[np.ndarray]:
    w, v = np.linalg.eigh(a)
    return [w, v]


def _eigh_abstract(a: ShapedArray) -> list[ShapedArray]:
    m, n = _matrix_abstract("eigh", a)
    if m != n:
        raise ShapeError(f"`eigh` needs square matrices in the last two dimensions, got shape {a.shape}")
    return [ShapedArray(a.shape[:-1], a.dtype), a]


def _eigh_jvp(tangents: list[Any], ans: Any, a: Any) -> list[Any]:
    (da,) = tangents
    w, v = ans
    vt_da_v = matmul_p(matmul_p(_mT(v), da), v)
    return [_diagonal(vt_da_v), matmul_p(v, _reciprocal_gaps(w) * vt_da_v)]


def _eigh_vjp(cotangents: tuple, ans: Any, needed: list[bool], a: Any) -> list[Any]:
    gw, gv = cotangents
    w, v = ans
    inner = _diag_matrix(gw) if gw is not None else None
    if gv is not None:
        inner = _add(inner, _reciprocal_gaps(w) * matmul_p(_mT(v), gv))
    return [matmul_p(matmul_p(v, inner), _mT(v))]


eigh_p = declare(
    "eigh", impl=_eigh_impl, abstract=_eigh_abstract, vjp=WholeEquation(_eigh_vjp), jvp=WholeEquation(_eigh_jvp),
    batch=_batch_leading, plan=_SUPERLINEAR, algebra=Algebra(), arity=1, multiple_results=True,
    doc="eigenvalues (ascending) and orthonormal eigenvectors of a symmetric matrix (its lower triangle is read)",
)


# ----------------------------------------------------------------------------- eig (real results)


def _eig_impl(a: np.ndarray) -> list[np.ndarray]:
    w, v = np.linalg.eig(a)
    if np.iscomplexobj(w) or np.iscomplexobj(v):
        raise InvalidArgumentError(
            f"eig: a matrix of shape {a.shape} has complex eigenvalues, and eig here gives real results only "
            "(complex eigenvalues are not supported). For a symmetric matrix use eigh; the determinant and trace "
            "(det, trace) need no eigenvalues."
        )
    return [w, v]


def _eig_abstract(a: ShapedArray) -> list[ShapedArray]:
    m, n = _matrix_abstract("eig", a)
    if m != n:
        raise ShapeError(f"`eig` needs square matrices in the last two dimensions, got shape {a.shape}")
    return [ShapedArray(a.shape[:-1], a.dtype), a]


def _eig_normalising(v: Any, du: Any) -> Any:
    """du less its component along each column of v: the eigenvectors keep unit length."""
    return du - v * expand_dims(reduce_sum(v * du, (du.ndim - 2,)), -2)


def _eig_jvp(tangents: list[Any], ans: Any, a: Any) -> list[Any]:
    (da,) = tangents
    w, v = ans
    vinv_da_v = solve_p(v, matmul_p(da, v))
    du = matmul_p(v, _reciprocal_gaps(w) * vinv_da_v)
    return [_diagonal(vinv_da_v), _eig_normalising(v, du)]


def _eig_vjp(cotangents: tuple, ans: Any, needed: list[bool], a: Any) -> list[Any]:
    gw, gv = cotangents
    w, v = ans
    inner = _diag_matrix(gw) if gw is not None else None
    if gv is not None:
        inner = _add(inner, _reciprocal_gaps(w) * matmul_p(_mT(v), _eig_normalising(v, gv)))
    return [solve_p(_mT(v), matmul_p(inner, _mT(v)))]


eig_p = declare(
    "eig", impl=_eig_impl, abstract=_eig_abstract, vjp=WholeEquation(_eig_vjp), jvp=WholeEquation(_eig_jvp),
    batch=_batch_leading, plan=_SUPERLINEAR, algebra=Algebra(), arity=1, multiple_results=True,
    doc="eigenvalues and unit eigenvectors of a real matrix whose eigenvalues are all real (refused otherwise)",
)


# ----------------------------------------------------------------------------- qr


def _qr_impl(a: np.ndarray, full_matrices: bool) -> list[np.ndarray]:
    q, r = np.linalg.qr(a, mode="complete" if full_matrices else "reduced")
    return [q, r]


def _qr_abstract(a: ShapedArray, *, full_matrices: bool) -> list[ShapedArray]:
    m, n = _matrix_abstract("qr", a)
    k = m if full_matrices else min(m, n)
    batch = a.shape[:-2]
    return [ShapedArray(batch + (m, k), a.dtype), ShapedArray(batch + (k, n), a.dtype)]


def _qr_guard(vals: list[Any], wanted: list[bool], attrs: dict[str, Any]) -> None:
    m, n = vals[0].shape[-2:]
    if not any(wanted):
        return
    if m < n:
        raise DifferentiationError(
            f"qr of a wide {m}x{n} matrix has no derivative here (only square and tall matrices, as JAX's "
            "rule): transpose the problem, or factor the leading square block.")
    if attrs["full_matrices"] and m != n:
        raise DifferentiationError(
            f"qr in mode 'complete' of a non-square {m}x{n} matrix has no derivative: the columns completing "
            "Q are arbitrary (JAX refuses this too). Use mode 'reduced'.")


def _right_solve_upper(b: Any, r: Any) -> Any:
    """b @ inv(r)."""
    return _mT(solve_p(_mT(r), _mT(b)))


def _qr_jvp(tangents: list[Any], ans: Any, a: Any, *, full_matrices: bool) -> list[Any]:
    (da,) = tangents
    q, r = ans
    da_rinv = _right_solve_upper(da, r)
    c = matmul_p(_mT(q), da_rinv)
    lower = _strictly_lower(c)
    omega = lower - _mT(lower)  # skew-symmetric
    return [matmul_p(q, omega - c) + da_rinv, matmul_p(c - omega, r)]


def _qr_vjp(cotangents: tuple, ans: Any, needed: list[bool], a: Any, *, full_matrices: bool) -> list[Any]:
    gq, gr = cotangents
    q, r = ans
    m_ = None  # Q^T gQ - gR R^T, the cotangent of the skew part
    g_c = None
    if gq is not None:
        m_ = matmul_p(_mT(q), gq)
    if gr is not None:
        rr = matmul_p(gr, _mT(r))
        m_ = _add(m_, -rr)
        g_c = rr
    g_c = _add(g_c, _strictly_lower(m_ - _mT(m_)))
    g_b = matmul_p(q, g_c)
    if gq is not None:
        g_b = g_b + gq - matmul_p(q, matmul_p(_mT(q), gq))
    return [_mT(solve_p(r, _mT(g_b)))]


qr_p = declare(
    "qr", impl=_qr_impl, abstract=_qr_abstract, vjp=WholeEquation(_qr_vjp), jvp=WholeEquation(_qr_jvp),
    batch=_batch_leading, plan=_SUPERLINEAR, algebra=Algebra(), arity=1, attrs=("full_matrices",),
    multiple_results=True, guard=_qr_guard,
    doc="QR decomposition a = q @ r (NumPy's Householder signs), reduced or complete (full_matrices)",
)


# ----------------------------------------------------------------------------- pinv


def _pinv_impl(a: np.ndarray, rtol: np.ndarray) -> np.ndarray:
    u, s, vt = np.linalg.svd(a, full_matrices=False)
    cutoff = np.asarray(rtol)[..., None] * s[..., :1]
    kept = s > cutoff
    s_inv = np.where(kept, 1.0 / np.where(kept, s, 1.0), 0.0).astype(a.dtype)
    return np.matmul(np.swapaxes(vt, -1, -2) * s_inv[..., None, :], np.swapaxes(u, -1, -2))


def _pinv_abstract(a: ShapedArray, rtol: ShapedArray) -> ShapedArray:
    m, n = _matrix_abstract("pinv", a)
    if rtol.dtype != a.dtype or rtol.shape not in ((), a.shape[:-2]):
        raise ShapeError(f"pinv: rtol must be a scalar (or one per matrix) of the matrix's dtype, got shape "
                         f"{rtol.shape} and dtype {rtol.dtype}")
    return ShapedArray(a.shape[:-2] + (n, m), a.dtype)


def _pinv_complements(ans: Any, a: Any) -> tuple[Any, Any]:
    """I - A P and I - P A: the projectors onto the complements of A's range and of P's range."""
    m, n = a.shape[-2:]
    return _eye(m, a.dtype) - matmul_p(a, ans), _eye(n, a.dtype) - matmul_p(ans, a)


def _pinv_jvp(t: Any, ans: Any, a: Any, rtol: Any) -> Any:
    # Golub and Pereyra: dP = -P dA P + P P^T dA^T (I - A P) + (I - P A) dA^T P^T P, valid while
    # the rank is locally constant (also at repeated singular values, unlike the route through svd).
    p = ans
    not_a_range, not_p_range = _pinv_complements(p, a)
    t_t = _mT(t)
    return (-matmul_p(matmul_p(p, t), p) + matmul_p(matmul_p(matmul_p(p, _mT(p)), t_t), not_a_range)
            + matmul_p(matmul_p(not_p_range, t_t), matmul_p(_mT(p), p)))


def _pinv_vjp(g: Any, ans: Any, a: Any, rtol: Any) -> Any:
    p = ans
    not_a_range, not_p_range = _pinv_complements(p, a)
    g_t = _mT(g)
    return (-matmul_p(matmul_p(_mT(p), g), _mT(p)) + matmul_p(matmul_p(not_a_range, g_t), matmul_p(p, _mT(p)))
            + matmul_p(matmul_p(matmul_p(_mT(p), p), g_t), not_p_range))


def _batch_pinv(prim: Any, args: list[Any], batched: list[bool], attrs: dict[str, Any], n: int) -> Any:
    """The batch becomes a leading axis of the matrices; rtol, when not a scalar, gets one value per
    matrix of the batched stack."""
    a, rtol = args
    if batched[1]:
        a = with_batch_axis(a, batched[0], n)
        rtol = broadcast_to(reshape(rtol, (n,) + (1,) * (a.ndim - 2 - rtol.ndim) + tuple(rtol.shape[1:])),
                            tuple(a.shape[:-2]))
    elif rtol.ndim:
        rtol = broadcast_to(rtol, tuple(a.shape[:-2]))
    return prim(a, rtol)


pinv_p = declare(
    "pinv", impl=_pinv_impl, abstract=_pinv_abstract, vjp=PerInput(_pinv_vjp, None), jvp=PerInput(_pinv_jvp, None),
    batch=_batch_pinv, plan=_SUPERLINEAR, algebra=Algebra(), arity=2,
    doc="Moore-Penrose pseudo-inverse; singular values at most rtol times the largest count as zero",
)
