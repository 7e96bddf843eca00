"""The audit report as ONE self-contained HTML file: inline CSS, inline SVG, a few lines of inline JS.

No network, no CDN, no fonts to fetch: the file opens the same on an air-gapped laptop, as a CI
artifact, and in MLflow's artifact viewer. The page is rendered from Jinja2 templates shipped in the
package (``spex/report/templates``) with autoescaping on, so everything user-supplied (prompts,
labels, model names, gate notes) is HTML-escaped: a prompt holding markup or a script is shown as text,
never run. This module computes what the templates show (which features, which colours, where on the
heatmap); the templates only lay it out.

Per subject: the subject (prompt text / head grid / training examples / a context's passages, by its
view's ``kind``) shaded by each feature's first-order effect (Shapley value); the top interactions with
their standard error (``±``) and confidence interval (as numbers and as a bar on a scale shared by the
rows, so the widths compare and an interval crossing zero shows), each drawn over the subject with its
members highlighted (and hovering a row highlights them in the main view); a pairwise interaction
heatmap; held-out faithfulness and the removal test. The gate table gives each gate's state (passed,
FAILED, or undecided: within noise of its threshold). For a release, per subject, the diff against the
baseline.
"""

from __future__ import annotations

import datetime as dt
import functools
import math
from importlib import resources
from typing import Any

import jinja2
from markupsafe import Markup

from spex.report.data import ReportData, SubjectReport

POS = (214, 69, 36)     # raises the output
NEG = (37, 99, 235)     # lowers the output
HEATMAP_MAX = 40        # features on the heatmap's axes (the strongest by first-order effect)
TOP_DRAWN = 5           # top interactions drawn over the subject
LINKS_DRAWN, LINK_ROW, LINK_BULGE = 8, 32, 180  # context lens: strongest pairs drawn as links between sources; px per source (a one-line source's
# height, so nodes sit beside their sources); the widest an arc bows out
HEATMAP_CELL, HEATMAP_LABELS = 16, 110  # px: one cell, the band of axis labels
INTERVAL_W, INTERVAL_H, INTERVAL_PAD = 140, 14, 4  # px: the interval bar of a ranking row
TEMPLATES = "templates"


# --------------------------------------------------------------------------------------------- filters
def fmt(value: Any, digits: int = 4) -> str:
    """A number for a table cell: ``digits`` significant digits, ``–`` when missing or not finite."""
    if value is None or isinstance(value, float) and not math.isfinite(value):
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return str(value)
    try:
        return f"{float(value):.{digits}g}"
    except (TypeError, ValueError):
        return str(value)


def signed(value: float, digits: int = 4) -> str:
    """An effect with its sign (``+0.25``, ``-1.3e-05``)."""
    return f"{value:+.{digits}g}"


def shade(value: float, scale: float, max_alpha: float = 0.85) -> str:
    """Background colour of a feature: orange raises the output, blue lowers it; alpha by |value|."""
    if scale <= 0 or not math.isfinite(value) or value == 0:
        return "transparent"
    alpha = min(1.0, abs(value) / scale) * max_alpha
    r, g, b = POS if value > 0 else NEG
    return f"rgba({r},{g},{b},{alpha:.3f})"


def plus_minus(se: float | None, digits: int = 2) -> str:
    """A standard error as ``±0.031`` (``–`` when unknown)."""
    return "–" if se is None or not math.isfinite(se) else f"±{se:.{digits}g}"


def interval_text(row: dict[str, Any], digits: int = 3) -> str:
    """A row's interval as ``[0.41, 0.59]`` (``–`` when unknown)."""
    if row.get("ci_low") is None or row.get("ci_high") is None:
        return "–"
    return f"[{fmt(row['ci_low'], digits)}, {fmt(row['ci_high'], digits)}]"


def interaction_name(row: dict[str, Any]) -> str:
    """An interaction as its members' labels (``not × bad``), or its member ids when unlabelled."""
    labels = row.get("labels")
    if labels:
        return " × ".join(labels)
    return "{" + ", ".join(str(m) for m in row["members"]) + "}"


def _blank_none(value: Any) -> Any:
    """A missing value prints as nothing (not ``None``)."""
    return "" if value is None else value


def static(name: str) -> Markup:
    """A file shipped beside the templates (the report's CSS, its JS), inlined verbatim: the report
    stays one self-contained file."""
    return Markup(resources.files("spex.report").joinpath(TEMPLATES, name).read_text(encoding="utf-8"))


