"""Stage 3 as a task: the method fitted on the measured design, no model call (:mod:`spex.audit.fitting`)."""

from __future__ import annotations

from typing import Any

import numpy as np
from prefect import task

from spex.audit import fitting
from spex.audit.plan import SubjectPlan
from tasks.caching import RETRIES, key_on


@task(name="fit", cache_key_fn=key_on("plan.fingerprint", "method", "options", "plan.n", "plan.budget", "seed",
                                      "masks"), persist_result=True, **RETRIES)
def fit(plan: SubjectPlan, method: str, options: dict[str, Any], seed: int, masks: np.ndarray,
        values: np.ndarray) -> fitting.Fit:
    """:func:`spex.audit.fitting.fit_subject`, cached on the subject's fingerprint and design (the
    fingerprint and the masks determine the values)."""
    return fitting.fit_subject(plan, method, options, seed, masks, values)
