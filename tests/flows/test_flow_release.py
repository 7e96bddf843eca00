"""Release audits through the CLI on two registry versions of a tiny classifier: a passing release exits
0 and tags the candidate version, a release whose gate must fail exits 1, a bad spec exits 2 naming
the field. The prompt has 5 words and the budget is auto, so every audit enumerates all 2^5 masks: the
interactions are exact and the gate outcomes deterministic."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner


def write_spec(folder: Path, gates: dict, **extra: object) -> Path:
    spec = {
        "model": "models:/tiny-sentiment@candidate",
        "baseline": "models:/tiny-sentiment@champion",
        "lens": "features",
        "subjects": [{"id": "food", "prompt": "The food was not bad"},
                     {"id": "service", "prompt": "never again, service was slow"}],
        "holdout": 16,
        "ranking": {"index": "fbii", "order": 2, "top_k": 100},
        "gates": gates,
        **extra,
    }
    path = folder / "release.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def spex_cli(*args: str):
    import os

    from flows.cli import QUIET_ENV, app

    # the CLI quiets libraries through the environment: restore it after each call
    return CliRunner().invoke(app, list(args), env={k: os.environ.get(k) for k in QUIET_ENV})


def test_a_passing_release_exits_0_and_tags_the_candidate(flow_env, registered, tmp_path):
    from mlflow import MlflowClient

    from spex import settings
    from spex.records.metadata import MetadataStore

    db = f"sqlite:///{tmp_path / 'meta.db'}"
    spec = write_spec(tmp_path, {"faithfulness_min": 0.99, "top_k_jaccard_min": 0.0, "max_rank_shift": 1000})
    result = spex_cli("release", str(spec), "--db", db)
    assert result.exit_code == 0, result.output + result.stderr
    assert "release" in result.stdout and "PASS" in result.stdout and "vs baseline" in result.stdout

    with MetadataStore(db) as store:
        audits = store.list_audits()
        release = next(a for a in audits if a.kind == "release")
        record = store.get_audit(release.id)
    assert record.status == "succeeded" and record.passed is True
    assert record.model.registry_version == "2" and record.baseline.registry_version == "1"
    assert {g.metric: g.passed for g in record.gates} == {"faithfulness_min": True, "top_k_jaccard_min": True,
                                                         "max_rank_shift": True}
    assert record.min_heldout_r2 == pytest.approx(1.0)  # 2^5 masks: the spectrum is exact
    assert all(s.metrics["exact"] for s in record.subjects)
    baseline_id = record.spec["_audit"]["baseline_audit_id"]
    with MetadataStore(db) as store:
        baseline = store.get_audit(baseline_id)
    assert baseline.kind == "audit" and baseline.model.registry_version == "1" and baseline.passed is True
    assert [g.metric for g in baseline.gates] == ["faithfulness_min"]  # release gates apply to the release only

    tags = MlflowClient(settings.mlflow_tracking_uri()).get_model_version("tiny-sentiment", "2").tags
    assert tags["spex.passed"] == "true" and tags["spex.audit_id"] == record.id
    html = (flow_env["data"] / "reports" / record.id / "report.html").read_text()
    assert "diff against the baseline" in html and "top_k_jaccard_min" in html


def test_a_release_whose_gate_fails_exits_1(flow_env, registered, tmp_path):
    from mlflow import MlflowClient

    from spex import settings

    db = f"sqlite:///{tmp_path / 'meta.db'}"
    # With all 2^5 masks every word has a (non-zero) first-order term in the top 100: "food" must be found.
    spec = write_spec(tmp_path, {"faithfulness_min": 0.5, "forbidden": ["Food", ["never", "again,"]]})
    junit = tmp_path / "ci" / "gates.xml"
    result = spex_cli("release", str(spec), "--db", db, "--json", "--junit", str(junit))
    assert result.exit_code == 1, result.output + result.stderr
    import json

    from junitparser import Failure, JUnitXml

    suite = next(iter(JUnitXml.fromfile(str(junit))))
    cases = {case.name: case for case in suite}
    assert set(cases) == {"faithfulness_min[food]", "faithfulness_min[service]", "forbidden_in_top_k[food]",
                          "forbidden_in_top_k[service]"}
    assert cases["faithfulness_min[food]"].is_passed
    (failure,) = [r for r in cases["forbidden_in_top_k[food]"].result if isinstance(r, Failure)]
    assert "food" in failure.message.lower() and "rank" in failure.message and suite.failures >= 1

    outcome = json.loads(result.stdout)
    assert outcome["passed"] is False and outcome["kind"] == "release"
    gates = {g["metric"]: g for g in outcome["gates"]}
    assert gates["faithfulness_min"]["passed"] and not gates["forbidden_in_top_k"]["passed"]
    assert "food" in gates["forbidden_in_top_k"]["details"]["hits"]
    tags = MlflowClient(settings.mlflow_tracking_uri()).get_model_version("tiny-sentiment", "2").tags
    assert tags["spex.passed"] == "false" and tags["spex.audit_id"] == outcome["audit_id"]


@pytest.mark.parametrize("gates, extra, field", [
    ({"top_k_jaccard_min": 2}, {}, "gates.top_k_jaccard_min"),
    ({"max_rank_shift": -1}, {}, "gates.max_rank_shift"),
    ({}, {"budget": 0}, "budget"),
    ({}, {"method": "proxyspecs"}, "method"),
])
def test_a_bad_spec_exits_2_naming_the_field(flow_env, tmp_path, gates, extra, field):
    spec = write_spec(tmp_path, gates, **extra)
    result = spex_cli("release", str(spec), "--db", f"sqlite:///{tmp_path / 'meta.db'}")
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and f"`{field}`" in lines[0] and "fix:" in lines[0]
    assert not (tmp_path / "meta.db").exists()  # nothing was recorded


def test_a_release_without_baseline_exits_2(flow_env, registered, tmp_path):
    spec = write_spec(tmp_path, {})
    text = spec.read_text().replace("baseline: models:/tiny-sentiment@champion\n", "")
    spec.write_text(text)
    result = spex_cli("release", str(spec), "--db", f"sqlite:///{tmp_path / 'meta.db'}")
    assert result.exit_code == 2 and "`baseline`" in result.stderr