@functools.cache
def environment() -> jinja2.Environment:
    """The report's template environment: autoescape on, undefined names are errors."""
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("spex.report", TEMPLATES),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        finalize=_blank_none,
    )
    env.filters.update(fmt=fmt, signed=signed, shade=shade, name=interaction_name, pm=plus_minus,
                       interval=interval_text)
    env.globals["static"] = static
    return env


# --------------------------------------------------------------------------------------------- what a subject shows
def subject_view(s: SubjectReport, effects: list[float]) -> dict[str, Any]:
    """How to draw the subject, dispatched on its recorded view's ``kind`` (text / grid / examples)."""
    kind = s.view.get("kind") or "text"
    view: dict[str, Any] = {"kind": kind, "redacted": bool(s.view.get("redacted"))}
    if kind == "grid":
        view.update(_grid(s))
    elif kind == "examples":
        view.update(_examples(s, effects))
    elif kind == "documents":
        view.update(_documents(s))
    else:
        view["parts"], view["tail"] = _text_parts(s)
    return view


def _text_parts(s: SubjectReport) -> tuple[list[tuple[str, int, str]] | None, str]:
    """The prompt cut at its features: ``(text before, feature, its words)`` and the text after the
    last one; ``None`` when no text was recorded (redacted) or the spans do not fit the features."""
    text = str(s.view.get("text") or "")
    spans = [tuple(x) for x in s.view.get("spans") or []]
    if not text or len(spans) != s.n:
        return None, ""
    parts, cursor = [], 0
    for i, (a, b) in enumerate(spans):
        parts.append((text[cursor:a], i, text[a:b]))
        cursor = b
    return parts, text[cursor:]


def _grid(s: SubjectReport) -> dict[str, Any]:
    """Heads: one row per layer (``L0`` of ``L0H3``), one cell per head."""
    layers: dict[str, list[tuple[int, str]]] = {}
    for i, label in enumerate(s.labels):
        layer, _, head = label.partition("H")
        layers.setdefault(layer, []).append((i, head))
    return {"layers": list(layers.items()), "width": max((len(v) for v in layers.values()), default=0)}


def _examples(s: SubjectReport, effects: list[float]) -> dict[str, Any]:
    """Data lens: the training examples (features), strongest first by first-order effect."""
    examples = s.view.get("examples") or [{"text": label, "label": ""} for label in s.labels]
    rows = []
    for i in sorted(range(s.n), key=lambda i: -abs(effects[i])):
        example = examples[i] if i < len(examples) else {"text": s.labels[i], "label": ""}
        rows.append((i, example.get("text"), example.get("label")))
    return {"rows": rows, "target": s.view.get("target"), "target_label": s.view.get("target_label")}


def _documents(s: SubjectReport) -> dict[str, Any]:
    """Context lens: the sources in reading order, and the strongest pairs as links between them
    (an arc diagram: one node per source, an arc per pair, coloured by sign, thicker when stronger)."""
    texts = s.view.get("documents") or []
    rows = [(i, s.labels[i] if i < len(s.labels) else str(i), texts[i] if i < len(texts) else "") for i in range(s.n)]
    pairs = sorted((r for r in s.pairs if len(r["members"]) == 2 and all(0 <= m < s.n for m in r["members"])),
                   key=lambda r: -abs(r["value"]))[:LINKS_DRAWN]
    scale = max((abs(r["value"]) for r in pairs), default=0.0)
    step, top, left = LINK_ROW, LINK_ROW // 2 + 6, 26
    y = [top + i * step for i in range(s.n)]
    arcs = []
    for r in pairs:
        a, b = sorted(r["members"])
        bulge = left + 10 + min((b - a) * step * 0.45, LINK_BULGE)
        width = 1.0 + 4.0 * abs(r["value"]) / scale if scale > 0 else 1.0
        name = f"{s.labels[a] if a < len(s.labels) else a} × {s.labels[b] if b < len(s.labels) else b}"
        arcs.append({"d": f"M{left},{y[a]} C{bulge:.1f},{y[a]} {bulge:.1f},{y[b]} {left},{y[b]}",
                     "stroke": shade(r["value"], scale, 1.0), "width": f"{width:.2f}", "members": f"{a},{b}",
                     "title": f"#{a} × #{b} ({name}): {r['value']:+.4g}"})
    width = left + 12 + min(max((abs(b - a) for a, b in (sorted(r["members"]) for r in pairs)), default=1) * step * 0.35,
                            LINK_BULGE)
    return {"rows": rows, "question": s.view.get("question"), "target": s.view.get("target"),
            "unit": s.view.get("unit") or "document",
            "links": {"arcs": arcs, "nodes": list(zip(range(s.n), y)), "x": left, "width": int(width) + 8,
                      "height": top + s.n * step, "scale": scale, "shown": len(arcs)}}


