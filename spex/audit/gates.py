"""The gates a release must pass, evaluated on an audit's outcome.

Each configured gate (:class:`spex.audit.spec.Gates`) becomes one :class:`spex.records.gate.Gate`:
the type the metadata store records, so a gate is evaluated and stored without translation. Every
gate that reads a noisy number decides with its interval, and says ``undecided`` when the interval
straddles the threshold (``Gate.state``):

* ``max_significant_changes``: per subject, the changes that are significant after Benjamini–Hochberg
  and at least ``min_effect`` (:func:`spex.engine.ranking_diff.diff_rankings`); failed when a subject
  has more than allowed; undecided when it could have more (significant + unresolved > allowed);
* ``faithfulness_min``: each subject's held-out R² interval: passed when every low end clears the
  threshold, failed when some high end is below it (or a subject is unmeasured), else undecided;
* ``forbidden``: a forbidden interaction is a hit when its worst rank (by the intervals) is within
  the top k, a possible hit (undecided) when only its best rank is;
* ``top_k_jaccard_min`` / ``max_rank_shift``: the plain rank metrics of the diff (no interval).

Pure pandas/numpy (plus the plain ``Gate`` dataclass): usable from a notebook.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import pandas as pd
from scipy.stats import norm

from spex.engine.ranking_diff import SubjectDiff, rank_intervals, ranking_rows
from spex.records.gate import Gate

NO_BASELINE_NOTE = "no baseline to compare with; run a release audit (spex release)"

_PUNCT = re.compile(r"^[\W_]+|[\W_]+$", re.UNICODE)


def _norm(label: str) -> str:
    return _PUNCT.sub("", str(label)).casefold()


def forbidden_hits(table: pd.DataFrame | Iterable[Mapping[str, Any]], forbidden: Sequence[str | Sequence[str]],
                   *, k: int, level: float = 0.95) -> list[dict[str, Any]]:
    """Forbidden interactions that may be in the top k, each with ``sure``: its worst rank by the
    intervals is within k (a hit); otherwise only its best rank is (a possible hit). Without standard
    errors the ranks are the recorded ones.

    A string pattern matches every interaction with a member labelled so (case and surrounding
    punctuation ignored: ``"Nurse,"`` is ``nurse``); a list matches exactly that set of labels.
    Unlabelled tables are matched on member ids written as strings.
    """
    rows = ranking_rows(table)
    ranks = rank_intervals(rows, float(norm.ppf(0.5 + level / 2.0))) if rows else {}
    hits = []
    for r in rows:
        best, worst = ranks[r["members"]]
        if best > k:
            continue
        labels = r["labels"] if r["labels"] is not None else tuple(str(m) for m in r["members"])
        normalised = [_norm(x) for x in labels]
        for pattern in forbidden:
            if isinstance(pattern, str):
                matched = _norm(pattern) in normalised
            else:
                matched = sorted(_norm(x) for x in pattern) == sorted(normalised)
            if matched:
                hits.append({"members": list(r["members"]), "labels": list(labels), "rank": r["rank"],
                             "value": r["value"], "se": r.get("se"), "rank_interval": [best, worst],
                             "sure": worst <= k, "pattern": pattern})
                break
    return hits


def _state(failed: bool, undecided: bool) -> tuple[bool, str]:
    """(passed, state) from whether a gate failed or is within noise."""
    if failed:
        return False, "failed"
    return (False, "undecided") if undecided else (True, "passed")


def evaluate_gates(gates: Any, *, faithfulness: Mapping[str, float | None],
                   rankings: Mapping[str, pd.DataFrame | Sequence[Mapping[str, Any]]],
                   diffs: Mapping[str, SubjectDiff | Mapping[str, Any] | None] | None, k: int,
                   without_baseline: str = "fail",
                   faithfulness_intervals: Mapping[str, tuple[float | None, float | None]] | None = None,
                   level: float = 0.95) -> list[Gate]:
    """Evaluate the configured gates (a :class:`spex.audit.spec.Gates`) on an audit's outcome.

    ``faithfulness``: held-out R² per subject, with ``faithfulness_intervals`` (low, high) per subject
    when known (else the point decides); ``rankings``: the candidate's ranking per subject (rows with
    ``se`` when known); ``diffs``: per subject vs the baseline, as :class:`SubjectDiff` or its
    ``to_dict()``, or None when there is no baseline. Then the baseline gates cannot be measured:
    ``without_baseline="fail"`` records them failed with a note (they never pass silently);
    ``"skip"`` leaves them out — for the baseline's own audit inside a release, and for routine
    audits, where the spec's release gates simply do not apply.
    """
    if without_baseline not in ("fail", "skip"):
        raise ValueError(f"without_baseline must be 'fail' or 'skip'; got {without_baseline!r}")

    def number(d: Any, name: str) -> Any:
        return d.get(name) if isinstance(d, Mapping) else getattr(d, name)

    def tested(d: Any) -> list[Mapping[str, Any]]:
        rows = number(d, "tested")
        return [r if isinstance(r, Mapping) else r.__dict__ for r in rows]

    diffs = {s: d for s, d in diffs.items() if d is not None} if diffs is not None else None
    out: list[Gate] = []
    if gates.max_significant_changes is not None and not (diffs is None and without_baseline == "skip"):
        allowed = int(gates.max_significant_changes)
        if diffs is None:
            out.append(Gate("max_significant_changes", float(allowed), None, False, "<=",
                            {"note": NO_BASELINE_NOTE}))
        else:
            per, unresolved, named = {}, {}, {}
            for s, d in diffs.items():
                rows = tested(d)
                significant = [r for r in rows if r["significant"]]
                per[s] = len(significant)
                unresolved[s] = sum(1 for r in rows if r.get("resolution") == "unresolved")
                named[s] = [{"name": _name(r), "kind": r["kind"], "delta": r["delta"], "delta_se": r["delta_se"],
                             "q_value": r["q_value"]} for r in significant]
            worst = max(per.values(), default=0)
            passed, state = _state(worst > allowed, any(per[s] + unresolved[s] > allowed for s in per))
            out.append(Gate("max_significant_changes", float(allowed), float(worst), passed, "<=",
                            {"per_subject": per, "unresolved": unresolved, "changes": named, "k": k,
                             "fdr": gates.drift_fdr, "min_effect": gates.min_effect}, state))
    if gates.faithfulness_min is not None:
        threshold = float(gates.faithfulness_min)
        per = {s: (None if v is None or not math.isfinite(v) else float(v)) for s, v in faithfulness.items()}
        intervals = {s: (faithfulness_intervals or {}).get(s) or (v, v) for s, v in per.items()}
        intervals = {s: (lo if lo is not None else per[s], hi if hi is not None else per[s])
                     for s, (lo, hi) in intervals.items()}
        worst = min((v for v in per.values() if v is not None), default=None)
        missing = [s for s, v in per.items() if v is None]
        failed = worst is None or bool(missing) or any(hi < threshold for s, (lo, hi) in intervals.items()
                                                       if hi is not None)
        undecided = any(lo is not None and lo < threshold for lo, _ in intervals.values())
        passed, state = _state(failed, undecided)
        out.append(Gate("faithfulness_min", threshold, worst, passed, ">=",
                        {"per_subject": per, "intervals": {s: list(v) for s, v in intervals.items()},
                         "unmeasured": missing}, state))
    if gates.top_k_jaccard_min is not None and not (diffs is None and without_baseline == "skip"):
        if diffs is None:
            out.append(Gate("top_k_jaccard_min", float(gates.top_k_jaccard_min), None, False, ">=",
                            {"note": NO_BASELINE_NOTE}))
        else:
            per = {s: float(number(d, "jaccard")) for s, d in diffs.items()}
            worst = min(per.values(), default=None)
            out.append(Gate("top_k_jaccard_min", float(gates.top_k_jaccard_min), worst,
                            worst is not None and worst >= gates.top_k_jaccard_min, ">=",
                            {"per_subject": per, "k": k}))
    if gates.max_rank_shift is not None and not (diffs is None and without_baseline == "skip"):
        if diffs is None:
            out.append(Gate("max_rank_shift", float(gates.max_rank_shift), None, False, "<=",
                            {"note": NO_BASELINE_NOTE}))
        else:
            per = {s: int(number(d, "max_rank_shift")) for s, d in diffs.items()}
            worst = max(per.values(), default=0)
            out.append(Gate("max_rank_shift", float(gates.max_rank_shift), float(worst),
                            worst <= gates.max_rank_shift, "<=", {"per_subject": per, "k": k}))
    if gates.forbidden:
        hits = {s: forbidden_hits(t, gates.forbidden, k=k, level=level) for s, t in rankings.items()}
        sure = sum(1 for h in hits.values() for x in h if x["sure"])
        possible = sum(1 for h in hits.values() for x in h if not x["sure"])
        passed, state = _state(sure > 0, possible > 0)
        out.append(Gate("forbidden_in_top_k", 0.0, float(sure), passed, "<=",
                        {"hits": {s: h for s, h in hits.items() if h}, "patterns": list(gates.forbidden), "k": k,
                         "possible": possible}, state))
    return out


def _name(row: Mapping[str, Any]) -> str:
    labels = row.get("labels")
    if labels:
        return " × ".join(labels)
    return "{" + ", ".join(str(m) for m in row["members"]) + "}"


def undecided_subjects(gates: Sequence[Gate]) -> set[str]:
    """The subjects an undecided gate is undecided about: where more masks could decide it."""
    out: set[str] = set()
    for g in gates:
        if g.state != "undecided":
            continue
        details = g.details
        if g.metric == "max_significant_changes":
            allowed = g.threshold
            out |= {s for s, n in details["per_subject"].items() if n + details["unresolved"].get(s, 0) > allowed}
        elif g.metric == "faithfulness_min":
            out |= {s for s, (lo, hi) in details["intervals"].items()
                    if lo is not None and hi is not None and lo < g.threshold <= hi}
        elif g.metric == "forbidden_in_top_k":
            out |= {s for s, hits in details["hits"].items() if any(not h["sure"] for h in hits)}
    return out
