"""Integration: an audit recorded through ``spex.records.tracking`` (and ``spex.records.metadata``) against a real
``mlflow server`` backed by Postgres, then read back with a plain ``MlflowClient``: runs and their
nesting, params, metrics, dataset inputs, artifacts, the interaction table, the logged LightGBM proxy
(loads and predicts the same values), the registry tags, and the DB rows that point at all of it.
Recording the same audit again adds nothing."""

from __future__ import annotations

import hashlib
import io
import json
import urllib.request

import lightgbm as lgb
import matplotlib
import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure
from mlflow import MlflowClient

from spex.engine.spectrum import Spectrum
from spex.records.metadata import Gate, MetadataStore, ModelRef
from spex.records.tracking import AuditTracker

matplotlib.use("Agg")

MODEL = "sentiment-clf"
LABELS = ["the", "movie", "was", "not", "good", "at", "all", "really"]
SPEC = {"method": "proxyspex", "lens": "features", "budget": {"alpha": 4, "holdout": 64}, "lightgbm": {"max_depth": [3, 5]}}
TRUTH = {(): 0.2, (4,): 1.5, (3, 4): -2.0, (1,): 0.4, (0, 6, 7): 0.3}


def _subject(key: str, seed: int) -> dict:
    """Masks, values of a known spectrum, a fitted proxy and the ranked table, for one subject."""
    rng = np.random.default_rng(seed)
    n = len(LABELS)
    truth = Spectrum.from_dict(n, TRUTH)
    masks = rng.random((256, n)) < 0.5
    values = truth.predict(masks) + rng.normal(0, 0.01, len(masks))
    holdout = rng.random((64, n)) < 0.5
    booster = lgb.train(
        {"objective": "regression", "max_depth": 3, "learning_rate": 0.1, "verbose": -1, "seed": seed},
        lgb.Dataset(masks.astype(np.float64), values),
        num_boost_round=50,
    )
    prediction = booster.predict(holdout.astype(np.float64))
    target = truth.predict(holdout)
    r2 = 1 - np.sum((target - prediction) ** 2) / np.sum((target - target.mean()) ** 2)
    return {
        "key": key,
        "masks": masks,
        "values": values,
        "holdout": holdout,
        "holdout_values": target,
        "booster": booster,
        "table": truth.interactions(index="fbii", order=3, labels=LABELS),
        "r2": float(r2),
        "digest": hashlib.sha256(key.encode()).hexdigest(),
    }


def _record(tracker: AuditTracker, store: MetadataStore, audit_id: str, subjects: list[dict], report_path) -> dict:
    """What the audit flow does at its record stage, for a registry model version."""
    model = ModelRef(MODEL, f"models:/{MODEL}/1", source_uri=f"models:/{MODEL}/1", registry_version="1")
    store.start_audit(model, SPEC, audit_id=audit_id, seeds={"masks": 0})
    run_id = tracker.start_audit_run(audit_id, MODEL, spec=SPEC, model_revision=model.revision, registry_version="1")
    store.attach_mlflow(audit_id, run_id=run_id, experiment_id=tracker.experiment_id(MODEL))
    out = {"run_id": run_id, "subjects": {}}
    for s in subjects:
        sub_run = tracker.start_subject_run(run_id, s["key"], params={"n_features": len(LABELS)})
        sid = store.record_subject(
            audit_id, lens="features", content_digest=s["digest"], key=s["key"], labels=LABELS, mlflow_run_id=sub_run
        )
        train = tracker.log_ablation_set(sub_run, s["masks"], s["values"], fingerprint="fp-" + s["digest"][:24], labels=LABELS)
        store.record_ablation_set(
            audit_id, sid, fingerprint="fp-" + s["digest"][:24], n_features=train.n_features, count=train.count,
            location=train.artifact_uri, size_bytes=train.size_bytes, sha256=train.sha256,
            mlflow_dataset_digest=train.dataset_digest,
        )
        held = tracker.log_ablation_set(
            sub_run, s["holdout"], s["holdout_values"], fingerprint="fp-" + s["digest"][:24], role="holdout"
        )
        store.record_ablation_set(
            audit_id, sid, fingerprint="fp-" + s["digest"][:24], role="holdout", n_features=held.n_features,
            count=held.count, location=held.artifact_uri, size_bytes=held.size_bytes, sha256=held.sha256,
            mlflow_dataset_digest=held.dataset_digest,
        )
        hyper = {"max_depth": 3, "learning_rate": 0.1, "num_boost_round": 50}
        model_uri = tracker.log_proxy(sub_run, s["booster"], params=hyper)
        store.record_proxy(audit_id, sid, hyperparameters=hyper, cv_r2=s["r2"], mlflow_model_uri=model_uri)
        tracker.log_interactions(sub_run, s["table"])
        store.record_interactions(audit_id, sid, s["table"])
        tracker.log_metrics(sub_run, {"heldout_r2": s["r2"], "cv_r2": s["r2"]})
        tracker.log_stage_metrics(sub_run, {"sample": 0.01, "ablate": 2.0, "fit": 0.5}, calls=len(s["masks"]) + len(s["holdout"]))
        store.record_validation(audit_id, sid, heldout_r2=s["r2"], n_heldout=len(s["holdout"]))
        fig = Figure()
        fig.add_subplot().bar(range(len(s["table"])), s["table"]["value"])
        tracker.log_figure(sub_run, fig, "figures/interactions.png")
        tracker.end_run(sub_run)
        out["subjects"][s["key"]] = {"run_id": sub_run, "model_uri": model_uri, "train": train, "subject_id": sid}
    faithfulness = min(s["r2"] for s in subjects)
    store.record_gates(audit_id, [Gate("min_heldout_r2", 0.5, faithfulness, faithfulness >= 0.5)])
    passed = store.finish_audit(audit_id)
    tracker.log_metrics(run_id, {"min_heldout_r2": faithfulness})
    tracker.log_report(run_id, report_path)
    tracker.tag_model_version(MODEL, "1", audit_id=audit_id, status="succeeded", faithfulness=faithfulness, passed=passed, run_id=run_id)
    tracker.end_run(run_id)
    out["faithfulness"] = faithfulness
    return out


