"""The audit report as ONE self-contained HTML file: inline CSS, inline SVG, a few lines of inline JS.

No network, no CDN, no fonts to fetch: the file opens the same on an air-gapped laptop, as a CI
artifact, and in MLflow's artifact viewer. Everything user-supplied (prompts, labels, model names) is
HTML-escaped, so a prompt holding markup or a script is shown as text, never run.

Per subject: the subject (prompt text / head grid / training examples) shaded by each feature's
first-order effect (Shapley value); the top interactions, each drawn over the subject with its members
highlighted (and hovering a row highlights them in the main view); a pairwise interaction heatmap;
held-out faithfulness and the removal test. For a release: the gate table and, per subject, the diff
against the baseline.
"""

from __future__ import annotations

import datetime as dt
import html
import math
from collections.abc import Sequence
from typing import Any

from spex.report.data import ReportData, SubjectReport

POS = (214, 69, 36)     # raises the output
NEG = (37, 99, 235)     # lowers the output
HEATMAP_MAX = 40        # features on the heatmap's axes (the strongest by first-order effect)
TOP_DRAWN = 5           # top interactions drawn over the subject

CSS = """
:root{--fg:#1f2933;--muted:#66758a;--line:#e3e8ef;--bg:#fbfcfd;--pass:#1a7f37;--fail:#c62828;--warn:#b26a00}
*{box-sizing:border-box}body{margin:0;font:14px/1.5 -apple-system,Segoe UI,Roboto,Helvetica,Arial,sans-serif;color:var(--fg);background:var(--bg)}
header{padding:20px 32px;background:#fff;border-bottom:1px solid var(--line)}main{padding:8px 32px 48px;max-width:1200px}
h1{font-size:22px;margin:0 0 6px}h2{font-size:18px;margin:28px 0 8px}h3{font-size:15px;margin:18px 0 6px}
.meta{color:var(--muted);font-size:13px}.meta b{color:var(--fg);font-weight:600}
.badge{display:inline-block;padding:2px 10px;border-radius:12px;font-weight:700;font-size:12px;color:#fff;vertical-align:middle}
.badge.pass{background:var(--pass)}.badge.fail{background:var(--fail)}.badge.none{background:var(--muted)}
table{border-collapse:collapse;margin:6px 0 12px;background:#fff}th,td{border:1px solid var(--line);padding:4px 8px;text-align:left;vertical-align:top}
th{background:#f3f5f8;font-weight:600;font-size:13px}td.num{text-align:right;font-variant-numeric:tabular-nums}
tr.pass td.result{color:var(--pass);font-weight:700}tr.fail td.result{color:var(--fail);font-weight:700}
section.subject{background:#fff;border:1px solid var(--line);border-radius:8px;padding:4px 20px 16px;margin:18px 0}
.text{font-size:16px;line-height:2.1;padding:8px 0;white-space:pre-wrap;word-wrap:break-word}
.f{border-radius:3px;padding:1px 2px;transition:outline .1s}.f.hl{outline:2px solid #111;outline-offset:1px}
.mini{font-size:13px;line-height:1.9;color:#9aa5b1;white-space:pre-wrap}.mini .m{color:#111;background:#ffe08a;border-radius:3px;padding:0 2px;font-weight:600}
.grid td{width:28px;height:22px;padding:0;text-align:center;font-size:10px;color:#333}
.examples td.t{max-width:640px}.legend{font-size:12px;color:var(--muted)}.legend i{display:inline-block;width:12px;height:12px;border-radius:2px;vertical-align:middle;margin:0 3px 0 10px}
tr[data-members]{cursor:default}tr[data-members]:hover{background:#fff7d6}
.cols{display:flex;gap:28px;flex-wrap:wrap}.cols>div{flex:1 1 420px;min-width:320px}
.kv td:first-child{color:var(--muted)}.err{color:var(--fail);white-space:pre-wrap}
.diff .app{color:var(--pass)}.diff .dis{color:var(--fail)}.diff .flip{color:var(--warn)}
svg text{font-family:inherit}footer{color:var(--muted);font-size:12px;padding:12px 32px 32px}
"""

