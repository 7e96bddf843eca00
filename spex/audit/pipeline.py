"""The audit pipeline: one model version × the subjects of one lens → records in MLflow and the
metadata DB, an HTML report, gates.

    outcome = spex.audit.run(spec)                # in this process, no Prefect (a notebook, a test)
    outcome.passed, outcome.report["html"], outcome.subjects["food"].ranking

The order of the stages is written once, in :func:`execute`; *how* each stage runs is a
:class:`Stages` object: this module's calls the plain functions of :mod:`spex.audit`, and
``tasks.stages.TaskStages`` (what the Prefect flow ``flows.audit.audit`` passes) calls the Prefect task
over each of them (cached on content hashes, retried on transient errors). So the flow and
:func:`run` cannot drift apart: same masks, same values, same records.

Stage by stage (function → what it records):

========== ============================================ ==========================================
prepare    :func:`spex.audit.plan.resolve_model`,        nothing (before anything is recorded)
           :func:`~spex.audit.plan.prepare_subject`
sample     :func:`spex.audit.sampling.sample_masks`      nothing
ablate     :func:`spex.audit.ablate.ablate_chunk`        the ablation store
fit        :func:`spex.audit.fitting.fit_subject`        nothing (its booster is recorded later)
search     :func:`spex.audit.search.interaction_tables`  nothing
validate   :func:`spex.audit.validation.removal_plan`,   nothing
           :func:`~spex.audit.validation.score`
record     :mod:`spex.audit.recording`                   DB rows, MLflow runs / artifacts / tags
========== ============================================ ==========================================

"Nothing partial": everything that can reject the input (the spec, the model URI, each subject's value
function and budget) runs BEFORE the audit is opened in the DB and MLflow; once opened, any failure
marks the audit failed, closes its MLflow runs as FAILED, and re-raises.
"""

from __future__ import annotations

import dataclasses
import time
import uuid
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from spex import settings
from spex.audit import progress, runtime
from spex.audit.ablate import Ablations, InProcessAblation, add_stats, empty_stats
from spex.audit.fitting import Fit, fit_subject
from spex.audit.metering import StageMeter
from spex.audit.plan import (
    ModelInfo,
    PreparedSubject,
    SubjectPlan,
        plan_subject,
    prepare_subject,
    resolve_model,
)
from spex.audit.preflight import check_environment, with_model
from spex.audit.reaping import reap_crashed_audits
from spex.audit.recording import (
    Destinations,
    OpenedAudit,
    Published,
    RecordedSubject,
    diff_against_baseline,
    fail_audit,
    finish_audit,
    open_audit,
    publish,
    record_subject,
    write_report,
)
from spex.audit.sampling import Samples, sample_masks
from spex.audit.search import Rows, Tables, interaction_tables
from spex.audit.spec import AuditSpec, subject_digest, validate_spec
from spex.audit.validation import RemovalPlan, Validation, removal_plan, score
from spex.lenses.registry import lens_versions
from spex.records.gate import verdict as gate_verdict

TOTALS = ("computed", "from_store", "cached_chunks", "chunks")
"""The ablation counters summed over an audit's subjects."""


# ---------------------------------------------------------------------------------------------- outcome
@dataclass(frozen=True)
class SubjectOutcome:
    """One audited subject: held-out R², the recorded ranking (JSON rows), n, budget, the ablation
    counters with ``seconds`` and ``peak_rss_mib`` per stage (:class:`spex.audit.metering.StageMeter`),
    and the removal test."""

    heldout_r2: float | None
    ranking: Rows
    n: int
    budget: int
    stats: dict[str, Any]
    removal: dict[str, Any]
    heldout_r2_interval: tuple[float | None, float | None] = (None, None)

    def to_dict(self) -> dict[str, Any]:
        return {"heldout_r2": self.heldout_r2, "heldout_r2_interval": list(self.heldout_r2_interval),
                "ranking": self.ranking, "n": self.n, "budget": self.budget, "stats": self.stats,
                "removal": self.removal}


