"""Families of feature subsets as padded integer arrays, and the vectorised operations on them.

A family of K subsets of {0..n-1} is an int32 array ``members`` of shape (K, D): row k lists the
members of subset k in ascending order, padded on the right with ``PAD`` (-1); D is the largest
order in the family (D = 0 when the family holds only the empty set). This one layout serves the
Fourier spectrum, the Möbius transform and every interaction index, so that grouping, subset
expansion and design matrices are written once, without Python loops over subsets.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import numpy as np
import scipy.sparse as sp

PAD = -1
_BIG = np.iinfo(np.int64).max


def canonical(members: np.ndarray) -> np.ndarray:
    """Sort every row ascending with the padding moved to the end (int32 result)."""
    m = np.asarray(members, dtype=np.int64)
    if m.ndim != 2:
        raise ValueError(f"members must be 2-D (K, D); got shape {m.shape}")
    if m.shape[1] == 0:
        return m.astype(np.int32)
    m = np.where(m < 0, _BIG, m)
    m.sort(axis=1)
    return np.where(m == _BIG, PAD, m).astype(np.int32)


def orders(members: np.ndarray) -> np.ndarray:
    """Number of members of each subset."""
    return (np.asarray(members) >= 0).sum(axis=1).astype(np.int64)


def trim(members: np.ndarray) -> np.ndarray:
    """Drop trailing all-padding columns (keeps D equal to the largest order)."""
    if members.shape[1] == 0:
        return members
    d = int(orders(members).max(initial=0))
    return members[:, :d]


def pad_to(members: np.ndarray, width: int) -> np.ndarray:
    """Widen a family to ``width`` columns with padding."""
    k, d = members.shape
    if d >= width:
        return members
    out = np.full((k, width), PAD, dtype=np.int32)
    out[:, :d] = members
    return out


def from_tuples(subsets: Iterable[Iterable[int]]) -> np.ndarray:
    """Build a canonical family from Python iterables (edge of the API, not a hot path)."""
    rows = [sorted(set(int(i) for i in s)) for s in subsets]
    width = max((len(r) for r in rows), default=0)
    out = np.full((len(rows), width), PAD, dtype=np.int32)
    for k, r in enumerate(rows):
        out[k, : len(r)] = r
    return out


def to_tuples(members: np.ndarray) -> list[tuple[int, ...]]:
    """Rows as sorted tuples of Python ints (the empty tuple for the empty set)."""
    return [tuple(int(i) for i in row[row >= 0]) for row in np.asarray(members)]


def keys(members: np.ndarray, n: int) -> np.ndarray:
    """One int64 key per row, equal iff the (canonical) rows are equal.

    Digits in base n+1 (padding -> 0, member i -> i+1) when they fit in 62 bits; otherwise the
    row's rank among the unique rows (still a valid grouping key).
    """
    m = np.asarray(members, dtype=np.int64)
    k, d = m.shape
    if d == 0:
        return np.zeros(k, dtype=np.int64)
    base = n + 1
    if d * np.log2(base) < 62:
        powers = base ** np.arange(d - 1, -1, -1, dtype=np.int64)
        return (m + 1) @ powers
    _, inverse = np.unique(m, axis=0, return_inverse=True)
    return inverse.reshape(-1).astype(np.int64)


def locate(family: np.ndarray, wanted: np.ndarray, n: int) -> np.ndarray:
    """For each row of ``wanted``, its row index in ``family`` (-1 where it is not there); both canonical."""
    width = max(np.asarray(family).shape[1], np.asarray(wanted).shape[1])
    own = keys(pad_to(np.asarray(family), width), n)
    want = keys(pad_to(np.asarray(wanted), width), n)
    out = np.full(len(want), -1, dtype=np.int64)
    if len(own) == 0 or len(want) == 0:
        return out
    order = np.argsort(own, kind="stable")
    pos = np.minimum(np.searchsorted(own[order], want), len(own) - 1)
    found = own[order][pos] == want
    out[found] = order[pos[found]]
    return out


def group_sum(members: np.ndarray, values: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Merge equal subsets, summing their values. Returns (unique members, sums)."""
    members = np.asarray(members)
    values = np.asarray(values, dtype=np.float64)
    if len(values) == 0:
        return members.astype(np.int32), values
    key = keys(members, n)
    _, first, inverse = np.unique(key, return_index=True, return_inverse=True)
    sums = np.bincount(inverse.reshape(-1), weights=values, minlength=len(first))
    return trim(members[first].astype(np.int32)), sums


