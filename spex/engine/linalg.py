"""Least squares on parity designs that may be rank deficient.

Why this exists: at small budgets two parity columns (or a combination of them) can coincide on every
sampled mask. LAPACK's default rank cutoff (machine epsilon) then keeps a singular value of ~1e-15 and
returns coefficients of ~1e13 that cancel on the sample and explode everywhere else (seen: held-out R²
of -3e28 for ProxySPEX at 38 masks over 11 words). A relative cutoff far above rounding noise and far
below any real signal treats such directions as what they are, absent.
"""

from __future__ import annotations

import numpy as np
from scipy.linalg import lstsq

RCOND = 1e-10  # relative to the largest singular value / the column norm


def least_squares(design: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Minimum-norm-within-rank least squares: directions the sample cannot see get no weight."""
    return lstsq(design, y, cond=RCOND, lapack_driver="gelsy", check_finite=False)[0]


def independent_columns(design: np.ndarray, r: np.ndarray | None = None) -> np.ndarray:
    """Bool mask of the columns that are not linear combinations of the columns before them.

    One unpivoted QR: column j depends on columns < j exactly when R[j, j] vanishes, and a dependent
    column leaves the diagonal of the later ones unchanged, so one pass finds them all. Pass ``r``
    when the caller already has the R factor of ``design``."""
    if design.shape[1] == 0:
        return np.zeros(0, dtype=bool)
    if r is None:
        r = np.linalg.qr(design, mode="r")
    diag = np.zeros(design.shape[1])
    m = min(r.shape)
    diag[:m] = np.abs(np.diagonal(r)[:m])
    return diag > RCOND * np.maximum(np.linalg.norm(design, axis=0), 1.0)


# -- the fast path for tall, well-conditioned designs (ProxySPEX's refit at 30,000+ masks) ---------
# OpenBLAS's Householder QR runs far below its matrix-product speed: on 30,000 x 513 parity columns
# gelsy took 4.6 s and geqrf 2.3 s where the Gram matrix took 0.4 s (docs/engine.md, ProxySPEX at
# scale). A parity design is close to orthogonal (random ±1 columns), so the Cholesky factor of its
# Gram matrix is its QR's R to rounding. We take that path only when every pivot is far from
# vanishing, and fall back to the QR path otherwise, so near-dependent columns are judged exactly as
# before.
CHOLESKY_MIN_PIVOT = 1e-3  # relative |R[j, j]| / ||column j|| below which the QR path decides


def _cholesky_factor(gram: np.ndarray) -> np.ndarray | None:
    """Upper Cholesky factor of ``gram`` when all its relative pivots exceed CHOLESKY_MIN_PIVOT."""
    from scipy.linalg import LinAlgError, cholesky

    try:
        r = cholesky(gram, lower=False, check_finite=False)
    except LinAlgError:
        return None
    scale = np.maximum(np.sqrt(np.maximum(np.diagonal(gram), 0.0)), 1.0)
    if not np.all(np.abs(np.diagonal(r)) > CHOLESKY_MIN_PIVOT * scale):
        return None
    return r


def prefix_factor(design: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(R, Qᵀy, kept): a triangular factor of ``design[:, kept]`` for least squares on every prefix
    of its columns at once (the fit on the first j columns solves R[:j, :j] β = (Qᵀy)[:j]).

    ``kept`` drops the columns that are linear combinations of the columns before them
    (:func:`independent_columns`). Cholesky of the Gram matrix when it is well conditioned (then
    nothing is dropped), one or two Householder QRs otherwise."""
    from scipy.linalg import solve_triangular

    if design.shape[1] == 0:
        return np.zeros((0, 0)), np.zeros(0), np.zeros(0, dtype=bool)
    r = _cholesky_factor(design.T @ design)
    if r is not None:
        qty = solve_triangular(r, design.T @ y, trans="T", check_finite=False)
        return r, qty, np.ones(design.shape[1], dtype=bool)
    q, r = np.linalg.qr(design)
    kept = independent_columns(design, r)
    if not kept.all():
        q, r = np.linalg.qr(design[:, kept])
    return r, q.T @ y, kept


def least_squares_tall(design: np.ndarray, y: np.ndarray) -> np.ndarray:
    """:func:`least_squares` for tall designs: corrected semi-normal equations (Cholesky of the Gram
    matrix, then one refinement step on the residual, which restores the accuracy the squared
    condition number cost) when the design is well conditioned; :func:`least_squares` otherwise."""
    from scipy.linalg import cho_solve

    if design.shape[1] == 0 or design.shape[0] < design.shape[1]:
        return least_squares(design, y)
    r = _cholesky_factor(design.T @ design)
    if r is None:
        return least_squares(design, y)
    coef = cho_solve((r, False), design.T @ y, check_finite=False)
    return coef + cho_solve((r, False), design.T @ (y - design @ coef), check_finite=False)
