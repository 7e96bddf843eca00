"""Interaction indices computed from a Fourier spectrum, and the ranked interaction table.

Every index is a weighted sum over supersets of the Möbius (or Fourier) coefficients, so all of them
run through one kernel, :func:`spex.engine.sets.superset_sums`, with a weight w(|S|, |T|):

* ``fourier``: F(T) as is.                      * ``mobius``: a(T) = (-2)^|T| Σ_{S⊇T} F(S).
* ``banzhaf`` (interaction index): (-2)^|T| F(T).
* ``shapley`` (values): φ_i = -2 Σ_{S∋i, |S| odd} F(S) / |S|.
* ``sii``: Σ_{S⊇T} a(S) / (|S| - |T| + 1).
* ``stii`` of order ℓ: a(T) for |T| < ℓ; Σ_{S⊇T} a(S) / C(|S|, ℓ) for |T| = ℓ.
* ``fbii`` of order ℓ: the Möbius transform of the spectrum truncated to degree ≤ ℓ.
* ``fsii`` of order ℓ (Tsai et al., Faith-Shap): for |T| ≤ ℓ,
  a(T) + (-1)^(ℓ-|T|) · |T|/(ℓ+|T|) · C(ℓ,|T|) · Σ_{S⊃T, |S|>ℓ} C(|S|-1, ℓ) / C(|S|+ℓ-1, ℓ+|T|) · a(S).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import scipy.sparse as sp
from scipy.special import comb

from spex.engine import sets

if TYPE_CHECKING:
    import pandas as pd

    from spex.engine.spectrum import Spectrum
    from spex.engine.uncertainty import Uncertainty

INDICES = ("fourier", "mobius", "banzhaf", "shapley", "fbii", "fsii", "stii", "sii")
ORDERED_INDICES = ("fbii", "fsii", "stii")  # indices whose definition depends on an order ℓ
DEFAULT_ORDER = 2


def _check(index: str, order: int | None) -> str:
    index = index.lower() if isinstance(index, str) else index
    if index not in INDICES:
        raise ValueError(f"unknown index {index!r}; choose one of {', '.join(INDICES)}")
    if order is not None and (not isinstance(order, (int, np.integer)) or order < 1):
        raise ValueError(f"order must be a positive integer, got {order!r}")
    if index == "shapley" and order not in (None, 1):
        raise ValueError("shapley values are first-order; use index='sii' for higher orders")
    return index


def _mobius_weight(s: np.ndarray, t: np.ndarray) -> np.ndarray:
    return (-2.0) ** t


def _from_mobius(index: str, order: int | None) -> tuple[sets.WeightFn, int | None]:
    """The weight (and order cap) that turns Möbius coefficients into ``index`` (sii, stii, fsii)."""
    if index == "sii":
        return (lambda s, t: 1.0 / (s - t + 1.0)), order
    ell = order or DEFAULT_ORDER
    if index == "stii":
        return (lambda s, t: np.where(t < ell, (s == t).astype(float), 1.0 / comb(s, ell))), ell

    def fsii_weight(s: np.ndarray, t: np.ndarray) -> np.ndarray:
        s = s.astype(float)
        t = t.astype(float)
        tail = (
            (-1.0) ** (ell - t) * t / (ell + t) * comb(ell, t) * comb(s - 1, ell) / comb(s + ell - 1, ell + t)
        )
        return np.where(s <= ell, (s == t).astype(float), tail)

    return fsii_weight, ell


def _shapley_weight(s: np.ndarray, t: np.ndarray) -> np.ndarray:
    return np.where((t == 1) & (s % 2 == 1), -2.0 / np.maximum(s, 1), 0.0)


def index_map(spectrum: Spectrum, index: str, order: int | None = None) -> tuple[np.ndarray, sp.csr_matrix]:
    """The index as a linear map of the Fourier coefficients: (members, A) with values = A @ F.

    Every index is linear in F, so A also carries the spectrum's uncertainty to the index exactly:
    Cov(index) = A Σ_F Aᵀ (:mod:`spex.engine.uncertainty`). Rows of A follow ``members``; columns
    follow ``spectrum.members``. ``order`` means what it means for :func:`compute`.
    """
    return family_index_map(spectrum.members, spectrum.n, index, order)


def family_index_map(members: np.ndarray, n: int, index: str, order: int | None = None
                     ) -> tuple[np.ndarray, sp.csr_matrix]:
    """:func:`index_map` for any family of Fourier coefficients ``members`` over n features."""
    index = _check(index, order)
    k = len(members)
    if index == "fourier":
        return _cap(members, sp.identity(k, format="csr"), order)
    if index == "banzhaf":
        return _cap(members, sp.diags((-2.0) ** sets.orders(members)).tocsr(), order)
    if index == "shapley":
        m, a = sets.superset_map(members, n, _shapley_weight, max_order=1)
        rows = np.flatnonzero(sets.orders(m) == 1)
        # one row per feature; a feature no coefficient contains has an all-zero row
        select = sp.csr_matrix((np.ones(len(rows)), (m[rows, 0] if len(rows) else rows, rows)), shape=(n, len(m)))
        return np.arange(n, dtype=np.int32)[:, None], (select @ a).tocsr()
    if index == "fbii":
        keep = np.flatnonzero(sets.orders(members) <= (order or DEFAULT_ORDER))
        m, a = sets.superset_map(sets.trim(members[keep]), n, _mobius_weight)
        truncate = sp.csr_matrix((np.ones(len(keep)), (np.arange(len(keep)), keep)), shape=(len(keep), k))
        return m, (a @ truncate).tocsr()
    a_members, to_mobius = sets.superset_map(members, n, _mobius_weight)
    if index == "mobius":
        return _cap(a_members, to_mobius, order)
    weight, cap = _from_mobius(index, order)
    m, second = sets.superset_map(a_members, n, weight, max_order=cap)
    return m, (second @ to_mobius).tocsr()


def compute(spectrum: Spectrum, index: str, order: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Values of ``index`` for the subsets where it is (possibly) non-zero: (members, values).

    ``order`` caps the reported order; for fbii/fsii/stii it is also the index's ℓ (default 2).
    The values are ``index_map(...)`` applied to the coefficients, except that a dense spectrum (the
    exact spectrum of small n) takes the O(n·2^n) Möbius path of :meth:`Spectrum.mobius` first.
    """
    index = _check(index, order)
    if index in ("mobius", "sii", "stii", "fsii") and spectrum.dense_mobius_is_cheaper():
        a_members, a = spectrum.mobius()
        if index == "mobius":
            return _cap(a_members, a, order)
        weight, cap = _from_mobius(index, order)
        return sets.superset_sums(a_members, a, spectrum.n, weight, max_order=cap)
    members, matrix = index_map(spectrum, index, order)
    return members, matrix @ spectrum.coefficients


