"""The figures an audit logs to MLflow, so a person who opens a run in the UI *sees* its interactions.

Per subject (``figures_for_subject``):

* ``interactions.png`` — the top interactions, each value with its interval as a horizontal error bar
  (the ranking table's ``ci_low``..``ci_high``; a row whose interval is unknown is a hollow point);
* ``pairs.png`` — the pairwise heatmap of the Faith-Banzhaf pair terms (the ``pairs`` table) over the
  most interactive features;
* ``text.png`` (features lens) — the prompt with each feature shaded by its Shapley value;
* ``heads.png`` (heads lens) — the layer × head grid shaded by Shapley value.

Per release (``release_figure``): each tested interaction's baseline and candidate value with its
interval, the significant changes marked.

Pure matplotlib + numpy: no MLflow (the tracker logs what this draws), no pyplot (its global figure
registry is not thread-safe, and record stages run on worker threads), so every figure is a plain
:class:`matplotlib.figure.Figure` on an Agg canvas. The colours are the HTML report's (orange raises
the output, blue lowers it).
"""

from __future__ import annotations

import io
import math
import re
from collections.abc import Mapping, Sequence
from statistics import NormalDist
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import LinearSegmentedColormap, to_hex
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from spex.report.html import NEG, POS

Row = Mapping[str, Any]

DPI = 110
TOP = 15            # interactions drawn on the interval figure
TOP_CHANGES = 20    # tested interactions drawn on the release figure
HEATMAP_MAX = 16    # features on the heatmap's axes
NAME_WIDTH = 42     # characters of an interaction's name on an axis
TEXT_WIDTH = 76     # characters per line of the shaded text
TEXT_MAX_LINES = 40
TEXT_MIN_WIDTH = 7.0  # inches: the title and the colour key fit beside a short prompt
MONO_ADVANCE = 1233 / 2048  # DejaVu Sans Mono's advance width, in em (it ships with matplotlib)
_HEAD = re.compile(r"^L(\d+)H(\d+)$")

_POS, _NEG = (to_hex(np.array(POS) / 255), to_hex(np.array(NEG) / 255))
DIVERGING = LinearSegmentedColormap.from_list("spex", [_NEG, "#ffffff", _POS]).with_extremes(bad="#eeeeee")


def new_figure(width: float, height: float) -> Figure:
    """A figure on its own Agg canvas (no pyplot, no display)."""
    figure = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def png(figure: Figure) -> bytes:
    """The figure as PNG bytes."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=DPI)
    return buffer.getvalue()


def short(text: str, width: int = NAME_WIDTH) -> str:
    """``text`` on one line, cut to ``width`` characters with an ellipsis."""
    text = " ".join(str(text).split())
    return text if len(text) <= width else text[: width - 1] + "…"


def interaction_name(row: Row, width: int = NAME_WIDTH) -> str:
    """An interaction as its members' labels (``not × bad``), or its member ids when unlabelled."""
    labels = row.get("labels")
    name = " × ".join(str(x) for x in labels) if labels else "{" + ", ".join(str(m) for m in row["members"]) + "}"
    return short(name, width)


def _known(value: Any) -> float | None:
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def _colour(value: float) -> str:
    return _POS if value > 0 else _NEG


def _level_text(level: float) -> str:
    return f"{100 * level:g} %"


# ---------------------------------------------------------------------------------------------- per subject
def interval_figure(rows: Sequence[Row], *, title: str, level: float = 0.95, top: int = TOP) -> Figure | None:
    """The ``top`` best-ranked interactions: a point at each value, a horizontal bar over its interval
    (``ci_low``..``ci_high``), best rank on top; a hollow point where the interval is unknown."""
    rows = sorted(rows, key=lambda r: int(r.get("rank") or 0))[:top]
    if not rows:
        return None
    n = len(rows)
    figure = new_figure(8.0, 1.3 + 0.36 * n)
    ax = figure.add_subplot()
    y = np.arange(n, dtype=float)
    values = np.array([float(r["value"]) for r in rows])
    low = np.array([_known(r.get("ci_low")) if _known(r.get("ci_low")) is not None else np.nan for r in rows])
    high = np.array([_known(r.get("ci_high")) if _known(r.get("ci_high")) is not None else np.nan for r in rows])
    known = np.isfinite(low) & np.isfinite(high)
    ax.axvline(0.0, color="#888888", linewidth=0.8, zorder=1)
    if known.any():
        err = np.vstack([np.maximum(values[known] - low[known], 0.0), np.maximum(high[known] - values[known], 0.0)])
        ax.errorbar(values[known], y[known], xerr=err, fmt="none", ecolor="#444444", elinewidth=1.6, capsize=3,
                    zorder=2, gid="intervals")
    ax.scatter(values[known], y[known], c=[_colour(v) for v in values[known]], s=36, zorder=3, gid="values")
    if (~known).any():
        ax.scatter(values[~known], y[~known], facecolors="none", edgecolors=[_colour(v) for v in values[~known]],
                   s=36, zorder=3, gid="unknown", label="interval unknown")
        ax.legend(loc="lower right", fontsize=8, frameon=False)
    ax.set_yticks(y, [f"{int(r.get('rank') or i + 1)}. {interaction_name(r)}" for i, r in enumerate(rows)], fontsize=9)
    ax.set_ylim(n - 0.5, -0.5)
    ax.set_xlabel(f"value, with its {_level_text(level)} interval")
    ax.set_title(title, fontsize=10, loc="left")
    ax.grid(axis="x", color="#eeeeee", zorder=0)
    return figure


