"""The sparse Fourier spectrum of a set function, the one result type of every method.

f(x) = Σ_k F(k) · (-1)^<x, k>, with x a bool mask (True keeps feature i) and k a subset of the
features: the convention of the SPEX and ProxySPEX papers. A ``Spectrum`` evaluates itself on masks
(vectorised), converts to the Möbius basis and to interaction indices, and serialises to JSON.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from spex.engine import sets
from spex.engine.inputs import check_masks
from spex.engine.walsh import fwht, superset_transform

if TYPE_CHECKING:
    import pandas as pd

    from spex.engine.uncertainty import Uncertainty

_DENSE_MAX_N = 22  # dense 2^n paths are used only up to here (4M doubles)
JSON_FORMAT = 1  # of Spectrum.to_json: bumped when its fields change (from_json reads older formats)


class Spectrum:
    """A sparse Fourier spectrum over n features.

    Attributes:
        n: number of features.
        members: int32 (K, D) canonical family (see :mod:`spex.engine.sets`), one row per coefficient.
        coefficients: float64 (K,), F(k) for each row.
    """

    __slots__ = ("n", "members", "coefficients")

    def __init__(self, n: int, members: np.ndarray, coefficients: np.ndarray, *, merge: bool = True) -> None:
        if int(n) < 1:
            raise ValueError(f"n must be >= 1, got {n}")
        coefficients = np.asarray(coefficients, dtype=np.float64).reshape(-1)
        members = np.asarray(members)
        if members.ndim != 2 or len(members) != len(coefficients):
            raise ValueError(f"members must be (K, D) with K={len(coefficients)}; got shape {members.shape}")
        members = sets.canonical(members)
        if members.size and (members.max() >= n):
            raise ValueError(f"a member index is >= n={n}")
        if merge:
            members, coefficients = sets.group_sum(members, coefficients, int(n))
        self.n = int(n)
        self.members = sets.trim(members)
        self.coefficients = coefficients

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_dict(cls, n: int, mapping: Mapping[Sequence[int], float]) -> Spectrum:
        """From {member tuple: coefficient} (the empty tuple is the constant)."""
        items = list(mapping.items())
        return cls(n, sets.from_tuples(k for k, _ in items), np.array([v for _, v in items], dtype=np.float64))

    @classmethod
    def from_dense(cls, values: np.ndarray) -> Spectrum:
        """From a dense array of 2^n Fourier coefficients indexed by subset bitmask."""
        values = np.asarray(values, dtype=np.float64)
        n = values.size.bit_length() - 1
        codes = np.flatnonzero(values)
        return cls(max(n, 1), sets.ints_to_members(codes, max(n, 1)), values[codes], merge=False)

    # ------------------------------------------------------------------ basic views
    def __len__(self) -> int:
        return len(self.coefficients)

    def __repr__(self) -> str:
        return f"Spectrum(n={self.n}, coefficients={len(self)}, max_order={self.max_order})"

    @property
    def orders(self) -> np.ndarray:
        return sets.orders(self.members)

    @property
    def max_order(self) -> int:
        return int(self.orders.max(initial=0))

    @property
    def constant(self) -> float:
        """F(∅): the mean of f over uniformly random masks."""
        return float(self.coefficients[self.orders == 0].sum())

    def energy(self, include_constant: bool = False) -> float:
        c = self.coefficients if include_constant else self.coefficients[self.orders > 0]
        return float(np.sum(c**2))

    def copy_with(self, members: np.ndarray, coefficients: np.ndarray) -> Spectrum:
        return Spectrum(self.n, members, coefficients, merge=False)

    def truncate(self, max_order: int) -> Spectrum:
        """Keep coefficients of order <= max_order (the Faith-Banzhaf projection of that order)."""
        keep = self.orders <= max_order
        return self.copy_with(self.members[keep], self.coefficients[keep])

    def top(self, k: int) -> Spectrum:
        """The constant plus the k largest non-constant coefficients by magnitude."""
        nonconst = np.flatnonzero(self.orders > 0)
        order = nonconst[np.argsort(-np.abs(self.coefficients[nonconst]), kind="stable")[:k]]
        keep = np.concatenate([np.flatnonzero(self.orders == 0), order])
        return self.copy_with(self.members[keep], self.coefficients[keep])

    # ------------------------------------------------------------------ evaluation
    def design(self, masks: np.ndarray) -> np.ndarray:
        """(B, K) matrix of (-1)^<x, k> for these masks and this spectrum's support."""
        return sets.parity_design(check_masks(masks, self.n), self.members, self.n)

    def predict(self, masks: np.ndarray, *, chunk_elements: int = 1 << 24) -> np.ndarray:
        """f(x) for each mask, vectorised. Uses a dense inverse WHT when that is cheaper."""
        x = check_masks(masks, self.n)
        nnz = int(np.count_nonzero(self.members >= 0)) + len(self)
        if self.n <= _DENSE_MAX_N and self.n * (1 << self.n) < nnz * len(x):
            table = fwht(self.dense())
            return table[sets.masks_to_ints(x)]
        rows = max(1, chunk_elements // max(1, len(self)))
        out = np.empty(len(x), dtype=np.float64)
        for start in range(0, len(x), rows):
            out[start : start + rows] = sets.parity_design(x[start : start + rows], self.members, self.n) @ self.coefficients
        return out

    __call__ = predict

    def dense(self) -> np.ndarray:
        """All 2^n coefficients indexed by subset bitmask (n <= 22)."""
        if self.n > _DENSE_MAX_N:
            raise ValueError(f"dense form needs n <= {_DENSE_MAX_N}; n={self.n}")
        out = np.zeros(1 << self.n)
        np.add.at(out, sets.members_to_ints(self.members), self.coefficients)
        return out

    # ------------------------------------------------------------------ other bases
    def dense_mobius_is_cheaper(self) -> bool:
        """Whether the dense superset transform (n · 2^n) beats the sparse expansion (Σ_k 2^|k|)."""
        sparse_cost = float(np.sum(np.exp2(self.orders)))
        return self.n <= _DENSE_MAX_N and self.n * float(1 << self.n) < sparse_cost

    def mobius(self) -> tuple[np.ndarray, np.ndarray]:
        """Möbius coefficients a(T) = (-2)^|T| Σ_{S ⊇ T} F(S), as (members, values).

        Sparse subset expansion (cost Σ_k 2^|k|) or, when cheaper, a dense superset transform
        (cost n · 2^n): the exact spectrum of a dense function at n = 20 takes the dense path.
        """
        if self.dense_mobius_is_cheaper():
            sums = superset_transform(self.dense())
            codes = np.flatnonzero(sums)
            popcount = sets.ints_to_masks(codes, self.n).sum(axis=1)
            return sets.ints_to_members(codes, self.n), sums[codes] * (-2.0) ** popcount
        return sets.superset_sums(self.members, self.coefficients, self.n, lambda s, t: (-2.0) ** t)

    def to_dict(self, basis: str = "fourier") -> dict[tuple[int, ...], float]:
        """{sorted member tuple: coefficient}; the empty tuple holds the constant."""
        if basis == "fourier":
            members, values = self.members, self.coefficients
        elif basis == "mobius":
            members, values = self.mobius()
        else:
            raise ValueError(f"basis must be 'fourier' or 'mobius', got {basis!r}")
        return dict(zip(sets.to_tuples(members), values.tolist(), strict=True))

    def interactions(
        self,
        index: str = "mobius",
        order: int | None = None,
        top: int | None = None,
        labels: Sequence[str] | None = None,
        uncertainty: Uncertainty | None = None,
        level: float = 0.95,
    ) -> pd.DataFrame:
        """Ranked interaction table; see :func:`spex.engine.indices.interaction_table`."""
        from spex.engine.indices import interaction_table

        return interaction_table(self, index=index, order=order, top=top, labels=labels, uncertainty=uncertainty,
                                 level=level)

    # ------------------------------------------------------------------ serialisation
    def to_json(self) -> str:
        """The spectrum as JSON text, tagged with ``JSON_FORMAT`` so a reader can tell what it holds."""
        return json.dumps(
            {
                "format": JSON_FORMAT,
                "n": self.n,
                "members": sets.to_tuples(self.members),
                "coefficients": self.coefficients.tolist(),
            }
        )

    @classmethod
    def from_json(cls, text: str) -> Spectrum:
        """A spectrum from :meth:`to_json`'s text; a payload without ``format`` (written before formats
        were numbered) is format 1. A newer format is an error, not a silent misreading."""
        data: dict[str, Any] = json.loads(text)
        version = data.get("format", 1)
        if version != JSON_FORMAT:
            raise ValueError(f"spectrum JSON format {version!r} is not readable by this spex (it reads format "
                             f"{JSON_FORMAT}); upgrade spex to read it")
        return cls(data["n"], sets.from_tuples(data["members"]), np.array(data["coefficients"]), merge=False)
