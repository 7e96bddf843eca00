"""Faithfulness of a surrogate: R² on held-out masks."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from spex.engine.inputs import check_masks, check_values
from spex.engine.sampling import rng
from spex.engine.spectrum import Spectrum

BOOTSTRAP_RESAMPLES = 2000


def r2(truth: np.ndarray, predicted: np.ndarray) -> float:
    """1 - SS_res / SS_tot; for a constant truth, 1.0 if matched exactly (to 1e-12) else -inf."""
    truth = np.asarray(truth, dtype=np.float64)
    predicted = np.asarray(predicted, dtype=np.float64)
    ss_res = float(np.sum((truth - predicted) ** 2))
    ss_tot = float(np.sum((truth - truth.mean()) ** 2))
    if ss_tot <= 1e-24 * max(1.0, float(np.sum(truth**2))):
        return 1.0 if ss_res <= 1e-24 * max(1.0, float(np.sum(truth**2))) + 1e-24 else float("-inf")
    return 1.0 - ss_res / ss_tot


def faithfulness(value_fn_or_values: Callable[[np.ndarray], np.ndarray] | np.ndarray, spectrum: Spectrum, masks: np.ndarray) -> float:
    """R² of ``spectrum`` against the true values on ``masks``.

    ``value_fn_or_values`` is either the value function (called once, on all masks) or the values
    already measured on ``masks`` (e.g. from the ablation store).
    """
    x = check_masks(masks, spectrum.n)
    if callable(value_fn_or_values):
        from spex.engine.batching import MaskEvaluator

        truth = MaskEvaluator(value_fn_or_values, spectrum.n)(x)
    else:
        truth = check_values(value_fn_or_values, len(x), source="values")
    return r2(truth, spectrum.predict(x))


def r2_interval(truth: np.ndarray, predicted: np.ndarray, *, level: float = 0.95, seed: int = 0,
                resamples: int = BOOTSTRAP_RESAMPLES) -> tuple[float, float]:
    """A ``level`` percentile-bootstrap interval of :func:`r2` over the held-out masks.

    Why a bootstrap: R² is a ratio of two sums over the same masks, so its error is not a plain
    standard error; resampling the masks (all resamples in one array operation) gives the spread a
    different draw of held-out masks would give. Seeded: same masks, same interval."""
    truth = np.asarray(truth, dtype=np.float64)
    predicted = np.asarray(predicted, dtype=np.float64)
    if len(truth) < 2:
        return float("nan"), float("nan")
    picks = rng(seed, "r2-bootstrap").integers(0, len(truth), size=(resamples, len(truth)))
    y, e = truth[picks], (truth - predicted)[picks]
    ss_tot = np.sum((y - y.mean(axis=1, keepdims=True)) ** 2, axis=1)
    ss_res = np.sum(e**2, axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        values = np.where(ss_tot > 0, 1.0 - ss_res / ss_tot, np.where(ss_res > 0, -np.inf, 1.0))
    tail = (1.0 - level) / 2.0
    low, high = np.quantile(values, [tail, 1.0 - tail])
    return float(low), float(high)