JS = """
(function(){
  function mark(row, on){
    var section = row.closest('section');
    if(!section){return;}
    var ids = (row.getAttribute('data-members')||'').split(',');
    var nodes = section.querySelectorAll('[data-i]');
    for(var k=0;k<nodes.length;k++){
      var hit = on && ids.indexOf(nodes[k].getAttribute('data-i')) >= 0;
      if(hit){nodes[k].classList.add('hl');}else{nodes[k].classList.remove('hl');}
    }
  }
  var rows = document.querySelectorAll('tr[data-members]');
  for(var i=0;i<rows.length;i++){
    rows[i].addEventListener('mouseenter', function(){mark(this, true);});
    rows[i].addEventListener('mouseleave', function(){mark(this, false);});
  }
})();
"""


def esc(value: Any) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def fmt(value: Any, digits: int = 4) -> str:
    if value is None or isinstance(value, float) and not math.isfinite(value):
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return str(value)
    try:
        return f"{float(value):.{digits}g}"
    except (TypeError, ValueError):
        return esc(value)


def shade(value: float, scale: float, max_alpha: float = 0.85) -> str:
    """Background colour of a feature: orange raises the output, blue lowers it; alpha by |value|."""
    if scale <= 0 or not math.isfinite(value) or value == 0:
        return "transparent"
    alpha = min(1.0, abs(value) / scale) * max_alpha
    r, g, b = POS if value > 0 else NEG
    return f"rgba({r},{g},{b},{alpha:.3f})"


def _badge(passed: bool | None, status: str) -> str:
    if status == "failed":
        return '<span class="badge fail">FAILED</span>'
    if passed is None:
        return f'<span class="badge none">{esc(status.upper())}</span>'
    return '<span class="badge pass">PASS</span>' if passed else '<span class="badge fail">FAIL</span>'


def _name(row: dict[str, Any]) -> str:
    labels = row.get("labels")
    if labels:
        return " × ".join(labels)
    return "{" + ", ".join(str(m) for m in row["members"]) + "}"


# --------------------------------------------------------------------------------------------- subject views
def _text_view(s: SubjectReport, effects: Sequence[float], scale: float, members: set[int] | None = None,
               mini: bool = False) -> str:
    """The prompt with each feature span shaded (or, ``mini``, the members of one interaction marked)."""
    text = str(s.view.get("text") or "")
    spans = [tuple(x) for x in s.view.get("spans") or []]
    if not text or len(spans) != s.n:
        return _label_view(s, effects, scale, members, mini)
    parts, cursor = [], 0
    for i, (a, b) in enumerate(spans):
        parts.append(esc(text[cursor:a]))
        word = esc(text[a:b])
        if mini:
            parts.append(f'<span class="m">{word}</span>' if members and i in members else word)
        else:
            tip = f"feature {i}: {text[a:b]} · first-order effect {effects[i]:+.4g}"
            parts.append(f'<span class="f" data-i="{i}" style="background:{shade(effects[i], scale)}" '
                         f'title="{esc(tip)}">{word}</span>')
        cursor = b
    parts.append(esc(text[cursor:]))
    return f'<div class="{"mini" if mini else "text"}">{"".join(parts)}</div>'


def _label_view(s: SubjectReport, effects: Sequence[float], scale: float, members: set[int] | None = None,
                mini: bool = False) -> str:
    words = []
    for i, label in enumerate(s.labels):
        if mini:
            words.append(f'<span class="m">{esc(label)}</span>' if members and i in members else esc(label))
        else:
            words.append(f'<span class="f" data-i="{i}" style="background:{shade(effects[i], scale)}" '
                         f'title="{esc(f"feature {i}: {label} · {effects[i]:+.4g}")}">{esc(label)}</span>')
    return f'<div class="{"mini" if mini else "text"}">{" ".join(words)}</div>'


