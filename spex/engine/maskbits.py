"""Masks as packed bits: the one encoding of a bool mask matrix that spex stores, compares and hashes.

``np.packbits(masks, axis=1)``: feature 0 is the most significant bit of byte 0 (numpy's big bit
order). A row's packed bytes, viewed as one fixed-width ``np.void`` scalar, is its **mask key**: keys
compare and sort as raw bytes, so numpy de-duplicates and searches millions of masks without a Python
loop and without hash collisions. The ablation store, the MLflow ablation sets, the replayed fits and
the lenses' memo tables all use these functions, so a mask has one key everywhere.
"""

from __future__ import annotations

import numpy as np

BIT_ORDER = "numpy packbits, big bit order: feature 0 is the most significant bit of byte 0"


def pack(masks: np.ndarray) -> np.ndarray:
    """(B, n) bool -> (B, ceil(n/8)) uint8, C-contiguous."""
    return np.ascontiguousarray(np.packbits(np.asarray(masks, dtype=bool), axis=1))


def unpack(packed: np.ndarray, n: int) -> np.ndarray:
    """Inverse of :func:`pack`: (B, ceil(n/8)) uint8 -> (B, n) bool."""
    return np.unpackbits(np.asarray(packed, dtype=np.uint8), axis=1, count=n).view(bool)


def mask_keys(masks: np.ndarray) -> np.ndarray:
    """One fixed-width ``np.void`` key per row (its packed bits); see the module docstring."""
    packed = pack(masks)
    return packed.view(np.dtype((np.void, packed.shape[1]))).reshape(-1)


def keys_to_masks(keys: np.ndarray, n: int) -> np.ndarray:
    """Inverse of :func:`mask_keys`: bool masks (len(keys), n)."""
    width = (n + 7) // 8
    return unpack(np.ascontiguousarray(keys).view(np.uint8).reshape(-1, width), n)


def row_key(mask: np.ndarray) -> bytes:
    """The key of one mask as ``bytes`` (hashable: for dict memo tables)."""
    return np.packbits(np.asarray(mask, dtype=bool)).tobytes()


def unique_rows(masks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(distinct masks in first-seen order, inverse index), so values can be scattered back."""
    _, first, inverse = np.unique(mask_keys(masks), return_index=True, return_inverse=True)
    inverse = inverse.reshape(-1)
    order = np.argsort(first, kind="stable")  # keep first-seen order: deterministic batches
    rank = np.empty_like(order)
    rank[order] = np.arange(len(order))
    return masks[first[order]], rank[inverse]
