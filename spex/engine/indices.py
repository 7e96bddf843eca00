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
from typing import TYPE_CHECKING

import numpy as np
from scipy.special import comb

from spex.engine import sets

if TYPE_CHECKING:
    import pandas as pd

    from spex.engine.spectrum import Spectrum

INDICES = ("fourier", "mobius", "banzhaf", "shapley", "fbii", "fsii", "stii", "sii")
ORDERED_INDICES = ("fbii", "fsii", "stii")  # indices whose definition depends on an order ℓ
DEFAULT_ORDER = 2


def compute(spectrum: Spectrum, index: str, order: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Values of ``index`` for the subsets where it is (possibly) non-zero: (members, values).

    ``order`` caps the reported order; for fbii/fsii/stii it is also the index's ℓ (default 2).
    """
    index = index.lower()
    if index not in INDICES:
        raise ValueError(f"unknown index {index!r}; choose one of {', '.join(INDICES)}")
    if order is not None and (not isinstance(order, (int, np.integer)) or order < 1):
        raise ValueError(f"order must be a positive integer, got {order!r}")
    n = spectrum.n
    F, members = spectrum.coefficients, spectrum.members

    if index == "fourier":
        return _cap(members, F, order)
    if index == "banzhaf":
        return _cap(members, F * (-2.0) ** sets.orders(members), order)
    if index == "shapley":
        if order not in (None, 1):
            raise ValueError("shapley values are first-order; use index='sii' for higher orders")
        m, v = sets.superset_sums(
            members, F, n, lambda s, t: np.where((t == 1) & (s % 2 == 1), -2.0 / np.maximum(s, 1), 0.0), max_order=1
        )
        phi = np.zeros(n)
        keep = sets.orders(m) == 1
        if keep.any():  # a constant function's spectrum has no member of order 1 (and width 0)
            phi[m[keep, 0]] = v[keep]
        return np.arange(n, dtype=np.int32)[:, None], phi
    if index == "fbii":
        ell = order or DEFAULT_ORDER
        return spectrum.truncate(ell).mobius()

    a_members, a = spectrum.mobius()
    if index == "mobius":
        return _cap(a_members, a, order)
    if index == "sii":
        return sets.superset_sums(a_members, a, n, lambda s, t: 1.0 / (s - t + 1.0), max_order=order)
    ell = order or DEFAULT_ORDER
    if index == "stii":
        return sets.superset_sums(
            a_members, a, n, lambda s, t: np.where(t < ell, (s == t).astype(float), 1.0 / comb(s, ell)), max_order=ell
        )
    # fsii
    def fsii_weight(s: np.ndarray, t: np.ndarray) -> np.ndarray:
        s = s.astype(float)
        t = t.astype(float)
        tail = (
            (-1.0) ** (ell - t) * t / (ell + t) * comb(ell, t) * comb(s - 1, ell) / comb(s + ell - 1, ell + t)
        )
        return np.where(s <= ell, (s == t).astype(float), tail)

    return sets.superset_sums(a_members, a, n, fsii_weight, max_order=ell)


def _cap(members: np.ndarray, values: np.ndarray, order: int | None) -> tuple[np.ndarray, np.ndarray]:
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
) -> pd.DataFrame:
    """Ranked interactions: columns ``members`` (tuple of int), ``order``, ``value``, ``rank``
    (1 = largest |value|), plus ``labels`` when feature labels are given.

    The empty set (the constant / baseline) is not an interaction and is left out; read it from
    ``spectrum.constant`` or ``to_dict()``. Ties keep a stable order (by members). pandas is imported
    here, not with the engine: only a caller that asks for a table needs it.
    """
    import pandas as pd

    members, values = compute(spectrum, index, order)
    ords = sets.orders(members)
    keep = ords > 0
    members, values, ords = members[keep], values[keep], ords[keep]
    ranking = np.lexsort((sets.keys(members, spectrum.n), -np.abs(values)))
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
    if labels is not None:
        if len(labels) != spectrum.n:
            raise ValueError(f"got {len(labels)} labels for n={spectrum.n} features")
        table.insert(1, "labels", [tuple(labels[i] for i in t) for t in tuples])
    table.attrs["index"] = index
    table.attrs["order"] = order
    return table
