"""Low-order regression baselines: ``linear`` (order 1) and ``faith_banzhaf`` (order 2).

On uniform masks, least squares on the Fourier design of degree <= ℓ estimates the Faith-Banzhaf
interaction index of order ℓ (the projection of f onto degree <= ℓ). ``linear`` is the LIME-like
floor every interaction method must beat; ``faith_banzhaf`` adds all pairs (for small n), solved by
least squares when there are enough masks and by cross-validated Lasso when there are not.
"""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np

from spex.engine import sampling as mask_sampling
from spex.engine import sets
from spex.engine.batching import MaskEvaluator
from spex.engine.linalg import least_squares
from spex.engine.methods.base import Method, StageTimer
from spex.engine.spectrum import Spectrum
from spex.errors import SpexInputError


def degree_family(n: int, order: int) -> np.ndarray:
    """All subsets of size <= order (the constant first), as a canonical family."""
    rows = [np.full((1, order), sets.PAD, dtype=np.int32)]
    for d in range(1, order + 1):
        combos = np.array(list(itertools.combinations(range(n), d)), dtype=np.int32).reshape(-1, d)
        rows.append(sets.pad_to(combos, order))
    return np.concatenate(rows)


class _LowOrder(Method):
    order: int = 1
    max_n: int | None = None

    def minimum_budget(self, n: int) -> int:
        return n + 2

    def fit(
        self, evaluate: MaskEvaluator, n: int, budget: int, seed: int, timer: StageTimer
    ) -> tuple[Spectrum, dict[str, Any]]:
        if self.max_n is not None and n > self.max_n:
            raise SpexInputError(
                f"method {self.name!r} fits all pairs and is limited to n <= {self.max_n}; got n={n}: use 'proxyspex'"
            )
        with timer.stage("sampling"):
            x = mask_sampling.uniform(n, budget, mask_sampling.rng(seed, "train"), pair_complements=False)
        y = evaluate(x)
        with timer.stage("fit"):
            family = degree_family(n, self.order)
            design = sets.parity_design(x, family, n)
            if len(x) >= 2 * design.shape[1]:
                coef = least_squares(design, y)
                solver = "least-squares"
            else:
                coef = self._lasso(design, y, seed)
                solver = "lasso-cv"
        return Spectrum(n, family, coef, merge=False), {"solver": solver, "columns": int(design.shape[1])}

    @staticmethod
    def _lasso(design: np.ndarray, y: np.ndarray, seed: int) -> np.ndarray:
        from sklearn.linear_model import LassoCV

        # a short path and a loose tolerance: this is the floor baseline, not the product
        model = LassoCV(cv=3, alphas=10, random_state=seed, fit_intercept=False, max_iter=2000, tol=1e-3, precompute=True)
        model.fit(design, y)
        return model.coef_

    def from_exact(self, spectrum: Spectrum) -> Spectrum:
        return spectrum.truncate(self.order)


class Linear(_LowOrder):
    """First-order surrogate (LIME-like; Faith-Banzhaf of order 1)."""

    name = "linear"
    order = 1


class FaithBanzhaf(_LowOrder):
    """Second-order Faith-Banzhaf by (sparse) regression on all pairs; small n only."""

    name = "faith_banzhaf"
    order = 2
    max_n = 128