def first_order(shapley: Sequence[Row], n: int) -> np.ndarray:
    """Each feature's Shapley value from the ``shapley`` table (0 where not recorded)."""
    out = np.zeros(n)
    for r in shapley:
        members = r["members"]
        if len(members) == 1 and 0 <= int(members[0]) < n:
            out[int(members[0])] = float(r["value"])
    return out


def pairs_heatmap(pairs: Sequence[Row], labels: Sequence[str], *, title: str, effects: np.ndarray | None = None,
                  max_features: int = HEATMAP_MAX) -> Figure | None:
    """The pair terms as a symmetric matrix over the ``max_features`` most interactive features
    (strength: the sum of a feature's |pair terms|, plus its |first-order effect| when given); None
    when fewer than two features take part in a pair."""
    n = len(labels)
    strength = np.zeros(n) if effects is None else np.abs(np.asarray(effects, dtype=float))
    terms = []
    for r in pairs:
        members = [int(m) for m in r["members"]]
        if len(members) == 2 and all(0 <= m < n for m in members) and members[0] != members[1]:
            terms.append((members[0], members[1], float(r["value"])))
            strength[members] += abs(float(r["value"]))
    involved = sorted({m for a, b, _ in terms for m in (a, b)})
    if len(involved) < 2:
        return None
    shown = sorted(sorted(involved, key=lambda i: -strength[i])[:max_features])
    pos = {f: j for j, f in enumerate(shown)}
    matrix = np.full((len(shown), len(shown)), np.nan)
    for a, b, v in terms:
        if a in pos and b in pos:
            matrix[pos[a], pos[b]] = matrix[pos[b], pos[a]] = v
    scale = (float(np.nanmax(np.abs(matrix))) if np.isfinite(matrix).any() else 0.0) or 1.0
    size = 2.2 + 0.42 * len(shown)
    figure = new_figure(size + 1.2, size)
    ax = figure.add_subplot()
    image = ax.imshow(matrix, cmap=DIVERGING, vmin=-scale, vmax=scale, gid="pairs")
    names = [short(labels[f], 16) for f in shown]
    ax.set_xticks(range(len(shown)), names, rotation=60, ha="right", fontsize=8)
    ax.set_yticks(range(len(shown)), names, fontsize=8)
    if len(shown) <= 10:
        for (i, j), v in np.ndenumerate(matrix):
            if np.isfinite(v):
                ax.text(j, i, f"{v:+.2g}", ha="center", va="center", fontsize=7,
                        color="white" if abs(v) > 0.6 * scale else "#222222")
    figure.colorbar(image, ax=ax, shrink=0.8, label="pair term (Faith-Banzhaf, order 2)")
    ax.set_title(title, fontsize=10, loc="left")
    return figure


def _wrap(chars: Sequence[str], width: int) -> list[tuple[int, int]]:
    """Greedy word wrap of a character sequence: (start, end) of each line."""
    lines, start, n = [], 0, len(chars)
    while start < n:
        end = min(start + width, n)
        if end < n:
            cut = max((i for i in range(start + 1, end + 1) if chars[i - 1] == " "), default=None)
            end = cut if cut is not None else end
        lines.append((start, end))
        start = end
    return lines


