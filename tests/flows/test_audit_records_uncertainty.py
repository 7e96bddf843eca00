"""A real audit (``spex.audit.run``, the tiny classifier, ProxySPEX on a sampled budget) records every
interaction's standard error and interval the same in the metadata DB, the subject's MLflow table, the
JSON export and the report, and its verdict in the DB and on the MLflow run."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd

from tests.flows.flow_models import features_spec


def test_a_real_audit_records_its_intervals_everywhere(bert_v1, tmp_path, monkeypatch):
    import spex.audit
    from mlflow import MlflowClient

    from spex import settings
    from spex.audit import runtime
    from spex.records.metadata import MetadataStore

    monkeypatch.setenv("SPEX_DATA_DIR", str(tmp_path / "data"))  # its own ablation store and MLflow store
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("SPEX_DATABASE_URL", raising=False)
    runtime.clear()
    db = f"sqlite:///{tmp_path / 'meta.db'}"
    # a gate that passes whatever the noise (the word is in no prompt); faithfulness_min on this tiny random model
    # can be undecided (its R² interval straddles the threshold)
    outcome = spex.audit.run(features_spec(bert_v1, seed=5, gates={"forbidden": ["zebra"]}), db_url=db)
    assert outcome.passed

    client = MlflowClient(settings.mlflow_tracking_uri())
    parent = client.get_run(outcome.mlflow_run_id)
    assert (parent.data.tags["spex.verdict"], parent.data.tags["spex.passed"]) == ("passed", "true")
    export = json.loads(open(outcome.report["json"]).read())
    assert export["audit"]["verdict"] == "passed"
    html = open(outcome.report["html"]).read()
    bars = 0
    with MetadataStore(db) as store:
        record = store.get_audit(outcome.audit_id)
        assert (record.verdict, record.passed) == ("passed", True)
        assert [g.state for g in record.gates] == ["passed"]
        for s in record.subjects:
            table = store.get_interactions(outcome.audit_id, s.subject.id, index="fbii")
            bars += min(5, len(table))  # the report draws the top k (5) of each subject
            known = table["se"].notna()
            assert known.mean() > 0.9 and (table.loc[known, "se"] > 0).all()  # sampled masks: real noise
            inside = (table["ci_low"] <= table["value"]) & (table["value"] <= table["ci_high"])
            assert inside[known].all()

            # the table as MLflow's table viewer reads it (log_table's "split" JSON)
            path = client.download_artifacts(s.mlflow_run_id, "interactions/fbii.json", str(tmp_path / s.subject.key))
            logged = pd.DataFrame(**{k: v for k, v in json.loads(open(path).read()).items() if k in ("columns", "data")})
            assert len(logged) == len(table) and logged["se"].isna().tolist() == table["se"].isna().tolist()
            for key in ("value", "se", "ci_low", "ci_high"):  # MLflow writes tables with 10 decimals
                np.testing.assert_allclose(logged[key].to_numpy(dtype=float), table[key].to_numpy(), rtol=0, atol=5.1e-11)

            rows = export["subjects"][s.subject.key]["interactions"]
            assert [r["se"] for r in rows] == [None if math.isnan(v) else v for v in table["se"]]
            assert [r["ci_low"] for r in rows] == [None if math.isnan(v) else v for v in table["ci_low"]]
            top = table.iloc[0]
            assert f"±{top['se']:.2g}" in html and f"[{top['ci_low']:.3g}, {top['ci_high']:.3g}]" in html
    assert html.count('<svg class="ci-bar"') == bars