def _grid_view(s: SubjectReport, effects: Sequence[float], scale: float) -> str:
    """Heads: one row per layer, one cell per head, shaded by first-order effect."""
    layers: dict[str, list[tuple[int, str]]] = {}
    for i, label in enumerate(s.labels):
        layer, _, head = label.partition("H")
        layers.setdefault(layer, []).append((i, head))
    width = max((len(v) for v in layers.values()), default=0)
    head = "".join(f"<th>H{h}</th>" for h in range(width))
    body = []
    for layer, cells in layers.items():
        tds = "".join(
            f'<td class="f" data-i="{i}" style="background:{shade(effects[i], scale)}" '
            f'title="{esc(f"{s.labels[i]} · first-order effect {effects[i]:+.4g}")}">{esc(h)}</td>'
            for i, h in cells)
        body.append(f"<tr><th>{esc(layer)}</th>{tds}</tr>")
    return f'<table class="grid"><tr><th></th>{head}</tr>{"".join(body)}</table>'


def _examples_view(s: SubjectReport, effects: Sequence[float], scale: float) -> str:
    """Data lens: the training examples (features), shaded by first-order effect, strongest first."""
    examples = s.view.get("examples") or [{"text": label, "label": ""} for label in s.labels]
    order = sorted(range(s.n), key=lambda i: -abs(effects[i]))
    rows = []
    for i in order:
        ex = examples[i] if i < len(examples) else {"text": s.labels[i], "label": ""}
        rows.append(f'<tr class="f" data-i="{i}"><td class="num">{i}</td><td class="t" style="background:'
                    f'{shade(effects[i], scale)}">{esc(ex.get("text"))}</td><td>{esc(ex.get("label"))}</td>'
                    f'<td class="num">{effects[i]:+.4g}</td></tr>')
    target = ""
    if s.view.get("target"):
        target = (f'<p class="meta">target example: <b>{esc(s.view["target"])}</b> '
                  f'(label {esc(s.view.get("target_label"))})</p>')
    return (target + '<table class="examples"><tr><th>#</th><th>training example</th><th>label</th>'
            '<th>first-order</th></tr>' + "".join(rows) + "</table>")


def _subject_view(s: SubjectReport, effects: Sequence[float], scale: float) -> str:
    if s.view.get("redacted"):  # privacy.redact_text: no text was recorded, features are shown by index
        note = '<p class="meta">text redacted (privacy.redact_text): features are shown by index</p>'
        if s.view.get("kind") == "examples":
            return note + _examples_view(s, effects, scale)
        return note + _label_view(s, effects, scale)
    kind = s.view.get("kind")
    if kind == "grid" or s.lens == "heads":
        return _grid_view(s, effects, scale)
    if kind == "examples" or s.lens == "data":
        return _examples_view(s, effects, scale)
    return _text_view(s, effects, scale)


def _legend(scale: float) -> str:
    return (f'<div class="legend">first-order effect (Shapley value): <i style="background:{shade(scale, scale)}"></i>'
            f'raises the output (up to {scale:+.3g})<i style="background:{shade(-scale, scale)}"></i>lowers it. '
            'Hover a row of the interaction table to outline its members.</div>')


# --------------------------------------------------------------------------------------------- tables
def _interactions_table(s: SubjectReport, effects: Sequence[float], k: int) -> str:
    if not s.ranking:
        return '<p class="meta">no interactions recorded</p>'
    rows = []
    for r in s.ranking[:k]:
        members = ",".join(str(m) for m in r["members"])
        rows.append(f'<tr data-members="{members}"><td class="num">{r["rank"]}</td><td>{esc(_name(r))}</td>'
                    f'<td class="num">{r["order"]}</td><td class="num">{r["value"]:+.4g}</td></tr>')
    table = ('<table><tr><th>rank</th><th>interaction</th><th>order</th><th>value</th></tr>'
             + "".join(rows) + "</table>")
    drawn = []
    if s.view.get("kind") == "text" or s.lens == "features":
        for r in [r for r in s.ranking if r["order"] >= 2][:TOP_DRAWN] or s.ranking[:TOP_DRAWN]:
            drawn.append(f'<div><span class="meta">#{r["rank"]} {esc(_name(r))} ({r["value"]:+.3g})</span>'
                         f'{_text_view(s, effects, 0, set(r["members"]), mini=True)}</div>')
    return table + ("<h3>strongest interactions in the text</h3>" + "".join(drawn) if drawn else "")


