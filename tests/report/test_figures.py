"""The figures logged to MLflow (spex.report.figures): each a valid PNG of a sensible size, and each
drawing what its table says — the interval bars span exactly ``ci_low``..``ci_high``, the heatmap holds
the pair terms, the shaded text shades each feature by its value, the head grid puts each head's value
in its layer's row, the release figure's bars are value ± z·se with the significant changes first."""

from __future__ import annotations

import io
import re
from statistics import NormalDist

import numpy as np
from matplotlib.collections import PathCollection
from matplotlib.container import ErrorbarContainer
from matplotlib.patches import Rectangle
from PIL import Image

from spex.report import figures
from spex.report.html import NEG, POS
from tests.tolerances import approx, assert_close

TEXT = "The food was not bad at all, but the service was slow."
SPANS = [m.span() for m in re.finditer(r"\w+", TEXT)]
LABELS = [TEXT[a:b] for a, b in SPANS]


def ranking(n_rows: int = 8, seed: int = 0, unknown: tuple[int, ...] = (3,)) -> list[dict]:
    rng = np.random.default_rng(seed)
    rows = []
    for rank in range(1, n_rows + 1):
        members = sorted(int(m) for m in rng.choice(len(LABELS), size=1 + rank % 2, replace=False))
        value, se = float(rng.normal(0, 0.5)), float(abs(rng.normal(0.05, 0.02)))
        known = rank not in unknown
        rows.append({"members": members, "labels": [LABELS[m] for m in members], "order": len(members), "rank": rank,
                     "value": value, "se": se if known else None, "ci_low": value - 1.96 * se if known else None,
                     "ci_high": value + 1.96 * se if known else None})
    return rows


def decoded(figure) -> Image.Image:
    data = figures.png(figure)
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    image = Image.open(io.BytesIO(data))
    image.load()
    assert image.format == "PNG" and len(data) < 1_000_000
    return image


def test_the_interval_figure_draws_each_rows_interval_exactly_and_marks_unknown_ones():
    rows = ranking()
    figure = figures.interval_figure(rows, title="food: top interactions (fbii)", top=8)
    image = decoded(figure)
    assert 700 <= image.width <= 1200 and 300 <= image.height <= 1500
    (ax,) = figure.axes
    (bars,) = [c for c in ax.containers if isinstance(c, ErrorbarContainer)]
    segments = [s for collection in bars.lines[2] for s in collection.get_segments()]
    known = [(i, r) for i, r in enumerate(rows) if r["ci_low"] is not None]
    assert len(segments) == len(known)  # one bar per known interval, none for the unknown one
    for (y, r), segment in zip(known, segments):
        (x0, y0), (x1, y1) = segment
        assert y0 == y1 == y  # best rank on top, one row per interaction
        assert_close(np.array([x0, x1]), np.array([r["ci_low"], r["ci_high"]]))
    points = {c.get_gid(): c for c in ax.collections if isinstance(c, PathCollection)}
    assert_close(points["values"].get_offsets()[:, 0], np.array([r["value"] for _, r in known]))
    assert points["unknown"].get_offsets()[:, 1].tolist() == [2.0]  # rank 3: hollow, no bar
    labels = [t.get_text() for t in ax.get_yticklabels()]
    assert labels[0] == f"1. {' × '.join(rows[0]['labels'])}" and len(labels) == 8
    taller = figures.interval_figure(ranking(15), title="t", top=15)
    assert decoded(taller).height > image.height  # the height follows the rows
    assert figures.interval_figure([], title="nothing") is None


def test_the_pairs_heatmap_holds_each_pair_term_symmetrically():
    pairs = [{"members": [1, 3], "value": 0.4}, {"members": [3, 4], "value": -0.25}, {"members": [0, 9], "value": 0.1}]
    figure = figures.pairs_heatmap(pairs, LABELS, title="food: pair terms")
    decoded(figure)
    ax = figure.axes[0]
    matrix = np.ma.filled(ax.images[0].get_array(), np.nan)
    shown = [t.get_text() for t in ax.get_xticklabels()]
    assert shown == [LABELS[i] for i in (0, 1, 3, 4, 9)]
    pos = {f: j for j, f in enumerate((0, 1, 3, 4, 9))}
    for r in pairs:
        a, b = (pos[m] for m in r["members"])
        assert matrix[a, b] == matrix[b, a] == r["value"]
    assert np.isnan(matrix).sum() == matrix.size - 2 * len(pairs)  # nothing else is drawn
    vmin, vmax = ax.images[0].get_clim()
    assert vmin == -vmax == -0.4  # one symmetric scale: white is 0
    assert figures.pairs_heatmap([], LABELS, title="none") is None
    assert figures.pairs_heatmap([{"members": [2, 2], "value": 1.0}], LABELS, title="self") is None


def test_the_shaded_text_shades_each_feature_by_its_value_in_the_reports_colours():
    values = np.zeros(len(LABELS))
    values[3], values[4], values[8] = -0.6, 0.9, 0.3  # not, bad, service
    figure = figures.text_figure(TEXT, SPANS, values, title="food: features shaded by Shapley value")
    image = decoded(figure)
    assert image.width >= 400 and image.height >= 100
    (ax,) = figure.axes
    shades = {p.get_gid(): p for p in ax.patches if isinstance(p, Rectangle)}
    assert set(shades) == {"feature-3", "feature-4", "feature-8"}  # zero-valued features stay unshaded
    for i in (3, 4, 8):
        shade = shades[f"feature-{i}"]
        colour = np.array(shade.get_facecolor()[:3]) * 255
        assert np.abs(colour - np.array(POS if values[i] > 0 else NEG)).max() < 1.0  # 8-bit colour, via hex
        assert shade.get_alpha() == approx(0.85 * abs(values[i]) / 0.9)
        assert shade.get_width() == len(LABELS[i])  # one monospaced character per unit: exactly behind its word
    drawn = "".join(t.get_text() for t in ax.texts)
    assert drawn == TEXT  # every character, in order
    assert figures.text_figure("", [], [], title="redacted") is None
    assert figures.text_figure(TEXT, SPANS[:2], values, title="spans do not fit") is None


