"""The pipeline's stages as Prefect tasks: what the audit flow hands to :func:`spex.audit.pipeline.execute`.

:class:`spex.audit.pipeline.Stages` calls each stage's plain function; :class:`TaskStages` calls the
task over the same function instead, so the flow gets Prefect's caching, retries and task runs while
the order of the stages stays written once (in the pipeline). ``refresh`` ignores the task cache of the
cached stages (the ablation store still serves stored masks: nothing measured is measured twice).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from spex.audit import runtime
from spex.audit.ablate import Ablations
from spex.audit.fitting import Fit
from spex.audit.pipeline import Stages
from spex.audit.plan import ModelInfo, PreparedSubject, SubjectPlan
from spex.audit.recording import Destinations, OpenedAudit, Published, RecordedSubject
from spex.audit.sampling import Samples
from spex.audit.search import Tables
from spex.audit.spec import AuditSpec, subject_digest
from spex.audit.validation import RemovalPlan, Validation
from tasks import fit as fit_tasks
from tasks import prepare as prepare_tasks
from tasks import record as record_tasks
from tasks import sample as sample_tasks
from tasks import search as search_tasks
from tasks import validate as validate_tasks


class TaskStages(Stages):
    """Every stage through its task (see the module docstring)."""

    def __init__(self, refresh: bool = False) -> None:
        self.cache_options: dict[str, Any] = {"refresh_cache": True} if refresh else {}

    def resolve_model(self, spec: AuditSpec, model_key: str) -> ModelInfo:
        return prepare_tasks.resolve_model.with_options(**self.cache_options)(spec, model_key)

    def prepare_subject(self, spec: AuditSpec, subject_id: str, model_key: str, versions: str) -> PreparedSubject:
        digest = subject_digest(spec, runtime.subject_of(spec, subject_id))
        return prepare_tasks.prepare_subject.with_options(**self.cache_options)(spec, subject_id, model_key, digest, versions)

    def sample(self, spec: AuditSpec, plan: SubjectPlan) -> Samples:
        return sample_tasks.sample_masks.with_options(**self.cache_options)(spec.method, spec.method_options, plan.n,
                                                                      plan.budget, spec.seed, spec.holdout)

    def fit(self, spec: AuditSpec, plan: SubjectPlan, samples: Samples, ablations: Ablations) -> Fit:
        return fit_tasks.fit.with_options(**self.cache_options)(plan, spec.method, spec.method_options, spec.seed,
                                                          samples.train, ablations.train)

    def search(self, spec: AuditSpec, plan: SubjectPlan, fit: Fit) -> Tables:
        ranking = spec.ranking
        return search_tasks.search(fit, plan.labels, ranking.index, ranking.order, ranking.record_top,
                                   ranking.confidence)

    def plan_removal(self, spec: AuditSpec, plan: SubjectPlan, fit: Fit) -> RemovalPlan:
        return validate_tasks.plan_removal(fit.spectrum, spec.removal_r, plan.labels)

    def validate(self, spec: AuditSpec, fit: Fit, samples: Samples, ablations: Ablations, plan: RemovalPlan,
                 removal_values: np.ndarray) -> Validation:
        return validate_tasks.validate(fit.spectrum, samples.holdout, ablations.holdout, plan, removal_values,
                                       spec.ranking.confidence, spec.seed)

    def open_audit(self, to: Destinations, audit_id: str, model: ModelInfo, spec: dict[str, Any], kind: str,
                   baseline: ModelInfo | None, extra: dict[str, Any] | None) -> OpenedAudit:
        return record_tasks.open_audit(to, audit_id, model, spec, kind, baseline, extra)

    def record_subject(self, to: Destinations, opened: OpenedAudit, lens: str, plan: SubjectPlan, samples: Samples,
                       ablations: Ablations, fit: Fit, tables: Tables, validation: Validation,
                       stats: dict[str, Any]) -> RecordedSubject:
        return record_tasks.record_subject(to, opened, lens, plan, samples, ablations, fit, tables, validation, stats)

    def diff_against_baseline(self, to: Destinations, baseline_audit_id: str, rankings: dict[str, Any], index: str,
                              k: int, fdr: float, min_effect: float, level: float) -> dict[str, dict[str, Any] | None]:
        return record_tasks.diff_against_baseline(to, baseline_audit_id, rankings, index, k, fdr, min_effect, level)

    def finish_audit(self, to: Destinations, opened: OpenedAudit, gates: list[Any], metrics: dict[str, Any]) -> bool:
        return record_tasks.finish_audit(to, opened, gates, metrics)

    def write_report(self, to: Destinations, audit_id: str, out_dir: str) -> dict[str, str]:
        return record_tasks.write_report(to, audit_id, out_dir)

    def publish(self, to: Destinations, opened: OpenedAudit, report: dict[str, str], model: ModelInfo, passed: bool,
                faithfulness: float | None, verdict: str | None = None) -> Published:
        return record_tasks.publish(to, opened, report, model, passed, faithfulness, verdict)

    def fail_audit(self, to: Destinations, audit_id: str, run_id: str | None, error: str,
                   model: ModelInfo | None) -> None:
        record_tasks.fail_audit(to, audit_id, run_id, error, model)
