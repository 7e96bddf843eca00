"""Release diffs (spex.engine.ranking_diff) and gates (spex.audit.gates) on hand-made rankings, and the JSON export read back by shapiq."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from spex.audit.gates import evaluate_gates, forbidden_hits
from spex.audit.spec import Gates
from spex.engine.ranking_diff import diff_rankings
from tests.report.report_fixtures import recorded_release


def rows(*items):
    return [{"members": list(m), "labels": [f"w{i}" for i in m], "value": v, "rank": r}
            for r, (m, v) in enumerate(items, start=1)]


BASE = rows(((0,), 1.0), ((1, 2), -0.8), ((3,), 0.5), ((4,), 0.2), ((5,), 0.1))
CAND = rows(((1, 2), 0.9), ((0,), 0.7), ((6,), 0.6), ((3,), -0.4), ((5,), 0.05))


def test_diff_of_two_rankings():
    d = diff_rankings(CAND, BASE, k=3, subject="s")
    assert [c.members for c in d.appeared] == [(6,)]
    assert [c.members for c in d.disappeared] == [(3,)]
    assert [c.members for c in d.sign_flips] == [(1, 2)]  # -0.8 -> +0.9: the effect reversed
    assert d.jaccard == pytest.approx(2 / 4)
    # (3,) was 3rd in the baseline, 4th in the candidate; (0,) 1st -> 2nd; (1, 2) 2nd -> 1st
    assert d.rank_shifts == {"w0": 1, "w1 × w2": 1, "w3": 1} and d.max_rank_shift == 1
    assert -1.0 <= d.rank_correlation <= 1.0
    same = diff_rankings(BASE, BASE, k=5)
    assert same.jaccard == 1.0 and same.max_rank_shift == 0 and same.rank_correlation == pytest.approx(1.0)
    assert not same.appeared and not same.disappeared and not same.sign_flips


def test_an_interaction_missing_from_the_candidate_counts_as_ranked_below_its_table():
    d = diff_rankings(CAND[:1], BASE, k=3)  # the candidate recorded only (1, 2)
    assert d.rank_shifts == {"w0": 1, "w1 × w2": 1, "w3": 1}  # w0 and w3 count as rank 2 (below the table)
    assert [c.members for c in d.disappeared] == [(0,), (3,)]


def test_forbidden_patterns():
    table = rows(((0,), 1.0), ((1, 2), -0.8))
    table[0]["labels"] = ["Nurse,"]
    table[1]["labels"] = ["he", "doctor"]
    assert [h["rank"] for h in forbidden_hits(table, ["nurse"], k=5)] == [1]
    assert [h["rank"] for h in forbidden_hits(table, [["Doctor", "HE"]], k=5)] == [2]
    assert forbidden_hits(table, [["he"]], k=5) == []  # a list is an exact set, not "involving"
    assert forbidden_hits(table, ["doctor"], k=1) == []  # only the top k count


def test_gates():
    diffs = {"s": diff_rankings(CAND, BASE, k=3)}
    gates = evaluate_gates(Gates(faithfulness_min=0.8, top_k_jaccard_min=0.6, max_rank_shift=1, forbidden=["w6"]),
                           faithfulness={"s": 0.85}, rankings={"s": CAND}, diffs=diffs, k=3)
    outcome = {g.metric: (g.value, g.passed) for g in gates}
    assert outcome == {"faithfulness_min": (0.85, True), "top_k_jaccard_min": (0.5, False),
                       "max_rank_shift": (1.0, True), "forbidden_in_top_k": (1.0, False)}
    # without a baseline, the baseline gates cannot pass silently
    alone = evaluate_gates(Gates(top_k_jaccard_min=0.1), faithfulness={"s": 0.9}, rankings={"s": CAND}, diffs=None, k=3)
    assert [(g.metric, g.passed) for g in alone] == [("top_k_jaccard_min", False)]
    skipped = evaluate_gates(Gates(top_k_jaccard_min=0.1, max_rank_shift=2, faithfulness_min=0.5),
                             faithfulness={"s": 0.9}, rankings={"s": CAND}, diffs=None, k=3, without_baseline="skip")
    assert [(g.metric, g.passed) for g in skipped] == [("faithfulness_min", True)]
    # an unmeasured subject fails the faithfulness gate
    nan = evaluate_gates(Gates(faithfulness_min=0.1), faithfulness={"s": float("nan")}, rankings={}, diffs=None, k=3)
    assert not nan[0].passed


def test_evaluated_gates_are_what_the_store_records(tmp_path: Path):
    """One gate type: evaluate_gates returns the store's Gate; as_dict/from_dict round-trip it (a task
    result), and the store reads back exactly what was evaluated."""
    from spex.records.metadata import Gate, MetadataStore, ModelRef

    diffs = {"s": diff_rankings(CAND, BASE, k=3).to_dict()}  # the form a Prefect task hands over
    gates = evaluate_gates(Gates(faithfulness_min=0.8, top_k_jaccard_min=0.6, max_rank_shift=1, forbidden=["w6"]),
                           faithfulness={"s": 0.85}, rankings={"s": CAND}, diffs=diffs, k=3)
    assert all(type(g) is Gate for g in gates)
    assert [Gate.from_dict(g.as_dict()) for g in gates] == gates
    assert list(gates[0].as_dict()) == ["metric", "threshold", "value", "passed", "comparator", "details", "state"]
    assert Gate.from_dict({"metric": "m", "threshold": 1, "value": None, "passed": False}) == Gate("m", 1, None, False)
    with MetadataStore(f"sqlite:///{tmp_path / 'meta.db'}") as store:
        store.start_audit(ModelRef("m", "1"), {}, audit_id="gated")
        store.record_gates("gated", gates)
        assert store.finish_audit("gated") is False  # the Jaccard and forbidden gates failed
        assert sorted(store.get_audit("gated").gates, key=lambda g: g.metric) == sorted(gates, key=lambda g: g.metric)


def test_the_export_is_read_back_by_shapiq(tmp_path: Path):
    import shapiq

    from spex.records.metadata import MetadataStore
    from spex.report import write_audit_report

    with MetadataStore(f"sqlite:///{tmp_path / 'meta.db'}") as store:
        base, release = recorded_release(store)
        paths = write_audit_report(store, release, tmp_path / "out")
    document = json.loads(paths["json"].read_text())
    assert document["audit"]["id"] == release and document["audit"]["baseline_audit_id"] == base
    (subject,) = document["subjects"].values()
    assert subject["diff"]["k"] == 5 and len(subject["first_order"]["values"]) == subject["n_players"]
    for name in subject["shapiq_files"]:
        values = shapiq.InteractionValues.load(paths["json"].parent / "shapiq" / name)
        assert values.n_players == subject["n_players"]
        if values.index == "FBII":
            top = subject["interactions"][0]
            assert values[tuple(top["members"])] == pytest.approx(top["value"])
            assert values.max_order == 2
        else:
            assert values.index == "SV"
