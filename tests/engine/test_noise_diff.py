"""The noise-aware diff: Benjamini–Hochberg against a reference computation, and the classes on
hand-made tables whose standard errors are known."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import norm

from spex.engine.ranking_diff import benjamini_hochberg, diff_rankings, rank_intervals, ranking_rows


def _reference_bh(p: list[float], q: float) -> set[int]:
    """BH by its definition: the largest k with p(k) <= k q / m; reject the k smallest."""
    m = len(p)
    order = sorted(range(m), key=lambda i: p[i])
    largest = 0
    for k in range(1, m + 1):
        if p[order[k - 1]] <= k * q / m:
            largest = k
    return set(order[:largest])


@pytest.mark.parametrize("seed", range(20))
def test_bh_matches_the_definition(seed: int) -> None:
    g = np.random.default_rng(seed)
    p = np.concatenate([g.uniform(size=g.integers(1, 30)), g.uniform(0, 0.01, size=g.integers(0, 10))]).tolist()
    rejected, adjusted = benjamini_hochberg(p, 0.1)
    assert set(np.flatnonzero(rejected)) == _reference_bh(p, 0.1)
    # the adjusted values decide the same, and at every level
    for q in (0.01, 0.05, 0.2):
        assert set(np.flatnonzero(adjusted <= q)) == _reference_bh(p, q)


def test_bh_on_a_worked_example() -> None:
    # m = 5, q = 0.05: thresholds 0.01 ... 0.05; p(4) = 0.041 > 0.04, p(5) = 0.2 > 0.05, p(3) = 0.029 <= 0.03: reject 3
    rejected, adjusted = benjamini_hochberg([0.041, 0.001, 0.029, 0.2, 0.012], 0.05)
    assert rejected.tolist() == [False, True, True, False, True]
    assert adjusted[1] == pytest.approx(0.005) and adjusted[3] == pytest.approx(0.2)


def test_bh_ignores_untestable_values() -> None:
    rejected, adjusted = benjamini_hochberg([0.001, math.nan, 0.5], 0.05)
    assert rejected.tolist() == [True, False, False] and math.isnan(adjusted[1])


def _row(members, value, se, rank):
    return {"members": members, "labels": [f"w{m}" for m in members], "value": value, "se": se, "rank": rank}


BASE = [_row([1], 2.0, 0.05, 1), _row([2, 3], -1.5, 0.05, 2), _row([4], 1.0, 0.05, 3), _row([5], 0.8, 0.05, 4),
        _row([6], 0.02, 0.05, 5), _row([7], 0.01, 0.05, 6)]
CAND = [_row([1], 2.02, 0.05, 1), _row([2, 3], 1.4, 0.05, 2), _row([6], 0.9, 0.05, 3), _row([5], 0.5, 0.05, 4),
        _row([4], 0.03, 0.05, 5), _row([7], 0.0, 0.05, 6)]


def test_the_classes_of_a_hand_made_diff() -> None:
    d = diff_rankings(CAND, BASE, k=4, fdr=0.05)
    kinds = {c.members: c.kind for c in d.tested}
    assert kinds == {(1,): "within_noise", (2, 3): "sign_flip", (6,): "appeared", (5,): "changed",
                     (4,): "disappeared"}
    five = next(c for c in d.tested if c.members == (5,))
    assert five.delta == pytest.approx(-0.3) and five.delta_se == pytest.approx(math.hypot(0.05, 0.05))
    assert five.z == pytest.approx(-0.3 / math.hypot(0.05, 0.05))
    assert five.p_value == pytest.approx(2 * norm.sf(0.3 / math.hypot(0.05, 0.05)))
    assert d.metrics()["significant_changes"] == 4


def test_an_unchanged_model_has_nothing_significant() -> None:
    d = diff_rankings(BASE, BASE, k=4)
    assert not d.significant and all(c.kind == "within_noise" for c in d.tested)
    assert d.resolved_jaccard == 1.0 and d.resolved_max_rank_shift == 0


def test_min_effect_is_a_practical_floor_and_splits_the_noise() -> None:
    d = diff_rankings(CAND, BASE, k=4, min_effect=0.35)
    assert {c.members for c in d.significant} == {(2, 3), (6,), (4,)}  # |Δ| 0.3 of (5,) is below the floor
    resolution = {c.members: c.resolution for c in d.tested if not c.significant}
    assert resolution[(1,)] == "equivalent"  # |Δ| 0.02 ± 0.14 is inside ±0.35
    assert resolution[(5,)] == "unresolved"  # |Δ| 0.3 ± 0.14 may be beyond 0.35


def test_an_unrecorded_interaction_counts_as_zero_with_the_typical_error() -> None:
    d = diff_rankings(CAND[:3], BASE, k=4)  # the candidate recorded only three rows
    four = next(c for c in d.tested if c.members == (4,))
    assert four.candidate_value is None and four.delta == pytest.approx(-1.0)
    assert four.delta_se == pytest.approx(math.hypot(0.05, 0.05)) and four.kind == "disappeared"


def test_rank_intervals_merge_what_the_intervals_cannot_tell_apart() -> None:
    rows = [_row([1], 2.0, 0.01, 1), _row([2], 1.0, 0.3, 2), _row([3], 0.9, 0.3, 3), _row([4], 0.1, 0.01, 4)]
    ranks = rank_intervals(ranking_rows(rows), 1.96)
    assert ranks[(1,)] == (1, 1) and ranks[(2,)] == (2, 3) and ranks[(3,)] == (2, 3) and ranks[(4,)] == (4, 4)
