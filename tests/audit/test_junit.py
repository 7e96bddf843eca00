"""The gates as JUnit XML, read back with a JUnit parser: a case per gate per subject, failures that
name the interaction, undecided gates as failures of type ``undecided``."""

from __future__ import annotations

from junitparser import Failure, JUnitXml

from spex.audit.gates import evaluate_gates
from spex.audit.junit import junit_xml
from spex.audit.spec.schema import Gates
from spex.engine.ranking_diff import diff_rankings


def _row(members, value, se, rank):
    return {"members": members, "labels": [f"w{m}" for m in members], "value": value, "se": se, "rank": rank}


BASE = [_row([1], 2.0, 0.05, 1), _row([2], 1.0, 0.05, 2), _row([3], 0.5, 0.05, 3)]
MOVED = [_row([1], 2.0, 0.05, 1), _row([3], 0.5, 0.05, 2), _row([2], 0.1, 0.05, 3)]


def test_each_gate_and_subject_is_a_case_and_failures_name_the_interaction(tmp_path):
    diffs = {"a": diff_rankings(MOVED, BASE, k=3), "b": diff_rankings(BASE, BASE, k=3)}
    gates = evaluate_gates(Gates(max_significant_changes=0, faithfulness_min=0.8), k=3,
                           faithfulness={"a": 0.9, "b": 0.85}, rankings={"a": MOVED, "b": BASE}, diffs=diffs,
                           faithfulness_intervals={"a": (0.88, 0.93), "b": (0.7, 0.95)})
    path = tmp_path / "gates.xml"
    path.write_text(junit_xml(gates, suite="spex.release.tiny"))
    suite = next(iter(JUnitXml.fromfile(str(path))))
    cases = {c.name: c for c in suite}
    assert set(cases) == {"max_significant_changes[a]", "max_significant_changes[b]", "faithfulness_min[a]",
                          "faithfulness_min[b]"}
    assert cases["max_significant_changes[b]"].is_passed and cases["faithfulness_min[a]"].is_passed
    (changed,) = [r for r in cases["max_significant_changes[a]"].result if isinstance(r, Failure)]
    assert changed.type == "failed" and "changed w2" in changed.message  # 0.1 ± 0.05 is still not 0
    (open_,) = [r for r in cases["faithfulness_min[b]"].result if isinstance(r, Failure)]
    assert open_.type == "undecided" and "[0.7, 0.95]" in open_.message
    assert suite.tests == 4 and suite.failures == 2
