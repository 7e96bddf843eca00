"""Calling a value function the way spex promises: large batches, each mask at most once.

Models dominate the cost of an explanation, so every method hands *all* its masks to one
``MaskEvaluator`` call: duplicates are removed before the value function sees them, the unique masks
go out in large batches, the outputs are validated, and values are scattered back in mask order.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np

from spex.engine.inputs import check_masks, check_values
from spex.engine.maskbits import unique_rows

ValueFn = Callable[[np.ndarray], np.ndarray]
Progress = Callable[[int, int], None]


class MaskEvaluator:
    """Wraps ``value_fn`` with de-duplication, batching, validation and accounting.

    Attributes:
        n_calls: masks sent to ``value_fn`` so far (unique masks).
        seconds: wall time spent inside ``value_fn``.

    It keeps what it measured (:meth:`measured`): the uncertainty of the fit is computed from the
    same masks and values the method saw.
    """

    def __init__(self, value_fn: ValueFn, n: int, *, batch_size: int | None = None, progress: Progress | None = None):
        if not callable(value_fn):
            raise TypeError(f"value_fn must be callable; got {type(value_fn).__name__}")
        self.value_fn = value_fn
        self.n = n
        self.batch_size = batch_size
        self.progress = progress
        self.n_calls = 0
        self.seconds = 0.0
        self._measured: list[tuple[np.ndarray, np.ndarray]] = []

    def __call__(self, masks: np.ndarray) -> np.ndarray:
        masks = check_masks(masks, self.n)
        if len(masks) == 0:
            return np.zeros(0)
        unique, inverse = unique_rows(masks)
        step = self.batch_size or len(unique)
        out = np.empty(len(unique))
        for start in range(0, len(unique), step):
            chunk = unique[start : start + step]
            t0 = time.perf_counter()
            values = self.value_fn(chunk)
            self.seconds += time.perf_counter() - t0
            out[start : start + len(chunk)] = check_values(values, len(chunk))
            self.n_calls += len(chunk)
            if self.progress is not None:
                self.progress(start + len(chunk), len(unique))
        self._measured.append((unique, out))
        return out[inverse]

    def measured(self) -> tuple[np.ndarray, np.ndarray]:
        """Every distinct mask evaluated so far and its value: (masks (M, n), values (M,))."""
        if not self._measured:
            return np.zeros((0, self.n), dtype=bool), np.zeros(0)
        masks = np.concatenate([m for m, _ in self._measured])
        values = np.concatenate([v for _, v in self._measured])
        if len(self._measured) == 1:
            return masks, values
        unique, inverse = unique_rows(masks)
        first = np.zeros(len(unique), dtype=np.int64)
        first[inverse[::-1]] = np.arange(len(inverse))[::-1]
        return unique, values[first]
