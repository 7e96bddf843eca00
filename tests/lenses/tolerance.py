"""Tolerances for values computed by two routes that round differently: one batch vs one mask at a
time, a cached prefix vs the plain forward, hooks vs edited weights, spex vs an independent forward.

Such routes agree to the precision of the dtype they compute in, relative to the values' magnitude —
not to a fixed absolute number: a summed log-prob of -40 carries 40 times the rounding of a logit of 1,
and a fixed ``atol=1e-6`` flakes as soon as a value grows (issue 11). ``ulps`` counts the epsilons
allowed per unit of magnitude: measured on the tiny test models, batched, cached and hooked routes
differ by at most 1.5 float32 epsilons of the largest value (the data lens' float64 trainer: 0.8 float64
epsilons), so the default of 8 leaves a wide margin while still catching a real difference.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

ULPS = 8


def tolerance(expected: Any, dtype: type = np.float32, ulps: float = ULPS) -> tuple[float, float]:
    """(rtol, atol) for values computed in ``dtype``: ``rtol = ulps * eps(dtype)``,
    ``atol = rtol * max(1, |expected|.max())``."""
    rtol = ulps * float(np.finfo(dtype).eps)
    return rtol, rtol * max(1.0, float(np.max(np.abs(np.asarray(expected, dtype=np.float64)))))


def assert_close(actual: Any, expected: Any, dtype: type = np.float32, ulps: float = ULPS) -> None:
    """``np.testing.assert_allclose`` with :func:`tolerance`."""
    rtol, atol = tolerance(expected, dtype, ulps)
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=atol)


def approx(expected: Any, dtype: type = np.float32, ulps: float = ULPS) -> Any:
    """``pytest.approx`` with :func:`tolerance`."""
    rtol, atol = tolerance(expected, dtype, ulps)
    return pytest.approx(expected, rel=rtol, abs=atol)
