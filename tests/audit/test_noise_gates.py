"""The gates decide with intervals: passed, failed, or undecided when an interval straddles the
threshold; the subjects an undecided gate names are the ones the adaptive budget grows."""

from __future__ import annotations

from spex.audit.gates import evaluate_gates, undecided_subjects
from spex.audit.spec.schema import Gates
from spex.engine.ranking_diff import diff_rankings


def _row(members, value, se, rank, labels=None):
    return {"members": members, "labels": labels or [f"w{m}" for m in members], "value": value, "se": se,
            "rank": rank}


BASE = [_row([1], 2.0, 0.05, 1), _row([2], 1.0, 0.05, 2), _row([3], 0.5, 0.05, 3), _row([4], 0.1, 0.05, 4)]


def _gates(**kw):
    return Gates(**kw)


def test_significant_changes_pass_fail_and_undecided():
    same = {"s": diff_rankings(BASE, BASE, k=3, min_effect=0.2)}
    moved = [_row([1], 2.0, 0.05, 1), _row([2], 0.2, 0.05, 3), _row([3], 0.5, 0.05, 2), _row([4], 0.1, 0.05, 4)]
    changed = {"s": diff_rankings(moved, BASE, k=3, min_effect=0.2)}
    noisy = [_row([1], 2.0, 0.3, 1), _row([2], 0.7, 0.3, 2), _row([3], 0.5, 0.3, 3), _row([4], 0.1, 0.3, 4)]
    unclear = {"s": diff_rankings(noisy, BASE, k=3, min_effect=0.2)}
    gate = _gates(max_significant_changes=0, min_effect=0.2)
    rankings = {"s": BASE}
    (quiet,) = evaluate_gates(gate, faithfulness={}, rankings=rankings, diffs=same, k=3)
    (fired,) = evaluate_gates(gate, faithfulness={}, rankings=rankings, diffs=changed, k=3)
    (open_,) = evaluate_gates(gate, faithfulness={}, rankings=rankings, diffs=unclear, k=3)
    assert (quiet.state, fired.state, open_.state) == ("passed", "failed", "undecided")
    assert fired.details["changes"]["s"][0]["name"] == "w2" and fired.value == 1.0
    assert undecided_subjects([open_]) == {"s"} and undecided_subjects([fired, quiet]) == set()


def test_faithfulness_decides_with_its_interval():
    gate = _gates(faithfulness_min=0.8)

    def state(interval):
        (g,) = evaluate_gates(gate, faithfulness={"s": sum(interval) / 2}, rankings={}, diffs=None, k=3,
                              faithfulness_intervals={"s": interval})
        return g.state

    assert state((0.85, 0.95)) == "passed" and state((0.6, 0.75)) == "failed" and state((0.75, 0.9)) == "undecided"


def test_forbidden_is_in_the_top_k_only_when_its_interval_says_so():
    gate = _gates(forbidden=["w3"])
    sure = [_row([1], 2.0, 0.01, 1), _row([3], 1.5, 0.01, 2), _row([2], 1.0, 0.01, 3), _row([4], 0.1, 0.01, 4)]
    unsure = [_row([1], 2.0, 0.01, 1), _row([2], 1.0, 0.01, 2), _row([4], 0.55, 0.2, 3), _row([3], 0.5, 0.2, 4)]
    absent = [_row([1], 2.0, 0.01, 1), _row([2], 1.0, 0.01, 2), _row([4], 0.9, 0.01, 3), _row([3], 0.1, 0.01, 4)]
    states = []
    for table in (sure, unsure, absent):
        (g,) = evaluate_gates(gate, faithfulness={}, rankings={"s": table}, diffs=None, k=2)
        states.append(g.state)
    assert states == ["failed", "passed", "passed"]
    (g,) = evaluate_gates(gate, faithfulness={}, rankings={"s": unsure}, diffs=None, k=3)
    assert g.state == "undecided" and g.details["possible"] == 1  # rank 3 or 4: maybe in the top 3
