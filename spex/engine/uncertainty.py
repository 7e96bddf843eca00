"""How sure a recovered spectrum is: the covariance of its coefficients, and of every index read from it.

Every method ends in a least-squares fit of the coefficients on its support over all the masks it
measured (ProxySPEX's refit, SPEX's refit, the regression baselines). For a fixed support the
estimate is F̂ = (XᵀX)⁻¹Xᵀy with X the parity design, so its covariance is a sandwich
(XᵀX)⁻¹ · Meat · (XᵀX)⁻¹. Two meats are offered:

* ``"ols"``: σ²·XᵀX with σ² = RSS / (B − K) — homoscedastic, independent rows;
* ``"cluster"`` (default): Σ_c (X_cᵀ e_c)(X_cᵀ e_c)ᵀ over clusters c of rows whose residuals may be
  correlated, scaled by the CR1 small-sample factor. A mask and its complement form one cluster: the
  antithetic pairs ProxySPEX samples give χ_k(~x) = ±χ_k(x), so their residuals are *not* independent
  (the omitted even-order terms repeat, the odd ones flip) and the "ols" meat undercounts the noise
  of even-order coefficients. Residuals also differ in size across masks (the omitted terms are not
  homoscedastic), which the sandwich absorbs.

Which one spex trusts is decided by measured coverage (``benchmarks/intervals.py``,
``docs/uncertainty.md``), not by taste.

The covariance is kept as a *factor* L with Cov(F̂) = L Lᵀ (K × m), so it passes through any linear
map without forming K × K products twice: every interaction index is A·F̂ for a sparse A
(:func:`spex.engine.indices.index_map`), and se(A·F̂) = the row norms of A·L. For very large supports
the factor is diagonal (``diagonal`` set), the near-orthogonal design approximation Cov ≈ diag.

What it does not capture: the support itself is chosen from the same data; a coefficient that one
draw selects and another drops is outside this model (its estimate is 0 with no variance). The
coverage benchmark measures how much that matters.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
from scipy.linalg import qr, solve_triangular
from scipy.stats import norm, t

from spex.engine import sets
from spex.engine.linalg import RCOND
from spex.engine.maskbits import mask_keys

# "auto": the selection bootstrap (spex.engine.bootstrap) for a method that chooses its support from the
# masks while it is affordable, the cluster sandwich otherwise; "bootstrap" insists on it.
ESTIMATORS = ("auto", "bootstrap", "cluster", "ols")
LEAST_SQUARES_ESTIMATORS = ("cluster", "ols")
DEFAULT_ESTIMATOR = "auto"
DEFAULT_LEAST_SQUARES = "cluster"
DEFAULT_LEVEL = 0.95
DENSE_MAX_K = 2000  # a K x K factor above this (32 MB at 2000) switches to the diagonal approximation


@dataclass(frozen=True)
class Uncertainty:
    """The covariance of a spectrum's coefficients (rows in the spectrum's member order).

    Attributes:
        factor: (K, m) with Cov = factor @ factor.T; or, when ``diagonal``, (K,) variances. A NaN row
            marks a coefficient the masks cannot identify (its standard error is unknown).
        dof: degrees of freedom of the residual scale (the t quantile of the intervals uses it).
        estimator: ``cluster``, ``ols`` or ``exact`` (all 2^n masks measured: no sampling error).
        sigma: the residual standard deviation (RMS of the refit's residuals).
        diagonal: whether ``factor`` holds variances only.
        members: the coefficients the rows of ``factor`` refer to, when they are not the spectrum's own:
            the bootstrap (:mod:`spex.engine.bootstrap`) reports the union of its replicates' supports,
            a superset of the spectrum's members (a term the fit dropped has estimate 0, yet a variance).
        floor: a covariance on the spectrum's own members whose standard error each reported one is at least
            (the bootstrap's: the fixed-support sandwich; see :mod:`spex.engine.bootstrap`).
    """

    factor: np.ndarray
    dof: int
    estimator: str
    sigma: float
    diagonal: bool = False
    members: np.ndarray | None = None
    floor: Uncertainty | None = None

    @classmethod
    def exact(cls, k: int) -> Uncertainty:
        """No sampling error: every mask was measured."""
        return cls(np.zeros((k, 0)), dof=0, estimator="exact", sigma=0.0)

    @classmethod
    def unknown(cls, k: int, estimator: str = "ols") -> Uncertainty:
        """Too few masks for any residual degree of freedom: every standard error is unknown."""
        return cls(np.full((k, 1), np.nan), dof=0, estimator=estimator, sigma=float("nan"))

    @property
    def informative(self) -> bool:
        """Whether some standard error is neither 0 (exact) nor unknown: worth propagating."""
        if self.diagonal:
            return True
        return self.factor.shape[1] > 0 and bool(np.isfinite(self.factor).any())

    def quantile(self, level: float = DEFAULT_LEVEL) -> float:
        """The two-sided critical value of a ``level`` interval (Student t at ``dof``, normal past 1,000)."""
        if not 0.0 < level < 1.0:
            raise ValueError(f"level must be in (0, 1); got {level!r}")
        tail = 0.5 + level / 2.0
        return float(norm.ppf(tail) if self.dof <= 0 or self.dof > 1000 else t.ppf(tail, self.dof))

    def standard_errors(self, linear_map: sp.spmatrix | np.ndarray | None = None) -> np.ndarray:
        """se of each coefficient, or of each row of ``linear_map`` @ coefficients (exact propagation)."""
        if linear_map is None:
            if self.diagonal:
                return np.sqrt(self.factor)
            return np.sqrt(np.einsum("km,km->k", self.factor, self.factor))
        a = sp.csr_matrix(linear_map)
        if self.diagonal:
            return np.sqrt(np.asarray(a.multiply(a) @ self.factor).reshape(-1))
        if self.factor.shape[1] == 0:
            return np.zeros(a.shape[0])
        projected = np.asarray(a @ self.factor)
        return np.sqrt(np.einsum("tm,tm->t", projected, projected))


def coefficient_standard_errors(uncertainty: Uncertainty, members: np.ndarray, n: int) -> np.ndarray:
    """se of each coefficient of a spectrum with ``members``, whether the covariance's rows are those
    members or (the bootstrap) a superset of them; a member the covariance does not describe gets NaN."""
    if uncertainty.members is None:
        return uncertainty.standard_errors()
    rows = sets.locate(uncertainty.members, members, n)
    out = np.full(len(rows), np.nan)
    out[rows >= 0] = uncertainty.standard_errors()[rows[rows >= 0]]
    if uncertainty.floor is not None:
        out = np.fmax(out, uncertainty.floor.standard_errors())
    return out


def complement_clusters(masks: np.ndarray) -> tuple[np.ndarray, int]:
    """(cluster id per row, number of clusters): a mask and its complement, when both were
    measured, share one cluster."""
    b = len(masks)
    _, inverse = np.unique(np.concatenate([mask_keys(masks), mask_keys(~masks)]), return_inverse=True)
    inverse = inverse.reshape(-1)
    _, ids = np.unique(np.minimum(inverse[:b], inverse[b:]), return_inverse=True)
    ids = ids.reshape(-1)
    return ids, int(ids.max()) + 1 if b else 0


def _cluster_sums(clusters: np.ndarray, n_clusters: int, rows: np.ndarray) -> np.ndarray:
    """Σ of ``rows`` within each cluster, (n_clusters, m), by one sparse product."""
    members = sp.csr_matrix((np.ones(len(clusters)), (clusters, np.arange(len(clusters)))),
                            shape=(n_clusters, len(clusters)))
    return np.asarray(members @ rows)


def least_squares_uncertainty(masks: np.ndarray, values: np.ndarray, members: np.ndarray, coefficients: np.ndarray,
                              n: int, *, estimator: str = DEFAULT_LEAST_SQUARES) -> Uncertainty:
    """The covariance of least-squares coefficients on the support ``members`` over (``masks``, ``values``).

    ``masks`` are the unique masks measured (a repeated row would count its residual twice).
    Coefficients whose design columns are linear combinations of earlier ones (tiny budgets) get NaN.
    """
    if estimator not in LEAST_SQUARES_ESTIMATORS:
        raise ValueError(f"estimator must be one of {', '.join(LEAST_SQUARES_ESTIMATORS)}; got {estimator!r}")
    masks = np.asarray(masks, dtype=bool)
    values = np.asarray(values, dtype=np.float64)
    k = len(members)
    b = len(masks)
    if b <= k:
        return Uncertainty.unknown(k, estimator)
    if k > DENSE_MAX_K:
        return _diagonal(masks, values, members, coefficients, n, estimator)
    design = sets.parity_design(masks, members, n)
    residuals = values - design @ coefficients
    sigma = float(np.sqrt(np.mean(residuals**2)))
    q, r = qr(design, mode="economic", check_finite=False)
    diag = np.abs(np.diagonal(r))
    identified = diag > RCOND * np.maximum(np.linalg.norm(design, axis=0), 1.0)
    ids = np.flatnonzero(identified)
    if len(ids) < k:  # re-factor on the identified columns: their covariance is still well defined
        q, r = qr(design[:, ids], mode="economic", check_finite=False)
    r_inv = solve_triangular(r, np.eye(len(ids)), check_finite=False)
    dof_resid = b - len(ids)
    if estimator == "ols":
        inner = np.sqrt(np.sum(residuals**2) / dof_resid) * r_inv
        dof = dof_resid
    else:
        clusters, n_clusters = complement_clusters(masks)
        if n_clusters <= 1:
            return Uncertainty.unknown(k, estimator)
        scores = _cluster_sums(clusters, n_clusters, q * residuals[:, None])  # Σ_{i in c} q_i e_i
        meat_root = qr(scores, mode="r", check_finite=False)[0][: len(ids)]  # Rᵤᵀ Rᵤ = scoresᵀ scores
        cr1 = np.sqrt(n_clusters / (n_clusters - 1) * (b - 1) / dof_resid)
        inner = cr1 * r_inv @ meat_root.T
        dof = n_clusters - 1
    factor = np.zeros((k, inner.shape[1]))
    factor[ids] = inner
    factor[~identified] = np.nan
    return Uncertainty(factor, dof=int(dof), estimator=estimator, sigma=sigma)


def _diagonal(masks: np.ndarray, values: np.ndarray, members: np.ndarray, coefficients: np.ndarray, n: int,
              estimator: str, chunk: int = 4096) -> Uncertainty:
    """Variances under the near-orthogonal design approximation XᵀX ≈ B·I (large supports only):
    Var(F̂_k) ≈ Σ_c (Σ_{i∈c} x_ik e_i)² / B² (cluster) or σ²/B (ols). Built in row chunks."""
    b, k = len(masks), len(members)
    residuals = np.empty(b)
    for start in range(0, b, chunk):
        part = sets.parity_design(masks[start:start + chunk], members, n)
        residuals[start:start + chunk] = values[start:start + chunk] - part @ coefficients
    sigma = float(np.sqrt(np.mean(residuals**2)))
    if estimator == "ols":
        variances = np.full(k, np.sum(residuals**2) / (b - k) / b)
        return Uncertainty(variances, dof=b - k, estimator=estimator, sigma=sigma, diagonal=True)
    clusters, n_clusters = complement_clusters(masks)
    order = np.argsort(clusters, kind="stable")  # rows of one cluster are adjacent: chunks never split one
    sorted_ids = clusters[order]
    squares = np.zeros(k)
    start = 0
    while start < b:
        stop = min(start + chunk, b)
        while stop < b and sorted_ids[stop] == sorted_ids[stop - 1]:
            stop += 1
        rows = order[start:stop]
        part = sets.parity_design(masks[rows], members, n) * residuals[rows, None]
        local, local_ids = np.unique(sorted_ids[start:stop], return_inverse=True)
        squares += np.sum(_cluster_sums(local_ids.reshape(-1), len(local), part) ** 2, axis=0)
        start = stop
    cr1 = n_clusters / max(n_clusters - 1, 1) * (b - 1) / max(b - k, 1)
    variances = cr1 * squares / b**2
    return Uncertainty(variances, dof=n_clusters - 1, estimator=estimator, sigma=sigma, diagonal=True)
