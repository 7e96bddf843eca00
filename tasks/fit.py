"""Stage 3: fit the method on the measured values (ProxySPEX: the LightGBM proxy, its exact spectrum,
the sparse refit; SPEX: the coded transform) — no model call.

The method is run exactly as ``spex.explain`` runs it, on a *replay* value function that answers from
the values the ablation stage measured; asking for a mask that was not measured is an error (it would
mean the design changed between stages). The method class is called directly rather than through
``spex.explain`` only to keep the fitted LightGBM booster, which tracking logs as the proxy model.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from prefect import task

from tasks import runtime
from tasks.caching import RETRIES, key_on


class ReplayValueFunction:
    """``f(masks) -> values`` from a measured table (masks, values); raises on an unmeasured mask."""

    def __init__(self, masks: np.ndarray, values: np.ndarray) -> None:
        from spex.ablation import mask_keys

        keys = mask_keys(np.asarray(masks, dtype=bool))
        order = np.argsort(keys, kind="stable")
        self._keys = keys[order]
        self._values = np.asarray(values, dtype=np.float64)[order]
        self.n_features = int(np.asarray(masks).shape[1])

    def __call__(self, masks: np.ndarray) -> np.ndarray:
        from spex.ablation import mask_keys

        keys = mask_keys(np.asarray(masks, dtype=bool))
        pos = np.searchsorted(self._keys, keys)
        pos = np.minimum(pos, len(self._keys) - 1)
        hit = self._keys[pos] == keys
        if not hit.all():
            raise RuntimeError(f"the method asked for {int((~hit).sum())} masks the ablation stage did not measure; "
                               "the design changed between stages (rerun with a fresh cache)")
        return self._values[pos]


def jsonable(obj: Any) -> Any:
    """Diagnostics as plain JSON values (numpy scalars and arrays, tuples, NaN -> None)."""
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return jsonable(obj.tolist())
    if isinstance(obj, np.generic):
        return jsonable(obj.item())
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def fit_method(method: str, options: dict[str, Any], n: int, budget: int, seed: int, masks: np.ndarray,
               values: np.ndarray, *, threads: int | None = 1) -> dict[str, Any]:
    """Run ``method`` on the measured (masks, values); returns the spectrum (JSON), diagnostics, the
    proxy booster (LightGBM model text) when there is one, seconds per stage and the masks used."""
    import spex

    # spex.explain replays the stored values: same seed, same masks, no model call; it also applies
    # the one-thread BLAS/OpenMP limit and the exact-enumeration path.
    ex = spex.explain(ReplayValueFunction(masks, values), n, budget=budget, method=method, seed=seed,
                      threads=threads, **options)
    spectrum, diagnostics, booster, seconds = ex.spectrum, ex.diagnostics, ex.proxy, ex.seconds
    return {
        "spectrum": spectrum.to_json(),
        "diagnostics": jsonable(diagnostics),
        "booster": booster.model_to_string() if booster is not None else None,
        "seconds": seconds,
        "n_calls": int(ex.n_calls),
        "method": ex.method,
        "options": jsonable(dict(ex.options)),
        "coefficients": len(spectrum),
    }


@task(name="fit", cache_key_fn=key_on("fingerprint", "method", "options", "n", "budget", "seed", "masks"),
      persist_result=True, **RETRIES)
def fit(fingerprint: str, method: str, options: dict[str, Any], n: int, budget: int, seed: int,
        masks: np.ndarray, values: np.ndarray, subject: str = "") -> dict[str, Any]:
    """Fit the method on the subject's measured design (cached on the fingerprint and the design)."""
    runtime.emit("stage", subject=subject, stage="fit")
    runtime.fault_point("fit")  # reliability tests only (inert unless SPEX_FAULT_KILL_AT is set)
    result = fit_method(method, options, n, budget, seed, masks, values)
    runtime.emit("stage_done", subject=subject, stage="fit", seconds=result["seconds"]["total"])
    return result
