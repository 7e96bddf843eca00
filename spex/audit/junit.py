"""An audit's gates as JUnit XML, the format every CI system shows as a test report.

One test suite per audit; one test case per gate per subject (audit-wide gates without a per-subject
value are one case). A failed gate is a ``<failure>`` whose message names what failed — the
interactions that changed significantly, the forbidden interaction and its rank interval, the R²
interval below the threshold; an undecided gate is a ``<failure type="undecided">`` (a CI job must
not ship on "not sure"; exit code 3 says the same). Standard library only.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from spex.records.gate import Gate


def _fmt(x: Any) -> str:
    return "unmeasured" if x is None else f"{x:.4g}" if isinstance(x, float) else str(x)


def _cases(gate: Gate) -> Iterable[tuple[str, str | None, str]]:
    """(subject, failure message or None, state) per subject of a gate."""
    d = gate.details
    per = d.get("per_subject")
    if gate.metric == "max_significant_changes" and per is not None:
        for subject, count in per.items():
            changes = d.get("changes", {}).get(subject, [])
            unresolved = d.get("unresolved", {}).get(subject, 0)
            named = "; ".join(f"{c['kind']} {c['name']} (Δ {_fmt(c['delta'])} ± {_fmt(c['delta_se'])}, "
                              f"q {_fmt(c['q_value'])})" for c in changes)
            if count > gate.threshold:
                yield subject, f"{count} significant changes (allowed {int(gate.threshold)}): {named}", "failed"
            elif count + unresolved > gate.threshold:
                yield subject, (f"{count} significant and {unresolved} unresolved changes: within noise of the "
                                f"limit {int(gate.threshold)}; {named}"), "undecided"
            else:
                yield subject, None, "passed"
        return
    if gate.metric == "faithfulness_min" and per is not None:
        for subject, r2 in per.items():
            low, high = (d.get("intervals", {}).get(subject) or [r2, r2])
            text = f"held-out R² {_fmt(r2)} [{_fmt(low)}, {_fmt(high)}] vs minimum {_fmt(gate.threshold)}"
            if r2 is None or (high is not None and high < gate.threshold):
                yield subject, text, "failed"
            elif low is not None and low < gate.threshold:
                yield subject, text + " (the interval straddles it)", "undecided"
            else:
                yield subject, None, "passed"
        return
    if gate.metric == "forbidden_in_top_k":
        hits: Mapping[str, list[dict[str, Any]]] = d.get("hits", {})
        for subject, found in hits.items():
            sure = [h for h in found if h["sure"]]
            text = "; ".join(f"{' × '.join(h['labels'])} (rank {h['rank']}, rank interval {h['rank_interval']}, "
                             f"pattern {h['pattern']!r})" for h in (sure or found))
            yield subject, f"forbidden interaction in the top {d.get('k')}: {text}", "failed" if sure else "undecided"
        if not hits:
            yield "", None, "passed"
        return
    if per is not None:  # the rank gates: one value per subject, the point rule
        for subject, value in per.items():
            ok = value >= gate.threshold if gate.comparator == ">=" else value <= gate.threshold
            yield subject, (None if ok else f"{gate.metric} {_fmt(value)} {gate.comparator} {_fmt(gate.threshold)} "
                            "does not hold"), "passed" if ok else "failed"
        return
    message = None if gate.passed else f"{gate.metric}: {d.get('note') or _fmt(gate.value)}"
    yield "", message, gate.state or ("passed" if gate.passed else "failed")


def junit_xml(gates: Iterable[Gate], *, suite: str, properties: Mapping[str, Any] | None = None) -> str:
    """The gates as one JUnit ``<testsuite>`` (inside ``<testsuites>``), as text."""
    root = ET.Element("testsuites")
    node = ET.SubElement(root, "testsuite", name=suite)
    if properties:
        props = ET.SubElement(node, "properties")
        for key, value in properties.items():
            ET.SubElement(props, "property", name=str(key), value=str(value))
    tests = failures = 0
    for gate in gates:
        for subject, message, state in _cases(gate):
            tests += 1
            case = ET.SubElement(node, "testcase", classname=f"{suite}.{gate.metric}",
                                 name=f"{gate.metric}[{subject}]" if subject else gate.metric)
            if message is not None and state != "passed":
                failures += 1
                failure = ET.SubElement(case, "failure", message=message, type=state)
                failure.text = message
    node.set("tests", str(tests))
    node.set("failures", str(failures))
    node.set("errors", "0")
    root.set("tests", str(tests))
    root.set("failures", str(failures))
    return ET.tostring(root, encoding="unicode", xml_declaration=True)


def write_junit(outcome: Any, path: str | Path) -> Path:
    """Write an audit outcome's gates (:class:`spex.audit.pipeline.AuditOutcome`) as JUnit XML."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    suite = f"spex.{outcome.kind}.{outcome.model.name}"
    properties = {"audit_id": outcome.audit_id, "verdict": outcome.verdict or ("passed" if outcome.passed else "failed"),
                  "model": outcome.model.name, "revision": outcome.model.revision}
    target.write_text(junit_xml(outcome.gates, suite=suite, properties=properties), encoding="utf-8")
    return target
