"""The audit in the Prefect UI: run names that say what a run is, its result as Prefect artifacts.

* flow-run names: ``<kind> <model> · <spec>`` (``release spex-demo-sentiment@candidate · demo-heads``);
  the ablation chunks' task-run names (``ablate <subject> · <role> · masks <from>–<to>``) and their
  progress artifacts are the task layer's (:mod:`tasks.ablate`, :mod:`tasks.runners`);
* on the flow run: a table artifact of the gates (state, value, threshold, per subject) and one
  markdown artifact per subject with its top interactions and their intervals;
* while a long ablation stage runs: a progress artifact per subject and role, updated per chunk.

Artifact keys are global in Prefect (a new run adds a version under the same key), so they name the
spec and subject: the UI's artifact page then shows each subject's latest result and its history.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from spex.audit.pipeline import AuditOutcome

_KEY = re.compile(r"[^a-z0-9-]+")


def artifact_key(*parts: str) -> str:
    """A valid Prefect artifact key (lowercase letters, digits, dashes) from free text."""
    key = _KEY.sub("-", "-".join(p for p in parts if p).lower()).strip("-")
    return key[:200] or "spex"


def _short_model(model: Any) -> str:
    uri = model.get("uri", "") if isinstance(model, Mapping) else str(model or "")
    return uri.removeprefix("models:/").removeprefix("builtin:").rstrip("/").rsplit("/", 1)[-1] or "model"


def audit_run_name() -> str:
    """The flow-run name of an audit, from its parameters (Prefect calls this when the run starts)."""
    from prefect.runtime import flow_run

    params = flow_run.parameters
    spec = params.get("spec") or {}
    model = params.get("model") or spec.get("model")
    return f"{params.get('kind', 'audit')} {_short_model(model)} · {spec.get('name') or spec.get('lens', 'spec')}"


def release_run_name() -> str:
    from prefect.runtime import flow_run

    params = flow_run.parameters
    spec = params.get("spec") or {}
    candidate = params.get("candidate") or spec.get("model")
    baseline = params.get("baseline") or spec.get("baseline")
    return f"release {_short_model(candidate)} vs {_short_model(baseline)} · {spec.get('name') or spec.get('lens')}"


def _fmt(x: Any) -> str:
    return "—" if x is None else f"{x:.4g}" if isinstance(x, float) else str(x)


def gate_rows(outcome: AuditOutcome) -> list[dict[str, Any]]:
    """The gate table: one row per gate and subject (what the artifact shows)."""
    rows = []
    for g in outcome.gates:
        per = g.details.get("per_subject") or {"(all)": g.value}
        for subject, value in per.items():
            rows.append({"gate": g.metric, "subject": subject, "state": g.state, "value": _fmt(value),
                         "comparator": g.comparator, "threshold": _fmt(g.threshold)})
    return rows


def subject_markdown(outcome: AuditOutcome, subject: str, top: int) -> str:
    """A subject's top interactions with their intervals, and its faithfulness, as markdown."""
    s = outcome.subjects[subject]
    low, high = s.heldout_r2_interval
    lines = [f"### {subject} — {outcome.model.name} ({outcome.kind}, verdict **{outcome.verdict}**)", "",
             f"held-out R² {_fmt(s.heldout_r2)} [{_fmt(low)}, {_fmt(high)}] · n = {s.n} · budget {s.budget}", "",
             "| rank | interaction | value | ± se | interval |", "|---:|---|---:|---:|---|"]
    for r in s.ranking[:top]:
        name = " × ".join(r["labels"]) if r.get("labels") else ", ".join(map(str, r["members"]))
        name = name.replace("|", "\\|")
        ci = f"[{_fmt(r.get('ci_low'))}, {_fmt(r.get('ci_high'))}]"
        lines.append(f"| {r['rank']} | {name} | {r['value']:+.4g} | {_fmt(r.get('se'))} | {ci} |")
    diff = (outcome.diffs or {}).get(subject)
    if diff:
        significant = [c for c in diff.get("tested", []) if c["significant"]]
        lines += ["", f"**vs baseline**: {len(significant)} significant changes (BH at FDR {diff.get('fdr')})"]
        lines += [f"- {c['kind']}: {c['name']} Δ {_fmt(c['delta'])} ± {_fmt(c['delta_se'])}" for c in significant]
    return "\n".join(lines)


def publish_artifacts(outcome: AuditOutcome, spec: Mapping[str, Any]) -> None:
    """The gate table and each subject's top interactions, as artifacts of the running flow."""
    from prefect.artifacts import create_markdown_artifact, create_table_artifact

    name = str(spec.get("name") or spec.get("lens") or "spec")
    top = int((spec.get("ranking") or {}).get("top_k", 10))
    create_table_artifact(gate_rows(outcome) or [{"gate": "(none configured)", "state": outcome.verdict}],
                          key=artifact_key("spex-gates", name, outcome.kind),
                          description=f"{outcome.kind} {outcome.model.name}: verdict {outcome.verdict}")
    for subject in outcome.subjects:
        create_markdown_artifact(subject_markdown(outcome, subject, top),
                                 key=artifact_key("spex-top", name, subject, outcome.kind),
                                 description=f"top interactions of {subject} ({outcome.model.name})")
