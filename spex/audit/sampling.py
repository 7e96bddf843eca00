"""Stage 1: the masks a subject needs — the method's design and the held-out set.

The design is whatever the method will ask for: every spex method draws all its masks first and hands
them to ONE evaluator call (the method contract, :mod:`spex.engine.methods.base`). So the design is
taken from the method itself — it is run with a value function that stops at that first call — instead
of re-implementing each method's sampling here, which could silently drift from the method. Seeded, so
the same spec gives the same masks on every run and every machine.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Samples:
    """A subject's masks: ``train`` (the method's design, in the order it evaluates them) and
    ``holdout`` (i.i.d. uniform masks on their own seed stream, for the faithfulness check)."""

    train: np.ndarray
    holdout: np.ndarray

    def role(self, name: str) -> np.ndarray:
        return {"train": self.train, "holdout": self.holdout}[name]

    @property
    def count(self) -> int:
        return len(self.train) + len(self.holdout)


class _Design(Exception):
    """Raised by the capturing value function with the masks the method asked for."""

    def __init__(self, masks: np.ndarray) -> None:
        super().__init__("design captured")
        self.masks = masks


def design_masks(method: str, options: dict[str, Any], n: int, budget: int, seed: int) -> np.ndarray:
    """The unique masks ``spex.explain(vf, n, budget=budget, method=method, seed=seed, **options)``
    evaluates, in the order it evaluates them."""
    from spex.engine.batching import MaskEvaluator
    from spex.engine.exact import EXACT_MAX_N, all_masks
    from spex.engine.explainer import get_method
    from spex.engine.inputs import check_budget
    from spex.engine.methods.base import StageTimer

    algorithm = get_method(method, **options)
    check_budget(budget, algorithm.minimum_budget(n), method=algorithm.name, n=n)
    if n <= EXACT_MAX_N and (1 << n) <= budget:
        return all_masks(n)

    def capture(masks: np.ndarray) -> np.ndarray:
        raise _Design(np.array(masks, dtype=bool, copy=True))

    try:
        algorithm.fit(MaskEvaluator(capture, n), n, budget, seed, StageTimer())
    except _Design as design:
        return design.masks
    raise RuntimeError(f"method {method!r} finished without evaluating any mask")


def sample_masks(method: str, options: dict[str, Any], n: int, budget: int, seed: int, holdout: int) -> Samples:
    """The method's design and ``holdout`` uniform held-out masks (see :class:`Samples`)."""
    from spex.engine.sampling import holdout as holdout_masks

    return Samples(design_masks(method, options, n, budget, seed), holdout_masks(n, holdout, seed))
