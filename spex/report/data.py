"""What a report shows, read back from the metadata DB.

The report is built from the DB only — at the end of a flow and by ``spex report AUDIT_ID`` alike —
so the two can never disagree, and a report can be rebuilt for any recorded audit without MLflow or
the model. For a release audit the baseline audit (its id is kept in the stored spec) is read too and
each subject is diffed with :func:`spex.engine.ranking_diff.diff_rankings`.
"""

from __future__ import annotations

import datetime as dt
import json
import math
from dataclasses import dataclass, field
from typing import Any

from spex.engine.ranking_diff import SubjectDiff, diff_rankings


@dataclass
class SubjectReport:
    """One subject of an audit, as recorded."""

    key: str
    subject_id: int
    lens: str
    n: int
    labels: list[str]
    view: dict[str, Any]
    metrics: dict[str, Any]
    heldout_r2: float | None
    n_heldout: int | None
    removal: dict[str, Any] | None
    proxy_r2: float | None
    index: str
    ranking: list[dict[str, Any]]
    shapley: list[dict[str, Any]]
    pairs: list[dict[str, Any]]
    mlflow_run_id: str | None
    diff: SubjectDiff | None = None
    baseline_ranking: list[dict[str, Any]] | None = None

    def first_order(self) -> list[float]:
        """Shapley value of each feature (0 where not recorded)."""
        out = [0.0] * self.n
        for r in self.shapley:
            if len(r["members"]) == 1 and 0 <= r["members"][0] < self.n:
                out[r["members"][0]] = float(r["value"])
        return out

    def first_order_se(self) -> list[float | None]:
        """The standard error of each feature's Shapley value (None where unknown or not recorded)."""
        out: list[float | None] = [None] * self.n
        for r in self.shapley:
            if len(r["members"]) == 1 and 0 <= r["members"][0] < self.n:
                out[r["members"][0]] = r.get("se")
        return out


@dataclass
class ReportData:
    """An audit and everything recorded under it, ready to render."""

    audit_id: str
    kind: str
    status: str
    passed: bool | None
    model: dict[str, Any]
    baseline: dict[str, Any] | None
    started_at: dt.datetime | None
    finished_at: dt.datetime | None
    spec: dict[str, Any]
    error: str | None
    mlflow_run_id: str | None
    mlflow_experiment_id: str | None
    gates: list[dict[str, Any]]
    subjects: list[SubjectReport]
    baseline_audit_id: str | None = None
    top_k: int = 10
    extra: dict[str, Any] = field(default_factory=dict)
    verdict: str | None = None  # passed | failed | undecided; None: running, or nothing gated
    confidence: float = 0.95  # the level of the recorded intervals (the spec's ranking.confidence)

    @property
    def min_heldout_r2(self) -> float | None:
        values = [s.heldout_r2 for s in self.subjects if s.heldout_r2 is not None]
        return min(values) if values else None


INTERVAL_FIELDS = ("se", "ci_low", "ci_high")


def _known(value: Any) -> float | None:
    """A float, or None where unknown (missing, NaN): the report and the JSON say null, never NaN."""
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def _rows(frame: Any) -> list[dict[str, Any]]:
    """Interaction rows, best rank first, each with its value's ``se``, ``ci_low``, ``ci_high`` (None: unknown)."""
    out = []
    for r in frame.to_dict("records"):
        labels = r.get("labels")
        if labels is None or (isinstance(labels, float) and math.isnan(labels)):
            labels = None
        out.append({"members": [int(m) for m in r["members"]], "labels": [str(x) for x in labels] if labels else None,
                    "order": int(r["order"]), "value": float(r["value"]), "rank": int(r["rank"]),
                    **{key: _known(r.get(key)) for key in INTERVAL_FIELDS}})
    return sorted(out, key=lambda r: r["rank"])


def _model(m: Any) -> dict[str, Any] | None:
    if m is None:
        return None
    return {"name": m.name, "revision": m.revision, "source_uri": m.source_uri, "registry_version": m.registry_version}


def load_report_data(store: Any, audit_id: str) -> ReportData:
    """Read an audit (any unique id prefix) and its subjects' tables from a :class:`MetadataStore`."""
    audit = store.get_audit(audit_id)
    spec = dict(audit.spec or {})
    extra = spec.pop("_audit", None) or {}
    ranking_spec = spec.get("ranking") or {}
    index = str(ranking_spec.get("index") or "fbii")
    top_k = int(ranking_spec.get("top_k") or 10)
    confidence = float(ranking_spec.get("confidence") or 0.95)
    baseline_audit_id = extra.get("baseline_audit_id")
    baseline_subjects: set[int] = set()
    if baseline_audit_id:
        try:
            baseline_subjects = {s.subject.id for s in store.get_audit(baseline_audit_id).subjects}
        except LookupError:
            baseline_audit_id = None
    subjects = []
    for s in audit.subjects:
        subj = s.subject

        def table(name: str) -> list[dict[str, Any]]:
            if s.interaction_counts.get(name, 0) == 0:
                return []
            return _rows(store.get_interactions(audit.id, subj.id, index=name))

        try:
            view = json.loads(subj.description) if subj.description else {}
        except ValueError:
            view = {}
        v = s.validation
        proxy = s.proxies[0] if s.proxies else None
        report = SubjectReport(
            key=subj.key, subject_id=subj.id, lens=subj.lens, n=int(subj.n_features or len(subj.labels or [])),
            labels=list(subj.labels or []), view=view, metrics=dict(s.metrics or {}),
            heldout_r2=v.heldout_r2 if v else None, n_heldout=v.n_heldout if v else None,
            removal=v.removal if v else None, proxy_r2=proxy.cv_r2 if proxy else None,
            index=index, ranking=table(index), shapley=table("shapley") if index != "shapley" else table(index),
            pairs=table("pairs"), mlflow_run_id=s.mlflow_run_id,
        )
        if baseline_audit_id and subj.id in baseline_subjects:
            theirs = _rows(store.get_interactions(baseline_audit_id, subj.id, index=index))
            report.baseline_ranking = theirs
            gates = spec.get("gates") or {}
            report.diff = diff_rankings(report.ranking, theirs, k=top_k, subject=subj.key,
                                        fdr=float(gates.get("drift_fdr") or 0.05),
                                        min_effect=float(gates.get("min_effect") or 0.0), level=confidence)
        subjects.append(report)
    return ReportData(
        audit_id=audit.id, kind=audit.kind, status=audit.status, passed=audit.passed, model=_model(audit.model) or {},
        baseline=_model(audit.baseline), started_at=audit.started_at, finished_at=audit.finished_at, spec=spec,
        error=audit.error, mlflow_run_id=audit.mlflow_run_id, mlflow_experiment_id=audit.mlflow_experiment_id,
        gates=[{"metric": g.metric, "value": g.value, "comparator": g.comparator, "threshold": g.threshold,
                "passed": g.passed, "state": g.state, "details": g.details} for g in audit.gates],
        subjects=subjects, baseline_audit_id=baseline_audit_id, top_k=top_k, extra=extra, verdict=audit.verdict,
        confidence=confidence,
    )
