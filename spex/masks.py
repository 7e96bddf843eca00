"""Seeded mask sampling and mask de-duplication.

Every random choice in spex draws from ``rng(seed, stream)``: one independent stream per purpose
(training masks, held-out masks, SPEX design, LightGBM), so the same spec always gives the same
masks, and adding one purpose never shifts another's draws.
"""

from __future__ import annotations

import hashlib

import numpy as np

STREAMS = ("train", "holdout", "spex-design", "proxy", "split")


def rng(seed: int, stream: str) -> np.random.Generator:
    """An independent generator for (seed, purpose)."""
    tag = int.from_bytes(hashlib.blake2b(stream.encode(), digest_size=8).digest(), "little")
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


def unique_rows(masks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(unique masks in first-seen order, inverse index) so values can be scattered back."""
    packed = np.packbits(masks, axis=1)
    view = np.ascontiguousarray(packed).view(np.dtype((np.void, packed.shape[1]))).reshape(-1)
    _, first, inverse = np.unique(view, return_index=True, return_inverse=True)
    inverse = inverse.reshape(-1)
    order = np.argsort(first, kind="stable")  # keep first-seen order: deterministic batches
    rank = np.empty_like(order)
    rank[order] = np.arange(len(order))
    return masks[first[order]], rank[inverse]


def digest(masks: np.ndarray) -> str:
    """A content hash of a mask matrix (for caches and provenance)."""
    m = np.ascontiguousarray(np.asarray(masks, dtype=bool))
    h = hashlib.blake2b(digest_size=16)
    h.update(np.asarray(m.shape, dtype=np.int64).tobytes())
    h.update(np.packbits(m, axis=1).tobytes())
    return h.hexdigest()
