"""The gates a release must pass, evaluated on an audit's outcome.

Each configured gate (:class:`spex.audit.spec.Gates`) becomes one :class:`spex.records.gate.Gate`:
the type the metadata store records, so a gate is evaluated and stored without translation.

* ``faithfulness_min``: the worst subject's held-out R² (an unmeasured subject fails it);
* ``top_k_jaccard_min`` / ``max_rank_shift``: the worst subject's diff against the baseline
  (:func:`spex.engine.ranking_diff.diff_rankings`);
* ``forbidden``: interactions in the top k whose labels match a forbidden pattern.

Pure pandas/numpy (plus the plain ``Gate`` dataclass): usable from a notebook.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import pandas as pd

from spex.engine.ranking_diff import SubjectDiff, ranking_rows
from spex.records.gate import Gate

NO_BASELINE_NOTE = "no baseline to compare with; run a release audit (spex release)"

_PUNCT = re.compile(r"^[\W_]+|[\W_]+$", re.UNICODE)


def _norm(label: str) -> str:
    return _PUNCT.sub("", str(label)).casefold()


def forbidden_hits(table: pd.DataFrame | Iterable[Mapping[str, Any]], forbidden: Sequence[str | Sequence[str]],
                   *, k: int) -> list[dict[str, Any]]:
    """Top-k interactions that match a forbidden pattern.

    A string pattern matches every interaction with a member labelled so (case and surrounding
    punctuation ignored: ``"Nurse,"`` is ``nurse``); a list matches exactly that set of labels.
    Unlabelled tables are matched on member ids written as strings.
    """
    hits = []
    for r in ranking_rows(table)[:k]:
        labels = r["labels"] if r["labels"] is not None else tuple(str(m) for m in r["members"])
        normalised = [_norm(x) for x in labels]
        for pattern in forbidden:
            if isinstance(pattern, str):
                matched = _norm(pattern) in normalised
            else:
                matched = sorted(_norm(x) for x in pattern) == sorted(normalised)
            if matched:
                hits.append({"members": list(r["members"]), "labels": list(labels), "rank": r["rank"],
                             "value": r["value"], "pattern": pattern})
                break
    return hits


def evaluate_gates(gates: Any, *, faithfulness: Mapping[str, float | None],
                   rankings: Mapping[str, pd.DataFrame | Sequence[Mapping[str, Any]]],
                   diffs: Mapping[str, SubjectDiff | Mapping[str, Any] | None] | None, k: int,
                   without_baseline: str = "fail") -> list[Gate]:
    """Evaluate the configured gates (a :class:`spex.audit.spec.Gates`) on an audit's outcome.

    ``faithfulness``: held-out R² per subject; ``rankings``: the candidate's ranking per subject;
    ``diffs``: per subject vs the baseline, as :class:`SubjectDiff` or its ``to_dict()``, or None when
    there is no baseline. Then the baseline gates (Jaccard, rank shift) cannot be measured:
    ``without_baseline="fail"`` records them failed with a note (they never pass silently);
    ``"skip"`` leaves them out — for the baseline's own audit inside a release, and for routine
    audits, where the spec's release gates simply do not apply.
    """
    if without_baseline not in ("fail", "skip"):
        raise ValueError(f"without_baseline must be 'fail' or 'skip'; got {without_baseline!r}")

    def number(d: Any, name: str) -> Any:
        return d.get(name) if isinstance(d, Mapping) else getattr(d, name)

    diffs = {s: d for s, d in diffs.items() if d is not None} if diffs is not None else None
    out: list[Gate] = []
    if gates.faithfulness_min is not None:
        per = {s: (None if v is None or not math.isfinite(v) else float(v)) for s, v in faithfulness.items()}
        worst = min((v for v in per.values() if v is not None), default=None)
        missing = [s for s, v in per.items() if v is None]
        passed = worst is not None and not missing and worst >= gates.faithfulness_min
        out.append(Gate("faithfulness_min", float(gates.faithfulness_min), worst, passed, ">=",
                        {"per_subject": per, "unmeasured": missing}))
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
        hits = {s: forbidden_hits(t, gates.forbidden, k=k) for s, t in rankings.items()}
        count = sum(len(h) for h in hits.values())
        out.append(Gate("forbidden_in_top_k", 0.0, float(count), count == 0, "<=",
                        {"hits": {s: h for s, h in hits.items() if h}, "patterns": list(gates.forbidden), "k": k}))
    return out
