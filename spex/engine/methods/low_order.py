"""ProxySPEX's small-budget challenger: a sparse degree <= 2 Lasso, blended in by cross-validation.

Why: at a few dozen masks ProxySPEX is at its weakest. Its trees see too few rows per feature, and
its support size is chosen on a validation split of 8-60 rows whose R² is too noisy to decide
anything (on the context benchmark: a split R² of -1.85 for a held-out R² of 0.32, founder-university
at 64 masks). A Lasso over every term of degree <= 2, its penalty chosen by K-fold cross-validation
on all the masks, uses every row both to fit and to choose, and is the stronger surrogate there; from
a few hundred masks on the proxy is (``benchmarks/context.py``). Neither wins everywhere, so below
``SMALL_SPLIT_ROWS`` validation rows the fit is chosen by K-fold cross-validation over all masks among
a degree-1 Lasso, a degree-2 Lasso and its blends ``w · proxy + (1 - w) · lasso`` (``w`` in
``WEIGHTS``; 1 is the proxy alone), each a whole pipeline (the proxy's own split repeated inside each
fold), by the one-standard-error rule (:func:`choose`). A blend of two sparse spectra is a sparse spectrum, so
everything downstream — indices, removal, the selection bootstrap — reads it unchanged.

Folds keep a mask and its complement together (ProxySPEX samples antithetic pairs): a pair split
across folds would let each half predict the other. Every choice is seeded.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import numpy as np

from spex.engine import sets
from spex.engine.methods.regression import degree_family
from spex.engine.sampling import rng
from spex.engine.spectrum import Spectrum
from spex.engine.uncertainty import complement_clusters

SMALL_SPLIT_ROWS = 64  # below this many validation rows the single split cannot choose a support well
MAX_DESIGN_CELLS = 1 << 22  # masks x terms of the Lasso's design (32 MiB of float64): degree 2, else 1, else none
FOLDS = 5
WEIGHTS = (0.0, 0.25, 0.5, 0.75, 1.0)  # the proxy's share of the blend
LASSO_ALPHAS = 30

Fit = Callable[[np.ndarray, np.ndarray], Spectrum]


def challenger_order(n: int, rows: int) -> int:
    """The Lasso's degree for ``rows`` masks over ``n`` features: 2 while its design fits in
    ``MAX_DESIGN_CELLS``, else 1, else 0 (no challenger)."""
    for order in (2, 1):
        terms = 1 + n + (n * (n - 1) // 2 if order == 2 else 0)
        if rows * terms <= MAX_DESIGN_CELLS:
            return order
    return 0


def fold_labels(masks: np.ndarray, folds: int, seed: int, stream: str = "cv-folds") -> np.ndarray:
    """A fold per row, 0..folds-1, a mask and its measured complement in the same fold."""
    clusters, n_clusters = complement_clusters(masks)
    of_cluster = rng(seed, stream).permutation(n_clusters) % min(folds, max(n_clusters, 1))
    return of_cluster[clusters]


def _splits(labels: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    return [(np.flatnonzero(labels != f), np.flatnonzero(labels == f)) for f in np.unique(labels)]


def lasso_spectrum(x: np.ndarray, y: np.ndarray, order: int, seed: int) -> Spectrum:
    """A Lasso on every Fourier term of degree <= ``order`` (constant unpenalised), its penalty chosen
    by ``FOLDS``-fold cross-validation on these masks; the spectrum of its non-zero terms."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LassoCV

    n = x.shape[1]
    family = degree_family(n, order)[1:]  # without the constant: LassoCV fits the intercept itself
    design = sets.parity_design(x, family, n)
    labels = fold_labels(x, FOLDS, seed, "lasso-folds")
    constant = np.full((1, family.shape[1]), sets.PAD, dtype=np.int32)
    if len(np.unique(labels)) < 2 or float(np.ptp(y)) == 0.0:
        return Spectrum(n, constant, [float(np.mean(y))])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model = LassoCV(alphas=LASSO_ALPHAS, cv=_splits(labels), fit_intercept=True, max_iter=20000,
                        selection="cyclic").fit(design, y)
    keep = np.flatnonzero(model.coef_ != 0.0)
    return Spectrum(n, np.vstack([constant, family[keep]]), np.concatenate([[model.intercept_], model.coef_[keep]]),
                    merge=False)


