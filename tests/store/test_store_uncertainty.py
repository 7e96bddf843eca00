"""Revision 0002 on SQLite and Postgres: every interaction's standard error and interval, every gate's
state and every audit's verdict are stored and read back exactly; and a database created at 0001,
with audits in it, upgrades in place — its old rows read back with unknown (NaN) intervals and the
state / verdict their ``passed`` implies."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa

import spex
from spex.engine.synthetic import planted
from spex.records.metadata import Gate, MetadataStore, ModelRef, create_engine, current_revision, downgrade, upgrade

V1 = ModelRef("sentiment", "rev-1")
V2 = ModelRef("sentiment", "rev-2")
LABELS = [f"w{i}" for i in range(10)]
UNKNOWN_RANKS = (2, 5)  # rows whose standard error is unknown (NaN), as the engine reports an unidentifiable value


def explained_table() -> pd.DataFrame:
    """A real interaction table with intervals: Faith-Banzhaf of a noisy planted game, as spex explains it."""
    game = planted(10, "hierarchical", k=3, order=2, noise=0.05, seed=11)
    table = spex.explain(game, 10, budget=300, method="faith_banzhaf", seed=1).interactions(index="fbii", order=2)
    table = table.assign(labels=[tuple(LABELS[m] for m in members) for members in table["members"]])
    unknown = table["rank"].isin(UNKNOWN_RANKS)
    for key in ("se", "ci_low", "ci_high"):
        table.loc[unknown, key] = np.nan
    table.attrs["index"] = "fbii"
    assert table["se"].notna().sum() >= 10 and (table["se"].dropna() > 0).all()
    return table


def _subject(store: MetadataStore, audit_id: str) -> int:
    return store.record_subject(audit_id, lens="features", content_digest="c" * 64, key="s0", labels=LABELS)


def test_interaction_intervals_round_trip(store):
    table = explained_table()
    store.start_audit(V1, {"lens": "features"}, audit_id="a1")
    sid = _subject(store, "a1")
    assert store.record_interactions("a1", sid, table) == len(table)

    got = store.get_interactions("a1", sid)
    assert list(got.columns) == ["members", "labels", "order", "value", "rank", "se", "ci_low", "ci_high"]
    for key in ("value", "se", "ci_low", "ci_high"):  # exactly the floats recorded, NaN where unknown
        np.testing.assert_array_equal(got[key].to_numpy(), table[key].to_numpy())
        assert got[key].dtype == np.float64
    assert got.loc[got["rank"].isin(UNKNOWN_RANKS), "se"].isna().all()

    # the JSON rows the pipeline hands over (None: unknown) are stored the same way
    rows = [{**r, "se": None if np.isnan(r["se"]) else r["se"]} for r in table.to_dict("records")]
    store.record_interactions("a1", sid, rows, index="copy")
    again = store.get_interactions("a1", sid, index="copy")
    np.testing.assert_array_equal(again["se"].to_numpy(), table["se"].to_numpy())

    store.finish_audit("a1")
    across = store.top_interactions_across_versions("sentiment", "s0", index="fbii", top=5)
    np.testing.assert_array_equal(across["se"].to_numpy(), table["se"].to_numpy()[:5])
    np.testing.assert_array_equal(across["ci_high"].to_numpy(), table["ci_high"].to_numpy()[:5])


@pytest.mark.parametrize("bad, message", [({"se": -0.1}, "row 1: se is negative"),
                                          ({"ci_low": 1.0, "ci_high": 0.5}, "row 1: ci_low 1.0 is above ci_high 0.5")])
def test_an_impossible_interval_is_refused_and_nothing_is_stored(store, bad, message):
    store.start_audit(V1, {}, audit_id="a1")
    sid = _subject(store, "a1")
    row = {"members": [0], "value": 0.7, "se": 0.1, "ci_low": 0.5, "ci_high": 0.9, **bad}
    with pytest.raises(ValueError, match=message):
        store.record_interactions("a1", sid, [row], index="fbii")
    assert store.counts()["interactions"] == 0 and store.get_audit("a1").status == "failed"


def test_gate_states_and_the_verdict_round_trip(store):
    gates = [Gate("faithfulness_min", 0.5, 0.9, True),
             Gate("max_significant_changes", 0, 1, False, "<=", {"note": "within noise"}, state="undecided")]
    cases = {"undecided": gates, "failed": [*gates, Gate("forbidden_in_top_k", 0, 1, False, "<=")],
             "passed": gates[:1]}
    for verdict, recorded in cases.items():
        store.start_audit(V1, {}, audit_id=f"audit-{verdict}")
        store.record_gates(f"audit-{verdict}", recorded)
        assert store.finish_audit(f"audit-{verdict}") is (verdict == "passed")
        audit = store.get_audit(f"audit-{verdict}")
        assert (audit.verdict, audit.passed) == (verdict, verdict == "passed")
        assert sorted(audit.gates, key=lambda g: g.metric) == sorted(recorded, key=lambda g: g.metric)
    assert {g.metric: g.state for g in store.get_audit("audit-failed").gates} == {
        "faithfulness_min": "passed", "max_significant_changes": "undecided", "forbidden_in_top_k": "failed"}
    assert {a.id: a.verdict for a in store.list_audits()} == {f"audit-{v}": v for v in cases}

    # given explicitly; no gates and no verdict: nothing was gated; a failed audit's verdict is failed
    store.start_audit(V2, {}, audit_id="explicit")
    assert store.finish_audit("explicit", verdict="undecided") is False
    assert store.get_audit("explicit").verdict == "undecided"
    store.start_audit(V2, {}, audit_id="ungated")
    assert store.finish_audit("ungated") is None and store.get_audit("ungated").verdict is None
    store.fail_audit("ungated", RuntimeError("boom"))
    assert (store.get_audit("ungated").verdict, store.get_audit("ungated").passed) == ("failed", False)
    store.start_audit(V2, {}, audit_id="ungated")  # re-opened: running again, no verdict yet
    assert store.get_audit("ungated").verdict is None
    with pytest.raises(ValueError, match="verdict must be one of passed, failed, undecided"):
        store.finish_audit("explicit", verdict="maybe")


def test_the_database_refuses_a_state_outside_the_three(db_url):
    with MetadataStore(db_url) as store:
        store.start_audit(V1, {}, audit_id="a1")
        store.record_gates("a1", [Gate("m", 0, 1, True)])
        for statement in ("UPDATE gate_results SET state = 'maybe'", "UPDATE audits SET verdict = 'maybe'"):
            with pytest.raises(sa.exc.IntegrityError), store.engine.begin() as connection:
                connection.execute(sa.text(statement))


def _insert_at_0001(engine: sa.Engine) -> None:
    """Rows as spex wrote them before revision 0002: three audits (passed, failed gate, running), one
    subject with a ranking, their gates."""
    meta = sa.MetaData()
    meta.reflect(engine)
    t = meta.tables
    now = dt.datetime(2026, 11, 30, 12, 0, tzinfo=dt.timezone.utc)
    with engine.begin() as c:
        (mv,) = c.execute(t["model_versions"].insert().returning(t["model_versions"].c.id),
                          [{"name": "sentiment", "revision": "rev-1", "created_at": now}]).scalars()
        c.execute(t["audits"].insert(), [
            {"id": audit_id, "model_version_id": mv, "kind": "audit", "spec": {}, "status": status, "passed": passed,
             "started_at": now + dt.timedelta(minutes=i), "library_versions": {}, "seeds": {}}
            for i, (audit_id, status, passed) in enumerate(
                [("old-pass", "succeeded", True), ("old-fail", "succeeded", False), ("old-running", "running", None)])])
        (sid,) = c.execute(t["subjects"].insert().returning(t["subjects"].c.id),
                           [{"lens": "features", "content_digest": "c" * 64, "key": "s0", "n_features": 10,
                             "labels": LABELS, "created_at": now}]).scalars()
        c.execute(t["audit_subjects"].insert(), [{"audit_id": "old-pass", "subject_id": sid, "metrics": {},
                                                  "recorded_at": now}])
        c.execute(t["interactions"].insert(), [
            {"audit_id": "old-pass", "subject_id": sid, "index_name": "fbii", "rank": r, "order": 1,
             "members_key": str(r), "members": [r], "labels": [LABELS[r]], "value": 1.0 / r} for r in (1, 2, 3)])
        c.execute(t["gate_results"].insert(), [
            {"audit_id": audit_id, "metric": metric, "comparator": ">=", "threshold": 0.5, "value": value,
             "passed": value >= 0.5, "details": {}, "recorded_at": now}
            for audit_id, metric, value in [("old-pass", "faithfulness_min", 0.9), ("old-fail", "faithfulness_min", 0.2),
                                            ("old-fail", "top_k_jaccard_min", 0.7)]])


def test_a_0001_database_with_rows_upgrades_in_place(db_url):
    engine = create_engine(db_url)
    try:
        assert upgrade(engine, "0001_initial") == "0001_initial"
        _insert_at_0001(engine)
    finally:
        engine.dispose()

    with MetadataStore(db_url) as store:  # first use migrates to head
        assert current_revision(store.engine) == "0002_uncertainty_and_verdicts"
        old = store.get_audit("old-pass")
        assert (old.status, old.passed, old.verdict) == ("succeeded", True, "passed")
        assert [(g.metric, g.passed, g.state) for g in old.gates] == [("faithfulness_min", True, "passed")]
        failed = store.get_audit("old-fail")
        assert (failed.passed, failed.verdict) == (False, "failed")
        assert {g.metric: g.state for g in failed.gates} == {"faithfulness_min": "failed", "top_k_jaccard_min": "passed"}
        assert store.get_audit("old-running").verdict is None
        sid = old.subjects[0].subject.id
        rows = store.get_interactions("old-pass", sid)
        assert list(rows["value"]) == [1.0, 0.5, 1.0 / 3]
        assert rows[["se", "ci_low", "ci_high"]].isna().all().all()  # unknown: recorded before intervals were

        # the upgraded database takes new rows with intervals beside the old ones
        table = explained_table()
        store.start_audit(V1, {}, audit_id="new")
        new_sid = store.record_subject("new", lens="features", content_digest="c" * 64, key="s0", labels=LABELS)
        assert new_sid == sid
        store.record_interactions("new", sid, table)
        np.testing.assert_array_equal(store.get_interactions("new", sid)["se"].to_numpy(), table["se"].to_numpy())

    # and back down to 0001: the old rows survive, without the new columns
    engine = create_engine(db_url)
    try:
        assert downgrade(engine, "0001_initial") == "0001_initial"
        columns = {c["name"] for c in sa.inspect(engine).get_columns("interactions")}
        assert not columns & {"se", "ci_low", "ci_high"}
        assert "verdict" not in {c["name"] for c in sa.inspect(engine).get_columns("audits")}
        assert "state" not in {c["name"] for c in sa.inspect(engine).get_columns("gate_results")}
        with engine.connect() as c:
            assert c.execute(sa.text("SELECT count(*) FROM interactions")).scalar_one() == 3 + len(table)
            assert c.execute(sa.text("SELECT count(*) FROM gate_results")).scalar_one() == 3
    finally:
        engine.dispose()
