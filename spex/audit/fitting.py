"""Stage 3: fit the method on the measured values (ProxySPEX: the LightGBM proxy, its exact spectrum,
the sparse refit; SPEX: the coded transform) — no model call.

The method is run exactly as ``spex.explain`` runs it, on a *replay* value function that answers from
the values the ablation stage measured; asking for a mask that was not measured is an error (it would
mean the design changed between stages).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from spex.audit.plan import SubjectPlan
from spex.audit.test_hooks import kill_here_for_tests
from spex.content import to_jsonable
from spex.engine.maskbits import mask_keys
from spex.engine.spectrum import Spectrum
from spex.engine.uncertainty import Uncertainty


class ReplayValueFunction:
    """``f(masks) -> values`` from a measured table (masks, values); raises on an unmeasured mask."""

    def __init__(self, masks: np.ndarray, values: np.ndarray) -> None:
        keys = mask_keys(np.asarray(masks, dtype=bool))
        order = np.argsort(keys, kind="stable")
        self._keys = keys[order]
        self._values = np.asarray(values, dtype=np.float64)[order]
        self.n_features = int(np.asarray(masks).shape[1])

    def __call__(self, masks: np.ndarray) -> np.ndarray:
        keys = mask_keys(np.asarray(masks, dtype=bool))
        pos = np.searchsorted(self._keys, keys)
        pos = np.minimum(pos, len(self._keys) - 1)
        hit = self._keys[pos] == keys
        if not hit.all():
            raise RuntimeError(f"the method asked for {int((~hit).sum())} masks the ablation stage did not measure; "
                               "the design changed between stages (rerun with a fresh cache)")
        return self._values[pos]


@dataclass(frozen=True)
class Fit:
    """A fitted subject: the recovered ``spectrum``, the method's JSON-ready ``diagnostics``, the proxy
    ``booster`` (LightGBM model text) when the method has one, seconds per method stage, the value
    function calls the method made, the method with its effective options, and the covariance of the
    coefficients (``uncertainty``: every recorded interaction's standard error comes from it)."""

    spectrum: Spectrum
    diagnostics: dict[str, Any]
    booster: str | None
    seconds: dict[str, float]
    n_calls: int
    method: str
    options: dict[str, Any]
    uncertainty: Uncertainty | None = None

    @property
    def coefficients(self) -> int:
        return len(self.spectrum)


def fit_method(method: str, options: dict[str, Any], n: int, budget: int, seed: int, masks: np.ndarray,
               values: np.ndarray, *, threads: int | None = 1) -> Fit:
    """Run ``method`` on the measured (masks, values) through ``spex.explain``: same seed, same masks,
    no model call; it also applies the one-thread BLAS/OpenMP limit and the exact-enumeration path."""
    from spex.engine import explain

    ex = explain(ReplayValueFunction(masks, values), n, budget=budget, method=method, seed=seed, threads=threads,
                 **options)
    return Fit(spectrum=ex.spectrum, diagnostics=to_jsonable(ex.diagnostics),
               booster=ex.proxy.model_to_string() if ex.proxy is not None else None, seconds=dict(ex.seconds),
               n_calls=int(ex.n_calls), method=ex.method, options=to_jsonable(dict(ex.options)),
               uncertainty=ex.uncertainty)


def fit_subject(plan: SubjectPlan, method: str, options: dict[str, Any], seed: int, masks: np.ndarray,
                values: np.ndarray) -> Fit:
    """The fit stage: the method on the subject's measured design (``masks``, ``values``) at its n and budget."""
    kill_here_for_tests("fit")
    return fit_method(method, options, plan.n, plan.budget, seed, masks, values)
