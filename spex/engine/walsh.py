"""Fast Walsh–Hadamard transform, in numpy, over the last axis.

Index convention: position j of a length-2^b vector is the subset/mask whose bit i is (j >> i) & 1.
With that convention ``fwht(y)[k] = Σ_j y[j] · (-1)^popcount(j & k)``.
"""

from __future__ import annotations

import numpy as np


def fwht(values: np.ndarray) -> np.ndarray:
    """Unnormalised WHT over the last axis (length must be a power of two). Returns a new array.

    b butterfly stages, each one vectorised over everything else: O(b · 2^b) per row.
    """
    y = np.array(values, dtype=np.float64, copy=True)
    size = y.shape[-1]
    b = size.bit_length() - 1
    if size != 1 << b:
        raise ValueError(f"length {size} is not a power of two")
    lead = y.shape[:-1]
    h = 1
    for _ in range(b):
        y = y.reshape(*lead, size // (2 * h), 2, h)
        top, bottom = y[..., 0, :], y[..., 1, :]
        y = np.stack((top + bottom, top - bottom), axis=-2)
        h *= 2
    return y.reshape(*lead, size)


def superset_transform(values: np.ndarray) -> np.ndarray:
    """out[T] = Σ_{S ⊇ T} values[S] over the last axis (the zeta transform on supersets)."""
    y = np.array(values, dtype=np.float64, copy=True)
    size = y.shape[-1]
    b = size.bit_length() - 1
    lead = y.shape[:-1]
    h = 1
    for _ in range(b):
        y = y.reshape(*lead, size // (2 * h), 2, h)
        y[..., 0, :] += y[..., 1, :]
        h *= 2
    return y.reshape(*lead, size)