def text_figure(text: str, spans: Sequence[Sequence[int]], values: Sequence[float], *, title: str,
                width: int = TEXT_WIDTH) -> Figure | None:
    """The text with each feature (its character span) shaded by its value: orange raises the output,
    blue lowers it, the shade's strength ∝ |value|. Set in a monospaced font, so a character is one
    unit wide and each shade sits exactly behind its words. None without text or with spans that do
    not match the values."""
    if not text or len(spans) != len(values) or not len(values):
        return None
    chars = [" " if c in "\n\r\t" else c for c in text]
    owner = np.full(len(chars), -1)
    for i, (a, b) in enumerate(spans):
        owner[max(0, int(a)):min(len(chars), int(b))] = i
    lines = _wrap(chars, width)
    clipped = len(lines) > TEXT_MAX_LINES
    lines = lines[:TEXT_MAX_LINES]
    values = np.asarray(values, dtype=float)
    scale = float(np.max(np.abs(values))) if len(values) else 0.0
    font = 10.0
    char_w, line_h = MONO_ADVANCE * font / 72, 1.7 * font / 72
    columns = max(end - start for start, end in lines)
    plot_w, plot_h = columns * char_w, (len(lines) + (1 if clipped else 0)) * line_h
    figure = Figure(figsize=(max(plot_w + 0.6, TEXT_MIN_WIDTH), plot_h + 1.1), dpi=DPI)  # room for the title
    FigureCanvasAgg(figure)
    fig_w, fig_h = figure.get_size_inches()
    ax = figure.add_axes((0.3 / fig_w, 0.5 / fig_h, plot_w / fig_w, plot_h / fig_h))
    ax.set_xlim(0, columns)
    ax.set_ylim(len(lines) + (1 if clipped else 0), 0)
    ax.axis("off")
    for line, (start, end) in enumerate(lines):
        col = start
        while col < end:
            feature = owner[col]
            stop = col
            while stop < end and owner[stop] == feature:
                stop += 1
            piece = "".join(chars[col:stop])
            x = col - start
            if feature >= 0 and scale > 0 and values[feature] != 0:
                alpha = 0.85 * min(1.0, abs(values[feature]) / scale)
                length = len(piece.rstrip(" ")) or len(piece)
                ax.add_patch(Rectangle((x, line + 0.1), length, 0.8, facecolor=_colour(values[feature]),
                                       alpha=alpha, linewidth=0, gid=f"feature-{feature}"))
            ax.text(x, line + 0.5, piece, family="DejaVu Sans Mono", fontsize=font, va="center", ha="left")
            col = stop
    if clipped:
        ax.text(0, len(lines) + 0.5, "… (text cut)", family="DejaVu Sans Mono", fontsize=font, va="center",
                color="#666666")
    figure.text(0.3 / fig_w, 1 - 0.3 / fig_h, title, fontsize=10, va="center")
    figure.text(0.3 / fig_w, 0.22 / fig_h, f"orange raises the output, blue lowers it; shade ∝ |Shapley value| "
                f"(strongest {scale:.3g})", fontsize=8, color="#555555", va="center")
    return figure


def head_grid(labels: Sequence[str], values: Sequence[float], *, title: str) -> Figure | None:
    """Attention heads (labels ``L<layer>H<head>``) as a layers × heads grid shaded by value; None when
    no label names a head."""
    cells = [(int(m[1]), int(m[2]), float(v)) for label, v in zip(labels, values) if (m := _HEAD.match(str(label)))]
    if not cells:
        return None
    layers = sorted({layer for layer, _, _ in cells})
    heads = max(h for _, h, _ in cells) + 1
    row = {layer: i for i, layer in enumerate(layers)}
    grid = np.full((len(layers), heads), np.nan)
    for layer, head, v in cells:
        grid[row[layer], head] = v
    scale = float(np.nanmax(np.abs(grid))) or 1.0
    figure = new_figure(min(16.0, 2.4 + 0.5 * heads), 1.6 + 0.45 * len(layers))
    ax = figure.add_subplot()
    image = ax.imshow(grid, cmap=DIVERGING, vmin=-scale, vmax=scale, aspect="auto", gid="heads")
    ax.set_xticks(range(heads), [f"H{h}" for h in range(heads)], fontsize=8)
    ax.set_yticks(range(len(layers)), [f"L{layer}" for layer in layers], fontsize=8)
    ax.set_xlabel("head")
    ax.set_ylabel("layer")
    if heads <= 16 and len(layers) <= 24:
        for (i, j), v in np.ndenumerate(grid):
            if np.isfinite(v):
                ax.text(j, i, f"{v:+.2g}", ha="center", va="center", fontsize=7,
                        color="white" if abs(v) > 0.6 * scale else "#222222")
    figure.colorbar(image, ax=ax, label="Shapley value")
    ax.set_title(title, fontsize=10, loc="left")
    return figure


