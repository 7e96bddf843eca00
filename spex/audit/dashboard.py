"""What the audit shows in the MLflow UI, beside what it records: run names and descriptions, the
figures of each subject and of a release (drawn by :mod:`spex.report.figures`), the drift runs across
model versions. Called by the record stage (:mod:`spex.audit.recording`); every MLflow write goes
through :class:`spex.records.tracking.AuditTracker`. ``docs/dashboards.md`` shows the result."""

from __future__ import annotations

import math
from typing import Any

from spex.audit.fitting import Fit
from spex.audit.plan import ModelInfo, SubjectPlan
from spex.audit.search import Tables
from spex.audit.validation import Validation


def model_label(model: ModelInfo | None) -> str:
    """``name vN`` for a registry version, else the model's name."""
    if model is None:
        return "?"
    return f"{model.name} v{model.registry_version}" if model.registry_version else model.name


def audit_run_name(kind: str, model: ModelInfo, spec_name: str, verdict: str | None = None) -> str:
    """The audit run's name in the MLflow UI: the kind and model version, the spec, and (once known) the
    verdict — ``release v2 · demo-sentiment-heads · failed``. The model is the experiment's (one per
    model), so the name leaves it out and the runs table's narrow name column shows what differs."""
    version = f" v{model.registry_version}" if model.registry_version else ""
    return " · ".join([f"{kind}{version}", spec_name] + ([verdict] if verdict else []))


def audit_headline(kind: str, model: ModelInfo, baseline: ModelInfo | None, spec_name: str, lens: str | None,
                   audit_id: str) -> str:
    """The first line of an audit run's description: what was audited, against what, under which spec."""
    version = f" version {model.registry_version}" if model.registry_version else ""
    against = f" against {model_label(baseline)}" if baseline is not None else ""
    return (f"**{kind} audit** of `{model.name}`{version} (`{model.uri}`){against} · spec `{spec_name}`"
            f"{f' ({lens} lens)' if lens else ''} · audit id `{audit_id}`")


def _ranking_options(tracker: Any, run_id: str) -> tuple[float, int]:
    """(the intervals' level, the spec's top k) from the audit run's params (the spec's, flattened)."""
    params = tracker.client.get_run(run_id).data.params

    def number(key: str, default: float) -> float:
        try:
            return float(params.get(key, default))
        except (TypeError, ValueError):
            return default

    return number("ranking.confidence", 0.95), int(number("ranking.top_k", 10))


def log_subject_figures(tracker: Any, audit_run_id: str, run_id: str, plan: SubjectPlan, tables: Tables) -> list[str]:
    """Draw the subject's figures (:mod:`spex.report.figures`) and log them on its run as
    ``figures/<name>.png``; returns their artifact paths."""
    from spex.report import figures

    level, top_k = _ranking_options(tracker, audit_run_id)
    drawn = figures.figures_for_subject(plan.id, plan.view, plan.labels, tables.ranking, tables.shapley,
                                        tables.pairs, index=tables.index, level=level,
                                        top=min(figures.TOP, max(top_k, 10)))
    paths = []
    for name, figure in drawn.items():
        paths.append(f"figures/{name}")
        tracker.log_figure(run_id, figure, paths[-1])
    return paths


def _num(value: Any, digits: int = 3) -> str:
    if value is None or not isinstance(value, (int, float)) or not math.isfinite(value):
        return "–"
    return f"{value:.{digits}g}"


def _interaction_name(row: dict[str, Any]) -> str:
    labels = row.get("labels")
    return " × ".join(labels) if labels else "{" + ", ".join(str(m) for m in row["members"]) + "}"


def _cell(text: Any) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")


def subject_note(lens: str, plan: SubjectPlan, fit: Fit, tables: Tables, validation: Validation,
                  figures: list[str]) -> str:
    """The subject run's description: what was audited, how faithful the fit is, its top interactions."""
    r2 = f"{_num(validation.heldout_r2)} [{_num(validation.heldout_r2_low)}, {_num(validation.heldout_r2_high)}]"
    lines = [f"Subject `{_cell(plan.id)}` · {lens} lens · {plan.n} features · budget {plan.budget} · method "
             f"{fit.method} · held-out R² {r2} on {validation.n_heldout} masks", "",
             f"| rank | interaction ({tables.index}) | value | ± se | interval |", "|---|---|---|---|---|"]
    for row in tables.ranking[:5]:
        lines.append(f"| {row['rank']} | {_cell(_interaction_name(row)[:80])} | {_num(row['value'], 4)} | "
                     f"{_num(row.get('se'), 2)} | [{_num(row.get('ci_low'))}, {_num(row.get('ci_high'))}] |")
    if figures:
        lines += ["", "Figures (Artifacts): " + ", ".join(f"`{f}`" for f in figures)]
    return "\n".join(lines)


