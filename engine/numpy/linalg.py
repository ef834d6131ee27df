"""engine.numpy.linalg: solve, inv, det, slogdet, cholesky, norm; svd, eigh, eigvalsh, eig, qr, pinv, lstsq,
matrix_power (the factorisations are primitives of engine.primitives_linalg; the rest compose them)."""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from engine import primitives as P
from engine import primitives_linalg as PL
from engine.errors import InvalidArgumentError, ShapeError
from engine.numpy import elementwise as E
from engine.numpy import reductions as R
from engine.numpy._base import ArrayLike, asarray, promote_float
from engine.numpy.shapes import expand_dims, moveaxis, squeeze


def _float_matrix(a: ArrayLike) -> Any:
    (x,) = promote_float(a)
    return x


def solve(a: ArrayLike, b: ArrayLike) -> Any:
    """Solve a @ x = b for x; b may be a vector or a (batch of) matrix."""
    x, y = promote_float(a, b)
    if y.ndim == x.ndim - 1:  # a vector right-hand side (per batch)
        return squeeze(P.solve_p(x, expand_dims(y, -1)), -1)
    return P.solve_p(x, y)


def inv(a: ArrayLike) -> Any:
    return P.inv_p(_float_matrix(a))


def det(a: ArrayLike) -> Any:
    return P.det_p(_float_matrix(a))


class SlogdetResult(NamedTuple):
    sign: Any
    logabsdet: Any


def slogdet(a: ArrayLike) -> SlogdetResult:
    x = _float_matrix(a)
    return SlogdetResult(P.detsign_p(x), P.logabsdet_p(x))


def cholesky(a: ArrayLike) -> Any:
    return P.cholesky_p(_float_matrix(a))


def norm(x: ArrayLike, ord: Any = None, axis: Any = None, keepdims: bool = False) -> Any:  # noqa: A002
    """Vector norms (ord None/2, 1, inf, -inf, 0, p) and matrix norms ('fro', 'nuc', 1, -1, 2, -2, inf, -inf)."""
    v = _float_matrix(x)
    if axis is None:
        if ord is None or (ord in ("fro", "f") and v.ndim == 2):
            return E.sqrt(R.sum(v * v, keepdims=keepdims))
        if v.ndim == 1:
            axis = 0
        elif v.ndim == 2:
            axis = (0, 1)
        else:
            raise ValueError("norm with an ord needs a 1-D or 2-D array, or an explicit axis")
    axes = axis if isinstance(axis, tuple) else (axis,)
    if len(axes) == 1:
        if ord is None or ord == 2:
            return E.sqrt(R.sum(v * v, axis=axes, keepdims=keepdims))
        if ord == np.inf:
            return R.max(E.abs(v), axis=axes, keepdims=keepdims)
        if ord == -np.inf:
            return R.min(E.abs(v), axis=axes, keepdims=keepdims)
        if ord == 1:
            return R.sum(E.abs(v), axis=axes, keepdims=keepdims)
        if ord == 0:
            return R.sum((v != 0).astype(v.dtype), axis=axes, keepdims=keepdims)
        return E.power(R.sum(E.power(E.abs(v), ord), axis=axes, keepdims=keepdims), 1.0 / ord)
    if len(axes) == 2:
        r, c = axes
        if ord is None or ord in ("fro", "f"):
            return E.sqrt(R.sum(v * v, axis=axes, keepdims=keepdims))
        if ord in ("nuc", 2, -2):
            return _singular_value_norm(v, ord, axes, keepdims)
        if ord in (-1, -np.inf):  # the smallest column (row) sum
            r, c = (r, c) if ord == -1 else (c, r)
            sums = R.sum(E.abs(v), axis=r, keepdims=True)
            out = R.min(sums, axis=c, keepdims=True)
        elif ord == 1:
            col = R.sum(E.abs(v), axis=r, keepdims=True)
            out = R.max(col, axis=c, keepdims=True)
        elif ord == np.inf:
            row = R.sum(E.abs(v), axis=c, keepdims=True)
            out = R.max(row, axis=r, keepdims=True)
        else:
            raise NotImplementedError(f"matrix norm of order {ord!r} is not supported")
        if keepdims:
            return out
        return squeeze(out, axis=axes)
    raise ValueError(f"norm over {len(axes)} axes is undefined")


