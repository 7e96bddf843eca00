"""Stage 6: record — MLflow (runs, params, metrics, ablation sets, proxy model, tables, report, registry
tags) and the metadata DB (audit, subjects, ablation sets, proxy, interactions, validation, gates).

Every record task is idempotent (the store upserts on natural keys; the tracker finds its runs again
by tags), so a retry after a transient failure, or a rerun of the same audit id, leaves one copy of
everything. Clients are never task arguments: each task gets its store / tracker from
:mod:`tasks.runtime` by URL.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from prefect import task

from tasks import runtime
from tasks.caching import RETRIES

RECORD_RETRIES = {**RETRIES, "retries": 3}


def _ref(info: dict[str, Any] | None) -> Any:
    from spex.records.metadata import ModelRef

    if info is None:
        return None
    return ModelRef(info["name"], info["revision"], source_uri=info.get("uri"),
                    registry_version=info.get("registry_version"))


def interaction_frame(rows: list[dict[str, Any]], index: str) -> pd.DataFrame:
    """JSON rows (from :mod:`tasks.search`) as spex's interaction table, ``attrs["index"]`` set."""
    frame = pd.DataFrame({
        "members": [tuple(r["members"]) for r in rows],
        "labels": [tuple(r["labels"]) if r.get("labels") is not None else None for r in rows],
        "order": [int(r["order"]) for r in rows],
        "value": [float(r["value"]) for r in rows],
        "rank": [int(r["rank"]) for r in rows],
    })
    frame.attrs["index"] = index
    return frame


def spec_params(spec: dict[str, Any]) -> dict[str, Any]:
    """The spec as MLflow params: everything but the subjects' contents (their count instead); texts
    redacted under ``privacy.redact_text``."""
    from spex.audit.spec import redact_spec

    spec = redact_spec(spec)
    params = {k: v for k, v in spec.items() if k not in ("subjects",)}
    params["n_subjects"] = len(spec.get("subjects") or [])
    params["subject_ids"] = [s.get("id") for s in spec.get("subjects") or []]
    return params