def log_release_figures(tracker: Any, run_id: str, document: dict[str, Any], model: ModelInfo) -> list[str]:
    """Per subject of a release audit, its candidate-vs-baseline figure as ``figures/release/<subject>.png``
    on the audit run (from the diff in the report's export, so it shows what the report shows)."""
    from spex.report import figures
    from spex.report.export import file_stems

    audit = document.get("audit") or {}
    baseline = audit.get("baseline") or {}
    candidate = f"v{model.registry_version}" if model.registry_version else "candidate"
    base = f"v{baseline['registry_version']}" if baseline.get("registry_version") else "baseline"
    level = float(audit.get("confidence") or 0.95)
    subjects = document.get("subjects") or {}
    stems = file_stems(list(subjects))
    paths = []
    for key, subject in subjects.items():
        diff = subject.get("diff")
        if not diff:
            continue
        significant = sum(bool(c.get("significant")) for c in diff.get("tested") or [])
        figure = figures.release_figure(
            diff.get("tested") or [], level=level, candidate=f"{candidate} (candidate)", baseline=f"{base} (baseline)",
            title=f"{key}: {candidate} vs {base}: {significant} significant change{'s' * (significant != 1)} "
                  f"(FDR {diff.get('fdr', 0.05):g}, min effect {diff.get('min_effect', 0.0):g})")
        if figure is not None:
            paths.append(f"figures/release/{stems[key]}.png")
            tracker.log_figure(run_id, figure, paths[-1])
    return paths


def log_drift(tracker: Any, audit_id: str, audit_run_id: str, document: dict[str, Any], model: ModelInfo,
              name: str | None, lens: str | None, verdict: str) -> None:
    """This version's point on the drift run of each subject (model, spec, subject): see
    :meth:`spex.records.tracking.AuditTracker.log_drift`."""
    from spex.records import verdicts

    try:
        version = int(str(model.registry_version))
    except ValueError:
        return  # not a numbered registry version: nothing to put on a version axis
    audit = document.get("audit") or {}
    key, spec_name = verdicts.spec_key(name, lens), verdicts.display_name(name, lens)
    for subject, data in (document.get("subjects") or {}).items():
        metrics = data.get("metrics") or {}
        drift = tracker.drift_run(str(model.registry_name), spec_key=key, spec_name=spec_name, subject=subject,
                                  lens=lens)
        tracker.log_drift(drift, version=version, audit_id=audit_id, audit_run_id=audit_run_id,
                          index=str(data.get("index") or "fbii"), ranking=data.get("interactions") or [],
                          top_k=int(audit.get("top_k") or 10), heldout_r2=data.get("heldout_r2"),
                          heldout_r2_low=metrics.get("heldout_r2_low"), heldout_r2_high=metrics.get("heldout_r2_high"),
                          verdict=verdict)


def audit_note(document: dict[str, Any], kind: str, model: ModelInfo, spec_name: str, lens: str | None,
               verdict: str, audit_id: str, experiment_id: str, run_id: str, figures: list[str]) -> str:
    """The audit run's description: what it audited, its verdict, the gates, each subject in one line,
    where the report and the figures are."""
    from spex.records import tracking

    audit = document.get("audit") or {}
    baseline = audit.get("baseline") or None
    against = None
    if baseline:
        against = ModelInfo(uri=baseline.get("source_uri") or "", name=baseline.get("name") or "?",
                            revision=baseline.get("revision") or "", registry_name=None,
                            registry_version=baseline.get("registry_version"), kind="", describe={}, key="")
    shown = verdict if verdict == "passed" else verdict.upper()
    lines = [audit_headline(kind, model, against, spec_name, lens, audit_id)
             + f" · verdict **{shown}**", ""]
    gates = document.get("gates") or []
    if gates:
        lines += ["| gate | value | threshold | result |", "|---|---|---|---|"]
        for g in gates:
            state = g.get("state") or ("passed" if g.get("passed") else "failed")
            lines.append(f"| {_cell(g.get('metric'))} | {_num(g.get('value'), 4)} | {_cell(g.get('comparator') or '')} "
                         f"{_num(g.get('threshold'), 4)} | {state if state == 'passed' else f'**{state}**'} |")
        lines.append("")
    lines += ["| subject | held-out R² | top interaction | significant changes |", "|---|---|---|---|"]
    for key, s in (document.get("subjects") or {}).items():
        metrics = s.get("metrics") or {}
        top = (s.get("interactions") or [None])[0]
        top_text = f"{_cell(_interaction_name(top)[:60])} {_num(top['value'], 3)}" if top else "–"
        diff = s.get("diff")
        changes = str(sum(bool(c.get("significant")) for c in diff.get("tested") or [])) if diff else "–"
        lines.append(f"| {_cell(key)} | {_num(s.get('heldout_r2'))} [{_num(metrics.get('heldout_r2_low'))}, "
                     f"{_num(metrics.get('heldout_r2_high'))}] | {top_text} | {changes} |")
    report = tracking.run_url("", experiment_id, run_id, "artifacts/report/report.html")
    lines += ["", f"Report: [report/report.html]({report}) · subjects: the nested runs under this one"
              + (" · release figures: " + ", ".join(f"`{f}`" for f in figures) if figures else "")]
    return "\n".join(lines)
