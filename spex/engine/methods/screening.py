"""Feature screening for ProxySPEX at large n: which features can the proxy's trees need?

Why: LightGBM builds a histogram over every feature at every split, so at n = 2,048-4,096 features
nearly all of its time goes to features that never split (a planted game uses 50). The screen
keeps the features with a detectable first-order Fourier coefficient, or a detectable second-order
one with an already-kept feature, and the proxy is fit on those alone; passes on a short proxy's
residual (much smaller than y, so far more sensitive) add what the first pass could not see
(``docs/engine.md``, "ProxySPEX at scale").

The statistics are empirical Fourier coefficients: under uniform masks, E[y · s_S] = F(S) with
s_i = 1 - 2 x_i = (-1)^{x_i}. For a feature i the function does not depend on, s_i is independent of
everything else and s_i² = 1, so Σ_b s_i(b) g(b) has mean 0 and variance exactly Σ_b E[g(b)²]: the
z-score |Σ s_i g| / sqrt(Σ g²) is standard normal under the null, with no model of the function.
With antithetic pairs (x, ~x), s_S(~x) = (-1)^|S| s_S(x): odd-order coefficients live in the pair
differences (y - y')/2 and even-order ones in the pair sums, so each order is estimated from its own
half of the signal, one row per pair.

Blind spot (shared with greedy trees on all features): a feature whose only effect is an interaction
with features that are themselves invisible at orders 1-2 (a pure parity of three or more unkept
features) is not found.
"""

from __future__ import annotations

import numpy as np

BLOCK_ROWS = 8192  # masks converted to signs at a time: no (B, n) float64 temporary


def _pair_signals(y: np.ndarray, paired: bool) -> tuple[np.ndarray, np.ndarray]:
    """(odd-order signal, even-order signal) per row of the screen — see the module doc."""
    y = np.asarray(y, dtype=np.float64)
    if paired:
        p = len(y) // 2
        first, second = y[0 : 2 * p : 2], y[1 : 2 * p : 2]
        even = (first + second) / 2.0
        return (first - second) / 2.0, even - even.mean()
    centred = y - y.mean()
    return centred, centred


def _z(sums: np.ndarray, signal: np.ndarray) -> np.ndarray:
    """|Σ s g| / sqrt(Σ g²): standard normal for a feature the function does not depend on."""
    return np.abs(sums.astype(np.float64)) / max(float(np.sqrt(np.sum(signal**2))), 1e-300)


class FourierScreen:
    """The masks' signs s = 1 - 2x as float32 (one row per antithetic pair), computed once and reused
    by every pass of the screen (the first pass on the values, each pass on a proxy's residual)."""

    def __init__(self, x: np.ndarray, *, paired: bool):
        x = np.asarray(x, dtype=bool)
        self.paired = bool(paired and len(x) >= 2)
        rows = x[0 : 2 * (len(x) // 2) : 2] if self.paired else x
        self.signs = np.empty(rows.shape, dtype=np.float32)
        for start in range(0, len(rows), BLOCK_ROWS):  # a loop over blocks of rows (memory)
            self.signs[start : start + BLOCK_ROWS] = np.where(rows[start : start + BLOCK_ROWS], -1.0, 1.0)

    def first_order(self, y: np.ndarray) -> np.ndarray:
        """z-score of every feature's first-order Fourier coefficient (one matrix-vector product)."""
        odd, _ = _pair_signals(y, self.paired)
        return _z(self.signs.T @ odd.astype(np.float32), odd)

    def second_order(self, y: np.ndarray, partners: np.ndarray) -> np.ndarray:
        """Per feature, the largest z-score of its second-order coefficients with ``partners``
        (one (n, B/2) x (B/2, |partners|) float32 product)."""
        partners = np.asarray(partners, dtype=np.int64)
        if len(partners) == 0:
            return np.zeros(self.signs.shape[1])
        _, even = _pair_signals(y, self.paired)
        z = _z(self.signs.T @ (self.signs[:, partners] * even.astype(np.float32)[:, None]), even)
        z[partners, np.arange(len(partners))] = 0.0  # s_i · s_i = 1: not an interaction
        return z.max(axis=1)

    def keep(
        self, y: np.ndarray, *, false_positives: float, max_partners: int, ranked_base: np.ndarray | None = None
    ) -> np.ndarray:
        """Sorted indices of the features to keep: every feature with a first-order z-score or a
        second-order z-score with a partner above its threshold, and ``ranked_base``.

        Thresholds: each family of tests (n first-order, n · |partners| second-order) gets the z
        that admits on average ``false_positives`` / 2 features the function ignores (Bonferroni on
        the standard normal null): about 4.3 and 5.1 at n = 4,096 with 64 partners and the default
        0.1. A false positive costs the trees one more column; a miss costs a coefficient.

        First pass (``ranked_base`` None, ``y`` the values): the partners are the (at most
        ``max_partners``) strongest first-order features. Residual pass (``y`` a proxy's residual):
        ``ranked_base`` are the features already kept, strongest first (e.g. by the proxy's split
        gain), and the first ``max_partners`` of them are the partners, so an interaction of a new
        feature with a feature the proxy uses shows up even where that feature's own effect is fit
        away."""
        n = self.signs.shape[1]
        z_first = self.first_order(y)
        keep = z_first > threshold(false_positives / 2, n)
        if ranked_base is None:
            strong = np.flatnonzero(keep)
            partners = strong[np.argsort(-z_first[strong], kind="stable")][:max_partners]
        else:
            partners = np.asarray(ranked_base, dtype=np.int64)[:max_partners]
            keep[np.asarray(ranked_base, dtype=np.int64)] = True
        if len(partners):
            keep |= self.second_order(y, partners) > threshold(false_positives / 2, n * len(partners))
        return np.flatnonzero(keep)


def threshold(false_positives: float, tests: int) -> float:
    """The z above which ``tests`` standard normal |z| admit ``false_positives`` on average."""
    from scipy.special import ndtri

    return float(-ndtri(min(0.5, false_positives / (2.0 * max(tests, 1)))))