@pytest.fixture
def registered_model(mlflow_server):
    """Version 1 of a registry model: the thing being audited (a small LightGBM model logged the same way)."""
    tracker = AuditTracker(mlflow_server)
    client = tracker.client
    experiment = client.create_experiment("training")
    run = client.create_run(experiment).info.run_id
    X = np.random.default_rng(0).random((64, 4))
    booster = lgb.train({"objective": "regression", "verbose": -1}, lgb.Dataset(X, X[:, 0]), num_boost_round=3)
    uri = tracker.log_proxy(run, booster, name="model")
    client.create_registered_model(MODEL)
    version = client.create_model_version(MODEL, source=uri, run_id=run, model_id=uri.removeprefix("models:/"))
    assert version.version == "1"
    return MODEL


def test_audit_round_trip_through_a_real_mlflow_server(mlflow_server, metadata_url, registered_model, tmp_path, global_tracking_uri):
    # MlflowClient.load_table and loading a "models:/" URI read MLflow's process-global tracking URI.
    global_tracking_uri(mlflow_server)
    tracker = AuditTracker(mlflow_server)
    store = MetadataStore(metadata_url)
    subjects = [_subject("review-1", 1), _subject("review-2", 2)]
    report = tmp_path / "report.html"
    report.write_text("<html><body><h1>audit</h1></body></html>")
    recorded = _record(tracker, store, "audit-0001", subjects, report)

    client = MlflowClient(mlflow_server)  # a fresh client: read back only what the server stored
    experiment = client.get_experiment_by_name(f"spex/{MODEL}")
    assert experiment is not None and experiment.tags["spex.model"] == MODEL
    runs = client.search_runs([experiment.experiment_id])
    parents = [r for r in runs if r.data.tags.get("spex.kind") == "audit"]
    children = [r for r in runs if r.data.tags.get("spex.kind") == "subject"]
    assert len(parents) == 1 and len(children) == 2
    parent = parents[0]
    assert parent.info.run_id == recorded["run_id"] and parent.info.status == "FINISHED"
    assert parent.data.tags["spex.audit_id"] == "audit-0001"
    assert parent.data.params["budget.alpha"] == "4" and parent.data.params["method"] == "proxyspex"
    assert parent.data.params["lightgbm.max_depth"] == "[3, 5]"
    assert parent.data.metrics["min_heldout_r2"] == pytest.approx(recorded["faithfulness"])
    assert [a.path for a in client.list_artifacts(parent.info.run_id, "report")] == ["report/report.html"]

    for s in subjects:
        info = recorded["subjects"][s["key"]]
        child = client.get_run(info["run_id"])
        assert child.data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert child.data.tags["spex.subject"] == s["key"] and child.data.tags["spex.audit_id"] == "audit-0001"
        assert child.info.status == "FINISHED"
        metrics = child.data.metrics
        assert metrics["heldout_r2"] == pytest.approx(s["r2"]) and metrics["calls"] == 320
        assert metrics["seconds/ablate"] == 2.0 and metrics["seconds/total"] == pytest.approx(2.51)
        assert metrics["throughput/calls_per_s"] == pytest.approx(160.0)

        # the ablation sets: dataset inputs whose source is the Parquet artifact itself
        inputs = {i.tags[0].value: i.dataset for i in child.inputs.dataset_inputs}
        assert set(inputs) == {"train", "holdout"}
        assert inputs["train"].digest == info["train"].dataset_digest
        artifacts = {a.path for a in client.list_artifacts(child.info.run_id, "ablation")}
        assert artifacts == {"ablation/train.parquet", "ablation/holdout.parquet"}
        local = client.download_artifacts(child.info.run_id, "ablation/train.parquet", str(tmp_path / s["key"]))
        data = open(local, "rb").read()
        assert hashlib.sha256(data).hexdigest() == info["train"].sha256
        frame = pd.read_parquet(io.BytesIO(data))
        np.testing.assert_array_equal(frame[[f"f{i}" for i in range(len(LABELS))]].to_numpy(), s["masks"])
        np.testing.assert_array_equal(frame["value"].to_numpy(), s["values"])
        source_url = json.loads(inputs["train"].source)["url"]
        with urllib.request.urlopen(source_url, timeout=10) as response:
            assert response.read() == data

        # the interaction table, as the UI shows it
        table = client.load_table(experiment.experiment_id, "interactions/fbii.json", run_ids=[child.info.run_id])
        assert list(table["rank"]) == list(s["table"]["rank"])
        assert list(table["labels"]) == [" × ".join(x) for x in s["table"]["labels"]]
        assert list(table["members"]) == [", ".join(map(str, m)) for m in s["table"]["members"]]
        np.testing.assert_allclose(table["value"], s["table"]["value"])
        assert "figures/interactions.png" in {a.path for a in client.list_artifacts(child.info.run_id, "figures")}

        # the proxy: a LoggedModel output of the run, loadable by flavor and as pyfunc
        assert [o.model_id for o in child.outputs.model_outputs] == [info["model_uri"].removeprefix("models:/")]
        import mlflow.lightgbm
        import mlflow.pyfunc

        X = s["holdout"].astype(np.float64)
        expected = s["booster"].predict(X)
        np.testing.assert_array_equal(mlflow.lightgbm.load_model(info["model_uri"]).predict(X), expected)
        np.testing.assert_allclose(mlflow.pyfunc.load_model(info["model_uri"]).predict(X), expected, rtol=0, atol=0)

    # the registry model version carries the audit's outcome
    tags = client.get_model_version(MODEL, "1").tags
    assert tags["spex.audit_id"] == "audit-0001" and tags["spex.audit_status"] == "succeeded"
    # the tag keeps 6 significant digits: rounding moves it by at most half a unit of the 6th digit
    assert float(tags["spex.faithfulness"]) == pytest.approx(recorded["faithfulness"], rel=0.5e-5)
    assert tags["spex.passed"] == "true" and tags["spex.audit_run_id"] == parent.info.run_id

    # the metadata DB points at all of it
    audit = store.get_audit("audit-0001")
    assert audit.mlflow_run_id == parent.info.run_id and audit.mlflow_experiment_id == experiment.experiment_id
    assert audit.status == "succeeded" and audit.passed is True and audit.model.registry_version == "1"
    for rec in audit.subjects:
        info = recorded["subjects"][rec.subject.key]
        assert rec.mlflow_run_id == info["run_id"]
        assert rec.proxies[0].mlflow_model_uri == info["model_uri"]
        train = next(a for a in rec.ablation_sets if a.role == "train")
        assert (train.location, train.sha256, train.mlflow_dataset_digest, train.count) == (
            info["train"].artifact_uri, info["train"].sha256, info["train"].dataset_digest, 256,
        )

    # recording the same audit again (a retried flow) duplicates nothing, in MLflow or the DB
    counts = store.counts()
    n_models = len(client.search_logged_models(experiment_ids=[experiment.experiment_id]))
    again = _record(tracker, store, "audit-0001", subjects, report)
    assert again["run_id"] == recorded["run_id"]
    assert {k: v["run_id"] for k, v in again["subjects"].items()} == {k: v["run_id"] for k, v in recorded["subjects"].items()}
    assert {k: v["model_uri"] for k, v in again["subjects"].items()} == {k: v["model_uri"] for k, v in recorded["subjects"].items()}
    assert len(client.search_runs([experiment.experiment_id])) == 3
    assert len(client.search_logged_models(experiment_ids=[experiment.experiment_id])) == n_models == 2
    child = recorded["subjects"]["review-1"]["run_id"]
    assert len(client.load_table(experiment.experiment_id, "interactions/fbii.json", run_ids=[child])) == len(subjects[0]["table"])
    assert len(client.get_run(child).inputs.dataset_inputs) == 2
    assert store.counts() == counts
    store.close()
