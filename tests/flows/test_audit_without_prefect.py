"""``spex.audit.run`` (no Prefect) and the Prefect flow give the same audit: the same interactions, the
same held-out R² and removal test, the same model calls and the same records in the metadata DB and
MLflow — on the tiny real classifier, each run in a data dir of its own (both compute every mask)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.flows.flow_models import features_spec


def _records(db_url: str, audit_id: str) -> dict:
    """What the metadata DB holds about an audit, without what differs between any two runs (ids,
    times, run ids, seconds, paths)."""
    from spex.records.metadata import MetadataStore

    with MetadataStore(db_url) as store:
        record = store.get_audit(audit_id)
        subjects = {}
        for s in record.subjects:
            subjects[s.subject.key] = {
                "subject": (s.subject.lens, s.subject.n_features, tuple(s.subject.labels)),
                "ablation_sets": sorted((a.role, a.count, a.fingerprint, a.sha256) for a in s.ablation_sets),
                "validation": (s.validation.heldout_r2, s.validation.n_heldout, s.validation.removal),
                "proxies": [(p.method, p.cv_r2, p.hyperparameters) for p in s.proxies],
                "interactions": {index: store.get_interactions(audit_id, s.subject.id, index=index).to_dict("list")
                                 for index in s.interaction_counts},
                "metrics": {k: v for k, v in s.metrics.items() if k not in ("seconds", "mlflow_run_id")},
            }
        return {"status": record.status, "passed": record.passed, "kind": record.kind,
                "model": (record.model.name, record.model.revision), "min_heldout_r2": record.min_heldout_r2,
                "gates": [(g.metric, g.threshold, g.value, g.passed) for g in record.gates], "subjects": subjects}


def _mlflow(audit_id: str) -> dict:
    """The audit's MLflow runs: params, tags and metrics that do not vary between runs."""
    from mlflow import MlflowClient

    from spex import settings

    client = MlflowClient(settings.mlflow_tracking_uri())
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()],
                              filter_string=f"tags.`spex.audit_id` = '{audit_id}'")
    (parent,) = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = client.search_runs([parent.info.experiment_id],
                                  filter_string=f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")

    def numbers(run) -> dict:  # not the wall seconds per stage, nor the throughput derived from them
        return {k: v for k, v in run.data.metrics.items() if not k.startswith(("seconds", "throughput"))}

    return {"status": parent.info.status, "params": parent.data.params, "metrics": numbers(parent),
            "passed": parent.data.tags["spex.passed"],
            "subjects": {c.data.tags["spex.subject"]: (c.info.status, c.data.params, numbers(c)) for c in children}}


def test_run_without_prefect_is_the_flow(flow_env, bert_v1, tmp_path, monkeypatch):
    import spex.audit
    from flows.audit import audit
    from spex.audit import runtime

    spec = features_spec(bert_v1, seed=21, gates={"faithfulness_min": -1.0, "forbidden": ["zebra"]})
    outcomes, records, runs = {}, {}, {}
    for name in ("flow", "plain"):
        data = tmp_path / name
        data.mkdir()
        monkeypatch.setenv("SPEX_DATA_DIR", str(data))  # its own ablation store and MLflow store
        runtime.clear()  # and its own model load
        db = f"sqlite:///{data / 'meta.db'}"
        outcome = audit(spec, db_url=db) if name == "flow" else spex.audit.run(spec, db_url=db)
        outcomes[name], records[name], runs[name] = outcome, _records(db, outcome.audit_id), _mlflow(outcome.audit_id)
        assert Path(outcome.report["html"]).is_file()

    flowed, plain = outcomes["flow"], outcomes["plain"]
    assert type(plain) is type(flowed) and plain.audit_id != flowed.audit_id
    assert (plain.kind, plain.passed, plain.min_heldout_r2) == (flowed.kind, flowed.passed, flowed.min_heldout_r2)
    assert plain.gates == flowed.gates and plain.notes == flowed.notes and plain.diffs == flowed.diffs
    assert plain.model == flowed.model and plain.model_calls == flowed.model_calls
    assert plain.model_calls["masks_computed"] > 0 and plain.runner == flowed.runner == {"runner": "local"}
    assert set(plain.subjects) == set(flowed.subjects) == {"food", "movie"}
    for key, mine in plain.subjects.items():
        theirs = flowed.subjects[key]
        assert mine.ranking == theirs.ranking  # same masks, same batches: bit-identical values
        assert mine.heldout_r2 == theirs.heldout_r2 and mine.removal == theirs.removal
        assert (mine.n, mine.budget) == (theirs.n, theirs.budget)
        measured = ("seconds", "compute_seconds", "peak_rss_mib")  # measurements, not counters
        counters = {k: v for k, v in mine.stats.items() if k not in measured}
        assert counters == {k: v for k, v in theirs.stats.items() if k not in measured}
        assert set(mine.stats["seconds"]) == set(theirs.stats["seconds"]) == {
            "sample", "ablate", "fit", "search", "validate", "record"}
        assert set(mine.stats["peak_rss_mib"]["stages"]) == set(theirs.stats["peak_rss_mib"]["stages"]) == set(
            mine.stats["seconds"])
    assert records["plain"] == records["flow"]
    assert records["plain"]["status"] == "succeeded" and len(records["plain"]["subjects"]) == 2
    assert runs["plain"] == runs["flow"]
    assert runs["plain"]["status"] == "FINISHED" and set(runs["plain"]["subjects"]) == {"food", "movie"}


def test_outcome_json_keeps_the_cli_keys(flow_env, bert_v1, tmp_path):
    """``spex audit --json`` prints the outcome's ``to_dict`` with the keys it always had."""
    import spex.audit
    from flows.cli import _json_outcome

    outcome = spex.audit.run(features_spec(bert_v1, subjects=features_spec(bert_v1)["subjects"][:1]),
                             db_url=f"sqlite:///{tmp_path / 'meta.db'}")
    printed = _json_outcome(outcome, top=3)
    assert list(printed) == ["audit_id", "kind", "passed", "verdict", "budget_rounds", "gates", "diffs", "model", "baseline_audit_id",
                             "mlflow_run_id", "mlflow_experiment_id", "report", "registry_tags", "min_heldout_r2",
                             "notes", "model_calls", "seconds", "runner", "subjects"]
    assert set(printed["subjects"]["food"]) == {"heldout_r2", "heldout_r2_interval", "n", "budget", "stats", "removal",
                                                "top"}
    assert len(printed["subjects"]["food"]["top"]) == 3
    assert set(printed["model"]) == {"uri", "name", "revision", "registry_name", "registry_version", "kind",
                                     "describe", "key"}
    assert printed["min_heldout_r2"] == pytest.approx(outcome.subjects["food"].heldout_r2)