def _heatmap(s: SubjectReport, effects: Sequence[float]) -> str:
    """Pairwise interactions (Faith-Banzhaf order 2) as an SVG matrix over the strongest features."""
    if s.n < 2 or not s.pairs:
        return '<p class="meta">no pairwise interactions recorded</p>'
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
    cell, label_w = 16, 110
    size = label_w + cell * len(shown) + 4
    out = [f'<svg viewBox="0 0 {size} {size}" width="{size}" style="max-width:100%;height:auto" role="img" '
           f'aria-label="pairwise interaction heatmap">']
    for j, f in enumerate(shown):
        label = s.labels[f] if f < len(s.labels) else str(f)
        short = label if len(label) <= 14 else label[:13] + "…"
        y = label_w + j * cell + cell * 0.7
        out.append(f'<text x="{label_w - 4}" y="{y:.1f}" font-size="10" text-anchor="end">{esc(short)}</text>')
        x = label_w + j * cell + cell * 0.7
        out.append(f'<text x="{x:.1f}" y="{label_w - 4}" font-size="10" transform="rotate(-60 {x:.1f} '
                   f'{label_w - 4})">{esc(short)}</text>')
    for (a, b), v in values.items():
        for x, y in ((a, b), (b, a)):
            name = f"{s.labels[shown[a]]} × {s.labels[shown[b]]}: {v:+.4g}"
            out.append(f'<rect x="{label_w + x * cell}" y="{label_w + y * cell}" width="{cell - 1}" height="{cell - 1}" '
                       f'fill="{shade(v, scale, 1.0)}"><title>{esc(name)}</title></rect>')
    for j in range(len(shown)):
        out.append(f'<rect x="{label_w + j * cell}" y="{label_w + j * cell}" width="{cell - 1}" height="{cell - 1}" '
                   f'fill="#eef1f5"/>')
    out.append("</svg>")
    note = (f'<div class="legend">{len(shown)} of {s.n} features (the most interactive); strongest pair '
            f'|{scale:.3g}|; empty cells: no recorded pair term.</div>')
    return "".join(out) + note


def _validation(s: SubjectReport) -> str:
    rows = [("held-out R² (real model calls)", f"{fmt(s.heldout_r2)} on {fmt(s.n_heldout)} masks"),
            ("proxy validation R²", fmt(s.proxy_r2)),
            ("features n", str(s.n)),
            ("budget (masks)", fmt(s.metrics.get("budget"))),
            ("masks computed / from store", f"{fmt(s.metrics.get('masks_computed'))} / {fmt(s.metrics.get('masks_from_store'))}"),
            ("value with every feature kept", fmt(s.metrics.get("full_value"))),
            ("method", f"{esc(s.metrics.get('method'))}" + (" (exact: every mask)" if s.metrics.get("exact") else "")),
            ("support size", fmt(s.metrics.get("support_size")))]
    if s.metrics.get("target"):
        rows.append(("scored answer", esc(s.metrics["target"])))
    kv = "".join(f"<tr><td>{name}</td><td>{value}</td></tr>" for name, value in rows)
    removal = ""
    if s.removal and s.removal.get("choices"):
        body = "".join(
            f'<tr><td>{esc(c["direction"])}</td><td>{esc(", ".join(c.get("labels") or []))}</td>'
            f'<td class="num">{c["predicted_change"]:+.4g}</td><td class="num">{c["actual_change"]:+.4g}</td>'
            f'<td>{"agrees" if c.get("agrees") else "DISAGREES"}</td></tr>' for c in s.removal["choices"])
        removal = (f'<h3>removal test (r = {s.removal.get("r")})</h3><table><tr><th>direction</th><th>removed</th>'
                   f'<th>predicted change</th><th>actual change</th><th>sign</th></tr>{body}</table>')
    return f'<table class="kv">{kv}</table>{removal}'


