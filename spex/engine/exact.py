"""The exact spectrum by enumeration: all 2^n masks and one fast Walsh–Hadamard transform."""

from __future__ import annotations

import numpy as np

from spex.engine import sets
from spex.engine.batching import MaskEvaluator, ValueFn
from spex.engine.inputs import EXACT_MAX_N, check_n
from spex.engine.spectrum import Spectrum
from spex.engine.walsh import fwht
from spex.errors import SpexInputError


def all_masks(n: int) -> np.ndarray:
    """Every mask of width n, row j being the mask with bit i = (j >> i) & 1."""
    return sets.ints_to_masks(np.arange(1 << n, dtype=np.int64), n)


def spectrum_from_table(table: np.ndarray) -> Spectrum:
    """F(k) = 2^-n Σ_x f(x) (-1)^<x,k> from the 2^n values indexed by mask bits."""
    table = np.asarray(table, dtype=np.float64)
    return Spectrum.from_dense(fwht(table) / table.size)


def exact_spectrum(value_fn: ValueFn, n: int, *, batch_size: int | None = None) -> Spectrum:
    """The full Fourier spectrum of ``value_fn`` (n <= 20: 2^n value calls)."""
    n = check_n(n)
    if n > EXACT_MAX_N:
        raise SpexInputError(f"exact_spectrum enumerates 2^n masks and needs n <= {EXACT_MAX_N}; got n={n}")
    return spectrum_from_table(MaskEvaluator(value_fn, n, batch_size=batch_size)(all_masks(n)))
