"""The removal test's choice: which r features, removed together, move the surrogate most.

In the Möbius basis the surrogate is a multilinear polynomial f(x) = Σ_T a(T) Π_{i∈T} x_i, so
"remove exactly r features to minimise (or maximise) f" is a 0/1 program. We solve it exactly with
scipy's HiGHS MILP (no Gurobi licence), linearising each product y_T = Π x_i by
y_T <= x_i and y_T >= Σ x_i - (|T| - 1). Past ``exact_terms`` Möbius terms (or if HiGHS does not
prove optimality within ``time_limit``), a vectorised greedy search takes over.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
from scipy.optimize import Bounds, LinearConstraint, milp

from spex.engine import sets
from spex.engine.spectrum import Spectrum
from spex.errors import SpexInputError


@dataclass(frozen=True)
class RemovalResult:
    """The chosen features and what the surrogate predicts for removing them."""

    features: tuple[int, ...]
    baseline: float  # surrogate value with every feature kept
    predicted_value: float  # surrogate value with ``features`` removed
    method: str  # "milp" or "greedy"
    optimal: bool  # proven optimal (MILP) or a greedy choice

    @property
    def predicted_change(self) -> float:
        return self.predicted_value - self.baseline

    def mask(self, n: int) -> np.ndarray:
        """The mask that keeps everything but ``features``."""
        m = np.ones(n, dtype=bool)
        m[list(self.features)] = False
        return m


def _value(spectrum: Spectrum, removed: np.ndarray) -> float:
    m = np.ones((1, spectrum.n), dtype=bool)
    m[0, removed] = False
    return float(spectrum.predict(m)[0])


def removal(
    spectrum: Spectrum,
    r: int,
    direction: str = "down",
    *,
    exact_terms: int = 5000,
    time_limit: float = 20.0,
) -> RemovalResult:
    """The r features whose joint removal moves the surrogate most (``down``: lowest value).

    Returns a :class:`RemovalResult` with the features and the predicted change.
    """
    n = spectrum.n
    if isinstance(r, bool) or not isinstance(r, (int, np.integer)) or not 0 <= r <= n:
        raise SpexInputError(f"r must be an integer in [0, n={n}]; got {r!r}")
    if direction not in ("down", "up"):
        raise SpexInputError(f"direction must be 'down' or 'up'; got {direction!r}")
    baseline = float(spectrum.predict(np.ones((1, n), dtype=bool))[0])
    if r == 0:
        return RemovalResult((), baseline, baseline, "milp", True)
    members, a = spectrum.mobius()
    keep = (sets.orders(members) > 0) & (a != 0)
    members, a = members[keep], a[keep]
    if len(a) == 0:  # a constant surrogate (e.g. a Lasso that kept no term): every choice is optimal
        chosen = list(range(int(r)))
        return RemovalResult(tuple(chosen), baseline, _value(spectrum, chosen), "milp", True)
    if len(a) <= exact_terms:
        result = _milp(members, a, n, int(r), direction, time_limit)
        if result is not None:
            chosen, optimal = result
            return RemovalResult(tuple(chosen), baseline, _value(spectrum, chosen), "milp", optimal)
    chosen = _greedy(spectrum, members, int(r), direction)
    return RemovalResult(tuple(chosen), baseline, _value(spectrum, chosen), "greedy", False)


def _milp(
    members: np.ndarray, a: np.ndarray, n: int, r: int, direction: str, time_limit: float
) -> tuple[list[int], bool] | None:
    ords = sets.orders(members)
    singles = ords == 1
    multi = np.flatnonzero(ords >= 2)
    n_y = len(multi)
    sign = 1.0 if direction == "down" else -1.0
    # variables: x_0..x_{n-1} (kept = 1), then y_T for |T| >= 2
    c = np.zeros(n + n_y)
    np.add.at(c, members[singles, 0], sign * a[singles])
    c[n:] = sign * a[multi]
    # y_T - x_i <= 0 for every i in T; and Σ x_i - y_T <= |T| - 1
    m_multi = members[multi]
    valid = m_multi >= 0
    t_idx = np.repeat(np.arange(n_y), valid.sum(axis=1))
    feat = m_multi[valid]
    upper = sp.csr_matrix(
        (np.concatenate([np.ones(len(t_idx)), -np.ones(len(t_idx))]),
         (np.tile(np.arange(len(t_idx)), 2), np.concatenate([n + t_idx, feat]))),
        shape=(len(t_idx), n + n_y),
    )
    lower = sp.csr_matrix(
        (np.concatenate([np.ones(len(feat)), -np.ones(n_y)]),
         (np.concatenate([t_idx, np.arange(n_y)]), np.concatenate([feat, n + np.arange(n_y)]))),
        shape=(n_y, n + n_y),
    )
    count = sp.csr_matrix((np.ones(n), (np.zeros(n, dtype=int), np.arange(n))), shape=(1, n + n_y))
    constraints = [LinearConstraint(count, n - r, n - r)]
    if n_y:
        constraints += [
            LinearConstraint(upper, -np.inf, 0.0),
            LinearConstraint(lower, -np.inf, (ords[multi] - 1).astype(float)),
        ]
    integrality = np.concatenate([np.ones(n), np.zeros(n_y)])
    res = milp(c, constraints=constraints, integrality=integrality, bounds=Bounds(0, 1),
               options={"time_limit": time_limit, "disp": False})
    if res.x is None:
        return None
    removed = np.flatnonzero(res.x[:n] < 0.5)
    if len(removed) != r:
        return None
    return removed.tolist(), bool(res.status == 0)


def _greedy(spectrum: Spectrum, members: np.ndarray, r: int, direction: str) -> list[int]:
    """Remove one feature at a time, each step scoring every candidate in one vectorised predict."""
    n = spectrum.n
    in_support = np.unique(members[members >= 0])
    candidates = in_support if len(in_support) >= r else np.arange(n)
    removed: list[int] = []
    current = np.ones(n, dtype=bool)
    for _ in range(r):  # r steps; each step is one batched prediction over all candidates
        options = np.setdiff1d(candidates, removed)
        trial = np.repeat(current[None, :], len(options), axis=0)
        trial[np.arange(len(options)), options] = False
        values = spectrum.predict(trial)
        best = int(options[np.argmin(values) if direction == "down" else np.argmax(values)])
        removed.append(best)
        current[best] = False
    return sorted(removed)
