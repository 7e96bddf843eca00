"""The JSON export of an audit, with shapiq-compatible interaction values.

``interactions.json`` holds the whole audit (model, its verdict — passed / failed / undecided — and
gates with their state, per subject: labels, validation, the ranked interactions each with its
standard error ``se`` and ``confidence`` interval ``ci_low``/``ci_high`` (null: unknown), first-order
values and their ``se``, the diff against the baseline). Besides it, ``shapiq/<subject>.<index>.json``
files are written in shapiq's own ``InteractionValues`` JSON layout (``metadata`` + ``data`` keyed by
``"0,3"``-style member strings, ``"Empty"`` for the empty set), so
``shapiq.InteractionValues.load(path)`` reads them back and shapiq's plots and metrics apply unchanged.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from pathlib import Path
from typing import Any

from spex.report.data import ReportData, SubjectReport

SHAPIQ_INDEX = {"mobius": "Moebius", "fbii": "FBII", "fsii": "FSII", "stii": "STII", "sii": "SII",
                "banzhaf": "BII", "shapley": "SV", "fourier": "Fourier"}


def shapiq_document(s: SubjectReport, rows: list[dict[str, Any]], index: str, *, baseline_value: float,
                    budget: int | None, order: int | None = None) -> dict[str, Any]:
    """One subject's interactions as shapiq's ``InteractionValues.to_json_file`` writes them.

    ``order``: the index's order as the audit asked for it (the spec's ``ranking.order``). A fit whose
    pairs are all 0 (a first-order surrogate) lists no pair, and without it the file would claim order 1,
    which shapiq reads as a different index (FBII of order 1 is BV)."""
    data: dict[str, float] = {"Empty": float(baseline_value)}
    for r in rows:
        data[",".join(str(m) for m in sorted(r["members"]))] = float(r["value"])
    max_order = max([len(r["members"]) for r in rows] + ([int(order)] if order else []), default=0)
    return {
        "object_name": "InteractionValues",
        "data_type": "interaction_values",
        "version": "spex",
        "created_from": None,
        "description": f"spex audit subject {s.key} ({s.lens} lens); feature labels in parameters.labels",
        "parameters": {"labels": s.labels, "subject": s.key, "spex_index": index},
        "timestamp": dt.datetime.now(dt.timezone.utc).isoformat(),
        "metadata": {
            "n_players": int(s.n),
            "index": SHAPIQ_INDEX.get(index, index),
            "max_order": int(max_order),
            "min_order": 0,
            "estimated": not bool(s.metrics.get("exact")),
            "estimation_budget": int(budget) if budget is not None else None,
            "baseline_value": float(baseline_value),
        },
        "data": data,
    }


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_") or "subject"


def file_stems(keys: list[str]) -> dict[str, str]:
    """A distinct file-name stem per subject id. The readable stem (``x/y`` -> ``x_y``) is kept where
    no other id of the audit maps to it (compared case-blind: a case-insensitive file system would
    merge ``A`` and ``a`` too); ids that share one get ``-<digest of the id>``, so ``x/y`` and ``x_y``
    never overwrite each other's file. An id that is its own readable stem keeps it unchanged."""
    from spex.content import content_hash

    readable = {key: _safe(key) for key in keys}
    sharing: dict[str, int] = {}  # ids per case-blind stem
    owning: dict[str, int] = {}  # of those, ids that are the stem itself
    for key, stem in readable.items():
        sharing[stem.casefold()] = sharing.get(stem.casefold(), 0) + 1
        owning[stem.casefold()] = owning.get(stem.casefold(), 0) + (stem == key)
    stems: dict[str, str] = {}
    for key, stem in readable.items():
        keeps = sharing[stem.casefold()] == 1 or (stem == key and owning[stem.casefold()] == 1)
        stems[key] = stem if keeps else f"{stem}-{content_hash(key)[:10]}"
    return stems


def export(data: ReportData) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """(the audit document, {file name: shapiq document})."""
    import spex

    subjects = {}
    shapiq_files: dict[str, dict[str, Any]] = {}
    stems = file_stems([s.key for s in data.subjects])
    ranking_order = ((data.spec or {}).get("ranking") or {}).get("order")
    for s in data.subjects:
        own: list[str] = []
        budget = s.metrics.get("budget")
        baseline = s.metrics.get("baseline_value")
        empty = s.metrics.get("empty_value")
        subjects[s.key] = {
            "lens": s.lens, "n_players": s.n, "labels": s.labels, "index": s.index,
            "heldout_r2": s.heldout_r2, "n_heldout": s.n_heldout, "removal": s.removal, "metrics": s.metrics,
            "interactions": s.ranking, "first_order": {"index": "shapley", "values": s.first_order(), "se": s.first_order_se()},
            "pairs": s.pairs, "diff": s.diff.to_dict() if s.diff else None,
        }
        if s.ranking:
            own.append(f"{stems[s.key]}.{s.index}.json")
            shapiq_files[own[-1]] = shapiq_document(s, s.ranking, s.index,
                                                    baseline_value=baseline if baseline is not None else 0.0,
                                                    budget=budget, order=ranking_order)
        if s.shapley:
            own.append(f"{stems[s.key]}.shapley.json")
            shapiq_files[own[-1]] = shapiq_document(s, s.shapley, "shapley",
                                                    baseline_value=empty if empty is not None else 0.0, budget=budget)
        subjects[s.key]["shapiq_files"] = own
    document = {
        "format": "spex.audit/1",
        "spex_version": spex.__version__,
        "audit": {"id": data.audit_id, "kind": data.kind, "status": data.status, "passed": data.passed,
                  "verdict": data.verdict, "confidence": data.confidence,
                  "model": data.model, "baseline": data.baseline, "baseline_audit_id": data.baseline_audit_id,
                  "started_at": data.started_at.isoformat() if data.started_at else None,
                  "finished_at": data.finished_at.isoformat() if data.finished_at else None,
                  "mlflow_run_id": data.mlflow_run_id, "spec": data.spec, "top_k": data.top_k},
        "gates": data.gates,
        "subjects": subjects,
    }
    return document, shapiq_files


def write_export(data: ReportData, out_dir: Path) -> Path:
    """Write ``interactions.json`` and ``shapiq/*.json`` under ``out_dir``; returns the former's path."""
    document, files = export(data)
    out_dir.mkdir(parents=True, exist_ok=True)
    shapiq_dir = out_dir / "shapiq"
    shapiq_dir.mkdir(exist_ok=True)
    for name, doc in files.items():
        (shapiq_dir / name).write_text(json.dumps(doc, indent=1, ensure_ascii=False, allow_nan=False,
                                                  default=str), encoding="utf-8")
    path = out_dir / "interactions.json"
    path.write_text(json.dumps(document, indent=1, ensure_ascii=False, default=_default), encoding="utf-8")
    return path


def _default(obj: Any) -> Any:
    if hasattr(obj, "isoformat"):
        return obj.isoformat()
    return str(obj)
