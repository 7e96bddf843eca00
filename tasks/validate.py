"""Stage 5: validate the surrogate against the REAL model, never against itself.

* faithfulness: R² of the surrogate's predictions against the model's values on the held-out uniform
  masks (measured by the ablation stage, independent of the training design);
* removal test: the r features whose removal the surrogate says moves the output most (down, and up),
  removed in the real model: predicted vs actual change.

``plan_removal`` picks the masks (no model call); the ablation stage measures them; ``validate`` scores.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from prefect import task

from tasks import runtime


def removal_plan(spectrum_json: str, r: int, labels: list[str]) -> dict[str, Any]:
    """The removal choices and the masks to measure: row 0 keeps everything, then one per direction."""
    import spex
    from spex.engine.spectrum import Spectrum

    spectrum = Spectrum.from_json(spectrum_json)
    n = spectrum.n
    r = int(min(r, max(n - 1, 0)))
    masks = [np.ones(n, dtype=bool)]
    choices = []
    if r > 0:
        for direction in ("down", "up"):
            result = spex.removal(spectrum, r, direction)
            masks.append(result.mask(n))
            choices.append({
                "direction": direction,
                "features": [int(f) for f in result.features],
                "labels": [labels[f] for f in result.features],
                "predicted_change": float(result.predicted_change),
                "method": result.method,
                "optimal": bool(result.optimal),
            })
    return {"r": r, "choices": choices, "masks": np.stack(masks)}


@task(name="plan-removal")
def plan_removal(spectrum_json: str, r: int, labels: list[str], subject: str = "") -> dict[str, Any]:
    """Which r features to remove, per direction (see :func:`removal_plan`)."""
    return removal_plan(spectrum_json, r, labels)


def score(spectrum_json: str, holdout_masks: np.ndarray, holdout_values: np.ndarray, plan: dict[str, Any],
          removal_values: np.ndarray) -> dict[str, Any]:
    import spex
    from spex.engine.spectrum import Spectrum

    spectrum = Spectrum.from_json(spectrum_json)
    r2 = float(spex.faithfulness(np.asarray(holdout_values), spectrum, holdout_masks))
    full = float(removal_values[0])
    removal = {"r": plan["r"], "full_value": full, "choices": []}
    for choice, value in zip(plan["choices"], removal_values[1:]):
        actual = float(value) - full
        predicted = choice["predicted_change"]
        removal["choices"].append({**choice, "actual_change": actual,
                                   "agrees": bool(np.sign(actual) == np.sign(predicted) or abs(actual) < 1e-12)})
    prediction = spectrum.predict(holdout_masks)
    rmse = float(np.sqrt(np.mean((prediction - holdout_values) ** 2)))
    return {
        "heldout_r2": r2 if math.isfinite(r2) else None,
        "n_heldout": int(len(holdout_masks)),
        "heldout_rmse": rmse,
        "heldout_value_std": float(np.std(holdout_values)),
        "removal": removal,
    }


@task(name="validate")
def validate(spectrum_json: str, holdout_masks: np.ndarray, holdout_values: np.ndarray, plan: dict[str, Any],
             removal_values: np.ndarray, subject: str = "") -> dict[str, Any]:
    """Held-out R² and the removal test's predicted vs actual changes (model values measured upstream)."""
    result = score(spectrum_json, holdout_masks, holdout_values, plan, removal_values)
    runtime.emit("stage_done", subject=subject, stage="validate", heldout_r2=result["heldout_r2"])
    return result
