"""Registry verdicts on a real local MLflow store (SQLite backend, a registered model version): each spec
keeps its own verdict tags, and the aggregate ``spex.passed`` is true only while every spec's latest
verdict passed — two specs audited on one version in both orders, a re-audit of the same spec, the
failure path, a stale audit, names that are not valid tag keys. Plus the interaction table logged per
subject run read back from MLflow with its standard errors and intervals."""

from __future__ import annotations

import datetime as dt
import itertools
from pathlib import Path

import numpy as np
import pytest
from mlflow import MlflowClient

from spex.audit.plan import ModelInfo
from spex.audit.recording import Destinations, fail_audit, finish_audit, open_audit, publish
from spex.audit.search import interaction_frame
from spex.records import verdicts
from spex.records.gate import Gate
from spex.records.tracking import AuditTracker

GATES = {
    "passed": [Gate("faithfulness_min", 0.5, 0.9, True)],
    "failed": [Gate("faithfulness_min", 0.5, 0.2, False)],
    "undecided": [Gate("faithfulness_min", 0.5, 0.9, True),
                  Gate("max_significant_changes", 0, 1, False, "<=", state="undecided")],
}
_ids = itertools.count()


@pytest.fixture(scope="module")
def stores(tmp_path_factory) -> Destinations:
    """One local MLflow store (SQLite) and metadata DB for the module, the data dir in a tmp folder."""
    root = tmp_path_factory.mktemp("verdicts")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SPEX_DATA_DIR", str(root / "data"))
        yield Destinations(db_url=f"sqlite:///{root / 'meta.db'}", tracking_uri=f"sqlite:///{root / 'mlflow.db'}")


def registered(to: Destinations, name: str, tmp_path: Path) -> ModelInfo:
    """Version 1 of a registry model ``name`` (an empty folder stands for its weights)."""
    client = to.tracker.client
    client.create_registered_model(name)
    (tmp_path / "weights").mkdir(exist_ok=True)
    version = client.create_model_version(name, source=(tmp_path / "weights").as_uri()).version
    uri = f"models:/{name}/{version}"
    return ModelInfo(uri=uri, name=name, revision=uri, registry_name=name, registry_version=str(version),
                     kind="classifier", describe={}, key=uri)


def audit(to: Destinations, model: ModelInfo, spec: str | None, verdict: str, tmp_path: Path, *,
          lens: str = "features", crash: bool = False) -> str:
    """One audit of ``model`` under the spec named ``spec``, through the record stage's own functions:
    opened, then gated and published with ``verdict`` (or, with ``crash``, failed on the error path)."""
    audit_id = f"audit-{next(_ids):04d}"
    opened = open_audit(to, audit_id, model, {"name": spec, "lens": lens, "seed": 0, "subjects": []})
    if crash:
        fail_audit(to, audit_id, opened.run_id, "RuntimeError: CUDA out of memory", model)
        return audit_id
    passed = finish_audit(to, opened, GATES[verdict], {"min_heldout_r2": 0.9})
    assert passed is (verdict == "passed")
    report = {"html": tmp_path / "report.html", "json": tmp_path / "interactions.json"}
    report["html"].write_text("<html></html>")
    report["json"].write_text("{}")
    published = publish(to, opened, {k: str(v) for k, v in report.items()}, model, passed, 0.9, verdict=verdict)
    assert published.registry_tags[verdicts.TAG_PASSED] == tags(to, model)[verdicts.TAG_PASSED]
    return audit_id


def tags(to: Destinations, model: ModelInfo) -> dict[str, str]:
    """The version's tags as a fresh client reads them from the store."""
    return MlflowClient(to.tracking_uri).get_model_version(model.registry_name, model.registry_version).tags


def spec_tags(to: Destinations, model: ModelInfo, spec: str) -> dict[str, str]:
    prefix = verdicts.PREFIX + verdicts.spec_key(spec) + "."
    return {k.removeprefix(prefix): v for k, v in tags(to, model).items() if k.startswith(prefix)}


def test_a_failed_spec_is_not_hidden_by_another_spec_passing_later(stores, tmp_path):
    model = registered(stores, "order-fail-first", tmp_path)
    a = audit(stores, model, "heads-release", "failed", tmp_path)
    assert tags(stores, model)["spex.passed"] == "false"
    b = audit(stores, model, "data-release", "passed", tmp_path)
    assert tags(stores, model)["spex.passed"] == "false"
    heads, data = spec_tags(stores, model, "heads-release"), spec_tags(stores, model, "data-release")
    assert (heads["verdict"], heads["audit_id"], heads["status"]) == ("failed", a, "succeeded")
    assert (data["verdict"], data["audit_id"], data["name"]) == ("passed", b, "data-release")
    for stamp in (heads["time"], heads["started"], data["time"]):
        when = dt.datetime.fromisoformat(stamp)
        assert when.utcoffset() == dt.timedelta(0) and abs(dt.datetime.now(dt.timezone.utc) - when) < dt.timedelta(minutes=10)
    assert tags(stores, model)["spex.audit_id"] == b  # the last audit to publish, as before


