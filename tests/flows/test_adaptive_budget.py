"""Audit until sure: ``max_budget`` adds masks only while a gate is undecided, reusing every stored
mask, and says how many it added and why; at the ceiling an undecided verdict stays undecided."""

from __future__ import annotations

from tests.flows.flow_models import features_spec


def _one_subject(model, **overrides):
    spec = features_spec(model, **overrides)
    spec["subjects"] = spec["subjects"][:1]
    return spec


def test_adds_masks_only_when_undecided_and_reuses_the_store(flow_env, bert_v1, tmp_path):
    import spex.audit

    db = f"sqlite:///{tmp_path / 'meta.db'}"
    first = spex.audit.run(_one_subject(bert_v1, seed=5, holdout=64), db_url=db)
    low, high = first.subjects["food"].heldout_r2_interval
    assert low is not None and high is not None and low < high

    # a threshold far below the interval: decided at once, nothing added
    quiet = spex.audit.run(_one_subject(bert_v1, seed=5, holdout=64, max_budget=480,
                                        gates={"faithfulness_min": low - 1.0}), db_url=db)
    assert quiet.verdict == "passed" and quiet.budget_rounds == []
    assert quiet.subjects["food"].budget == 120 and quiet.model_calls["masks_computed"] == 0  # all from the store

    # a threshold inside the interval: undecided at 120 masks, so the audit adds masks
    sure = spex.audit.run(_one_subject(bert_v1, seed=5, holdout=64, max_budget=480,
                                       gates={"faithfulness_min": (low + high) / 2}), db_url=db)
    assert sure.budget_rounds, "an undecided gate must add masks"
    round_one = sure.budget_rounds[0]
    assert round_one["undecided_gates"] == ["faithfulness_min"] and round_one["budgets"] == {"food": [120, 240]}
    # the 120 stored masks are reused: a round computes only what it adds (the pairs of a larger
    # sample begin with those of the smaller one), and the masks added are counted
    assert 0 < round_one["masks_added"] <= 240 - 120 + 1
    final = sure.subjects["food"]
    assert final.budget == max(b for r in sure.budget_rounds for b in r["budgets"]["food"])
    assert final.stats["from_store"] >= 120
    if sure.verdict == "undecided":  # the ceiling was reached undecided: it says so
        assert final.budget == 480
    else:
        assert sure.verdict in ("passed", "failed")

    from spex.records.metadata import MetadataStore

    with MetadataStore(db) as store:
        record = store.get_audit(sure.audit_id)
        assert len(record.subjects) == 1  # recorded once, from the deciding round
        (subject,) = record.subjects
        assert subject.metrics["budget"] == final.budget
        # the recorded design is the final round's: its unique masks (a few repeat at n = 12)
        before_last = sure.budget_rounds[-1]["budgets"]["food"][0]
        assert before_last < {a.role: a.count for a in subject.ablation_sets}["train"] <= final.budget


def test_the_ceiling_reached_undecided_is_exit_code_three(flow_env, bert_v1, tmp_path):
    import spex.audit
    from flows.cli import EXIT_CODES, exit_code

    db = f"sqlite:///{tmp_path / 'meta.db'}"
    first = spex.audit.run(_one_subject(bert_v1, seed=6, holdout=64), db_url=db)
    low, high = first.subjects["food"].heldout_r2_interval
    at_ceiling = spex.audit.run(_one_subject(bert_v1, seed=6, holdout=64, max_budget=120,
                                             gates={"faithfulness_min": (low + high) / 2}), db_url=db)
    assert at_ceiling.verdict == "undecided" and at_ceiling.budget_rounds == [] and not at_ceiling.passed
    assert exit_code(at_ceiling) == EXIT_CODES["undecided"] == 3
    (gate,) = at_ceiling.gates
    assert gate.state == "undecided" and gate.passed is False