def heatmap(s: SubjectReport, effects: list[float]) -> dict[str, Any] | None:
    """Geometry of the pairwise heatmap (Faith-Banzhaf order 2) over the most interactive features;
    ``None`` when there is nothing to draw."""
    if s.n < 2 or not s.pairs:
        return None
    strength = [abs(e) for e in effects]
    for r in s.pairs:
        for m in r["members"]:
            if 0 <= m < s.n:
                strength[m] += abs(r["value"])
    shown = sorted(sorted(range(s.n), key=lambda i: -strength[i])[:HEATMAP_MAX])
    pos = {f: j for j, f in enumerate(shown)}
    values = {}
    for r in s.pairs:
        a, b = r["members"][0], r["members"][1]
        if a in pos and b in pos:
            values[(pos[a], pos[b])] = r["value"]
    scale = max((abs(v) for v in values.values()), default=0.0)
    cell, band = HEATMAP_CELL, HEATMAP_LABELS
    labels = []
    for j, f in enumerate(shown):
        label = s.labels[f] if f < len(s.labels) else str(f)
        short = label if len(label) <= 14 else label[:13] + "…"
        labels.append((short, band + j * cell + cell * 0.7, band + j * cell + cell * 0.7))
    cells = []
    for (a, b), v in values.items():
        for x, y in ((a, b), (b, a)):
            title = f"{s.labels[shown[a]]} × {s.labels[shown[b]]}: {v:+.4g}"
            cells.append((band + x * cell, band + y * cell, shade(v, scale, 1.0), title))
    return {"size": band + cell * len(shown) + 4, "label_w": band, "cell": cell, "labels": labels, "cells": cells,
            "diagonal": [band + j * cell for j in range(len(shown))], "shown": len(shown), "scale": scale}


