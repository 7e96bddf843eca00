"""Stage 5: validate the surrogate against the REAL model, never against itself.

* faithfulness: R² of the surrogate's predictions against the model's values on the held-out uniform
  masks (measured by the ablation stage, independent of the training design);
* removal test: the r features whose removal the surrogate says moves the output most (down, and up),
  removed in the real model: predicted vs actual change.

:func:`removal_plan` picks the masks (no model call); the ablation stage measures them; :func:`score`
compares.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from spex.engine.spectrum import Spectrum


@dataclass(frozen=True)
class RemovalPlan:
    """The removal test to run: ``r`` features per direction, the surrogate's ``choices`` (direction,
    features, labels, predicted change, how they were chosen) and the ``masks`` to measure (row 0 keeps
    everything, then one per choice)."""

    r: int
    choices: list[dict[str, Any]]
    masks: np.ndarray


@dataclass(frozen=True)
class Validation:
    """Held-out faithfulness (R², None when undefined, with its bootstrap interval over the held-out
    masks; RMSE; the values' spread) and the removal test's predicted vs actual changes (``removal``:
    r, full_value, choices with ``actual_change`` / ``agrees``)."""

    heldout_r2: float | None
    n_heldout: int
    heldout_rmse: float
    heldout_value_std: float
    removal: dict[str, Any]
    heldout_r2_low: float | None = None
    heldout_r2_high: float | None = None


def removal_plan(spectrum: Spectrum, r: int, labels: list[str]) -> RemovalPlan:
    """The removal choices and the masks to measure (see :class:`RemovalPlan`)."""
    from spex.engine import removal

    n = spectrum.n
    r = int(min(r, max(n - 1, 0)))
    masks = [np.ones(n, dtype=bool)]
    choices = []
    if r > 0:
        for direction in ("down", "up"):
            result = removal(spectrum, r, direction)
            masks.append(result.mask(n))
            choices.append({
                "direction": direction,
                "features": [int(f) for f in result.features],
                "labels": [labels[f] for f in result.features],
                "predicted_change": float(result.predicted_change),
                "method": result.method,
                "optimal": bool(result.optimal),
            })
    return RemovalPlan(r=r, choices=choices, masks=np.stack(masks))


def score(spectrum: Spectrum, holdout_masks: np.ndarray, holdout_values: np.ndarray, plan: RemovalPlan,
          removal_values: np.ndarray, *, level: float = 0.95, seed: int = 0) -> Validation:
    """Held-out R² of the surrogate (with its ``level`` interval) and the removal test's actual changes,
    from the model's values."""
    from spex.engine import faithfulness
    from spex.engine.heldout import r2_interval

    r2 = float(faithfulness(np.asarray(holdout_values), spectrum, holdout_masks))
    full = float(removal_values[0])
    removal: dict[str, Any] = {"r": plan.r, "full_value": full, "choices": []}
    for choice, value in zip(plan.choices, removal_values[1:]):
        actual = float(value) - full
        predicted = choice["predicted_change"]
        removal["choices"].append({**choice, "actual_change": actual,
                                   "agrees": bool(np.sign(actual) == np.sign(predicted) or abs(actual) < 1e-12)})
    prediction = spectrum.predict(holdout_masks)
    low, high = r2_interval(np.asarray(holdout_values), prediction, level=level, seed=seed)
    return Validation(heldout_r2=r2 if math.isfinite(r2) else None, n_heldout=int(len(holdout_masks)),
                      heldout_rmse=float(np.sqrt(np.mean((prediction - holdout_values) ** 2))),
                      heldout_value_std=float(np.std(holdout_values)), removal=removal,
                      heldout_r2_low=low if math.isfinite(low) else None,
                      heldout_r2_high=high if math.isfinite(high) else None)
