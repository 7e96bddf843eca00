"""Stage 6: record — the metadata DB (audit, subjects, ablation sets, proxy, interactions, validation,
gates) and MLflow (runs, params, metrics, ablation sets, proxy model, tables, figures, report, registry
tags and description, the drift runs across model versions).

This is the pipeline's record stage, so it lives with the pipeline; :mod:`spex.records` holds the two
stores it writes to. Every function is idempotent (the store upserts on natural keys; the tracker finds
its runs again by tags), so a retry after a transient failure, or a rerun of the same audit id, leaves
one copy of everything. Clients are never arguments: a :class:`Destinations` names the stores by URL and
each process gets its clients from :mod:`spex.audit.runtime`. What the MLflow UI shows beside the records
(run names and descriptions, figures, the drift runs across versions) is :mod:`spex.audit.dashboard`'s.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from spex.audit import dashboard, progress, runtime
from spex.audit.ablate import Ablations
from spex.audit.fitting import Fit
from spex.audit.owners import process_owner
from spex.audit.plan import ModelInfo, SubjectPlan
from spex.audit.sampling import Samples
from spex.audit.search import Tables, interaction_frame
from spex.audit.test_hooks import kill_here_for_tests
from spex.audit.validation import Validation


@dataclass(frozen=True)
class Destinations:
    """Where an audit's records go: the metadata DB URL and the MLflow tracking URI (None: the
    configured default, ``SPEX_DATABASE_URL`` / ``MLFLOW_TRACKING_URI``)."""

    db_url: str | None = None
    tracking_uri: str | None = None

    @property
    def store(self) -> Any:
        return runtime.metadata_store(self.db_url)

    @property
    def tracker(self) -> Any:
        return runtime.tracker(self.tracking_uri)


@dataclass(frozen=True)
class OpenedAudit:
    """An audit opened in both stores: its id (the DB's) and its MLflow parent run and experiment."""

    audit_id: str
    run_id: str
    experiment_id: str


@dataclass(frozen=True)
class RecordedSubject:
    """A recorded subject: its DB subject id and its MLflow run id."""

    subject_id: int
    run_id: str


@dataclass(frozen=True)
class Published:
    """Where the report went in MLflow and the tags set on the registry version (None: not a registry model)."""

    report_uri: str
    registry_tags: dict[str, str] | None


def spec_params(spec: dict[str, Any]) -> dict[str, Any]:
    """The spec as MLflow params: everything but the subjects' contents (their count instead); texts
    redacted under ``privacy.redact_text``."""
    from spex.audit.spec import redact_spec

    spec = redact_spec(spec)
    params = {k: v for k, v in spec.items() if k not in ("subjects",)}
    params["n_subjects"] = len(spec.get("subjects") or [])
    params["subject_ids"] = [s.get("id") for s in spec.get("subjects") or []]
    return params


def open_audit(to: Destinations, audit_id: str, model: ModelInfo, spec: dict[str, Any], kind: str = "audit",
               baseline: ModelInfo | None = None, extra: dict[str, Any] | None = None) -> OpenedAudit:
    """Open the audit in the DB (``running``, with its owner process: lets a later audit tell this one
    crashed) and its MLflow parent run; link the two."""
    from spex.audit.spec import redact_spec

    from spex.records import tracking, verdicts

    store, tracker = to.store, to.tracker
    stored_spec = {**redact_spec(spec), "_audit": {**(extra or {}), "owner": process_owner()}}
    store.start_audit(model.ref(), stored_spec, audit_id=audit_id, kind=kind,
                      baseline=baseline.ref() if baseline is not None else None, seeds={"seed": spec.get("seed", 0)})
    spec_name = verdicts.display_name(spec.get("name"), spec.get("lens"))
    tags = {"spex.audit_kind": kind, "spex.model_uri": model.uri, tracking.TAG_SPEC_NAME: spec_name,
            tracking.TAG_SPEC_KEY: verdicts.spec_key(spec.get("name"), spec.get("lens")),
            tracking.TAG_LENS: str(spec.get("lens") or "")}
    if model.in_registry:
        tags[tracking.TAG_REGISTRY_NAME] = str(model.registry_name)
    if baseline is not None:
        tags["spex.baseline_revision"] = baseline.revision
        if baseline.registry_version:
            tags["spex.baseline_version"] = str(baseline.registry_version)
    run_id = tracker.start_audit_run(audit_id, model.name, spec=spec_params(spec), model_revision=model.revision,
                                     registry_version=model.registry_version, tags=tags,
                                     run_name=dashboard.audit_run_name(kind, model, spec_name))
    experiment_id = tracker.experiment_id(model.name)
    tracker.describe_run(run_id, dashboard.audit_headline(kind, model, baseline, spec_name, spec.get("lens"), audit_id)
                         + "\n\nRunning: the subjects appear as nested runs as they are recorded.")
    store.attach_mlflow(audit_id, run_id=run_id, experiment_id=experiment_id)
    return OpenedAudit(audit_id, run_id, experiment_id)


def record_subject(to: Destinations, opened: OpenedAudit, lens: str, plan: SubjectPlan, samples: Samples,
                   ablations: Ablations, fit: Fit, tables: Tables, validation: Validation,
                   stats: dict[str, Any]) -> RecordedSubject:
    """Record one subject everywhere. ``stats``: its ablation counters and ``seconds`` per stage."""
    store, tracker = to.store, to.tracker
    audit_id, labels, fingerprint = opened.audit_id, plan.labels, plan.fingerprint
    sub_run = tracker.start_subject_run(opened.run_id, plan.id, params={
        "lens": lens, "n_features": plan.n, "budget": plan.budget, "fingerprint": fingerprint,
        "method": fit.method, "digest": plan.digest,
    })
    subject_id = store.record_subject(audit_id, lens=lens, content_digest=plan.digest, key=plan.id, labels=labels,
                                      n_features=plan.n, description=json.dumps(plan.view), mlflow_run_id=sub_run)
    for role, masks, values in (("train", samples.train, ablations.train), ("holdout", samples.holdout,
                                                                              ablations.holdout)):
        art = tracker.log_ablation_set(sub_run, masks, values, fingerprint=fingerprint, role=role, labels=labels)
        store.record_ablation_set(audit_id, subject_id, fingerprint=fingerprint, n_features=art.n_features,
                                  count=art.count, role=role, location=art.artifact_uri, size_bytes=art.size_bytes,
                                  sha256=art.sha256, mlflow_dataset_digest=art.dataset_digest)
    kill_here_for_tests("record")
    diagnostics = fit.diagnostics
    if fit.booster:
        import lightgbm as lgb

        hyper = {k: diagnostics.get(k) for k in ("proxy_depth", "proxy_trees", "proxy_learning_rate")
                 if diagnostics.get(k) is not None}
        model_uri = tracker.log_proxy(sub_run, lgb.Booster(model_str=fit.booster), params=hyper)
        store.record_proxy(audit_id, subject_id, hyperparameters={**hyper, "support_size": diagnostics.get("support_size")},
                           cv_r2=diagnostics.get("proxy_r2"), mlflow_model_uri=model_uri, method=fit.method)
    for name, table in tables.stored().items():
        frame = interaction_frame(table, name)
        store.record_interactions(audit_id, subject_id, frame, index=name)
        if name != "pairs":
            tracker.log_interactions(sub_run, frame, index=name)
    removal = validation.removal
    store.record_validation(audit_id, subject_id, heldout_r2=validation.heldout_r2, n_heldout=validation.n_heldout,
                            removal=removal, metrics={"heldout_rmse": validation.heldout_rmse,
                                                      "heldout_value_std": validation.heldout_value_std,
                                                      "heldout_r2_low": validation.heldout_r2_low,
                                                      "heldout_r2_high": validation.heldout_r2_high})
    numbers = {
        "heldout_r2": validation.heldout_r2,
        "heldout_r2_low": validation.heldout_r2_low,
        "heldout_r2_high": validation.heldout_r2_high,
        "heldout_rmse": validation.heldout_rmse,
        "n_features": plan.n,
        "budget": plan.budget,
        "full_value": plan.full_value if math.isfinite(plan.full_value) else None,
        "proxy_r2": diagnostics.get("proxy_r2"),
        "support_size": diagnostics.get("support_size"),
        "coefficients": fit.coefficients,
        "masks_computed": stats.get("computed"),
        "masks_from_store": stats.get("from_store"),
    }
    for choice in removal["choices"]:
        numbers[f"removal/{choice['direction']}/predicted"] = choice["predicted_change"]
        numbers[f"removal/{choice['direction']}/actual"] = choice["actual_change"]
    tracker.log_metrics(sub_run, numbers)
    seconds = {k: float(v) for k, v in (stats.get("seconds") or {}).items()}
    tracker.log_stage_metrics(sub_run, seconds, calls=int(stats.get("computed", 0)))
    drawn = dashboard.log_subject_figures(tracker, opened.run_id, sub_run, plan, tables)
    tracker.describe_run(sub_run, dashboard.subject_note(lens, plan, fit, tables, validation, drawn))
    store.record_subject_metrics(audit_id, subject_id, {
        **{k: v for k, v in numbers.items() if v is not None}, "seconds": seconds, "fingerprint": fingerprint,
        "target": plan.target, "method": fit.method, "exact": bool(diagnostics.get("exact")),
        "constant": tables.constant, "baseline_value": tables.baseline_value, "empty_value": tables.empty_value,
        "index": tables.index, "order": tables.order, "mlflow_run_id": sub_run,
    }, mlflow_run_id=sub_run)
    tracker.end_run(sub_run)
    return RecordedSubject(subject_id, sub_run)


def diff_against_baseline(to: Destinations, baseline_audit_id: str, rankings: Mapping[str, Any], index: str,
                          k: int, *, fdr: float = 0.05, min_effect: float = 0.0,
                          level: float = 0.95) -> dict[str, dict[str, Any] | None]:
    """Per subject: the noise-aware diff of this audit's ``rankings`` (subject key -> recorded rows,
    with ``se``) against the baseline audit's rankings read from the DB (see
    :func:`spex.engine.ranking_diff.diff_rankings`); None for a subject the baseline did not audit.

    The candidate's side comes from memory, not the DB: the adaptive budget decides on a round's
    rankings before it records them."""
    from spex.engine.ranking_diff import diff_rankings

    store = to.store
    baseline = store.get_audit(baseline_audit_id)
    base_ids = {s.subject.key: s.subject.id for s in baseline.subjects}
    out: dict[str, dict[str, Any] | None] = {}
    for key, mine in rankings.items():
        if key not in base_ids:
            out[key] = None
            continue
        theirs = store.get_interactions(baseline_audit_id, base_ids[key], index=index)
        out[key] = diff_rankings(mine, theirs, k=k, subject=key, fdr=fdr, min_effect=min_effect, level=level).to_dict()
    return out


def finish_audit(to: Destinations, opened: OpenedAudit, gates: list[Any], metrics: dict[str, Any]) -> bool:
    """Record the gates (:class:`spex.records.gate.Gate`) and mark the audit succeeded with its verdict
    (:func:`spex.records.gate.verdict`: failed if a gate failed, else undecided if one is within noise,
    else passed; no gates: passed); returns whether it passed (``verdict == "passed"``)."""
    from spex.records.gate import Gate, verdict

    store = to.store
    gates = [g if isinstance(g, Gate) else Gate.from_dict(g) for g in gates]
    store.record_gates(opened.audit_id, gates)
    outcome = verdict(gates)
    store.finish_audit(opened.audit_id, verdict=outcome)
    passed = outcome == "passed"
    numbers = {k: v for k, v in metrics.items() if isinstance(v, (int, float)) and v is not None and math.isfinite(v)}
    numbers["passed"] = 1.0 if passed else 0.0
    numbers["undecided"] = 1.0 if outcome == "undecided" else 0.0
    for g in gates:
        if g.value is not None:
            numbers[f"gate/{g.metric}"] = g.value
    to.tracker.log_metrics(opened.run_id, numbers)
    return passed


def write_report(to: Destinations, audit_id: str, out_dir: str) -> dict[str, str]:
    """The HTML report and the JSON export of the audit, built from what the DB recorded."""
    from spex.report import write_audit_report

    paths = write_audit_report(to.store, audit_id, Path(out_dir))
    progress.emit("report", audit_id=audit_id, html=str(paths["html"]))
    return {k: str(v) for k, v in paths.items()}


def _spec_identity(run: Any) -> tuple[str | None, str | None, dt.datetime]:
    """(spec name, lens, start) of an audit from its MLflow parent run (its params are the spec's):
    read from MLflow, not the DB, so the failure path can tag the registry while the DB is down."""
    params = run.data.params
    name = params.get("name")
    started = dt.datetime.fromtimestamp(run.info.start_time / 1000, tz=dt.timezone.utc)
    return (None if name in (None, "", "null") else name), params.get("lens"), started


def publish(to: Destinations, opened: OpenedAudit, report: dict[str, str], model: ModelInfo, passed: bool,
            faithfulness: float | None, *, verdict: str | None = None) -> Published:
    """Log the report to MLflow, tag the registry model version with the outcome, close the run.

    ``verdict`` (passed / failed / undecided) defaults to ``passed``'s. The version gets this spec's
    verdict tags and a recomputed aggregate ``spex.passed`` (:meth:`AuditTracker.tag_model_version`):
    another spec's later pass never hides this spec's failure. For the UI: a release audit's run gets
    one candidate-vs-baseline figure per subject; a registry version gets its point on each subject's
    drift run (:meth:`AuditTracker.log_drift`) and its verdict table in its description; the audit run
    gets its verdict in its name and a description with the gates."""
    kill_here_for_tests("publish")
    verdict = verdict or ("passed" if passed else "failed")
    passed = verdict == "passed"
    tracker, run_id = to.tracker, opened.run_id
    report_uri = tracker.log_report(run_id, Path(report["html"]))
    export_dir = Path(report["json"]).parent
    tracker.log_artifact(run_id, report["json"], artifact_path="report")
    shapiq_dir = export_dir / "shapiq"
    if shapiq_dir.is_dir():
        tracker.log_artifact(run_id, shapiq_dir, artifact_path="report/shapiq")
    document = json.loads(Path(report["json"]).read_text(encoding="utf-8"))
    figures = dashboard.log_release_figures(tracker, run_id, document, model)
    from spex.records import verdicts

    run = tracker.client.get_run(run_id)
    name, lens, started = _spec_identity(run)
    kind = run.data.tags.get("spex.audit_kind") or "audit"
    spec_name = verdicts.display_name(name, lens)
    tracker.describe_run(run_id, dashboard.audit_note(document, kind, model, spec_name, lens, verdict, opened.audit_id,
                                                  opened.experiment_id, run_id, figures),
                         name=dashboard.audit_run_name(kind, model, spec_name, verdict))
    for child in tracker.child_runs(run_id):
        tracker.set_tags(child.info.run_id, {"spex.verdict": verdict})
    tags = None
    if model.in_registry:
        tags = tracker.tag_model_version(model.registry_name, model.registry_version, audit_id=opened.audit_id,
                                         status="succeeded", faithfulness=faithfulness, verdict=verdict, run_id=run_id,
                                         spec=name, lens=lens, started=started)
        dashboard.log_drift(tracker, opened.audit_id, opened.run_id, document, model, name, lens, verdict)
        tracker.describe_model_version(model.registry_name, model.registry_version)
    tracker.set_tags(run_id, {"spex.passed": str(passed).lower(), "spex.verdict": verdict})
    tracker.end_run(run_id)
    return Published(report_uri, tags)


def fail_audit(to: Destinations, audit_id: str, run_id: str | None, error: str,
               model: ModelInfo | None = None) -> None:
    """Mark the audit failed (DB), its MLflow runs FAILED, and, on the registry version, this spec's
    verdict ``failed`` (so the aggregate ``spex.passed`` is false until the spec is audited again).

    Never raises for MLflow: it runs on the error path, and MLflow being down may be the error — the DB
    says "failed" (the record that gates read), the original error is what the caller must see, and a
    rerun records the audit again from the ablation store."""
    to.store.fail_audit(audit_id, error)
    if not run_id:
        return
    try:
        tracker = to.tracker
        parent = tracker.client.get_run(run_id)
        children = tracker.client.search_runs(
            [parent.info.experiment_id], filter_string=f"tags.`mlflow.parentRunId` = '{run_id}'")
        for child in children:
            if child.info.status == "RUNNING":
                tracker.end_run(child.info.run_id, "FAILED")
        tracker.end_run(run_id, "FAILED")
        tracker.set_tags(run_id, {"spex.passed": "false", "spex.verdict": "failed"})
        if parent.info.run_name and not parent.info.run_name.endswith(" · failed"):
            tracker.describe_run(run_id, f"**failed** before it finished; the error is in the metadata DB: "
                                         f"`spex audits show {audit_id[:12]}`", name=f"{parent.info.run_name} · failed")
        if model is not None and model.in_registry:
            name, lens, started = _spec_identity(parent)
            tracker.tag_model_version(model.registry_name, model.registry_version, audit_id=audit_id,
                                      status="failed", verdict="failed", run_id=run_id, spec=name, lens=lens,
                                      started=started)
            tracker.describe_model_version(model.registry_name, model.registry_version)
    except Exception as exc:  # noqa: BLE001
        from spex.records.metadata import mask_secrets

        logging.getLogger("spex.record").warning(
            "audit %s is marked failed in the metadata DB, but its MLflow run %s could not be closed: %s",
            audit_id, run_id, mask_secrets(str(exc).splitlines()[0] if str(exc) else type(exc).__name__))
