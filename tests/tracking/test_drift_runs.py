"""Interaction drift across model versions, on a real local MLflow store (SQLite): the metric keys
(valid for MLflow's own validator, stable, distinct for distinct member sets, decodable), one drift run
per (model, spec, subject) found again by its tags, metrics whose step is the model version (each
interaction's line continues while it is recorded, even out of the top k), idempotent re-logging, the
experiments' kind, and the registry version's description (every spec's row, the owner's text kept)."""

from __future__ import annotations

import itertools

import pytest
from mlflow import MlflowClient
from mlflow.utils.validation import MAX_ENTITY_KEY_LENGTH, _validate_metric_name

from spex.records import verdicts
from spex.records.tracking import (
    EXPERIMENT_KIND,
    TAG_EXPERIMENT_KIND,
    TAG_NOTE,
    VERDICT_HEADING,
    AuditTracker,
    interaction_key,
    members_of_key,
)

NASTY = ["not", "a__f5_b", "f5", "..", ".", "/", "x/y", "über", "日本語", "", " ", "a:b", "L0H3", "x" * 300, "__",
         "-", "a.b", "f1_", "_f2"]


def test_interaction_keys_read_well_and_are_stable():
    assert interaction_key("fbii", [3, 5], ["not", "bad"]) == "fbii/f3_not__f5_bad"
    assert interaction_key("fbii", [5, 3], ["bad", "not"]) == "fbii/f3_not__f5_bad"  # member order does not matter
    assert interaction_key("shapley", [2], ["L0H3"]) == "shapley/f2_L0H3"
    assert interaction_key("fbii", [2], ["f2"]) == "fbii/f2"  # a redacted subject's labels are not repeated
    assert interaction_key("fbii", [], []) == "fbii/empty"
    assert interaction_key("fbii", [1, 4]) == "fbii/f1__f4"


def test_interaction_keys_are_valid_and_distinct_for_distinct_member_sets():
    for labels in (NASTY[:7], NASTY[7:14], NASTY[12:]):
        keys = {}
        for size in range(0, 4):
            for members in itertools.combinations(range(len(labels)), size):
                key = interaction_key("fbii", members, [labels[m] for m in members])
                for suffix in ("value", "ci_low", "ci_high"):
                    _validate_metric_name(f"{key}/{suffix}")  # MLflow's own check: raises when invalid
                    assert len(f"{key}/{suffix}") <= MAX_ENTITY_KEY_LENGTH
                assert "__" not in key.split("/")[1].replace("__f", "|f")  # "__" only between members
                assert members_of_key(key) == members
                keys.setdefault(key, members)
                assert keys[key] == members, f"{members} and {keys[key]} share the key {key}"
    many = [interaction_key("fbii", range(n), ["word"] * n) for n in (60, 61)]
    assert many[0] != many[1] and all(len(k) + 8 <= MAX_ENTITY_KEY_LENGTH for k in many)
    for key in many:
        _validate_metric_name(f"{key}/ci_high")


@pytest.fixture
def tracker(tmp_path, monkeypatch) -> AuditTracker:
    monkeypatch.setenv("SPEX_DATA_DIR", str(tmp_path / "data"))
    return AuditTracker(f"sqlite:///{tmp_path / 'mlflow.db'}")


def row(members, labels, value, rank, se=0.01):
    return {"members": members, "labels": labels, "value": value, "rank": rank, "se": se,
            "ci_low": value - 2 * se, "ci_high": value + 2 * se}


def history(tracker: AuditTracker, run_id: str, key: str) -> list[tuple[int, float]]:
    return sorted((m.step, m.value) for m in tracker.client.get_metric_history(run_id, key))