def blend(proxy: Spectrum, lasso: Spectrum, weight: float) -> Spectrum:
    """``weight · proxy + (1 - weight) · lasso`` as one spectrum (shared terms summed)."""
    if weight >= 1.0:
        return proxy
    if weight <= 0.0:
        return lasso
    width = max(proxy.members.shape[1], lasso.members.shape[1], 1)
    members = np.vstack([sets.pad_to(proxy.members, width), sets.pad_to(lasso.members, width)])
    return Spectrum(proxy.n, members, np.concatenate([weight * proxy.coefficients, (1 - weight) * lasso.coefficients]))


def candidates(max_order: int) -> list[tuple[int, float]]:
    """The surrogates cross-validation chooses from, simplest first, as (Lasso degree, proxy's share):
    the degree-1 Lasso, the degree-2 Lasso (when affordable), then its blends with the proxy up to the
    proxy alone."""
    top = [(max_order, w) for w in WEIGHTS]
    return ([(1, 0.0)] if max_order > 1 else []) + top


def choose(fit_proxy: Fit, fit_lasso: Callable[[int], Fit], max_order: int, x: np.ndarray, y: np.ndarray,
           seed: int) -> tuple[int, float, dict[str, float]]:
    """The simplest candidate (:func:`candidates`) whose out-of-fold squared error is within one standard
    error of the best one's (Breiman's one-standard-error rule; the error difference's se from the rows,
    paired). At 32-64 masks the folds' scores of neighbouring candidates differ by less than their noise,
    and the best score picked wrong in both directions there (``docs/engine.md``): the rule leans to the
    model with fewer free terms unless the data say otherwise. Returns (degree, proxy's share, pooled
    out-of-fold R² per candidate)."""
    labels = fold_labels(x, FOLDS, seed)
    orders = sorted({d for d, _ in candidates(max_order)})
    from_proxy = np.empty(len(y))
    from_lasso = {d: np.empty(len(y)) for d in orders}
    for train, test in _splits(labels):
        from_proxy[test] = fit_proxy(x[train], y[train]).predict(x[test])
        for d in orders:
            from_lasso[d][test] = fit_lasso(d)(x[train], y[train]).predict(x[test])
    errors = {c: (y - (c[1] * from_proxy + (1 - c[1]) * from_lasso[c[0]])) ** 2 for c in candidates(max_order)}
    best = min(errors, key=lambda c: float(np.mean(errors[c])))
    chosen = best
    for c in candidates(max_order):
        gap = errors[c] - errors[best]
        if float(np.mean(gap)) <= float(np.std(gap, ddof=1)) / np.sqrt(len(y)):
            chosen = c
            break
    total = float(np.sum((y - y.mean()) ** 2))
    scores = {label(c): (1.0 - float(np.sum(e)) / total if total > 0 else 0.0) for c, e in errors.items()}
    return chosen[0], float(chosen[1]), scores


def label(candidate: tuple[int, float]) -> str:
    """A candidate's name in the diagnostics: ``lasso2``, ``lasso2+proxy 0.25``, ``proxy``."""
    order, weight = candidate
    return "proxy" if weight >= 1.0 else f"lasso{order}" + (f"+proxy {weight:g}" if weight > 0 else "")


def validation_split(rows: int, fraction: float, seed: int, stream: str) -> np.ndarray:
    """ProxySPEX's validation rows for ``rows`` masks: ``fraction`` of them, at least 8, seeded."""
    valid = np.zeros(rows, dtype=bool)
    valid[rng(seed, stream).permutation(rows)[: max(8, int(round(rows * fraction)))]] = True
    return valid


def describe(order: int, weight: float, scores: dict[str, float] | None, lasso: Spectrum | None) -> dict[str, Any]:
    """The diagnostics entry of a blended fit (``diagnostics["low_order"]``; ``lasso`` None: the proxy
    alone was chosen and no final Lasso was fit)."""
    return {"order": int(order), "proxy_weight": float(weight), "chosen": label((order, weight)), "cv_r2": scores,
            "lasso_terms": None if lasso is None else int(np.count_nonzero(lasso.orders > 0))}
