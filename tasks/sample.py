"""Stage 1 as a task: the method's design and the held-out masks (:mod:`spex.audit.sampling`)."""

from __future__ import annotations

from typing import Any

from prefect import task

from spex.audit import sampling
from tasks.caching import RETRIES, key_on


@task(name="sample-masks", cache_key_fn=key_on("method", "options", "n", "budget", "seed", "holdout"),
      persist_result=True, **RETRIES)
def sample_masks(method: str, options: dict[str, Any], n: int, budget: int, seed: int,
                 holdout: int) -> sampling.Samples:
    """:func:`spex.audit.sampling.sample_masks`, cached on all its inputs (seeded: same masks everywhere)."""
    return sampling.sample_masks(method, options, n, budget, seed, holdout)