def test_a_pass_then_another_spec_failing_fails_the_version(stores, tmp_path):
    model = registered(stores, "order-pass-first", tmp_path)
    audit(stores, model, "data-release", "passed", tmp_path)
    assert tags(stores, model)["spex.passed"] == "true"
    audit(stores, model, "heads-release", "failed", tmp_path)
    assert tags(stores, model)["spex.passed"] == "false"
    assert spec_tags(stores, model, "data-release")["verdict"] == "passed"


def test_a_newer_audit_of_the_same_spec_replaces_its_verdict(stores, tmp_path):
    model = registered(stores, "re-audit", tmp_path)
    audit(stores, model, "heads-release", "failed", tmp_path)
    audit(stores, model, "data-release", "passed", tmp_path)
    assert tags(stores, model)["spex.passed"] == "false"
    again = audit(stores, model, "heads-release", "passed", tmp_path)
    assert tags(stores, model)["spex.passed"] == "true"
    assert spec_tags(stores, model, "heads-release")["audit_id"] == again
    audit(stores, model, "data-release", "undecided", tmp_path)  # undecided is not a pass
    assert tags(stores, model)["spex.passed"] == "false"
    assert spec_tags(stores, model, "data-release")["verdict"] == "undecided"


def test_an_audit_that_fails_on_the_error_path_fails_its_spec(stores, tmp_path):
    model = registered(stores, "crash", tmp_path)
    audit(stores, model, "heads-release", "passed", tmp_path)
    crashed = audit(stores, model, "heads-release", "passed", tmp_path, crash=True)
    heads = spec_tags(stores, model, "heads-release")
    assert (heads["verdict"], heads["status"], heads["audit_id"]) == ("failed", "failed", crashed)
    assert tags(stores, model)["spex.passed"] == "false" and tags(stores, model)["spex.audit_status"] == "failed"
    record = stores.store.get_audit(crashed)
    assert (record.status, record.verdict) == ("failed", "failed")


def test_a_stale_audit_never_replaces_a_newer_verdict_of_its_spec(stores, tmp_path):
    model = registered(stores, "stale", tmp_path)
    tracker: AuditTracker = stores.tracker
    now = dt.datetime.now(dt.timezone.utc)
    common = {"status": "succeeded", "spec": "heads-release"}
    tracker.tag_model_version(model.registry_name, "1", audit_id="newer", verdict="failed", started=now, **common)
    tracker.tag_model_version(model.registry_name, "1", audit_id="older", verdict="passed",
                              started=now - dt.timedelta(hours=1), **common)
    heads = spec_tags(stores, model, "heads-release")
    assert (heads["audit_id"], heads["verdict"]) == ("newer", "failed")
    assert tags(stores, model)["spex.passed"] == "false"


def test_spec_names_become_distinct_valid_tag_keys(stores, tmp_path):
    model = registered(stores, "names", tmp_path)
    names = ["heads lens / v2", "heads_lens___v2", "../etc", "réglage", None]
    for name in names:
        audit(stores, model, name, "passed", tmp_path)
    audit(stores, model, None, "failed", tmp_path, lens="data")
    keys = {verdicts.spec_key(n, "features") for n in names}
    assert len(keys) == len(names) and verdicts.spec_key("heads_lens___v2") == "heads_lens___v2"
    recorded = verdicts.spec_verdicts(tags(stores, model))
    assert set(recorded) == keys | {"unnamed-data"}
    assert recorded["unnamed-features"].verdict == "passed" and recorded["unnamed-data"].verdict == "failed"
    assert spec_tags(stores, model, "heads lens / v2")["name"] == "heads lens / v2"
    assert tags(stores, model)["spex.passed"] == "false"


def test_the_logged_interaction_table_carries_standard_errors_and_intervals(stores, tmp_path, global_tracking_uri):
    global_tracking_uri(stores.tracking_uri)  # MlflowClient.load_table reads the process-global URI
    tracker: AuditTracker = stores.tracker
    rows = [{"members": [0, 2], "labels": ["not", "bad"], "order": 2, "value": 0.61, "rank": 1, "se": 0.05,
             "ci_low": 0.512, "ci_high": 0.708},
            {"members": [1], "labels": ["good"], "order": 1, "value": -0.25, "rank": 2, "se": None, "ci_low": None,
             "ci_high": None}]
    run = tracker.start_audit_run("table-audit", "table-model")
    sub = tracker.start_subject_run(run, "s0")
    experiment = tracker.experiment_id("table-model")
    for attempt in range(2):  # the second log replaces the table (log_table alone would append)
        tracker.log_interactions(sub, interaction_frame(rows, "fbii"), index="fbii")
        table = MlflowClient(stores.tracking_uri).load_table(experiment, "interactions/fbii.json", run_ids=[sub])
        assert list(table.columns) == ["rank", "members", "labels", "order", "value", "se", "ci_low", "ci_high"]
        assert len(table) == 2
        assert table.loc[0, ["se", "ci_low", "ci_high"]].tolist() == [0.05, 0.512, 0.708]
        assert table.loc[1, ["se", "ci_low", "ci_high"]].isna().all()
        assert list(table["labels"]) == ["not × bad", "good"]
    np.testing.assert_array_equal(table["value"], [0.61, -0.25])