def _diff(s: SubjectReport, k: int) -> str:
    d = s.diff
    if d is None:
        return ""
    numbers = (f'<table class="kv"><tr><td>top-{d.k} Jaccard</td><td>{fmt(d.jaccard)}</td></tr>'
               f'<tr><td>rank correlation (Spearman)</td><td>{fmt(d.rank_correlation)}</td></tr>'
               f'<tr><td>max rank shift</td><td>{d.max_rank_shift}</td></tr></table>')

    def items(changes: Sequence[Any], cls: str, what: str) -> str:
        if not changes:
            return f'<li class="meta">{what}: none</li>'
        inner = ", ".join(
            f'<span class="{cls}">{esc(c.name())}</span> ({fmt(c.baseline_value, 3)} → {fmt(c.candidate_value, 3)})'
            for c in changes)
        return f"<li>{what}: {inner}</li>"

    lists = ("<ul>" + items(d.appeared, "app", "appeared") + items(d.disappeared, "dis", "disappeared")
             + items(d.sign_flips, "flip", "sign flips") + "</ul>")
    base = s.baseline_ranking or []
    side = []
    for i in range(min(k, max(len(s.ranking), len(base)))):
        c = s.ranking[i] if i < len(s.ranking) else None
        b = base[i] if i < len(base) else None
        side.append(f'<tr><td class="num">{i + 1}</td><td>{esc(_name(b)) if b else ""}</td>'
                    f'<td class="num">{fmt(b["value"]) if b else ""}</td><td>{esc(_name(c)) if c else ""}</td>'
                    f'<td class="num">{fmt(c["value"]) if c else ""}</td></tr>')
    table = ('<table><tr><th>rank</th><th>baseline</th><th>value</th><th>candidate</th><th>value</th></tr>'
             + "".join(side) + "</table>")
    return f'<div class="diff"><h3>diff against the baseline</h3>{numbers}{lists}{table}</div>'


def _subject(s: SubjectReport, k: int, number: int) -> str:
    effects = s.first_order()
    scale = max((abs(e) for e in effects), default=0.0)
    title = f"{number}. {esc(s.key)} <span class=\"meta\">({esc(s.lens)} lens, n = {s.n}, held-out R² {fmt(s.heldout_r2, 3)})</span>"
    return (f'<section class="subject" id="subject-{number}"><h2>{title}</h2>'
            f"{_subject_view(s, effects, scale)}{_legend(scale)}"
            f'<div class="cols"><div><h3>top {k} interactions ({esc(s.index)})</h3>{_interactions_table(s, effects, k)}</div>'
            f'<div><h3>pairwise interactions</h3>{_heatmap(s, effects)}</div></div>'
            f'<div class="cols"><div><h3>faithfulness</h3>{_validation(s)}</div><div>{_diff(s, k)}</div></div>'
            "</section>")


def _gates(data: ReportData) -> str:
    if not data.gates:
        return '<p class="meta">no gates configured</p>'
    rows = []
    for g in data.gates:
        details = g.get("details") or {}
        note = details.get("note") or ""
        if details.get("hits"):
            note = "; ".join(f"{esc(s)}: " + ", ".join(esc(" × ".join(h["labels"])) for h in hits)
                             for s, hits in details["hits"].items())
        elif isinstance(details.get("per_subject"), dict):
            note = ", ".join(f"{esc(k)}: {fmt(v, 3)}" for k, v in details["per_subject"].items())
        cls = "pass" if g["passed"] else "fail"
        rows.append(f'<tr class="{cls}"><td>{esc(g["metric"])}</td><td class="num">{fmt(g["value"])}</td>'
                    f'<td>{esc(g["comparator"])}</td><td class="num">{fmt(g["threshold"])}</td>'
                    f'<td class="result">{"pass" if g["passed"] else "FAIL"}</td><td>{note}</td></tr>')
    return ('<table><tr><th>gate</th><th>value</th><th></th><th>threshold</th><th>result</th><th>per subject</th></tr>'
            + "".join(rows) + "</table>")


