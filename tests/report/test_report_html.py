"""The HTML report's templates on hand-made subjects of every view kind: each kind is drawn its own way
(chosen by the recorded view's ``kind``, never by the lens name), and every value is escaped."""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

import pytest

from spex.report.data import ReportData, SubjectReport
from spex.report.html import render_html

LABELS = ["a&", "<b>", "c", "d"]
WHEN = dt.datetime(2024, 1, 2, 3, 4, 5, tzinfo=dt.timezone.utc)


def subject(**overrides: Any) -> SubjectReport:
    fields: dict[str, Any] = dict(
        key="k<1>", subject_id=1, lens="features", n=4, labels=LABELS, view={}, metrics={}, heldout_r2=0.5,
        n_heldout=10, removal=None, proxy_r2=None, index="fbii",
        ranking=[{"members": [0, 1], "labels": ["a&", "<b>"], "order": 2, "value": 0.5, "rank": 1},
                 {"members": [2], "labels": None, "order": 1, "value": -0.25, "rank": 2}],
        shapley=[{"members": [i], "labels": None, "order": 1, "value": v, "rank": i + 1}
                 for i, v in enumerate([0.3, -0.2, 0.0])],
        pairs=[{"members": [0, 1], "labels": None, "order": 2, "value": 0.5, "rank": 1}], mlflow_run_id=None)
    fields.update(overrides)
    return SubjectReport(**fields)


def report(*subjects: SubjectReport, **overrides: Any) -> str:
    fields: dict[str, Any] = dict(
        audit_id="c" * 32, kind="audit", status="succeeded", passed=True, model={"name": "m", "revision": "1"},
        baseline=None, started_at=WHEN, finished_at=WHEN, spec={"lens": "features"}, error=None, mlflow_run_id=None,
        mlflow_experiment_id=None, gates=[], subjects=list(subjects))
    fields.update(overrides)
    return render_html(ReportData(**fields), generated_at=WHEN)


def section(html: str) -> str:
    (match,) = re.findall(r'<section class="subject".*?</section>', html, re.S)
    return match


def test_a_text_view_shades_each_span_of_the_prompt_and_draws_the_interactions_over_it():
    text = "a& <b> c d"
    html = section(report(subject(view={"kind": "text", "text": text, "spans": [[0, 2], [3, 6], [7, 8], [9, 10]]})))
    view = re.search(r'<div class="text">(.*?)</div>', html, re.S).group(1)
    # white-space:pre-wrap shows every character: exactly the prompt's, nothing the template added
    assert re.sub(r"<[^>]+>", "", view) == "a&amp; &lt;b&gt; c d"
    assert view.count('class="f"') == 4 and 'title="feature 1: &lt;b&gt; · first-order effect -0.2"' in view
    mini = re.findall(r'<div class="mini">(.*?)</div>', html, re.S)
    assert mini[0] == '<span class="m">a&amp;</span> <span class="m">&lt;b&gt;</span> c d'
    assert "strongest interactions in the text" in html


def test_a_grid_is_drawn_by_its_kind_whatever_the_lens():
    labels = ["L0H0", "L0H1", "L1H0", "L1H1"]
    html = section(report(subject(lens="features", labels=labels, view={"kind": "grid"})))
    assert '<table class="grid">' in html and "<tr><th></th><th>H0</th><th>H1</th></tr>" in html
    assert html.count('<td class="f"') == 4 and "strongest interactions in the text" not in html
    assert '<div class="text">' not in html


def test_examples_are_listed_strongest_first_with_the_target():
    view = {"kind": "examples", "target": "tgt <x>", "target_label": "1",
            "examples": [{"text": "e0 <i>", "label": "0"}, {"text": "e1", "label": "1"}]}
    shapley = [{"members": [i], "labels": None, "order": 1, "value": v, "rank": i + 1}
               for i, v in enumerate([0.1, -0.4, 0.2])]
    html = section(report(subject(lens="heads", view=view, shapley=shapley)))  # the lens does not pick the view
    assert "target example: <b>tgt &lt;x&gt;</b> (label 1)" in html
    order = re.findall(r'<tr class="f" data-i="(\d+)">', html)
    assert order == ["1", "2", "0", "3"]  # |-0.4| > |0.2| > |0.1| > 0
    assert "<td>e0 &lt;i&gt;</td>" not in html and ">e0 &lt;i&gt;</td>" in html
    assert '<table class="grid">' not in html


