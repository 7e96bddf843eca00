"""The repository API on SQLite and Postgres: round trips of every table, idempotent re-recording,
all-or-nothing interactions, failures recorded on the audit, and the read queries."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa
from store_scenarios import LABELS, interaction_table, record_audit, subject_digest

from spex.records.metadata import (
    AuditNotFound,
    Gate,
    MetadataStore,
    ModelRef,
    StoreConfigError,
    SubjectNotFound,
    describe_url,
    mask_secrets,
)

V1 = ModelRef("sentiment", "rev-1", source_uri="hf://org/sentiment@rev-1")
V2 = ModelRef("sentiment", "rev-2", source_uri="models:/sentiment/2", registry_version="2")


def _assert_same_interactions(got: pd.DataFrame, expected: pd.DataFrame) -> None:
    assert list(got["members"]) == [tuple(m) for m in expected["members"]]
    assert list(got["labels"]) == [tuple(x) for x in expected["labels"]]
    assert list(got["order"]) == list(expected["order"])
    assert list(got["rank"]) == list(expected["rank"])
    np.testing.assert_allclose(got["value"].to_numpy(), expected["value"].to_numpy(), rtol=0, atol=0)
    assert got.attrs["index"] == expected.attrs["index"]


def test_round_trip_of_every_table(store):
    ids = record_audit(store, "audit-a", model=V2, subjects=("s0", "s1"), seed=3, indices=("fbii", "shapley"))
    store.attach_mlflow("audit-a", run_id="parent-run", experiment_id="7")

    audit = store.get_audit("audit-a")
    assert audit.id == "audit-a" and audit.kind == "audit"
    assert (audit.model.name, audit.model.revision, audit.model.source_uri, audit.model.registry_version) == (
        "sentiment", "rev-2", "models:/sentiment/2", "2",
    )
    assert audit.spec == {"method": "proxyspex", "budget": {"alpha": 4}, "lens": "features", "seed": 3}
    assert audit.seeds == {"masks": 3, "holdout": 4}
    assert audit.status == "succeeded" and audit.passed is True and audit.error is None
    assert audit.code_version.startswith("spex ")
    assert audit.library_versions["lightgbm"] == "4.7.0" and "sqlalchemy" in audit.library_versions
    assert (audit.mlflow_run_id, audit.mlflow_experiment_id) == ("parent-run", "7")
    for stamp in (audit.started_at, audit.finished_at, audit.model.created_at):
        assert stamp.tzinfo is not None and stamp.utcoffset() == dt.timedelta(0)
    assert audit.started_at <= audit.finished_at

    assert [s.subject.key for s in audit.subjects] == ["s0", "s1"]
    s0 = audit.subjects[0]
    assert s0.subject.id == ids["s0"]
    assert s0.subject.lens == "features" and s0.subject.content_digest == subject_digest("s0")
    assert s0.subject.labels == LABELS and s0.subject.n_features == len(LABELS)
    assert s0.subject.description == " ".join(LABELS)
    assert s0.mlflow_run_id == "run-audit-a-s0"
    assert s0.metrics == {"calls": 164, "seconds": {"ablate": 1.5, "fit": 0.3}}
    assert [(a.role, a.count) for a in s0.ablation_sets] == [("holdout", 100), ("train", 64)]
    train = s0.ablation_sets[1]
    assert (train.fingerprint, train.n_features, train.location, train.size_bytes, train.sha256, train.mlflow_dataset_digest) == (
        "fp-" + subject_digest("s0")[:20], 7, "/data/ablation/s0", 4096, "ab" * 32, "d" * 32,
    )
    (proxy,) = s0.proxies
    assert proxy.name == "proxy" and proxy.method == "proxyspex"
    assert proxy.hyperparameters == {"max_depth": 3, "n_estimators": 500, "learning_rate": 0.1}
    assert 0.9 <= proxy.cv_r2 <= 0.91 and proxy.mlflow_model_uri == "models:/m-audit-a-s0"
    v = s0.validation
    assert 0.8 <= v.heldout_r2 <= 0.9 and v.n_heldout == 100 and v.exact_r2 is None
    assert v.removal == [{"k": 1, "predicted": -0.5, "measured": -0.45}] and v.metrics == {"faithfulness_mse": 0.01}
    expected_fbii = interaction_table(3 + 2, index="fbii")
    assert s0.interaction_counts == {"fbii": len(expected_fbii), "shapley": len(interaction_table(5, index="shapley"))}
    assert audit.gates == (
        Gate("min_heldout_r2", 0.5, 0.8, True, ">=", {}),
        Gate("top5_overlap", 0.4, 0.6, True, ">=", {}),
    )
    assert audit.min_heldout_r2 == min(s.validation.heldout_r2 for s in audit.subjects)

    _assert_same_interactions(store.get_interactions("audit-a", ids["s0"], index="fbii"), expected_fbii)
    with pytest.raises(ValueError, match="several indices"):
        store.get_interactions("audit-a", ids["s0"])


def test_re_recording_the_same_audit_duplicates_nothing(store):
    record_audit(store, "audit-a", model=V1, seed=1)
    before = store.counts()
    record_audit(store, "audit-a", model=V1, seed=1)
    assert store.counts() == before
    # a changed result replaces the old one, still without copies
    record_audit(store, "audit-a", model=V1, seed=9)
    assert store.counts() == before
    sid = store.find_subjects("s0")[0].id
    _assert_same_interactions(store.get_interactions("audit-a", sid), interaction_table(9 + 2))
    assert before["model_versions"] == 1 and before["audits"] == 1 and before["subjects"] == 2


def test_subjects_are_shared_across_audits_and_versions(store):
    record_audit(store, "a1", model=V1, seed=1)
    record_audit(store, "a2", model=V2, seed=2)
    counts = store.counts()
    assert counts["subjects"] == 2 and counts["audit_subjects"] == 4 and counts["model_versions"] == 2


def test_interactions_are_all_or_nothing_and_a_failure_fails_the_audit(store):
    ids = record_audit(store, "audit-a", model=V1, seed=1, finish=False)
    sid = ids["s0"]
    good = store.get_interactions("audit-a", sid)

    # The database rejects the batch part-way (two rows for the same interaction): nothing of the
    # new table is kept, the previous ranking is intact, and the audit carries the error.
    bad = interaction_table(7)
    bad = pd.concat([bad, bad.iloc[[0]].assign(rank=len(bad) + 1)], ignore_index=True)
    bad.attrs["index"] = "fbii"
    with pytest.raises(sa.exc.IntegrityError):
        store.record_interactions("audit-a", sid, bad)
    _assert_same_interactions(store.get_interactions("audit-a", sid), good)
    audit = store.get_audit("audit-a")
    assert audit.status == "failed" and audit.passed is False and audit.finished_at is not None
    assert audit.error.splitlines()[0].startswith("IntegrityError")

    # Invalid values never reach the database either.
    nan = interaction_table(7)
    nan.loc[1, "value"] = np.nan
    with pytest.raises(ValueError, match="value is nan"):
        store.record_interactions("audit-a", sid, nan)
    assert store.get_audit("audit-a").error.startswith("ValueError")

    # A retry that succeeds, then finish: the audit is succeeded again and the error cleared.
    store.record_interactions("audit-a", sid, interaction_table(7))
    store.finish_audit("audit-a")
    audit = store.get_audit("audit-a")
    assert audit.status == "succeeded" and audit.error is None and audit.passed is True


def test_interactions_need_a_recorded_subject_and_an_index(store):
    record_audit(store, "audit-a", model=V1, finish=False)
    table = interaction_table(1)
    with pytest.raises(SubjectNotFound):
        store.record_interactions("audit-a", 10_000, table)
    sid = store.find_subjects("s0")[0].id
    table.attrs.pop("index")
    with pytest.raises(ValueError, match="index"):
        store.record_interactions("audit-a", sid, table)
    # plain records work too (rank and order derived)
    n = store.record_interactions("audit-a", sid, [{"members": (4, 3), "value": 2.0}, {"members": [1], "value": -1}], index="mobius")
    got = store.get_interactions("audit-a", sid, index="mobius")
    assert n == 2 and list(got["members"]) == [(3, 4), (1,)] and list(got["rank"]) == [1, 2] and list(got["order"]) == [2, 1]


def test_recording_marks_failure_with_a_masked_error(store):
    audit_id = store.start_audit(V1, {"db": "postgresql+psycopg://spex:hunter2@db.internal/spex"})
    assert len(audit_id) == 32  # generated
    with pytest.raises(RuntimeError):
        with store.recording(audit_id):
            raise RuntimeError("could not reach postgresql://spex:hunter2@db.internal:5432/spex")
    audit = store.get_audit(audit_id)
    assert audit.status == "failed" and audit.passed is False
    assert "hunter2" not in audit.error and "spex:***@db.internal" in audit.error
    assert "Traceback" in audit.error
    assert audit.spec == {"db": "postgresql+psycopg://spex:***@db.internal/spex"}

    other = store.start_audit(V1, {}, audit_id="ok-audit")
    with store.recording(other):
        store.record_gates(other, [Gate("min_heldout_r2", 0.9, 0.7, False, details={"subject": "s0"})])
    audit = store.get_audit("ok-audit")
    assert audit.status == "succeeded" and audit.passed is False  # a failed gate, not a failed audit
    assert audit.gates[0].details == {"subject": "s0"}
    assert store.fail_audit("no-such-audit", "x") is False


def test_gates_are_replaced_and_validated(store):
    store.start_audit(V1, {}, audit_id="g")
    store.record_gates("g", [Gate("a", 1, 2, True), {"metric": "b", "threshold": 1, "value": 0, "passed": False, "comparator": "<="}])
    store.record_gates("g", [Gate("a", 1, 0.5, False)])
    assert store.get_audit("g").gates == (Gate("a", 1.0, 0.5, False),)
    with pytest.raises(ValueError, match="comparator"):
        store.record_gates("g", [Gate("a", 1, 0.5, False, comparator="~")])
    assert store.get_audit("g").gates == (Gate("a", 1.0, 0.5, False),)  # unchanged
    assert store.get_audit("g").status == "failed"


def test_list_audits_by_model_and_status(store):
    record_audit(store, "a1", model=V1, seed=1)
    record_audit(store, "a2", model=V2, seed=2)
    store.start_audit(ModelRef("other", "x"), {}, audit_id="b1")
    store.start_audit(V2, {}, audit_id="a3")
    store.fail_audit("a3", RuntimeError("out of memory"))

    assert [a.id for a in store.list_audits()] == ["a3", "b1", "a2", "a1"]  # newest first
    assert [a.id for a in store.list_audits(model="sentiment")] == ["a3", "a2", "a1"]
    assert [a.id for a in store.list_audits(model="sentiment", status="succeeded")] == ["a2", "a1"]
    assert [a.id for a in store.list_audits(status="running")] == ["b1"]
    assert [a.id for a in store.list_audits(limit=1)] == ["a3"]
    failed = store.list_audits(status="failed")[0]
    assert failed.error == "RuntimeError: out of memory" and failed.n_subjects == 0
    a2 = store.list_audits(model="sentiment", status="succeeded")[0]
    assert a2.n_subjects == 2 and a2.passed is True and a2.registry_version == "2"
    assert a2.min_heldout_r2 == store.get_audit("a2").min_heldout_r2
    with pytest.raises(ValueError, match="status"):
        store.list_audits(status="done")


def test_get_audit_by_prefix(store):
    store.start_audit(V1, {}, audit_id="abcdef-1")
    store.start_audit(V1, {}, audit_id="abcdef-2")
    store.start_audit(V1, {}, audit_id="xyz_%-9")
    assert store.get_audit("abcdef-2").id == "abcdef-2"
    assert store.get_audit("xyz_").id == "xyz_%-9"
    with pytest.raises(AuditNotFound, match="ambiguous"):
        store.get_audit("abcd")
    with pytest.raises(AuditNotFound):
        store.get_audit("xy%")  # LIKE wildcards are literal
    with pytest.raises(AuditNotFound):
        store.get_audit("nope")


def test_top_interactions_across_versions(store):
    record_audit(store, "v1-old", model=V1, seed=1)
    record_audit(store, "v1-new", model=V1, seed=2)  # the latest audit of a version wins
    record_audit(store, "v2", model=V2, seed=3)
    record_audit(store, "v2-failed", model=V2, seed=4, finish=False)
    store.fail_audit("v2-failed", "killed")
    record_audit(store, "other", model=ModelRef("toxicity", "r"), seed=5)

    top = store.top_interactions_across_versions("sentiment", "s0", top=2)
    assert top.attrs["index"] == "fbii" and top.attrs["subject"].key == "s0"
    assert list(top["model_revision"]) == ["rev-1", "rev-1", "rev-2", "rev-2"]
    assert list(top["audit_id"]) == ["v1-new", "v1-new", "v2", "v2"]
    assert list(top["rank"]) == [1, 2, 1, 2]
    assert list(top["registry_version"]) == [None, None, "2", "2"]
    expected = interaction_table(2 + 2)
    assert list(top["members"][:2]) == list(expected["members"][:2])
    assert list(top["value"][:2]) == list(expected["value"][:2])
    assert list(top["labels"][:2]) == list(expected["labels"][:2])

    by_digest = store.top_interactions_across_versions("sentiment", subject_digest("s0")[:10], top=2)
    pd.testing.assert_frame_equal(by_digest, top)
    by_id = store.top_interactions_across_versions("sentiment", top.attrs["subject"].id, top=2)
    pd.testing.assert_frame_equal(by_id, top)
    with_failed = store.top_interactions_across_versions("sentiment", "s0", top=1, statuses=("succeeded", "failed"))
    assert list(with_failed["audit_id"]) == ["v1-new", "v2-failed"]

    assert store.top_interactions_across_versions("nope", "s0").empty
    with pytest.raises(SubjectNotFound):
        store.top_interactions_across_versions("sentiment", "no-such-subject")
    record_audit(store, "v3", model=ModelRef("sentiment", "rev-3"), seed=6, indices=("shapley",))
    with pytest.raises(ValueError, match="several indices"):
        store.top_interactions_across_versions("sentiment", "s0")
    only_v3 = store.top_interactions_across_versions("sentiment", "s0", index="shapley", top=3)
    assert set(only_v3["audit_id"]) == {"v3"} and len(only_v3) == 3


def test_a_key_shared_by_two_subjects_is_ambiguous(store):
    store.start_audit(V1, {}, audit_id="a")
    store.record_subject("a", lens="features", content_digest="d1" * 8, key="same")
    store.record_subject("a", lens="heads", content_digest="d1" * 8, key="same")
    with pytest.raises(SubjectNotFound, match="ambiguous"):
        store.top_interactions_across_versions("sentiment", "same")
    assert [s.lens for s in store.find_subjects("same", lens="heads")] == ["heads"]


def test_urls_never_show_passwords(tmp_path):
    url = "postgresql+psycopg://spex:s3cret-pw@127.0.0.1:1/spex"
    assert "s3cret-pw" not in describe_url(url)
    assert mask_secrets(f"failed: {url} and password=s3cret-pw") == (
        "failed: postgresql+psycopg://spex:***@127.0.0.1:1/spex and password=***"
    )
    with pytest.raises(ConnectionError) as err:
        MetadataStore(url)
    assert "s3cret-pw" not in str(err.value) and "spex:***@127.0.0.1:1" in str(err.value)
    with pytest.raises(StoreConfigError) as err:
        MetadataStore("mysql://root:s3cret-pw@localhost/x")
    assert "s3cret-pw" not in str(err.value)
    store = MetadataStore(f"sqlite:///{tmp_path}/x.db")
    assert repr(store).startswith("MetadataStore('sqlite:///")
    store.close()


def test_plain_postgresql_urls_use_psycopg3():
    from spex.records.metadata.db import normalize_url

    assert normalize_url("postgresql://u@h/db").drivername == "postgresql+psycopg"
    assert normalize_url("postgres://u@h/db").drivername == "postgresql+psycopg"
    assert normalize_url("sqlite:///x.db").drivername == "sqlite"