def _summary(data: ReportData) -> str:
    rows = []
    for i, s in enumerate(data.subjects, start=1):
        top = s.ranking[0] if s.ranking else None
        diff = s.diff
        rows.append(f'<tr><td><a href="#subject-{i}">{esc(s.key)}</a></td><td>{esc(s.lens)}</td><td class="num">{s.n}</td>'
                    f'<td class="num">{fmt(s.heldout_r2, 3)}</td><td>{esc(_name(top)) if top else "–"}</td>'
                    f'<td class="num">{fmt(top["value"], 3) if top else "–"}</td>'
                    f'<td class="num">{fmt(diff.jaccard, 3) if diff else "–"}</td></tr>')
    return ('<table><tr><th>subject</th><th>lens</th><th>n</th><th>held-out R²</th><th>top interaction</th>'
            '<th>value</th><th>top-k Jaccard vs baseline</th></tr>' + "".join(rows) + "</table>")


def render_html(data: ReportData, *, generated_at: dt.datetime | None = None) -> str:
    """The report as one HTML document (string)."""
    import spex

    generated_at = generated_at or dt.datetime.now(dt.timezone.utc)
    model = data.model
    title = f"spex {'release ' if data.kind == 'release' else ''}audit · {model.get('name', '')}"
    spec = data.spec
    ranking = spec.get("ranking") or {}
    meta = [f"audit <b>{esc(data.audit_id)}</b> ({esc(data.kind)})",
            f"model <b>{esc(model.get('name'))}</b> @ {esc(model.get('revision'))}"
            + (f" · registry v{esc(model.get('registry_version'))}" if model.get("registry_version") else "")]
    if data.baseline:
        meta.append(f"baseline <b>{esc(data.baseline.get('name'))}</b> @ {esc(data.baseline.get('revision'))}"
                    + (f" · registry v{esc(data.baseline.get('registry_version'))}"
                       if data.baseline.get("registry_version") else "")
                    + (f" · audit {esc(data.baseline_audit_id)}" if data.baseline_audit_id else ""))
    meta.append(f"lens <b>{esc(spec.get('lens'))}</b> · method <b>{esc(spec.get('method'))}</b> · budget "
                f"{esc(spec.get('budget'))} (α = {esc(spec.get('alpha'))}) · seed {esc(spec.get('seed'))} · held-out "
                f"{esc(spec.get('holdout'))} masks · ranking {esc(ranking.get('index'))}"
                + (f" (order {esc(ranking.get('order'))})" if ranking.get("order") else "") + f" top {data.top_k}")
    when = data.started_at.strftime("%Y-%m-%d %H:%M:%S UTC") if data.started_at else "–"
    meta.append(f"started {esc(when)} · status {esc(data.status)} · min held-out R² {fmt(data.min_heldout_r2, 4)}"
                + (f" · MLflow run {esc(data.mlflow_run_id)}" if data.mlflow_run_id else ""))
    error = f'<p class="err">{esc(data.error)}</p>' if data.error else ""
    subjects = "".join(_subject(s, data.top_k, i) for i, s in enumerate(data.subjects, start=1))
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
        f"<title>{esc(title)}</title><style>{CSS}</style></head><body>"
        f"<header><h1>{esc(title)} {_badge(data.passed, data.status)}</h1>"
        + "".join(f'<div class="meta">{m}</div>' for m in meta)
        + f"{error}</header><main><h2>gates</h2>{_gates(data)}<h2>subjects</h2>{_summary(data)}{subjects}</main>"
        f"<footer>generated by spex {esc(spex.__version__)} at {generated_at.strftime('%Y-%m-%d %H:%M:%S UTC')} from the "
        "metadata DB (rebuild with <code>spex report " + esc(data.audit_id[:12]) + "</code>). Values: the "
        f"interaction index {esc(ranking.get('index'))}; first-order effects: Shapley values of the recovered surrogate."
        f"</footer><script>{JS}</script></body></html>\n"
    )
