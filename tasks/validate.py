"""Stage 5 as tasks: pick the removal test's masks, then score the surrogate against the real model's
values (:mod:`spex.audit.validation`; the ablation stage measures in between). Not cached: cheap."""

from __future__ import annotations

import numpy as np
from prefect import task

from spex.audit import validation
from spex.engine.spectrum import Spectrum


@task(name="plan-removal")
def plan_removal(spectrum: Spectrum, r: int, labels: list[str]) -> validation.RemovalPlan:
    """:func:`spex.audit.validation.removal_plan`."""
    return validation.removal_plan(spectrum, r, labels)


@task(name="validate")
def validate(spectrum: Spectrum, holdout_masks: np.ndarray, holdout_values: np.ndarray,
             plan: validation.RemovalPlan, removal_values: np.ndarray, level: float = 0.95,
             seed: int = 0) -> validation.Validation:
    """:func:`spex.audit.validation.score`."""
    return validation.score(spectrum, holdout_masks, holdout_values, plan, removal_values, level=level, seed=seed)
