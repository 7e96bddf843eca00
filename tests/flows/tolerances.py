"""Tolerances for comparing a float32 model's outputs computed twice (another batch, another process).

Why not a fixed ``atol``: a float32 forward rounds at every layer, and the last bits of an output move
with the batch it ran in (padding length, kernel blocking). Its error scales with the magnitudes
inside the computation, which the largest output of the set stands for — so the tolerance is a number
of float32 ulps of that magnitude (at least of 1: logits near 0 come from activations of order 1).
A fixed ``atol=1e-6`` is ~8 ulps at 1: it flaked on a 2.2e-6 difference.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

FLOAT32_EPS = float(np.finfo(np.float32).eps)
ULPS = 64
"""Float32 ulps two runs of the tiny models may differ by: the difference seen between batches of 4
and 8 rows was 2.2e-6, ~18 ulps at magnitude 1 (rounding in each of a few reductions per layer, two
layers); 64 leaves a margin of 3.5."""


def float32_tolerances(values: Sequence[float] | np.ndarray, ulps: int = ULPS) -> tuple[float, float]:
    """(rtol, atol) for float32 outputs like ``values``: ``ulps`` ulps, relative and of the largest magnitude."""
    rtol = ulps * FLOAT32_EPS
    magnitude = float(np.max(np.abs(values))) if np.size(values) else 1.0
    return rtol, rtol * max(1.0, magnitude)


def assert_close_float32(actual: Sequence[float] | np.ndarray, desired: Sequence[float] | np.ndarray, *,
                         ulps: int = ULPS) -> None:
    """``actual`` equals ``desired`` to float32 rounding (see the module docstring)."""
    rtol, atol = float32_tolerances(desired, ulps)
    np.testing.assert_allclose(actual, desired, rtol=rtol, atol=atol)