def subset_patterns(d: int, max_size: int | None = None) -> np.ndarray:
    """All subsets of positions {0..d-1} as a bool matrix (P, d), optionally of size <= max_size."""
    codes = np.arange(2**d, dtype=np.int64)
    bits = ((codes[:, None] >> np.arange(d)) & 1).astype(bool)
    if max_size is not None:
        bits = bits[bits.sum(axis=1) <= max_size]
    return bits


WeightFn = Callable[[np.ndarray, np.ndarray], np.ndarray]
"""weight(order of the superset S, order of the subset T) -> multiplier, vectorised."""


def superset_map(
    members: np.ndarray,
    n: int,
    weight: WeightFn,
    *,
    max_order: int | None = None,
) -> tuple[np.ndarray, sp.csr_matrix]:
    """The linear map behind :func:`superset_sums`: (out members, sparse A of shape (T, K)) with
    out(T) = Σ_{S ⊇ T, S in family} weight(|S|, |T|) · v(S) = (A @ v)(T) for every vector v on the family.

    Why a matrix: every interaction index is linear in the Fourier coefficients, so the same A that
    computes the values also propagates their covariance exactly (Var(A F) = A Σ Aᵀ). Cost is
    Σ_S (number of subsets of S up to ``max_order``) non-zeros; rows are built per order so each step
    is one rectangular numpy operation.
    """
    members = np.asarray(members)
    ords = orders(members)
    width = int(ords.max(initial=0)) if max_order is None else min(int(ords.max(initial=0)), max_order)
    out_members, sources, weights = [], [], []
    for d in np.unique(ords):
        rows = np.flatnonzero(ords == d)
        m = members[rows][:, :d]
        pats = subset_patterns(int(d), max_order)
        if d > 0:
            sub = canonical(np.where(pats[None, :, :], m[:, None, :], PAD).reshape(-1, int(d)))
        else:
            sub = np.zeros((len(rows), 0), dtype=np.int32)
        t_order = np.tile(pats.sum(axis=1), len(rows))
        with np.errstate(divide="ignore", invalid="ignore"):  # np.where evaluates both branches
            w = weight(np.full(len(t_order), d), t_order)
        out_members.append(pad_to(sub, width)[:, :width])
        sources.append(np.repeat(rows, len(pats)))
        weights.append(np.broadcast_to(np.asarray(w, dtype=np.float64), t_order.shape))
    if not out_members:
        return np.zeros((0, 0), dtype=np.int32), sp.csr_matrix((0, len(members)))
    expanded = np.concatenate(out_members)
    if len(expanded) == 0:
        return trim(expanded.astype(np.int32)), sp.csr_matrix((0, len(members)))
    _, first, inverse = np.unique(keys(expanded, n), return_index=True, return_inverse=True)
    matrix = sp.csr_matrix((np.concatenate(weights), (inverse.reshape(-1), np.concatenate(sources))),
                           shape=(len(first), len(members)))  # duplicate (T, S) entries are summed
    return trim(expanded[first].astype(np.int32)), matrix


