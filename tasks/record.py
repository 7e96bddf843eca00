"""Stage 6 as tasks: the record stage (:mod:`spex.audit.recording`) — metadata DB and MLflow.

Every recording function is idempotent (natural-key upserts; runs found again by tags), so these tasks
retry transient failures (one more time than the compute stages: a database or MLflow restart is the
usual cause) and a rerun of the same audit id leaves one copy of everything.
"""

from __future__ import annotations

from typing import Any

from prefect import task

from spex.audit import recording
from spex.audit.ablate import Ablations
from spex.audit.fitting import Fit
from spex.audit.plan import ModelInfo, SubjectPlan
from spex.audit.recording import Destinations, OpenedAudit
from spex.audit.sampling import Samples
from spex.audit.search import Tables
from spex.audit.validation import Validation
from tasks.caching import RETRIES

RECORD_RETRIES = {**RETRIES, "retries": 3}


@task(name="open-audit", **RECORD_RETRIES)
def open_audit(to: Destinations, audit_id: str, model: ModelInfo, spec: dict[str, Any], kind: str = "audit",
               baseline: ModelInfo | None = None, extra: dict[str, Any] | None = None) -> OpenedAudit:
    """:func:`spex.audit.recording.open_audit`."""
    return recording.open_audit(to, audit_id, model, spec, kind, baseline, extra)


@task(name="record-subject", **RECORD_RETRIES)
def record_subject(to: Destinations, opened: OpenedAudit, lens: str, plan: SubjectPlan, samples: Samples,
                   ablations: Ablations, fit: Fit, tables: Tables, validation: Validation,
                   stats: dict[str, Any]) -> recording.RecordedSubject:
    """:func:`spex.audit.recording.record_subject`."""
    return recording.record_subject(to, opened, lens, plan, samples, ablations, fit, tables, validation, stats)


@task(name="diff-against-baseline", **RECORD_RETRIES)
def diff_against_baseline(to: Destinations, baseline_audit_id: str, rankings: dict[str, Any], index: str, k: int,
                          fdr: float, min_effect: float, level: float) -> dict[str, dict[str, Any] | None]:
    """:func:`spex.audit.recording.diff_against_baseline`."""
    return recording.diff_against_baseline(to, baseline_audit_id, rankings, index, k, fdr=fdr, min_effect=min_effect,
                                           level=level)


@task(name="finish-audit", **RECORD_RETRIES)
def finish_audit(to: Destinations, opened: OpenedAudit, gates: list[Any], metrics: dict[str, Any]) -> bool:
    """:func:`spex.audit.recording.finish_audit`."""
    return recording.finish_audit(to, opened, gates, metrics)


@task(name="write-report", **RECORD_RETRIES)
def write_report(to: Destinations, audit_id: str, out_dir: str) -> dict[str, str]:
    """:func:`spex.audit.recording.write_report`."""
    return recording.write_report(to, audit_id, out_dir)


@task(name="publish", **RECORD_RETRIES)
def publish(to: Destinations, opened: OpenedAudit, report: dict[str, str], model: ModelInfo, passed: bool,
            faithfulness: float | None, verdict: str | None = None) -> recording.Published:
    """:func:`spex.audit.recording.publish`."""
    return recording.publish(to, opened, report, model, passed, faithfulness, verdict=verdict)


@task(name="fail-audit", retries=2, retry_delay_seconds=2)
def fail_audit(to: Destinations, audit_id: str, run_id: str | None, error: str,
               model: ModelInfo | None = None) -> None:
    """:func:`spex.audit.recording.fail_audit` (never raises for MLflow: it runs on the error path)."""
    recording.fail_audit(to, audit_id, run_id, error, model)
