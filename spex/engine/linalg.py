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