def superset_sums(
    members: np.ndarray,
    values: np.ndarray,
    n: int,
    weight: WeightFn,
    *,
    max_order: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """out(T) = Σ_{S ⊇ T, S in family} weight(|S|, |T|) · values(S), for every T ⊆ some S.

    This single kernel computes Fourier -> Möbius and every interaction index: the map of
    :func:`superset_map` applied to ``values`` (a vector, or a (K, m) matrix of m vectors at once).
    """
    out_members, matrix = superset_map(members, n, weight, max_order=max_order)
    return out_members, matrix @ np.asarray(values, dtype=np.float64)


def incidence(members: np.ndarray, n: int) -> sp.csr_matrix:
    """Sparse (K, n) 0/1 matrix with a 1 where feature i belongs to subset k."""
    members = np.asarray(members)
    valid = members >= 0
    indptr = np.concatenate([[0], np.cumsum(valid.sum(axis=1))])
    cols = members[valid]
    return sp.csr_matrix((np.ones(len(cols), dtype=np.float64), cols, indptr), shape=(len(members), n))


def parity_design(masks: np.ndarray, members: np.ndarray, n: int) -> np.ndarray:
    """The Fourier design matrix (-1)^<x, k> of shape (B, K), as float64.

    One sparse product counts |x ∩ k| for every pair; cost B · nnz(members), not B · K · n.
    """
    x = np.asarray(masks, dtype=np.float64)
    counts = np.asarray((incidence(members, n) @ x.T).T)
    return 1.0 - 2.0 * (np.rint(counts).astype(np.int64) & 1)


def masks_to_ints(masks: np.ndarray) -> np.ndarray:
    """Bit-pack masks of width n <= 62 into int64 (bit i = feature i kept)."""
    masks = np.asarray(masks, dtype=bool)
    n = masks.shape[1]
    if n > 62:
        raise ValueError("masks_to_ints needs n <= 62")
    return masks.astype(np.int64) @ (np.int64(1) << np.arange(n, dtype=np.int64))


def ints_to_masks(codes: np.ndarray, n: int) -> np.ndarray:
    """Inverse of masks_to_ints."""
    codes = np.asarray(codes, dtype=np.int64)
    return ((codes[:, None] >> np.arange(n, dtype=np.int64)) & 1).astype(bool)


def members_to_ints(members: np.ndarray) -> np.ndarray:
    """Subsets as bitmask integers (for n <= 62)."""
    m = np.asarray(members, dtype=np.int64)
    bits = np.where(m >= 0, np.int64(1) << np.clip(m, 0, 62), 0)
    return bits.sum(axis=1)


def ints_to_members(codes: np.ndarray, n: int) -> np.ndarray:
    """Bitmask integers back to a canonical family."""
    bits = ints_to_masks(codes, n)
    idx = np.where(bits, np.arange(n, dtype=np.int32), PAD)
    return trim(canonical(idx))


def parity_design_used(masks: np.ndarray, members: np.ndarray, n: int) -> np.ndarray:
    """:func:`parity_design` (the same matrix), from the mask columns the family uses only.

    Why: ``parity_design`` converts every mask column to float64 — 1.6 GB for 50,000 masks at
    n = 4,096 — while a support of a few hundred subsets touches a few dozen features. The parity
    is the XOR of each subset's member columns, one boolean (B, K) operation per member position."""
    members = np.asarray(members)
    masks = np.asarray(masks, dtype=bool)
    if masks.shape[1] != n:
        raise ValueError(f"masks have {masks.shape[1]} columns, expected n = {n}")
    used = np.unique(members[members >= 0])
    # the used columns, then one all-False column that padding points at (x = 0: no parity flip)
    columns = np.zeros((len(masks), len(used) + 1), dtype=bool)
    columns[:, : len(used)] = masks[:, used]
    local = np.where(members >= 0, np.searchsorted(used, members), len(used))
    odd = np.zeros((len(masks), len(members)), dtype=bool)
    for j in range(members.shape[1]):  # a loop over member positions (the largest order), not subsets
        odd ^= columns[:, local[:, j]]
    return np.where(odd, -1.0, 1.0)