def _rows_on(uncertainty: Uncertainty, spectrum: Spectrum, ranked: np.ndarray, matrix: sp.csr_matrix,
             index: str, order: int | None) -> sp.csr_matrix:
    """The index map's rows for ``ranked`` on the coefficients the covariance describes: the spectrum's
    own (``matrix`` as it is) or — for the selection bootstrap — the union of its replicates' supports,
    where a term the fit dropped still moves the index (a row the union cannot reach stays all-zero)."""
    if uncertainty.members is None:
        return matrix
    union_members, union_matrix = family_index_map(sets.canonical(uncertainty.members), spectrum.n, index, order)
    rows = sets.locate(union_members, ranked, spectrum.n)
    found = np.flatnonzero(rows >= 0)
    pick = sp.csr_matrix((np.ones(len(found)), (found, rows[found])), shape=(len(rows), union_matrix.shape[0]))
    return (pick @ union_matrix).tocsr()


def _cap(members: np.ndarray, values: np.ndarray | sp.csr_matrix, order: int | None) -> tuple[np.ndarray, Any]:
    if order is None:
        return members, values
    keep = sets.orders(members) <= order
    return sets.trim(members[keep]), values[keep]


def interaction_table(
    spectrum: Spectrum,
    *,
    index: str = "mobius",
    order: int | None = None,
    top: int | None = None,
    labels: Sequence[str] | None = None,
    uncertainty: Uncertainty | None = None,
    level: float = 0.95,
) -> pd.DataFrame:
    """Ranked interactions: columns ``members`` (tuple of int), ``order``, ``value``, ``rank``
    (1 = largest |value|), plus ``labels`` when feature labels are given, and — with an
    ``uncertainty`` of the coefficients — ``se``, ``ci_low``, ``ci_high``: each value's standard error
    (propagated exactly through the index's linear map) and its two-sided ``level`` interval.

    The empty set (the constant / baseline) is not an interaction and is left out; read it from
    ``spectrum.constant`` or ``to_dict()``. Ties keep a stable order (by members). pandas is imported
    here, not with the engine: only a caller that asks for a table needs it.
    """
    import pandas as pd

    propagate = uncertainty is not None and uncertainty.informative
    if propagate:
        members, matrix = index_map(spectrum, index, order)
        values = matrix @ spectrum.coefficients
    else:
        members, values = compute(spectrum, index, order)
    ords = sets.orders(members)
    keep = np.flatnonzero(ords > 0)
    ranking = keep[np.lexsort((sets.keys(members[keep], spectrum.n), -np.abs(values[keep])))]
    if top is not None:
        ranking = ranking[: max(int(top), 0)]
    tuples = sets.to_tuples(members[ranking])
    table = pd.DataFrame(
        {
            "members": tuples,
            "order": ords[ranking].astype(int),
            "value": values[ranking],
            "rank": np.arange(1, len(ranking) + 1),
        }
    )
    if uncertainty is not None:
        if propagate:
            se = uncertainty.standard_errors(_rows_on(uncertainty, spectrum, members[ranking], matrix[ranking],
                                                      index, order))
            if uncertainty.floor is not None:  # the bootstrap's: never below the fixed-support sandwich
                se = np.fmax(se, uncertainty.floor.standard_errors(matrix[ranking]))
        else:  # exact (no sampling error) or unknown (NaN) alike for every value
            se = np.full(len(ranking), 0.0 if uncertainty.estimator == "exact" else np.nan)
        half = uncertainty.quantile(level) * se
        table["se"] = se
        table["ci_low"] = table["value"] - half
        table["ci_high"] = table["value"] + half
        table.attrs["level"] = level
        table.attrs["estimator"] = uncertainty.estimator
    if labels is not None:
        if len(labels) != spectrum.n:
            raise ValueError(f"got {len(labels)} labels for n={spectrum.n} features")
        table.insert(1, "labels", [tuple(labels[i] for i in t) for t in tuples])
    table.attrs["index"] = index
    table.attrs["order"] = order
    return table