def test_long_text_wraps_into_lines_that_keep_every_word():
    text = " ".join(["interaction"] * 40)
    spans = [m.span() for m in re.finditer(r"\w+", text)]
    figure = figures.text_figure(text, spans, np.linspace(-1, 1, len(spans)), title="long", width=40)
    decoded(figure)
    rows = sorted({int(t.get_position()[1]) for t in figure.axes[0].texts})
    assert rows == list(range(14))  # "interaction " is 12 characters: 3 words per 40-column line, 40 words
    assert "".join(t.get_text() for t in figure.axes[0].texts) == text


def test_the_head_grid_puts_each_heads_value_in_its_layer_and_column():
    labels = [f"L{layer}H{head}" for layer in (0, 1, 5) for head in range(4)]
    values = np.arange(len(labels), dtype=float) - 5
    figure = figures.head_grid(labels, values, title="negation: heads")
    decoded(figure)
    ax = figure.axes[0]
    grid = np.asarray(ax.images[0].get_array())
    assert grid.shape == (3, 4)
    assert_close(grid, values.reshape(3, 4))
    assert [t.get_text() for t in ax.get_yticklabels()] == ["L0", "L1", "L5"]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["H0", "H1", "H2", "H3"]
    assert figures.head_grid(["the", "food"], [1.0, 2.0], title="not heads") is None


def test_the_release_figure_shows_both_versions_intervals_and_marks_significant_changes_first():
    tested = [
        {"members": [1], "name": "food", "candidate_value": 0.2, "baseline_value": 0.21, "candidate_se": 0.01,
         "baseline_se": 0.02, "delta": -0.01, "significant": False, "kind": "within_noise"},
        {"members": [3, 4], "name": "not × bad", "candidate_value": -0.5, "baseline_value": 0.4, "candidate_se": 0.05,
         "baseline_se": 0.04, "delta": -0.9, "significant": True, "kind": "sign_flip"},
        {"members": [6], "name": "all", "candidate_value": 0.3, "baseline_value": None, "candidate_se": 0.03,
         "baseline_se": 0.02, "delta": 0.3, "significant": True, "kind": "appeared"},
    ]
    figure = figures.release_figure(tested, title="food: v2 vs v1", level=0.9, candidate="v2", baseline="v1")
    decoded(figure)
    ax = figure.axes[0]
    order = [tested[1], tested[2], tested[0]]  # significant first, larger |Δ| first
    labels = [t.get_text() for t in ax.get_yticklabels()]
    assert labels == ["★ not × bad (sign_flip)", "★ all (appeared)", "food"]
    z = NormalDist().inv_cdf(0.95)
    bars = {c.lines[2][0].get_gid(): c for c in ax.containers if isinstance(c, ErrorbarContainer)}
    for side in ("candidate", "baseline"):
        segments = bars[f"{side}-intervals"].lines[2][0].get_segments()
        for c, ((x0, _), (x1, _)) in zip(order, segments):
            centre = c[f"{side}_value"] if c[f"{side}_value"] is not None else 0.0
            assert_close(np.array([x0, x1]), np.array([centre - z * c[f"{side}_se"], centre + z * c[f"{side}_se"]]))
    points = {c.get_gid(): c for c in ax.collections if isinstance(c, PathCollection)}
    assert points["baseline-unrecorded"].get_offsets().tolist() == [[0.0, 1.17]]  # not recorded: drawn at 0
    bands = [p for p in ax.patches if isinstance(p, Rectangle)]
    assert [round(p.get_y() + p.get_height() / 2) for p in bands] == [0, 1]  # a band behind each significant row
    assert figures.release_figure([], title="nothing") is None


def test_figures_for_subject_draw_what_each_lens_shows():
    rows, shapley = ranking(), [{"members": [i], "value": 0.1 * (i - 5)} for i in range(len(LABELS))]
    pairs = [{"members": [1, 3], "value": 0.4}, {"members": [3, 4], "value": -0.25}]
    text = figures.figures_for_subject("food", {"kind": "text", "text": TEXT, "spans": SPANS}, LABELS, rows, shapley,
                                       pairs, index="fbii")
    assert sorted(text) == ["interactions.png", "pairs.png", "text.png"]
    redacted = figures.figures_for_subject("food", {"kind": "text", "text": None, "spans": SPANS, "redacted": True},
                                           [f"f{i}" for i in range(len(LABELS))], rows, shapley, pairs, index="fbii")
    assert sorted(redacted) == ["interactions.png", "pairs.png"]  # no text to shade
    heads = [f"L{layer}H{head}" for layer in range(2) for head in range(4)]
    grid = figures.figures_for_subject("negation", {"kind": "grid", "labels": heads}, heads, rows[:3],
                                       [{"members": [i], "value": float(i)} for i in range(8)], [], index="fbii")
    assert sorted(grid) == ["heads.png", "interactions.png"]
    for figure in (*text.values(), *grid.values()):
        decoded(figure)
