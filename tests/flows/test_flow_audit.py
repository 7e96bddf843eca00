"""The audit flow end to end on a tiny real model under Prefect: rows in SQLite and Postgres, MLflow runs
with artifacts, the report and its export written; a rerun makes zero model calls."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from tests.flows.flow_models import features_spec


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'meta.db'}"
    return request.getfixturevalue("postgres_url")


def test_audit_records_everything(flow_env, bert_v1, db_url):
    from mlflow import MlflowClient

    from flows.audit import audit
    from spex import settings
    from spex.records.metadata import MetadataStore

    # no faithfulness gate: the tiny random model's held-out R² (about -0.6, interval about [-2, 0] on
    # 32 masks) straddles any threshold the spec allows, so that gate is honestly undecided here
    spec = features_spec(bert_v1, gates={"forbidden": ["zebra"]})
    result = audit(spec, db_url=db_url)
    assert result.passed is True and result.kind == "audit"
    assert {g.metric for g in result.gates} == {"forbidden_in_top_k"} and result.verdict == "passed"

    # --- metadata DB rows
    with MetadataStore(db_url) as store:
        record = store.get_audit(result.audit_id)
        assert record.status == "succeeded" and record.passed is True and record.kind == "audit"
        assert record.model.revision.startswith("folder:") and record.model.source_uri == str(bert_v1)
        assert record.mlflow_run_id == result.mlflow_run_id
        assert record.spec["lens"] == "features" and record.spec["budget"] == 120
        assert {s.subject.key for s in record.subjects} == {"food", "movie"}
        for s in record.subjects:
            assert s.subject.lens == "features" and s.subject.n_features == len(s.subject.labels) > 5
            assert s.validation is not None and s.validation.n_heldout == 32
            assert math.isfinite(s.validation.heldout_r2)
            assert s.validation.heldout_r2 == pytest.approx(result.subjects[s.subject.key].heldout_r2)
            assert len(s.validation.removal["choices"]) == 2  # down and up, predicted vs actual
            roles = {a.role: a for a in s.ablation_sets}
            assert set(roles) == {"train", "holdout"} and roles["holdout"].count == 32
            assert 100 <= roles["train"].count <= 120 and roles["train"].sha256 and roles["train"].location
            assert len(s.proxies) == 1 and s.proxies[0].mlflow_model_uri.startswith("models:/")
            assert {"fbii", "shapley"} <= set(s.interaction_counts) <= {"fbii", "shapley", "pairs"}
            ranking = store.get_interactions(record.id, s.subject.id, index="fbii")
            expected = result.subjects[s.subject.key].ranking
            assert [tuple(m) for m in ranking["members"]] == [tuple(r["members"]) for r in expected]
            np.testing.assert_allclose(ranking["value"], [r["value"] for r in expected])
            assert s.metrics["masks_computed"] + s.metrics["masks_from_store"] > 0
        assert [g.metric for g in record.gates] == ["forbidden_in_top_k"]

    # --- MLflow: the audit run and one run per subject, with their artifacts
    client = MlflowClient(settings.mlflow_tracking_uri())
    parent = client.get_run(result.mlflow_run_id)
    assert parent.info.status == "FINISHED"
    assert parent.data.tags["spex.audit_id"] == result.audit_id and parent.data.tags["spex.passed"] == "true"
    assert parent.data.params["method"] == "proxyspex" and parent.data.params["lens"] == "features"
    assert "min_heldout_r2" in parent.data.metrics and parent.data.metrics["passed"] == 1.0
    report_artifacts = {a.path for a in client.list_artifacts(parent.info.run_id, "report")}
    assert {"report/report.html", "report/interactions.json", "report/shapiq"} <= report_artifacts
    children = client.search_runs([parent.info.experiment_id],
                                  filter_string=f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")
    assert sorted(c.data.tags["spex.subject"] for c in children) == ["food", "movie"]
    for child in children:
        assert child.info.status == "FINISHED"
        assert {a.path for a in client.list_artifacts(child.info.run_id, "ablation")} == {
            "ablation/train.parquet", "ablation/holdout.parquet"}
        assert "interactions/fbii.json" in {a.path for a in client.list_artifacts(child.info.run_id, "interactions")}
        assert len(child.outputs.model_outputs) == 1  # the LightGBM proxy, a LoggedModel
        assert "heldout_r2" in child.data.metrics and "seconds/ablate" in child.data.metrics

    # --- the report and its export, under the data dir
    html = Path(result.report["html"])
    assert html.is_file() and html.parent == flow_env["data"] / "reports" / result.audit_id
    text = html.read_text()
    assert "food" in text and "movie" in text and "pairwise interactions" in text
    export = json.loads(Path(result.report["json"]).read_text())
    assert export["audit"]["id"] == result.audit_id and set(export["subjects"]) == {"food", "movie"}

    import shapiq

    for name in export["subjects"]["food"]["shapiq_files"]:
        values = shapiq.InteractionValues.load(html.parent / "shapiq" / name)
        assert values.n_players == export["subjects"]["food"]["n_players"]
        assert values.index in ("FBII", "SV")


def test_a_rerun_makes_no_model_call(flow_env, bert_v1, tmp_path):
    from flows.audit import audit
    from spex.audit import runtime
    from spex.records.metadata import MetadataStore

    db = f"sqlite:///{tmp_path / 'meta.db'}"
    spec = features_spec(bert_v1, seed=11)  # a seed of its own: nothing cached by other tests
    first = audit(spec, db_url=db)
    assert first.model_calls["masks_computed"] > 0 and first.model_calls["model_loads"] <= 1

    runtime.clear()  # a fresh process: no model, no value function in memory
    second = audit(spec, db_url=db)
    assert second.model_calls == {"masks_computed": 0, "model_loads": 0, "value_functions_built": 0}
    for key in ("food", "movie"):
        assert second.subjects[key].ranking == first.subjects[key].ranking
        assert second.subjects[key].heldout_r2 == first.subjects[key].heldout_r2

    # Without Prefect's cache the ablation store still serves every mask: the model is loaded (to build
    # the value function's identity) but never called on a mask.
    runtime.clear()
    third = audit(spec, db_url=db, refresh_cache=True)
    assert third.model_calls["masks_computed"] == 0
    assert third.subjects["food"].ranking == first.subjects["food"].ranking

    # A changed budget is a different audit: nothing cached may carry the old budget over. Its masks are
    # a prefix of the 120-mask audit's (the same seed), so the store may serve all of them; what must not
    # come back is the old fit: the recorded training set holds at most 90 masks.
    fourth = audit({**spec, "budget": 90}, db_url=db)
    assert fourth.subjects["food"].budget == 90 and fourth.audit_id != third.audit_id

    with MetadataStore(db) as store:
        audits = store.list_audits()
        trained = {s.subject.key: {a.role: a.count for a in s.ablation_sets}["train"]
                   for s in store.get_audit(fourth.audit_id).subjects}
    assert len(audits) == 4 and all(a.status == "succeeded" for a in audits)
    assert set(trained) == {"food", "movie"} and all(0 < count <= 90 for count in trained.values())


def test_heads_and_data_lenses(flow_env, bert_v1, tmp_path):
    from flows.audit import audit
    from spex.records.metadata import MetadataStore

    db = f"sqlite:///{tmp_path / 'meta.db'}"
    heads = {
        "model": str(bert_v1), "lens": "heads",
        "subjects": [{"id": "negation", "prompts": ["the food was not bad", "never again", "good but slow"],
                      "answers": ["positive", "negative", "negative"]}],
        "holdout": 16, "ranking": {"top_k": 5},
    }
    data = {
        "model": str(bert_v1), "lens": "data",
        "lens_options": {"train": [{"text": t, "label": y} for t, y in (
            ("the food was good", "positive"), ("great movie", "positive"), ("i loved it", "positive"),
            ("not bad at all", "positive"), ("terrible service", "negative"), ("boring", "negative"),
            ("never again", "negative"), ("the service was slow", "negative"))]},
        "subjects": [{"id": "target", "text": "the movie was not bad", "label": "positive"}],
        "holdout": 16, "ranking": {"top_k": 5},
    }
    results = [audit(heads, db_url=db), audit(data, db_url=db)]
    with MetadataStore(db) as store:
        for result, lens, n in zip(results, ("heads", "data"), (8, 8)):
            record = store.get_audit(result.audit_id)
            (subject,) = record.subjects
            assert record.status == "succeeded" and subject.subject.lens == lens and subject.subject.n_features == n
            assert subject.validation.n_heldout == 16
    heads_html = Path(results[0].report["html"]).read_text()
    assert "L0H0" in heads_html and 'class="grid"' in heads_html
    data_html = Path(results[1].report["html"]).read_text()
    assert "terrible service" in data_html and 'class="examples"' in data_html
