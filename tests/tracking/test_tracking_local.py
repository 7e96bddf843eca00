"""The embedded default: with no tracking URI configured, audits go to the SQLite MLflow store in
the data dir and artifacts to ``<data dir>/mlartifacts`` (never a cwd-relative ./mlruns). Plus the
pure helpers: param flattening, the two ablation Parquet layouts, content digests."""

from __future__ import annotations

import json
from pathlib import Path

import lightgbm as lgb
import numpy as np
import pandas as pd
import pytest

from spex.records import tracking
from spex.records.tracking import (
    AuditTracker,
    ablation_digest,
    ablation_frame,
    flatten_params,
)


def test_default_store_is_sqlite_in_the_data_dir(tmp_path, monkeypatch, global_tracking_uri):
    data = tmp_path / "data"
    monkeypatch.setenv("SPEX_DATA_DIR", str(data))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)
    tracker = AuditTracker()
    assert tracker.tracking_uri == f"sqlite:///{data / 'mlflow.db'}"
    assert tracker.artifact_root == (data / "mlartifacts").as_uri()

    run = tracker.start_audit_run("a-1", "tiny model", spec={"seed": 3})
    sub = tracker.start_subject_run(run, "s0")
    rng = np.random.default_rng(0)
    masks = rng.random((64, 5)) < 0.5
    values = masks[:, 0] * 2.0 + masks[:, 1] * masks[:, 2]
    art = tracker.log_ablation_set(sub, masks, values, fingerprint="fp-1")
    booster = lgb.train({"objective": "regression", "verbose": -1, "min_data_in_leaf": 2}, lgb.Dataset(masks.astype(float), values), 10)
    uri = tracker.log_proxy(sub, booster)
    tracker.end_run(sub)
    tracker.end_run(run)

    assert (data / "mlflow.db").is_file() and not (tmp_path / "mlruns").exists()
    assert art.artifact_uri.startswith((data / "mlartifacts" / "tiny_model").as_uri())
    parquet = Path(art.artifact_uri.removeprefix("file://"))
    assert parquet.is_file() and parquet.stat().st_size == art.size_bytes
    global_tracking_uri(tracker.tracking_uri)
    import mlflow.lightgbm

    X = masks.astype(float)
    np.testing.assert_array_equal(mlflow.lightgbm.load_model(uri).predict(X), booster.predict(X))
    assert tracker.client.get_experiment_by_name("spex/tiny model").artifact_location.startswith((data / "mlartifacts").as_uri())

    with pytest.raises(ValueError, match="different spec"):
        tracker.start_audit_run("a-1", "tiny model", spec={"seed": 4})


def test_flatten_params():
    flat = flatten_params({"a": {"b": 1, "c": {"d": [1, 2]}}, "e": None, "f": "x", "g": 0.5, "h w?": True, "i": {}})
    assert flat == {"a.b": "1", "a.c.d": "[1, 2]", "e": "null", "f": "x", "g": "0.5", "h w_": "true", "i": "{}"}
    long = flatten_params({"k": "x" * 10_000})["k"]
    assert len(long) == tracking.MAX_PARAM_VAL_LENGTH and long.endswith("...[truncated]")


def test_ablation_layouts_round_trip(monkeypatch):
    rng = np.random.default_rng(1)
    masks = rng.random((10, 13)) < 0.5
    values = rng.normal(size=10)
    wide, layout = ablation_frame(masks, values)
    assert layout == "wide" and list(wide.columns) == [f"f{i}" for i in range(13)] + ["value"]
    np.testing.assert_array_equal(wide.iloc[:, :13].to_numpy(), masks)

    monkeypatch.setattr(tracking, "WIDE_LAYOUT_MAX_FEATURES", 8)
    packed, layout = ablation_frame(masks, values)
    assert layout == "packed" and list(packed.columns) == ["mask", "value"]
    bits = np.unpackbits(np.array([list(bytes.fromhex(h)) for h in packed["mask"]], dtype=np.uint8), axis=1)[:, :13]
    np.testing.assert_array_equal(bits.astype(bool), masks)
    np.testing.assert_array_equal(packed["value"].to_numpy(), values)

    assert ablation_digest(masks, values) == ablation_digest(masks.copy(), values.copy())
    assert ablation_digest(masks, values) != ablation_digest(masks, values + 1e-12)
    with pytest.raises(ValueError):
        ablation_frame(masks, values[:3])


def test_interactions_for_ui():
    table = pd.DataFrame({"members": [(1, 2), (0,)], "labels": [("a", "b"), ("c",)], "order": [2, 1], "value": [0.5, -0.1], "rank": [1, 2]})
    ui = tracking.interactions_for_ui(table)
    assert ui.to_dict("list") == {"rank": [1, 2], "members": ["1, 2", "0"], "labels": ["a × b", "c"], "order": [2, 1], "value": [0.5, -0.1]}
    json.loads(ui.to_json(orient="split"))