def figures_for_subject(subject: str, view: Mapping[str, Any], labels: Sequence[str], ranking: Sequence[Row],
                        shapley: Sequence[Row], pairs: Sequence[Row], *, index: str, level: float = 0.95,
                        top: int = TOP) -> dict[str, Figure]:
    """Every figure of one subject, by file name (see the module docstring); a figure with nothing to
    draw is left out."""
    n = len(labels)
    effects = first_order(shapley, n)
    kind = view.get("kind") or "text"
    drawn: dict[str, Figure | None] = {
        "interactions.png": interval_figure(ranking, title=f"{subject}: top interactions ({index})", level=level,
                                            top=top),
        "pairs.png": pairs_heatmap(pairs, labels, effects=effects, title=f"{subject}: pair terms"),
    }
    if kind == "text":
        drawn["text.png"] = text_figure(str(view.get("text") or ""), view.get("spans") or [], effects,
                                        title=f"{subject}: features shaded by Shapley value")
    elif kind == "grid":
        drawn["heads.png"] = head_grid(labels, effects, title=f"{subject}: attention heads by Shapley value")
    return {name: fig for name, fig in drawn.items() if fig is not None}


# ---------------------------------------------------------------------------------------------- per release
def _change_order(change: Row) -> tuple[int, float]:
    delta = _known(change.get("delta"))
    if delta is None:
        delta = (_known(change.get("candidate_value")) or 0.0) - (_known(change.get("baseline_value")) or 0.0)
    return (0 if change.get("significant") else 1, -abs(delta))


def release_figure(tested: Sequence[Row], *, title: str, level: float = 0.95, top: int = TOP_CHANGES,
                   candidate: str = "candidate", baseline: str = "baseline") -> Figure | None:
    """Each tested interaction of a release diff: the baseline's and the candidate's value, each with
    its interval (value ± z·se at ``level``), significant changes first, marked ★ with their class on a
    shaded band. A value a version did not record is drawn at 0 as a hollow point (the diff counts it
    as 0). None when nothing was tested."""
    changes = sorted(tested, key=_change_order)[:top]
    if not changes:
        return None
    z = NormalDist().inv_cdf(0.5 + level / 2)
    n = len(changes)
    figure = new_figure(8.5, 1.6 + 0.5 * n)
    ax = figure.add_subplot()
    ax.axvline(0.0, color="#888888", linewidth=0.8, zorder=1)
    names = []
    for i, c in enumerate(changes):
        if c.get("significant"):
            ax.axhspan(i - 0.45, i + 0.45, color="#fff3c4", zorder=0)
        name = short(str(c.get("name") or "{" + ", ".join(str(m) for m in c["members"]) + "}"))
        names.append(f"★ {name} ({c.get('kind')})" if c.get("significant") else name)
    for side, offset, colour, label in (("baseline", 0.17, "#7a7a7a", baseline),
                                        ("candidate", -0.17, "#d64524", candidate)):
        values = np.array([_known(c.get(f"{side}_value")) for c in changes], dtype=object)
        recorded = np.array([v is not None for v in values])
        x = np.array([v if v is not None else 0.0 for v in values], dtype=float)
        se = np.array([_known(c.get(f"{side}_se")) for c in changes], dtype=object)
        err = np.array([z * s if s is not None else 0.0 for s in se], dtype=float)
        y = np.arange(n) + offset
        ax.errorbar(x, y, xerr=err, fmt="none", ecolor=colour, elinewidth=1.4, capsize=2.5, zorder=2,
                    gid=f"{side}-intervals")
        ax.scatter(x[recorded], y[recorded], color=colour, s=30, zorder=3, label=label, gid=f"{side}-values")
        if (~recorded).any():
            ax.scatter(x[~recorded], y[~recorded], facecolors="white", edgecolors=colour, s=30, zorder=3,
                       gid=f"{side}-unrecorded")
    ax.set_yticks(range(n), names, fontsize=9)
    for tick, c in zip(ax.get_yticklabels(), changes):
        if c.get("significant"):
            tick.set_fontweight("bold")
    ax.set_ylim(n - 0.5, -0.5)
    ax.set_xlabel(f"value, with its {_level_text(level)} interval (hollow: not recorded, counted as 0)")
    ax.legend(loc="lower right", fontsize=8)
    ax.set_title(title, fontsize=10, loc="left")
    ax.grid(axis="x", color="#eeeeee", zorder=0)
    return figure