def _singular_value_norm(v: Any, ord: Any, axes: tuple[int, ...], keepdims: bool) -> Any:  # noqa: A002
    """The nuclear norm (sum of singular values), the 2-norm (largest) or the -2 "norm" (smallest)."""
    r, c = (a % v.ndim for a in axes)
    s = svd(moveaxis(v, (r, c), (-2, -1)), compute_uv=False)
    reduce = {"nuc": R.sum, 2: R.max, -2: R.min}[ord]
    out = reduce(s, axis=-1)
    if keepdims:
        for ax in sorted((r, c)):
            out = expand_dims(out, ax)
    return out


# ----------------------------------------------------------------------------- factorisations


class SVDResult(NamedTuple):
    U: Any
    S: Any
    Vh: Any


class EighResult(NamedTuple):
    eigenvalues: Any
    eigenvectors: Any


class EigResult(NamedTuple):
    eigenvalues: Any
    eigenvectors: Any


class QRResult(NamedTuple):
    Q: Any
    R: Any


def svd(a: ArrayLike, full_matrices: bool = True, compute_uv: bool = True, hermitian: bool = False) -> Any:
    """a = U @ diag(S) @ Vh with S descending; NumPy's (LAPACK's) signs of U and Vh.

    Differentiable for distinct nonzero singular values (JAX's rule); S alone (compute_uv=False)
    everywhere, as U diag(dS) Vh. full_matrices=True of a non-square matrix has no derivative.
    `hermitian` is accepted and ignored: the general factorisation is valid for such matrices too.
    """
    del hermitian
    x = _float_matrix(a)
    if x.ndim < 2:
        raise ShapeError(f"svd needs a matrix (or a batch of them), got shape {tuple(x.shape)}")
    square = x.shape[-1] == x.shape[-2]
    u, s, vt = PL.svd_p(x, full_matrices=bool(full_matrices) and compute_uv and not square)
    if not compute_uv:
        return s
    return SVDResult(u, s, vt)


def _triangle_mask(n: int, dtype: Any, k: int) -> Any:
    return P.constant(np.tril(np.ones((n, n)), k).astype(dtype))


def eigh(a: ArrayLike, UPLO: str | None = None, symmetrize_input: bool = True) -> EighResult:  # noqa: N803
    """Eigenvalues (ascending) and orthonormal eigenvectors (columns, NumPy's signs) of a symmetric matrix.

    As in JAX, the input is symmetrised first, (a + a.T) / 2, so its derivative is symmetric. With
    symmetrize_input=False the matrix is the one the UPLO triangle ('L', the default, or 'U') defines.
    """
    x = _float_matrix(a)
    if x.ndim < 2 or x.shape[-1] != x.shape[-2]:
        raise ShapeError(f"eigh needs square matrices in the last two dimensions, got shape {tuple(x.shape)}")
    if UPLO not in (None, "L", "U"):
        raise InvalidArgumentError(f"eigh: UPLO must be 'L' or 'U', got {UPLO!r}")
    if symmetrize_input:
        x = (x + P.swap_last_two(x)) * 0.5
    else:
        n = x.shape[-1]
        if UPLO == "U":
            x = P.swap_last_two(x)
        x = x * _triangle_mask(n, x.dtype, 0) + P.swap_last_two(x * _triangle_mask(n, x.dtype, -1))
    w, v = PL.eigh_p(x)
    return EighResult(w, v)


def eigvalsh(a: ArrayLike, UPLO: str | None = None, symmetrize_input: bool = True) -> Any:  # noqa: N803
    return eigh(a, UPLO, symmetrize_input).eigenvalues


def eig(a: ArrayLike) -> EigResult:
    """Eigenvalues and unit eigenvectors (columns) of a real square matrix whose eigenvalues are all
    real; one with complex eigenvalues is refused (InvalidArgumentError). Values and signs as NumPy's;
    derivatives (JAX's rule) for distinct eigenvalues, keeping the eigenvectors' unit length."""
    x = _float_matrix(a)
    w, v = PL.eig_p(x)
    return EigResult(w, v)


def eigvals(a: ArrayLike) -> Any:
    return eig(a).eigenvalues