@dataclass(frozen=True)
class AuditOutcome:
    """What an audit did: its ids (DB audit id, MLflow run and experiment), the gates and whether they
    passed, the diffs against the baseline (release audits), the report's paths, the registry tags set,
    per-subject outcomes, the model calls it made, and — for a release audit — the baseline's outcome."""

    audit_id: str
    kind: str
    passed: bool
    gates: list[Any]
    diffs: dict[str, dict[str, Any] | None] | None
    model: ModelInfo
    baseline_audit_id: str | None
    mlflow_run_id: str
    mlflow_experiment_id: str
    report: dict[str, str]
    registry_tags: dict[str, str] | None
    min_heldout_r2: float | None
    subjects: dict[str, SubjectOutcome]
    notes: list[str]
    model_calls: dict[str, int]
    seconds: float
    runner: dict[str, Any]
    baseline: AuditOutcome | None = None
    verdict: str = ""  # passed | failed | undecided (spex.records.gate.verdict of the gates)
    budget_rounds: list[dict[str, Any]] = field(default_factory=list)  # masks added for undecided gates

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready values (what ``spex audit --json`` prints, before it trims the rankings)."""
        from dataclasses import asdict

        out = {
            "audit_id": self.audit_id, "kind": self.kind, "passed": self.passed, "verdict": self.verdict,
            "budget_rounds": self.budget_rounds,
            "gates": [asdict(g) for g in self.gates], "diffs": self.diffs, "model": self.model.to_dict(),
            "baseline_audit_id": self.baseline_audit_id, "mlflow_run_id": self.mlflow_run_id,
            "mlflow_experiment_id": self.mlflow_experiment_id, "report": self.report,
            "registry_tags": self.registry_tags, "min_heldout_r2": self.min_heldout_r2,
            "subjects": {k: s.to_dict() for k, s in self.subjects.items()}, "notes": self.notes,
            "model_calls": self.model_calls, "seconds": self.seconds, "runner": self.runner,
        }
        if self.baseline is not None:
            out["baseline"] = self.baseline.to_dict()
        return out


# ---------------------------------------------------------------------------------------------- context
@dataclass(frozen=True)
class AuditContext:
    """Everything one audit run needs to know besides its stages: the spec (model applied), its id and
    kind, where records go, the data dir, the baseline of a release audit, and whether to bypass the
    task cache (``refresh``; the ablation store still serves stored masks)."""

    spec: AuditSpec
    audit_id: str
    data_dir: Path
    kind: str = "audit"
    to: Destinations = field(default_factory=Destinations)
    baseline_model: ModelInfo | None = None
    baseline_audit_id: str | None = None
    refresh: bool = False

    @cached_property
    def spec_dict(self) -> dict[str, Any]:
        """The spec as JSON-able data (what the stages that may run in another process get)."""
        return self.spec.public_dict()

    @property
    def store_root(self) -> str:
        return str(self.data_dir / "ablations")

    @property
    def report_dir(self) -> Path:
        return self.data_dir / "reports" / self.audit_id


class Pending(Protocol):
    def gather(self) -> tuple[np.ndarray, dict[str, Any]]: ...


class AblationRunner(Protocol):
    """Where the ablation chunks run (:class:`spex.audit.ablate.InProcessAblation`, ``tasks.runners``)."""

    concurrent: bool
    slots: int

    def submit(self, spec: dict[str, Any], subject_id: str, fingerprint: str, masks: np.ndarray, store_root: str,
               role: str, chunk: int, refresh: bool = False) -> Pending: ...

    def running(self) -> int: ...

    def describe(self) -> dict[str, Any]: ...


# ---------------------------------------------------------------------------------------------- stages
class Stages:
    """How each stage runs: these methods call the plain :mod:`spex.audit` functions in this process.
    ``tasks.stages.TaskStages`` overrides every one with the Prefect task over the same function."""

    def resolve_model(self, spec: AuditSpec, model_key: str) -> ModelInfo:
        return resolve_model(spec, model_key)

    def prepare_subject(self, spec: AuditSpec, subject_id: str, model_key: str, versions: str) -> PreparedSubject:
        """``model_key`` and ``versions`` (the lens code's) are cache-key inputs only."""
        return prepare_subject(spec, subject_id, subject_digest(spec, runtime.subject_of(spec, subject_id)))

    def sample(self, spec: AuditSpec, plan: SubjectPlan) -> Samples:
        return sample_masks(spec.method, spec.method_options, plan.n, plan.budget, spec.seed, spec.holdout)

    def fit(self, spec: AuditSpec, plan: SubjectPlan, samples: Samples, ablations: Ablations) -> Fit:
        return fit_subject(plan, spec.method, spec.method_options, spec.seed, samples.train, ablations.train)

    def search(self, spec: AuditSpec, plan: SubjectPlan, fit: Fit) -> Tables:
        ranking = spec.ranking
        return interaction_tables(fit.spectrum, plan.labels, index=ranking.index, order=ranking.order,
                                  record_top=ranking.record_top, uncertainty=fit.uncertainty,
                                  level=ranking.confidence)

    def plan_removal(self, spec: AuditSpec, plan: SubjectPlan, fit: Fit) -> RemovalPlan:
        return removal_plan(fit.spectrum, spec.removal_r, plan.labels)

    def validate(self, spec: AuditSpec, fit: Fit, samples: Samples, ablations: Ablations, plan: RemovalPlan,
                 removal_values: np.ndarray) -> Validation:
        return score(fit.spectrum, samples.holdout, ablations.holdout, plan, removal_values,
                     level=spec.ranking.confidence, seed=spec.seed)

    def open_audit(self, to: Destinations, audit_id: str, model: ModelInfo, spec: dict[str, Any], kind: str,
                   baseline: ModelInfo | None, extra: dict[str, Any] | None) -> OpenedAudit:
        return open_audit(to, audit_id, model, spec, kind, baseline, extra)

    def record_subject(self, to: Destinations, opened: OpenedAudit, lens: str, plan: SubjectPlan, samples: Samples,
                       ablations: Ablations, fit: Fit, tables: Tables, validation: Validation,
                       stats: dict[str, Any]) -> RecordedSubject:
        return record_subject(to, opened, lens, plan, samples, ablations, fit, tables, validation, stats)

    def diff_against_baseline(self, to: Destinations, baseline_audit_id: str, rankings: dict[str, Rows], index: str,
                              k: int, fdr: float, min_effect: float, level: float) -> dict[str, dict[str, Any] | None]:
        return diff_against_baseline(to, baseline_audit_id, rankings, index, k, fdr=fdr, min_effect=min_effect,
                                     level=level)

    def finish_audit(self, to: Destinations, opened: OpenedAudit, gates: list[Any], metrics: dict[str, Any]) -> bool:
        return finish_audit(to, opened, gates, metrics)

    def write_report(self, to: Destinations, audit_id: str, out_dir: str) -> dict[str, str]:
        return write_report(to, audit_id, out_dir)

    def publish(self, to: Destinations, opened: OpenedAudit, report: dict[str, str], model: ModelInfo, passed: bool,
                faithfulness: float | None, verdict: str | None = None) -> Published:
        return publish(to, opened, report, model, passed, faithfulness, verdict=verdict)

    def fail_audit(self, to: Destinations, audit_id: str, run_id: str | None, error: str,
                   model: ModelInfo | None) -> None:
        fail_audit(to, audit_id, run_id, error, model)


# ---------------------------------------------------------------------------------------------- running
def run(spec: dict[str, Any] | AuditSpec, *, model: str | dict[str, Any] | None = None, kind: str = "audit",
        baseline_model: ModelInfo | None = None, baseline_audit_id: str | None = None, db_url: str | None = None,
        tracking_uri: str | None = None) -> AuditOutcome:
    """Run a whole audit in this process, without Prefect: the same stages, records and outcome as the
    Prefect flow ``flows.audit.audit`` (minus its task cache and its Ray runner; the ablation store
    still serves every mask measured before). An entry point: applies the offline defaults."""
    settings.apply_offline_defaults()
    audit_spec = spec if isinstance(spec, AuditSpec) else validate_spec(spec)
    context = AuditContext(with_model(audit_spec, model), audit_id=uuid.uuid4().hex, data_dir=settings.data_dir(),
                           kind=kind, to=Destinations(db_url, tracking_uri), baseline_model=baseline_model,
                           baseline_audit_id=baseline_audit_id)
    return execute(context, Stages(), InProcessAblation())


def execute(ctx: AuditContext, stages: Stages, chunks: AblationRunner) -> AuditOutcome:
    """The audit: prepare every subject, open the records, then sample → ablate → fit → search → validate
    → record subject by subject, then gates, report, publish (see the module docstring)."""
    spec = ctx.spec
    loads_before = dict(runtime.COUNTERS)
    started = time.perf_counter()
    check_environment(ctx.to.db_url)  # before any model call: a DB that is down costs no GPU time
    # -- everything that can reject the input, before anything is recorded
    model_key = runtime.cheap_model_key(spec.model)
    model = stages.resolve_model(spec, model_key)
    versions = lens_versions()
    plans = []
    for s in spec.subjects:
        plan = plan_subject(spec, stages.prepare_subject(spec, s.id, model_key, versions))
        plans.append(plan)
        progress.emit("subject_prepared", subject=s.id, n=plan.n, budget=plan.budget, holdout=spec.holdout)
    progress.emit("audit_start", audit_id=ctx.audit_id, kind=ctx.kind, model=model.name, uri=spec.model.uri,
                  revision=model.revision,
                  subjects=[{"id": p.id, "n": p.n, "budget": p.budget, "holdout": spec.holdout} for p in plans])
    extra = {"baseline_audit_id": ctx.baseline_audit_id} if ctx.baseline_audit_id else None
    reap_crashed_audits(ctx.to)  # audits of killed processes: failed, MLflow runs closed
    opened = stages.open_audit(ctx.to, ctx.audit_id, model, ctx.spec_dict, ctx.kind, ctx.baseline_model, extra)
    try:
        subjects, rounds, gates, diffs = _decide(ctx, stages, chunks, plans, opened)
        r2s = [v.heldout_r2 for v in subjects.values() if v.heldout_r2 is not None]
        faithfulness = min(r2s) if r2s else None
        totals: dict[str, Any] = {}
        for v in subjects.values():
            add_stats(totals, {k: v.stats[k] for k in TOTALS})
        added = sum(r["masks_added"] for r in rounds)
        passed = stages.finish_audit(ctx.to, opened, gates, {
            "min_heldout_r2": faithfulness, "masks_computed": totals.get("computed", 0) + added,
            "masks_from_store": totals.get("from_store", 0), "seconds": time.perf_counter() - started,
            "budget_rounds": len(rounds), "masks_added_for_undecided": added})
        verdict = gate_verdict(gates)
        report = stages.write_report(ctx.to, ctx.audit_id, str(ctx.report_dir))
        published = stages.publish(ctx.to, opened, report, model, passed, faithfulness, verdict)
    except BaseException as exc:
        stages.fail_audit(ctx.to, ctx.audit_id, opened.run_id, f"{type(exc).__name__}: {exc}", model)
        raise
    outcome = AuditOutcome(
        audit_id=ctx.audit_id, kind=ctx.kind, passed=bool(passed), gates=list(gates), diffs=diffs, model=model,
        baseline_audit_id=ctx.baseline_audit_id, mlflow_run_id=opened.run_id,
        mlflow_experiment_id=opened.experiment_id, report=report, registry_tags=published.registry_tags,
        min_heldout_r2=faithfulness, subjects=subjects, notes=_notes(ctx),
        model_calls={"masks_computed": int(totals.get("computed", 0)),
                     "model_loads": runtime.COUNTERS["model_loads"] - loads_before["model_loads"],
                     "value_functions_built": runtime.COUNTERS["value_functions"] - loads_before["value_functions"]},
        seconds=time.perf_counter() - started, runner=chunks.describe(), verdict=verdict, budget_rounds=rounds)
    progress.emit("audit_done", audit_id=ctx.audit_id, passed=outcome.passed, verdict=verdict, report=report["html"])
    return outcome


def _evaluate(ctx: AuditContext, stages: Stages, subjects: dict[str, SubjectOutcome]
              ) -> tuple[list[Any], dict[str, dict[str, Any] | None] | None]:
    """The gates (and, in a release audit, the diffs they read) of one round's subjects."""
    from spex.audit.gates import evaluate_gates

    spec = ctx.spec
    diffs = None
    if ctx.baseline_audit_id:
        diffs = stages.diff_against_baseline(ctx.to, ctx.baseline_audit_id, {k: v.ranking for k, v in subjects.items()},
                                             spec.ranking.index, spec.ranking.top_k, spec.gates.drift_fdr,
                                             spec.gates.min_effect, spec.ranking.confidence)
    gates = evaluate_gates(spec.gates, faithfulness={k: v.heldout_r2 for k, v in subjects.items()},
                           rankings={k: v.ranking for k, v in subjects.items()}, diffs=diffs,
                           k=spec.ranking.top_k, without_baseline="skip",  # release gates: release audits only
                           faithfulness_intervals={k: v.heldout_r2_interval for k, v in subjects.items()},
                           level=spec.ranking.confidence)
    return gates, diffs


def _decide(ctx: AuditContext, stages: Stages, chunks: AblationRunner, plans: list[SubjectPlan],
            opened: OpenedAudit) -> tuple[dict[str, SubjectOutcome], list[dict[str, Any]], list[Any],
                                          dict[str, dict[str, Any] | None] | None]:
    """Audit the subjects and evaluate the gates; with ``max_budget``, audit until sure.

    Without a ceiling each subject is recorded as soon as it is measured. With one, a round whose
    verdict is undecided doubles the budget (up to ``max_budget``) of the subjects its undecided
    gates name and measures them again: the ablation store serves every mask already measured (the
    samples of a larger budget begin with those of the smaller one), so a round computes only the
    masks it adds. Subjects are recorded once, from the deciding round (or the last, when the ceiling
    is reached undecided — the verdict says so). A crash between rounds loses no model call."""
    from spex.audit.gates import undecided_subjects

    spec = ctx.spec
    adaptive = spec.max_budget is not None
    subjects, measured = _audit_subjects(ctx, stages, chunks, plans, opened, record=not adaptive)
    gates, diffs = _evaluate(ctx, stages, subjects)
    rounds: list[dict[str, Any]] = []
    current = {p.id: p for p in plans}
    while adaptive and gate_verdict(gates) == "undecided":
        names = undecided_subjects(gates) or set(current)
        grow = [p for p in current.values() if p.id in names and p.budget < spec.max_budget and not p.exact]
        if not grow:
            break
        bigger = [dataclasses.replace(p, budget=min(2 * p.budget, int(spec.max_budget))) for p in grow]
        reasons = sorted(g.metric for g in gates if g.state == "undecided")
        progress.emit("budget_round", round=len(rounds) + 1, gates=reasons,
                      subjects={p.id: p.budget for p in bigger})
        more, more_measured = _audit_subjects(ctx, stages, chunks, bigger, opened, record=False)
        added = sum(int(m.stats.get("computed", 0)) for m in more.values())
        rounds.append({"round": len(rounds) + 1, "undecided_gates": reasons,
                       "budgets": {p.id: [current[p.id].budget, p.budget] for p in bigger}, "masks_added": added})
        subjects.update(more)
        measured.update(more_measured)
        current.update({p.id: p for p in bigger})
        gates, diffs = _evaluate(ctx, stages, subjects)
    if adaptive:
        for sid, record in measured.items():
            with record.timer.stage("record"):
                record.write(stages, ctx, opened)
            progress.emit("stage_done", subject=sid, stage="record")
    return subjects, rounds, gates, diffs


def _notes(ctx: AuditContext) -> list[str]:
    """What the reader of a routine audit should know: its release gates did not apply."""
    gates = ctx.spec.gates
    if not gates.needs_baseline or ctx.baseline_audit_id:
        return []
    names = ", ".join(gates.baseline_gates)
    return [f"gates {names} compare with a baseline and apply to release audits (spex release)"]


@dataclass
class _Measured:
    """A measured subject's stage outputs, kept until it is recorded (the adaptive budget records the
    deciding round only)."""

    plan: SubjectPlan
    samples: Samples
    ablations: Ablations
    fit: Fit
    tables: Tables
    validation: Validation
    stats: dict[str, Any]
    timer: StageMeter

    def write(self, stages: Stages, ctx: AuditContext, opened: OpenedAudit) -> None:
        stages.record_subject(ctx.to, opened, ctx.spec.lens, self.plan, self.samples, self.ablations, self.fit,
                              self.tables, self.validation, {**self.stats, "seconds": dict(self.timer.seconds)})


def _audit_subjects(ctx: AuditContext, stages: Stages, chunks: AblationRunner, plans: list[SubjectPlan],
                    opened: OpenedAudit, *, record: bool = True
                    ) -> tuple[dict[str, SubjectOutcome], dict[str, _Measured]]:
    """Sample → ablate → fit → search → validate → record (unless ``record`` is False: then the
    caller records the returned bundles), subject by subject.

    With a concurrent runner (Ray) the train and held-out masks of the subjects ahead are submitted
    before this subject is gathered (enough chunks to keep every worker busy twice over, at least the
    next subject), so the workers compute while this process fits, validates and records subject by
    subject; the window bounds the masks held in flight for an audit of thousands of prompts."""
    spec = ctx.spec
    submitted: dict[str, tuple[Samples, StageMeter, list[Pending]]] = {}

    def measure(plan: SubjectPlan, masks: np.ndarray, role: str) -> Pending:
        return chunks.submit(ctx.spec_dict, plan.id, plan.fingerprint, masks, ctx.store_root, role,
                             spec.batch.chunk_size, ctx.refresh)

    def submit(plan: SubjectPlan) -> None:
        timer = StageMeter()
        with timer.stage("sample"):
            samples = stages.sample(spec, plan)
        progress.emit("stage", subject=plan.id, stage="sample", masks=samples.count)
        submitted[plan.id] = (samples, timer, [measure(plan, samples.train, "train"),
                                               measure(plan, samples.holdout, "holdout")])

    def submit_ahead(current: int) -> None:
        for k in range(current, len(plans)):
            if plans[k].id in submitted:
                continue
            if k > current + 1 and chunks.running() >= 2 * chunks.slots:
                break
            submit(plans[k])

    outcome: dict[str, SubjectOutcome] = {}
    measured: dict[str, _Measured] = {}
    for position, plan in enumerate(plans):
        sid = plan.id
        if chunks.concurrent:
            submit_ahead(position)
        else:  # computed when gathered, in this process
            submit(plan)
        samples, timer, pending = submitted.pop(sid)
        progress.emit("subject_start", subject=sid, total=samples.count + 3)
        with timer.stage("ablate"):
            (train, train_stats), (held, held_stats) = (p.gather() for p in pending)  # Ray: the rest keep running
        ablations = Ablations(train, held, add_stats(add_stats(empty_stats(), train_stats), held_stats))
        with timer.stage("fit"):
            progress.emit("stage", subject=sid, stage="fit")
            fit = stages.fit(spec, plan, samples, ablations)
        progress.emit("stage_done", subject=sid, stage="fit", seconds=fit.seconds["total"])
        with timer.stage("search"):
            tables = stages.search(spec, plan, fit)
        progress.emit("stage_done", subject=sid, stage="search", rows=len(tables.ranking))
        with timer.stage("validate"):
            removal = stages.plan_removal(spec, plan, fit)
            removal_values, removal_stats = measure(plan, removal.masks, "removal").gather()
            validation = stages.validate(spec, fit, samples, ablations, removal, removal_values)
        progress.emit("stage_done", subject=sid, stage="validate", heldout_r2=validation.heldout_r2)
        stats = add_stats(dict(ablations.stats), removal_stats)
        measured[sid] = _Measured(plan, samples, ablations, fit, tables, validation, stats, timer)
        if record:
            with timer.stage("record"):
                measured[sid].write(stages, ctx, opened)
            progress.emit("stage_done", subject=sid, stage="record")
        outcome[sid] = SubjectOutcome(heldout_r2=validation.heldout_r2, ranking=tables.ranking, n=plan.n,
                                      budget=plan.budget, stats={**stats, "seconds": dict(timer.seconds),
                                                                 "peak_rss_mib": timer.report()},
                                      removal=validation.removal,
                                      heldout_r2_interval=(validation.heldout_r2_low, validation.heldout_r2_high))
        progress.emit("subject_done", subject=sid, heldout_r2=validation.heldout_r2, stats=stats)
    return outcome, measured
