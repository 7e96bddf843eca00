"""Real value functions for the ablation tests (numpy, deterministic, exact in float64).

Values are integer-weighted sums and products of mask bits, so every batch size and every process
gives bit-identical values: any disagreement the store sees is a real bug, never rounding.
"""

from __future__ import annotations

import time

import numpy as np

from spex.lenses.base import ValueFunction, fingerprint_of


def reference(masks: np.ndarray) -> np.ndarray:
    """The function every test value function computes (a few planted interactions)."""
    x = np.asarray(masks, dtype=bool)
    n = x.shape[1]
    w = np.random.default_rng(n).integers(-8, 9, size=n)
    xi = x.astype(np.int64)
    out = xi @ w + 3 * xi[:, 0] * xi[:, 1] - 5 * xi[:, 2] * xi[:, 3] * xi[:, 4 % n]
    # one extra bit per mask position so distinct masks rarely share a value
    out = out * 1024 + (np.packbits(x[:, :10], axis=1, bitorder="little").view(np.uint8)[:, 0] if n >= 8 else 0)
    return out.astype(np.float64)


class CountingVF(ValueFunction):
    """A deterministic value function that records every batch it is asked to compute.

    ``oom_above``: raise an out-of-memory error (``oom`` = "memory", "torch" or "runtime") for batches
    larger than this, as a GPU would; ``fail_on_call``: raise ValueError on that call number;
    ``delay``: seconds to sleep per batch (a slow model, for the kill test).
    """

    def __init__(self, n: int, *, tag: str = "test", delay: float = 0.0, oom_above: int | None = None,
                 oom: str = "memory", fail_on_call: int | None = None, nan_on_call: int | None = None,
                 uniform_cost: bool = False) -> None:
        self.n_features = n
        self.feature_labels = [f"f{i}" for i in range(n)]
        self.fingerprint = fingerprint_of(kind="CountingVF", n=n, tag=tag)
        self.delay = delay
        self.oom_above = oom_above
        self.oom = oom
        self.fail_on_call = fail_on_call
        self.nan_on_call = nan_on_call
        self.uniform_cost = uniform_cost
        self.calls = 0
        self.masks_computed = 0
        self.attempts: list[tuple[int, bool]] = []  # (batch size, ran out of memory)
        self.batches: list[np.ndarray] = []

    def compute(self, masks: np.ndarray) -> np.ndarray:
        out_of_memory = self.oom_above is not None and len(masks) > self.oom_above
        self.attempts.append((len(masks), out_of_memory))
        if out_of_memory:
            if self.oom == "torch":
                import torch

                raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
            if self.oom == "runtime":
                raise RuntimeError("CUDA error: out of memory")
            raise MemoryError("simulated allocation failure")
        self.calls += 1
        if self.fail_on_call is not None and self.calls == self.fail_on_call:
            raise ValueError("simulated model failure")
        self.masks_computed += len(masks)
        self.batches.append(np.array(masks))
        if self.delay:
            time.sleep(self.delay)
        out = reference(masks)
        if self.nan_on_call is not None and self.calls == self.nan_on_call:
            out[0] = np.nan
        return out

    def cost(self, masks: np.ndarray) -> np.ndarray:
        """Tokens of the masked input: one per kept feature plus a 2-token template (or all equal)."""
        return np.full(len(masks), 7.0) if self.uniform_cost else 2.0 + masks.sum(axis=1)


def unique_masks(n: int, count: int, seed: int) -> np.ndarray:
    """``count`` distinct masks: the low bits spell the row index, the rest are random."""
    rng = np.random.default_rng(seed)
    x = rng.random((count, n)) < 0.5
    bits = int(np.ceil(np.log2(max(count, 2))))
    assert bits <= n
    idx = np.arange(count)
    x[:, n - bits:] = ((idx[:, None] >> np.arange(bits)[::-1]) & 1).astype(bool)
    return x