def interval_bars(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per row: where its interval bar (``ci_low``..``ci_high``), its value and zero sit, on one scale
    shared by the rows shown, so their widths compare; ``x`` is None where the interval is unknown.
    ``excludes_zero`` marks an interval that excludes zero (the value is distinguishable from no effect)."""
    points = [0.0]
    for r in rows:
        points += [r["value"]] + [r[key] for key in ("ci_low", "ci_high") if r.get(key) is not None]
    lo, hi = min(points), max(points)
    span = (hi - lo) or 1.0
    inner = INTERVAL_W - 2 * INTERVAL_PAD

    def x(v: float) -> float:
        return round(INTERVAL_PAD + (v - lo) / span * inner, 2)

    out = []
    for r in rows:
        bar: dict[str, Any] = {"r": r, "v": x(r["value"]), "zero": x(0.0), "sign": "pos" if r["value"] >= 0 else "neg",
                               "x": None, "w": None, "excludes_zero": False}
        if r.get("ci_low") is not None and r.get("ci_high") is not None:
            bar.update(x=x(r["ci_low"]), w=max(1.0, round(x(r["ci_high"]) - x(r["ci_low"]), 2)),
                       excludes_zero=r["ci_low"] > 0 or r["ci_high"] < 0)
        out.append(bar)
    return out


def _validation(s: SubjectReport) -> list[tuple[str, str]]:
    m = s.metrics
    method = "" if m.get("method") is None else str(m.get("method"))
    low, high = m.get("heldout_r2_low"), m.get("heldout_r2_high")
    interval = f" [{fmt(low, 3)}, {fmt(high, 3)}]" if low is not None and high is not None else ""
    rows = [("held-out R² (real model calls)", f"{fmt(s.heldout_r2)}{interval} on {fmt(s.n_heldout)} masks"),
            ("proxy validation R²", fmt(s.proxy_r2)),
            ("features n", str(s.n)),
            ("budget (masks)", fmt(m.get("budget"))),
            ("masks computed / from store", f"{fmt(m.get('masks_computed'))} / {fmt(m.get('masks_from_store'))}"),
            ("value with every feature kept", fmt(m.get("full_value"))),
            ("method", method + (" (exact: every mask)" if m.get("exact") else "")),
            ("support size", fmt(m.get("support_size")))]
    if m.get("target"):
        rows.append(("scored answer", str(m["target"])))
    return rows


def subject_context(s: SubjectReport, k: int, number: int, confidence: float = 0.95) -> dict[str, Any]:
    """Everything ``subject.html.j2`` draws for one subject."""
    effects = s.first_order()
    view = subject_view(s, effects)
    drawn: list[dict[str, Any]] = []
    if view["kind"] == "text":  # interactions drawn over the prompt: pairs and up first
        drawn = [r for r in s.ranking if r["order"] >= 2][:TOP_DRAWN] or s.ranking[:TOP_DRAWN]
    base = s.baseline_ranking or []
    side_by_side = [(i + 1, base[i] if i < len(base) else None, s.ranking[i] if i < len(s.ranking) else None)
                    for i in range(min(k, max(len(s.ranking), len(base))))]
    removal = s.removal if s.removal and s.removal.get("choices") else None
    return {"s": s, "k": k, "number": number, "effects": effects, "scale": max((abs(e) for e in effects), default=0.0),
            "view": view, "drawn": drawn, "heatmap": heatmap(s, effects), "validation": _validation(s),
            "removal": {"r": removal.get("r"), "choices": removal["choices"]} if removal else None,
            "side_by_side": side_by_side, "top": interval_bars(s.ranking[:k]),
            "interval": {"w": INTERVAL_W, "h": INTERVAL_H, "level": f"{confidence * 100:.3g}"}}


# --------------------------------------------------------------------------------------------- the page
def _gate_note(details: dict[str, Any]) -> str:
    """The gate table's last column: the forbidden hits, the per-subject values, or a note."""
    if details.get("hits"):
        return "; ".join(f"{s}: " + ", ".join(" × ".join(h["labels"]) for h in hits)
                         for s, hits in details["hits"].items())
    if isinstance(details.get("per_subject"), dict):
        return ", ".join(f"{k}: {fmt(v, 3)}" for k, v in details["per_subject"].items())
    return details.get("note") or ""


def _state(gate: dict[str, Any]) -> str:
    """A gate's state: passed, failed or undecided (a gate dict without one follows ``passed``)."""
    return gate.get("state") or ("passed" if gate.get("passed") else "failed")


def _version(model: dict[str, Any] | None) -> dict[str, Any]:
    model = model or {}
    return {key: model.get(key) for key in ("name", "revision", "registry_version")}


def render_html(data: ReportData, *, generated_at: dt.datetime | None = None) -> str:
    """The report as one HTML document (string)."""
    import spex

    generated_at = generated_at or dt.datetime.now(dt.timezone.utc)
    spec = data.spec
    ranking = spec.get("ranking") or {}
    context = {
        "title": f"spex {'release ' if data.kind == 'release' else ''}audit · {data.model.get('name', '')}",
        "audit_id": data.audit_id, "kind": data.kind, "status": data.status, "passed": data.passed,
        "verdict": data.verdict or (None if data.passed is None else "passed" if data.passed else "failed"),
        "model": _version(data.model), "baseline": _version(data.baseline) if data.baseline else None,
        "baseline_audit_id": data.baseline_audit_id,
        "spec": {key: spec.get(key) for key in ("lens", "method", "budget", "alpha", "seed", "holdout")},
        "ranking": {"index": ranking.get("index"), "order": ranking.get("order")}, "top_k": data.top_k,
        "started": data.started_at.strftime("%Y-%m-%d %H:%M:%S UTC") if data.started_at else "–",
        "min_heldout_r2": data.min_heldout_r2, "mlflow_run_id": data.mlflow_run_id, "error": data.error,
        "gates": [{**g, "state": _state(g), "note": _gate_note(g.get("details") or {})} for g in data.gates],
        "subjects": [subject_context(s, data.top_k, i, data.confidence) for i, s in enumerate(data.subjects, start=1)],
        "version": spex.__version__, "generated_at": generated_at.strftime("%Y-%m-%d %H:%M:%S UTC"),
    }
    return environment().get_template("report.html.j2").render(context)