def qr(a: ArrayLike, mode: str = "reduced") -> Any:
    """a = Q @ R with NumPy's signs. mode 'reduced' (k = min(m, n) columns of Q), 'complete' (all m)
    or 'r' (R alone, reduced). Differentiable (JAX's rule) for square and tall matrices in the
    reduced mode, and for square ones in the complete mode."""
    if mode not in ("reduced", "complete", "r"):
        raise InvalidArgumentError(f"qr: mode must be 'reduced', 'complete' or 'r', got {mode!r}")
    x = _float_matrix(a)
    if x.ndim < 2:
        raise ShapeError(f"qr needs a matrix (or a batch of them), got shape {tuple(x.shape)}")
    full = mode == "complete" and x.shape[-2] > x.shape[-1]
    q, r = PL.qr_p(x, full_matrices=full)
    if mode == "r":
        return r
    return QRResult(q, r)


def _default_rtol(x: Any) -> float:
    # JAX's default: singular values below 10 * max(m, n) * eps times the largest count as zero.
    return 10.0 * max(x.shape[-2:]) * float(np.finfo(x.dtype).eps)


def pinv(a: ArrayLike, rtol: Any = None, hermitian: bool = False, *, rcond: Any = None) -> Any:
    """The Moore-Penrose pseudo-inverse. Singular values at most rtol (or NumPy's name, rcond) times
    the largest count as zero; the default is JAX's, 10 * max(m, n) * eps. Its derivative is Golub
    and Pereyra's (as JAX's), valid wherever the rank does not change, repeated singular values included."""
    del hermitian
    x = _float_matrix(a)
    if x.ndim < 2:
        raise ShapeError(f"pinv needs a matrix (or a batch of them), got shape {tuple(x.shape)}")
    if rtol is not None and rcond is not None:
        raise InvalidArgumentError("pinv: pass rtol or rcond, not both")
    tol = rtol if rtol is not None else rcond if rcond is not None else _default_rtol(x)
    return PL.pinv_p(x, asarray(tol, x.dtype))


def lstsq(a: ArrayLike, b: ArrayLike, rcond: Any = None, *, numpy_resid: bool = False) -> tuple[Any, Any, Any, Any]:
    """The least-squares solution of a @ x = b: (x, residuals, rank, singular values), as JAX's.

    x = pinv(a, rcond) @ b (the minimum-norm solution). Singular values at most rcond times the
    largest count as zero (default max(m, n) * eps, as NumPy and JAX). The residuals are the squared
    norms of the columns of b - a @ x; with numpy_resid=True they are empty, as NumPy's, when the
    rank is below n or m <= n (which needs concrete values).
    """
    x_a, x_b = promote_float(a, b)
    if x_a.ndim != 2 or x_b.ndim not in (1, 2) or x_b.shape[0] != x_a.shape[0]:
        raise ShapeError(f"lstsq needs a matrix a of shape (m, n) and b of shape (m,) or (m, k), got "
                         f"{tuple(x_a.shape)} and {tuple(x_b.shape)}")
    m, n = x_a.shape
    eps = float(np.finfo(x_a.dtype).eps)
    tol = eps * max(m, n) if rcond is None else (eps if rcond < 0 else rcond)
    vector = x_b.ndim == 1
    rhs = expand_dims(x_b, -1) if vector else x_b
    s = svd(x_a, compute_uv=False)
    rank = R.sum(s > s[0] * tol)
    solution = P.matmul_p(pinv(x_a, rtol=tol), rhs)
    if numpy_resid and (int(rank) < n or m <= n):
        residuals = P.zeros((0,), x_a.dtype)
    else:
        difference = rhs - P.matmul_p(x_a, solution)
        residuals = R.sum(difference * difference, axis=0)
    if vector:
        solution = squeeze(solution, -1)
    return solution, residuals, rank, s


def matrix_power(a: ArrayLike, n: int) -> Any:
    """a multiplied by itself n times (by repeated squaring); a negative n powers inv(a); n = 0 gives
    identity matrices."""
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)):
        raise InvalidArgumentError(f"matrix_power: the exponent must be an integer, got {n!r}")
    x = asarray(a)
    if x.ndim < 2 or x.shape[-1] != x.shape[-2]:
        raise ShapeError(f"matrix_power needs square matrices in the last two dimensions, got shape "
                         f"{tuple(x.shape)}")
    n = int(n)
    if n == 0:
        eye = P.constant(np.eye(x.shape[-1], dtype=x.dtype))
        return P.broadcast_to(eye, tuple(x.shape))
    if n < 0:
        x, n = inv(x), -n
    result = None
    power = x
    while True:
        if n & 1:
            result = power if result is None else P.matmul_p(result, power)
        n >>= 1
        if not n:
            return result
        power = P.matmul_p(power, power)