@pytest.mark.parametrize("kind", ["text", "examples"])
def test_a_redacted_subject_shows_features_by_index(kind: str):
    view = {"kind": kind, "text": None, "redacted": True, "examples": [{"text": "[redacted]", "label": "0"}]}
    html = section(report(subject(labels=["f0", "f1", "f2", "f3"], view=view)))
    assert "text redacted (privacy.redact_text)" in html
    assert ('<table class="examples">' in html) == (kind == "examples")


def test_every_value_is_escaped_gate_notes_included():
    gates = [{"metric": "m<1>", "value": None, "comparator": ">=", "threshold": 1, "passed": False,
              "details": {"note": "see <script>x</script>"}},
             {"metric": "forbidden_in_top_k", "value": 1.0, "comparator": "<=", "threshold": 0.0, "passed": False,
              "details": {"hits": {"s<1>": [{"labels": ["a", "<b>"]}]}}}]
    html = report(subject(view={"kind": "text"}), gates=gates, error="boom <script>", status="failed", passed=False,
                  model={"name": "<m>", "revision": "r"})
    assert "<script>x</script>" not in html and "see &lt;script&gt;x&lt;/script&gt;" in html
    assert "s&lt;1&gt;: a × &lt;b&gt;" in html and '<p class="err">boom &lt;script&gt;</p>' in html
    assert "<title>spex audit · &lt;m&gt;</title>" in html and '<span class="badge fail">FAILED</span>' in html
    assert html.count("<script>") == 1 and "None" not in html  # a missing value prints as nothing / "–"


def test_an_undecided_gate_makes_an_undecided_verdict_shown_as_such():
    gates = [{"metric": "faithfulness_min", "value": 0.9, "comparator": ">=", "threshold": 0.5, "passed": True,
              "state": "passed", "details": {}},
             {"metric": "max_significant_changes", "value": 1.0, "comparator": "<=", "threshold": 0.0, "passed": False,
              "state": "undecided", "details": {}},
             {"metric": "old_row", "value": 1.0, "comparator": ">=", "threshold": 0.0, "passed": True, "details": {}}]
    html = report(subject(), gates=gates, passed=False, verdict="undecided")
    assert '<span class="badge undecided">UNDECIDED</span>' in html
    rows = dict(re.findall(r'<tr class="(\w+)"><td>([\w_]+)</td>', html)[i][::-1] for i in range(3))
    assert rows == {"faithfulness_min": "pass", "max_significant_changes": "undecided", "old_row": "pass"}
    assert '<td class="result">undecided</td>' in html and "within the noise of its threshold" in html
    # an audit recorded before verdicts existed: its passed flag decides
    assert '<span class="badge fail">FAIL</span>' in report(subject(), gates=gates[:1], passed=False)
    assert "within the noise" not in report(subject(), gates=gates[:1], passed=True)


def test_intervals_share_one_scale_and_an_unknown_one_is_a_dash():
    from spex.report.html import INTERVAL_PAD, INTERVAL_W, interval_bars

    rows = [{"members": [0], "labels": None, "order": 1, "value": 1.0, "rank": 1, "se": 0.1, "ci_low": 0.8,
             "ci_high": 1.2},
            {"members": [1], "labels": None, "order": 1, "value": -0.5, "rank": 2, "se": 0.25, "ci_low": -1.0,
             "ci_high": 0.0},
            {"members": [2], "labels": None, "order": 1, "value": 0.3, "rank": 3, "se": None, "ci_low": None,
             "ci_high": None}]
    bars = interval_bars(rows)
    inner = INTERVAL_W - 2 * INTERVAL_PAD  # the scale runs from -1.0 (left) to 1.2 (right)
    assert [b["zero"] for b in bars] == [round(INTERVAL_PAD + inner / 2.2, 2)] * 3
    assert bars[0]["x"] == round(INTERVAL_PAD + 1.8 / 2.2 * inner, 2) and bars[1]["x"] == INTERVAL_PAD
    assert bars[1]["w"] == round(inner / 2.2, 2) and bars[0]["w"] == pytest.approx(bars[1]["w"] * 0.4, abs=0.02)
    assert [b["excludes_zero"] for b in bars] == [True, False, False] and bars[2]["x"] is None
    html = section(report(subject(ranking=rows)))
    assert "<td>{0}</td><td class=\"num\">1</td><td class=\"num\">+1</td><td class=\"num se\">±0.1</td>" in html
    assert '<span class="ci-text">[0.8, 1.2]</span>' in html and '<span class="ci-text">[-1, 0]</span>' in html
    assert html.count("<rect class=\"iv ") == 2 and '<td class="num se">–</td><td class="ci"><span class="ci-text">–</span>' in html
