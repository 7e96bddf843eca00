"""Tolerances for values computed twice by routes that round differently: another batch (padding,
kernel blocking), another process, one mask at a time vs a batch, a cached prefix vs the plain forward,
hooks vs edited weights, spex vs an independent forward.

Why not a fixed ``atol``: a forward rounds at every layer, and its error scales with the magnitudes
inside the computation, which the largest value of the set stands for — a summed log-prob of -40 carries
40 times the rounding of a logit of 1. So the tolerance is a number of the dtype's epsilons (``ulps``) of
that magnitude, at least of 1 (values near 0 come from activations of order 1). A fixed ``atol=1e-6``
(~8 float32 ulps at 1) flaked on a 2.2e-6 difference between batches of 4 and 8 rows (issue 11).

Measured on the tiny test models: batches of 4 vs 8 differ by ~18 float32 ulps of the largest value;
batched, cached and hooked routes by at most 1.5; the data lens' float64 trainer by 0.8 float64 ulps.
The default of 64 leaves a margin of 3.5 over the largest while still catching any real difference
(a wrong mask or a wrong model moves values by orders of magnitude more).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

ULPS = 64


def tolerance(expected: Any, dtype: type = np.float32, ulps: float = ULPS) -> tuple[float, float]:
    """(rtol, atol) for values computed in ``dtype``: ``rtol = ulps * eps(dtype)``,
    ``atol = rtol * max(1, |expected|.max())``."""
    rtol = ulps * float(np.finfo(dtype).eps)
    values = np.abs(np.asarray(expected, dtype=np.float64))
    return rtol, rtol * max(1.0, float(values.max()) if values.size else 1.0)


def assert_close(actual: Any, expected: Any, dtype: type = np.float32, ulps: float = ULPS) -> None:
    """``np.testing.assert_allclose`` with :func:`tolerance`."""
    rtol, atol = tolerance(expected, dtype, ulps)
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=atol)


def approx(expected: Any, dtype: type = np.float32, ulps: float = ULPS) -> Any:
    """``pytest.approx`` with :func:`tolerance`."""
    rtol, atol = tolerance(expected, dtype, ulps)
    return pytest.approx(expected, rel=rtol, abs=atol)