def test_a_drift_run_draws_each_top_interaction_across_versions(tracker):
    a, b, c, d = ([3, 4], ["not", "bad"]), ([1], ["food"]), ([0, 2], ["The", "was"]), ([5], ["at"])
    v1 = [row(*a, 0.9, 1), row(*b, 0.5, 2), row(*c, 0.3, 3)]
    v2 = [row(*c, 0.8, 1), row(*a, 0.6, 2), row(*d, 0.4, 3), row(*b, 0.1, 4)]
    drift = tracker.drift_run("clf", spec_key="release", spec_name="release", subject="food's", lens="features")
    assert tracker.drift_run("clf", spec_key="release", spec_name="release", subject="food's").run_id == drift.run_id
    other = tracker.drift_run("clf", spec_key="release", spec_name="release", subject="service")
    assert other.run_id != drift.run_id
    assert [r.run_id for r in tracker.drift_runs("clf", spec_key="release", subject="food's")] == [drift.run_id]
    assert {r.subject for r in tracker.drift_runs()} == {"food's", "service"}

    for version, ranking, r2, verdict in ((1, v1, 0.92, "passed"), (2, v2, 0.81, "undecided")):
        audit_run = tracker.start_audit_run(f"audit-{version}", "clf", run_name=f"release · clf v{version}")
        logged = tracker.log_drift(drift, version=version, audit_id=f"audit-{version}", audit_run_id=audit_run,
                                   index="fbii", ranking=ranking, top_k=2, heldout_r2=r2, heldout_r2_low=r2 - 0.05,
                                   heldout_r2_high=r2 + 0.03, verdict=verdict)
        assert logged
    key = {name: interaction_key("fbii", *x) for name, x in (("a", a), ("b", b), ("c", c), ("d", d))}
    assert history(tracker, drift.run_id, f"{key['a']}/value") == [(1, 0.9), (2, 0.6)]
    assert history(tracker, drift.run_id, f"{key['b']}/value") == [(1, 0.5), (2, 0.1)]  # left the top 2, still drawn
    assert history(tracker, drift.run_id, f"{key['c']}/value") == [(2, 0.8)]  # entered the top 2 at version 2
    assert history(tracker, drift.run_id, f"{key['a']}/ci_low") == [(1, 0.9 - 0.02), (2, 0.6 - 0.02)]
    metrics = tracker.client.get_run(drift.run_id).data.metrics
    assert f"{key['d']}/value" not in metrics  # never in a top 2
    assert history(tracker, drift.run_id, "faithfulness/heldout_r2") == [(1, 0.92), (2, 0.81)]
    assert history(tracker, drift.run_id, "verdict") == [(1, 1.0), (2, 0.5)]

    again = tracker.log_drift(drift, version=2, audit_id="audit-2", audit_run_id=audit_run, index="fbii",
                              ranking=v2, top_k=2, verdict="undecided")
    assert again == {}  # a retried publish adds no second point
    rerun = tracker.log_drift(drift, version=2, audit_id="audit-2b", audit_run_id=audit_run, index="fbii",
                              ranking=v2, top_k=2, heldout_r2=0.81, heldout_r2_low=0.81 - 0.05,
                              heldout_r2_high=0.81 + 0.03, verdict="undecided")
    assert rerun == {}  # another audit measuring the same values (a cached rerun) neither
    assert tracker.client.get_run(drift.run_id).data.tags["spex.drift.v2.audit_id"] == "audit-2b"
    assert history(tracker, drift.run_id, "verdict") == [(1, 1.0), (2, 0.5)]
    changed = tracker.log_drift(drift, version=2, audit_id="audit-2c", audit_run_id=audit_run, index="fbii",
                                ranking=v2, top_k=2, heldout_r2=0.85, verdict="passed")
    assert changed["verdict"] == 1.0  # a re-audit that measured something else adds its point at the same step
    assert history(tracker, drift.run_id, "verdict") == [(1, 1.0), (2, 0.5), (2, 1.0)]

    run = tracker.client.get_run(drift.run_id)
    assert run.info.run_name == "release · food's" and run.info.status == "FINISHED"
    note = run.data.tags[TAG_NOTE]
    assert "| 1 | passed | [release · clf v1]" in note and "| 2 | passed | [release · clf v2]" in note
    experiment = tracker.client.get_experiment(drift.experiment_id)
    assert experiment.name == "spex-drift/clf" and experiment.tags[TAG_EXPERIMENT_KIND] == EXPERIMENT_KIND
    audits = tracker.client.get_experiment_by_name("spex/clf")
    assert audits.tags[TAG_EXPERIMENT_KIND] == EXPERIMENT_KIND
    assert f"#/experiments/{audits.experiment_id}/runs?workflowType=machine_learning" in audits.tags[TAG_NOTE]


def test_an_existing_experiment_gets_a_kind_but_a_chosen_one_is_kept(tracker):
    plain = tracker.client.create_experiment("spex/older")
    chosen = tracker.client.create_experiment("spex/genai", tags={TAG_EXPERIMENT_KIND: "genai_development"})
    assert tracker.experiment_id("older") == plain and tracker.experiment_id("genai") == chosen
    assert tracker.client.get_experiment(plain).tags[TAG_EXPERIMENT_KIND] == EXPERIMENT_KIND
    assert tracker.client.get_experiment(chosen).tags[TAG_EXPERIMENT_KIND] == "genai_development"


def test_the_version_description_holds_every_specs_verdict_and_keeps_the_owners_text(tracker, tmp_path):
    client: MlflowClient = tracker.client
    client.create_registered_model("clf")
    version = client.create_model_version("clf", source=(tmp_path / "w").as_uri(), description="seed 3, no negation").version
    runs = {}
    for spec, verdict in (("heads-release", "failed"), ("data | release", "passed")):
        runs[spec] = tracker.start_audit_run(f"a-{spec}", "clf", run_name=f"release · clf v1 · {spec} · {verdict}")
        tracker.tag_model_version("clf", version, audit_id=f"a-{spec}", status="succeeded", verdict=verdict,
                                  run_id=runs[spec], spec=spec, faithfulness=0.875)
        text = tracker.describe_model_version("clf", version)
    assert text == client.get_model_version("clf", version).description
    assert text.startswith("seed 3, no negation\n\n" + VERDICT_HEADING) and text.count(VERDICT_HEADING) == 1
    exp = tracker.experiment_id("clf")
    heads = next(line for line in text.splitlines() if line.startswith("| heads-release "))
    assert "| **failed** | 0.875 |" in heads
    assert f"(#/experiments/{exp}/runs/{runs['heads-release']}?workflowType=machine_learning)" in heads
    assert f"(#/experiments/{exp}/runs/{runs['heads-release']}/artifacts/report/report.html?workflowType" in heads
    assert any(line.startswith("| data \\| release | passed |") for line in text.splitlines())
    assert "`spex.passed`: **false**" in text
    assert tracker.describe_model_version("clf", version) == text  # rewriting it changes nothing
    tags = client.get_model_version("clf", version).tags
    assert set(verdicts.spec_verdicts(tags)) == {"heads-release", verdicts.spec_key("data | release")}
