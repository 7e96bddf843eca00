"""Standard errors that see the support move: a cluster bootstrap of the whole fit.

ProxySPEX chooses its support from the same masks it then fits on. The least-squares covariance of
:mod:`spex.engine.uncertainty` holds that support fixed, and on real models it is about half the
seed-to-seed spread of a first-order value: each draw of masks keeps a different set of small pairs,
and a first-order Faith-Banzhaf value sums over them (``benchmarks/intervals.py``). Repeating the
*whole* fit — proxy, support selection, refit — on resampled masks puts that movement into the
replicates, and their spread is the standard error.

How a replicate is drawn (no value call: it reuses the measured masks and values):

* the clusters are a mask and its complement (:func:`spex.engine.uncertainty.complement_clusters`),
  as in the sandwich: their residuals are correlated, so they are resampled together;
* the clusters are first split into a training and a validation part (the method's own validation
  fraction), and each part is resampled with replacement on its own: a duplicated mask never sits on
  both sides of the support selection, which would reward supports that memorise it;
* the method's ``fit_measured`` runs on the replicate with the audit's seed (LightGBM's own
  randomness stays fixed; what varies is the data).

The replicates' coefficients live on the *union* of their supports; the covariance is reported on
that union (:attr:`Uncertainty.members`), so an index's standard error includes the terms some
replicates keep and others drop. Cov = L Lᵀ with L = (C − C̄)ᵀ / √(R − 1) over R replicates, and the
intervals use Student t at R − 1 degrees of freedom (the spread is itself estimated from R draws).

**A floor**: each standard error is at least the fixed-support sandwich's for the same value
(:attr:`Uncertainty.floor`). A term the fit kept and every replicate dropped would otherwise get a spread
of 0 — the replicates agree with each other, not with the estimate (a resample holds ~63 % distinct masks
and tends to keep smaller supports). Centring the spread on the estimate instead was measured: it made the
intervals 1.3–1.7× too wide on every lens (`docs/uncertainty.md`).

Cost: R fits of the method (no model call). ``spex.explain(uncertainty="auto")`` uses it only where
R fits stay cheap (:func:`affordable`) and falls back to the fixed-support sandwich beyond, saying so
in the result's ``estimator``.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np

from spex.engine import sets
from spex.engine.methods.base import Method, StageTimer
from spex.engine.sampling import rng
from spex.engine.spectrum import Spectrum
from spex.engine.uncertainty import Uncertainty, complement_clusters, least_squares_uncertainty

DEFAULT_REPLICATES = 20
# "auto" bootstraps while budget x n stays at or below this many mask cells (n = 128 at 7.8k masks, n = 256
# at 3.9k): R fits grow with it (docs/uncertainty.md). The rule is on sizes, not on measured seconds, so the
# same spec picks the same estimator everywhere.
AUTO_MAX_CELLS = 1_000_000
MIN_SIDE_ROWS = 8  # the fewest rows a replicate's training or validation part may have


def affordable(budget: int, n: int) -> bool:
    """Whether ``uncertainty="auto"`` bootstraps a fit of ``budget`` masks over ``n`` features."""
    return int(budget) * int(n) <= AUTO_MAX_CELLS


def _split_clusters(n_clusters: int, sizes: np.ndarray, fraction: float,
                    generator: np.random.Generator) -> np.ndarray:
    """A bool per cluster: validation or not — about ``fraction`` of the rows, at least MIN_SIDE_ROWS."""
    order = generator.permutation(n_clusters)
    rows = np.cumsum(sizes[order])
    target = max(MIN_SIDE_ROWS, int(round(fraction * rows[-1])))
    count = int(np.searchsorted(rows, target) + 1)
    valid = np.zeros(n_clusters, dtype=bool)
    valid[order[:count]] = True
    return valid


def selection_bootstrap(method: Method, masks: np.ndarray, values: np.ndarray, spectrum: Spectrum, *,
                        seed: int, replicates: int = DEFAULT_REPLICATES,
                        diagnostics: dict[str, Any] | None = None) -> Uncertainty:
    """The covariance of ``spectrum``'s coefficients (and of every term a replicate used) from
    ``replicates`` cluster-bootstrap refits of ``method`` on the measured ``masks`` and ``values``
    (``diagnostics``: the main fit's, which :meth:`Method.for_replicates` may read)."""
    if not method.resamplable:
        raise ValueError(f"method {method.name!r} keeps a fixed support: use the least-squares covariance")
    method = method.for_replicates(diagnostics or {})
    if replicates < 2:
        raise ValueError(f"the bootstrap needs at least 2 replicates; got {replicates}")
    masks = np.asarray(masks, dtype=bool)
    values = np.asarray(values, dtype=np.float64)
    n = masks.shape[1]
    clusters, n_clusters = complement_clusters(masks)
    sizes = np.bincount(clusters, minlength=n_clusters)
    if len(masks) < 4 * MIN_SIDE_ROWS or n_clusters < 4:
        return Uncertainty.unknown(len(spectrum), "bootstrap")
    order = np.argsort(clusters, kind="stable")
    starts = np.concatenate([[0], np.cumsum(sizes)])
    generator = rng(seed, "bootstrap")
    fraction = method.validation_fraction()
    fitted: list[Spectrum] = []
    for _ in range(replicates):
        is_valid = _split_clusters(n_clusters, sizes, fraction, generator)
        drawn = []
        for side in (np.flatnonzero(~is_valid), np.flatnonzero(is_valid)):
            drawn.append(side[generator.integers(0, len(side), size=len(side))])
        picked = np.concatenate(drawn)
        rows = np.concatenate([order[starts[c]:starts[c + 1]] for c in picked])
        valid = is_valid[clusters[rows]]
        replicate, _, _ = method.fit_measured(masks[rows], values[rows], valid, seed, StageTimer())
        fitted.append(replicate)
    sigma = float(np.sqrt(np.mean((values - spectrum.predict(masks)) ** 2)))
    floor = least_squares_uncertainty(masks, values, spectrum.members, spectrum.coefficients, n)
    return replace(_union_covariance(spectrum, fitted, sigma), floor=floor)


def _union_covariance(spectrum: Spectrum, fitted: list[Spectrum], sigma: float) -> Uncertainty:
    """Cov over the union of ``spectrum``'s and the replicates' members from the replicates' spread."""
    n = spectrum.n
    width = max([spectrum.members.shape[1]] + [f.members.shape[1] for f in fitted])
    families = [sets.pad_to(spectrum.members, width)] + [sets.pad_to(f.members, width) for f in fitted]
    stacked = np.vstack(families)
    keys = sets.keys(stacked, n)
    union_keys, first, inverse = np.unique(keys, return_index=True, return_inverse=True)
    inverse = inverse.reshape(-1)
    coefficients = np.zeros((len(fitted), len(union_keys)))
    offset = len(spectrum.members)
    for r, f in enumerate(fitted):
        coefficients[r, inverse[offset:offset + len(f.members)]] = f.coefficients
        offset += len(f.members)
    factor = (coefficients - coefficients.mean(axis=0)).T / np.sqrt(len(fitted) - 1)
    return Uncertainty(factor, dof=len(fitted) - 1, estimator="bootstrap", sigma=sigma,
                       members=sets.trim(stacked[first]))