@task(name="open-audit", **RECORD_RETRIES)
def open_audit(db_url: str | None, tracking_uri: str | None, audit_id: str, model: dict[str, Any],
               spec: dict[str, Any], kind: str = "audit", baseline: dict[str, Any] | None = None,
               extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Open the audit in the DB (``running``) and its MLflow parent run; link the two."""
    store = runtime.metadata_store(db_url)
    tracker = runtime.tracker(tracking_uri)
    from spex.audit.spec import redact_spec

    extra = {**(extra or {}), "owner": runtime.process_owner()}  # lets a later audit tell this one crashed
    stored_spec = {**redact_spec(spec), "_audit": extra}  # privacy.redact_text
    store.start_audit(_ref(model), stored_spec, audit_id=audit_id, kind=kind, baseline=_ref(baseline),
                      seeds={"seed": spec.get("seed", 0)})
    tags = {"spex.audit_kind": kind, "spex.model_uri": model.get("uri", "")}
    if baseline is not None:
        tags["spex.baseline_revision"] = baseline["revision"]
    run_id = tracker.start_audit_run(audit_id, model["name"], spec=spec_params(spec), model_revision=model["revision"],
                                     registry_version=model.get("registry_version"), tags=tags,
                                     run_name=f"{kind}-{audit_id[:12]}")
    experiment_id = tracker.experiment_id(model["name"])
    store.attach_mlflow(audit_id, run_id=run_id, experiment_id=experiment_id)
    return {"audit_id": audit_id, "run_id": run_id, "experiment_id": experiment_id}


@task(name="record-subject", **RECORD_RETRIES)
def record_subject(db_url: str | None, tracking_uri: str | None, audit_id: str, run_id: str, lens: str,
                   info: dict[str, Any], samples: dict[str, np.ndarray], values: dict[str, np.ndarray],
                   fitted: dict[str, Any], tables: dict[str, Any], validation: dict[str, Any],
                   metrics: dict[str, Any]) -> dict[str, Any]:
    """Record one subject everywhere; returns its DB subject id and MLflow run id."""
    store = runtime.metadata_store(db_url)
    tracker = runtime.tracker(tracking_uri)
    key, labels, fingerprint = info["id"], info["labels"], info["fingerprint"]
    sub_run = tracker.start_subject_run(run_id, key, params={
        "lens": lens, "n_features": info["n"], "budget": info["budget"], "fingerprint": fingerprint,
        "method": fitted["method"], "digest": info["digest"],
    })
    subject_id = store.record_subject(audit_id, lens=lens, content_digest=info["digest"], key=key, labels=labels,
                                      n_features=info["n"], description=json.dumps(info["view"]),
                                      mlflow_run_id=sub_run)
    for role in ("train", "holdout"):
        art = tracker.log_ablation_set(sub_run, samples[role], values[role], fingerprint=fingerprint, role=role,
                                       labels=labels)
        store.record_ablation_set(audit_id, subject_id, fingerprint=fingerprint, n_features=art.n_features,
                                  count=art.count, role=role, location=art.artifact_uri, size_bytes=art.size_bytes,
                                  sha256=art.sha256, mlflow_dataset_digest=art.dataset_digest)
    runtime.fault_point("record")  # reliability tests only (inert unless SPEX_FAULT_KILL_AT is set)
    diagnostics = fitted["diagnostics"]
    if fitted.get("booster"):
        import lightgbm as lgb

        hyper = {k: diagnostics.get(k) for k in ("proxy_depth", "proxy_trees", "proxy_learning_rate")
                 if diagnostics.get(k) is not None}
        model_uri = tracker.log_proxy(sub_run, lgb.Booster(model_str=fitted["booster"]), params=hyper)
        store.record_proxy(audit_id, subject_id, hyperparameters={**hyper, "support_size": diagnostics.get("support_size")},
                           cv_r2=diagnostics.get("proxy_r2"), mlflow_model_uri=model_uri, method=fitted["method"])
    index = tables["index"]
    stored = {index: tables["ranking"]}
    if index != "shapley":
        stored["shapley"] = tables["shapley"]
    stored["pairs"] = tables["pairs"]
    for name, rows in stored.items():
        frame = interaction_frame(rows, name)
        store.record_interactions(audit_id, subject_id, frame, index=name)
        if name != "pairs":
            tracker.log_interactions(sub_run, frame, index=name)
    removal = validation["removal"]
    store.record_validation(audit_id, subject_id, heldout_r2=validation["heldout_r2"],
                            n_heldout=validation["n_heldout"], removal=removal,
                            metrics={k: validation[k] for k in ("heldout_rmse", "heldout_value_std")})
    numbers = {
        "heldout_r2": validation["heldout_r2"],
        "heldout_rmse": validation["heldout_rmse"],
        "n_features": info["n"],
        "budget": info["budget"],
        "full_value": info["full_value"] if math.isfinite(info["full_value"]) else None,
        "proxy_r2": diagnostics.get("proxy_r2"),
        "support_size": diagnostics.get("support_size"),
        "coefficients": fitted.get("coefficients"),
        "masks_computed": metrics.get("computed"),
        "masks_from_store": metrics.get("from_store"),
    }
    for choice in removal["choices"]:
        numbers[f"removal/{choice['direction']}/predicted"] = choice["predicted_change"]
        numbers[f"removal/{choice['direction']}/actual"] = choice["actual_change"]
    tracker.log_metrics(sub_run, numbers)
    seconds = {k: float(v) for k, v in (metrics.get("seconds") or {}).items()}
    tracker.log_stage_metrics(sub_run, seconds, calls=int(metrics.get("computed", 0)))
    store.record_subject_metrics(audit_id, subject_id, {
        **{k: v for k, v in numbers.items() if v is not None}, "seconds": seconds, "fingerprint": fingerprint,
        "target": info.get("target"), "method": fitted["method"], "exact": bool(diagnostics.get("exact")),
        "constant": tables.get("constant"), "baseline_value": tables.get("baseline_value"),
        "empty_value": tables.get("empty_value"), "index": index, "order": tables.get("order"),
        "mlflow_run_id": sub_run,
    }, mlflow_run_id=sub_run)
    tracker.end_run(sub_run)
    runtime.emit("stage_done", subject=key, stage="record")
    return {"subject_id": subject_id, "run_id": sub_run}


@task(name="diff-against-baseline", **RECORD_RETRIES)
def diff_against_baseline(db_url: str | None, audit_id: str, baseline_audit_id: str, index: str,
                          k: int) -> dict[str, Any]:
    """Per subject: the diff of this audit's ranking against the baseline audit's (both read from the DB)."""
    from spex.audit.diff import diff_rankings

    store = runtime.metadata_store(db_url)
    candidate = store.get_audit(audit_id)
    baseline = store.get_audit(baseline_audit_id)
    base_ids = {s.subject.id for s in baseline.subjects}
    out = {}
    for s in candidate.subjects:
        key = s.subject.key
        if s.subject.id not in base_ids:
            out[key] = None
            continue
        mine = store.get_interactions(audit_id, s.subject.id, index=index)
        theirs = store.get_interactions(baseline_audit_id, s.subject.id, index=index)
        out[key] = diff_rankings(mine, theirs, k=k, subject=key).to_dict()
    return out


@task(name="finish-audit", **RECORD_RETRIES)
def finish_audit(db_url: str | None, tracking_uri: str | None, audit_id: str, run_id: str,
                 gates: list[dict[str, Any]], metrics: dict[str, Any]) -> bool:
    """Record the gates and mark the audit succeeded; returns whether it passed (no gates: passed)."""
    from spex.records.metadata import Gate

    store = runtime.metadata_store(db_url)
    tracker = runtime.tracker(tracking_uri)
    store.record_gates(audit_id, [Gate(g["metric"], g["threshold"], g["value"], g["passed"], g["comparator"],
                                       g.get("details") or {}) for g in gates])
    verdict = store.finish_audit(audit_id)
    passed = True if verdict is None else bool(verdict)
    numbers = {k: v for k, v in metrics.items() if isinstance(v, (int, float)) and v is not None and math.isfinite(v)}
    numbers["passed"] = 1.0 if passed else 0.0
    for g in gates:
        if g["value"] is not None:
            numbers[f"gate/{g['metric']}"] = g["value"]
    tracker.log_metrics(run_id, numbers)
    return passed


@task(name="write-report", **RECORD_RETRIES)
def write_report(db_url: str | None, audit_id: str, out_dir: str) -> dict[str, str]:
    """The HTML report and the JSON export of the audit, built from what the DB recorded."""
    from spex.report import write_audit_report

    store = runtime.metadata_store(db_url)
    paths = write_audit_report(store, audit_id, Path(out_dir))
    runtime.emit("report", audit_id=audit_id, html=str(paths["html"]))
    return {k: str(v) for k, v in paths.items()}


@task(name="publish", **RECORD_RETRIES)
def publish(tracking_uri: str | None, run_id: str, audit_id: str, report: dict[str, str], model: dict[str, Any],
            passed: bool, faithfulness: float | None) -> dict[str, Any]:
    """Log the report to MLflow, tag the registry model version with the outcome, close the run."""
    runtime.fault_point("publish")  # reliability tests only (inert unless SPEX_FAULT_KILL_AT is set)
    tracker = runtime.tracker(tracking_uri)
    html = Path(report["html"])
    report_uri = tracker.log_report(run_id, html)
    export_dir = Path(report["json"]).parent
    tracker.log_artifact(run_id, report["json"], artifact_path="report")
    shapiq_dir = export_dir / "shapiq"
    if shapiq_dir.is_dir():
        tracker.log_artifact(run_id, shapiq_dir, artifact_path="report/shapiq")
    tags = None
    if model.get("registry_name") and model.get("registry_version"):
        tags = tracker.tag_model_version(model["registry_name"], model["registry_version"], audit_id=audit_id,
                                         status="succeeded", faithfulness=faithfulness, passed=passed, run_id=run_id)
    tracker.set_tags(run_id, {"spex.passed": str(passed).lower()})
    tracker.end_run(run_id)
    return {"report_uri": report_uri, "registry_tags": tags}


@task(name="fail-audit", retries=2, retry_delay_seconds=2)
def fail_audit(db_url: str | None, tracking_uri: str | None, audit_id: str, run_id: str | None, error: str,
               model: dict[str, Any] | None = None) -> None:
    """Mark the audit failed (DB), its MLflow runs FAILED, and the registry version's audit status.

    Never raises for MLflow: it runs on the error path, and MLflow being down may be the error — the DB
    says "failed" (the record that gates read), the original error is what the caller must see, and a
    rerun records the audit again from the ablation store."""
    store = runtime.metadata_store(db_url)
    store.fail_audit(audit_id, error)
    if not run_id:
        return
    try:
        tracker = runtime.tracker(tracking_uri)
        parent = tracker.client.get_run(run_id)
        children = tracker.client.search_runs(
            [parent.info.experiment_id], filter_string=f"tags.`mlflow.parentRunId` = '{run_id}'")
        for child in children:
            if child.info.status == "RUNNING":
                tracker.end_run(child.info.run_id, "FAILED")
        tracker.end_run(run_id, "FAILED")
        if model and model.get("registry_name") and model.get("registry_version"):
            tracker.tag_model_version(model["registry_name"], model["registry_version"], audit_id=audit_id,
                                      status="failed", run_id=run_id)
    except Exception as exc:  # noqa: BLE001
        from spex.records.metadata import mask_secrets

        logging.getLogger("spex.record").warning(
            "audit %s is marked failed in the metadata DB, but its MLflow run %s could not be closed: %s",
            audit_id, run_id, mask_secrets(str(exc).splitlines()[0] if str(exc) else type(exc).__name__))


def reap_crashed_audits(db_url: str | None, tracking_uri: str | None) -> list[str]:
    """Mark failed every audit left ``running`` by a process of this machine that is gone, and close
    its MLflow runs; returns their ids.

    Why: a process killed outright (``kill -9``, the OOM killer) cannot record its own end, so its audit
    would read ``running`` for ever and its MLflow runs stay RUNNING. Its measurements are safe (the
    ablation store; a rerun records a new audit from them); only the record of the dead run is fixed
    here, at the start of the next audit. Audits owned by other machines are left alone."""
    store = runtime.metadata_store(db_url)
    reaped = []
    for summary in store.list_audits(status="running", limit=None):
        owner = (store.get_audit(summary.id).spec.get("_audit") or {}).get("owner")
        if not owner or not runtime.owner_gone(owner):
            continue
        fail_audit(db_url, tracking_uri, summary.id, summary.mlflow_run_id,
                   f"crashed: process {owner.get('pid')} on {owner.get('host')} ended without finishing the audit")
        runtime.emit("audit_reaped", audit_id=summary.id, pid=owner.get("pid"), host=owner.get("host"))
        reaped.append(summary.id)
    return reaped
