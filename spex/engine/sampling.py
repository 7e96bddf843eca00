"""Seeded mask sampling.

Every random choice in spex draws from ``rng(seed, stream)``: one independent stream per purpose
(training masks, held-out masks, SPEX design, LightGBM), so the same spec always gives the same
masks, and adding one purpose never shifts another's draws. De-duplicating masks is
:func:`spex.engine.maskbits.unique_rows`.
"""

from __future__ import annotations

import numpy as np

from spex.content import array_digest, bytes_digest

STREAMS = ("train", "holdout", "spex-design", "proxy", "split", "bootstrap")


def rng(seed: int, stream: str) -> np.random.Generator:
    """An independent generator for (seed, purpose)."""
    tag = int.from_bytes(bytes.fromhex(bytes_digest(stream, size=8)), "little")
    return np.random.default_rng(np.random.SeedSequence([int(seed) & 0xFFFFFFFFFFFFFFFF, tag]))


def uniform(n: int, count: int, generator: np.random.Generator, *, pair_complements: bool = False) -> np.ndarray:
    """``count`` i.i.d. uniform masks (B, n); with ``pair_complements`` every second mask is the
    complement of the one before it (antithetic pairs, as the reference ProxySPEX samples)."""
    if not pair_complements:
        return generator.random((count, n)) < 0.5
    half = generator.random(((count + 1) // 2, n)) < 0.5
    return np.stack((half, ~half), axis=1).reshape(-1, n)[:count]


def holdout(n: int, count: int, seed: int) -> np.ndarray:
    """The held-out uniform masks used to measure faithfulness (independent of training masks)."""
    return uniform(n, count, rng(seed, "holdout"))


def digest(masks: np.ndarray) -> str:
    """A content hash of a mask matrix (for caches and provenance)."""
    return array_digest(np.asarray(masks, dtype=bool))
