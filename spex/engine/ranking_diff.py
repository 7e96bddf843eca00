"""Ranking diffs: how the ranked interactions of a subject changed between two model versions (the
gates a release must pass, which read these diffs, are in :mod:`spex.audit.gates`).

Why in the engine: it is arithmetic on two interaction tables (the engine's output) and nothing else,
and both the release gates (``spex.audit``) and the report (``spex.report``, below the audit: the
pipeline writes the report) read it.

A ranking is spex's interaction table (``members``, ``value``, ``rank``, optional ``labels``), as
recorded in the metadata DB. For each subject the diff reports, over the top k:

* ``appeared`` / ``disappeared``: interactions in the candidate's top k and not the baseline's, and
  the reverse;
* ``sign_flips``: interactions in both top k whose value changed sign (an effect that reversed);
* ``jaccard``: |top-k ∩| / |top-k ∪| of the two member sets;
* ``rank_correlation``: Spearman correlation of the two versions' values over the union of both top
  k (an interaction missing from a recorded table counts as 0: it was below the recorded ranks);
* ``rank_shifts`` / ``max_rank_shift``: for each baseline top-k interaction, how many ranks it moved
  (an interaction the candidate did not record at all counts as ranked just below its table).

Pure pandas/numpy (pandas imported with this module, not with ``spex.engine``): usable from a notebook
on two ``Explanation.interactions()`` tables.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd

Members = tuple[int, ...]


@dataclass(frozen=True)
class Change:
    """One interaction in a diff, with its labels and its place in each version."""

    members: Members
    labels: tuple[str, ...] | None
    candidate_value: float | None
    baseline_value: float | None
    candidate_rank: int | None
    baseline_rank: int | None

    def name(self) -> str:
        if self.labels:
            return " × ".join(self.labels)
        return "{" + ", ".join(str(m) for m in self.members) + "}"


@dataclass(frozen=True)
class SubjectDiff:
    """The diff of one subject's rankings (candidate vs baseline) over the top ``k``."""

    subject: str
    k: int
    appeared: tuple[Change, ...]
    disappeared: tuple[Change, ...]
    sign_flips: tuple[Change, ...]
    kept: tuple[Change, ...]
    jaccard: float
    rank_correlation: float | None
    max_rank_shift: int
    rank_shifts: dict[str, int] = field(default_factory=dict)

    def metrics(self) -> dict[str, float | int | None]:
        """Flat numbers for MLflow metrics, DB metrics and gate details."""
        return {
            "top_k": self.k,
            "appeared": len(self.appeared),
            "disappeared": len(self.disappeared),
            "sign_flips": len(self.sign_flips),
            "jaccard": self.jaccard,
            "rank_correlation": self.rank_correlation,
            "max_rank_shift": self.max_rank_shift,
        }

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        for key in ("appeared", "disappeared", "sign_flips", "kept"):
            out[key] = [{**asdict(c), "members": list(c.members), "labels": list(c.labels) if c.labels else None,
                         "name": c.name()} for c in getattr(self, key)]
        return out


def ranking_rows(table: pd.DataFrame | Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """A ranking as rows in rank order: ``members`` sorted (``labels`` following them), ``value`` a
    float, ``rank`` (the position when unrecorded). Shared with the forbidden-pattern gate."""
    records = table.to_dict("records") if isinstance(table, pd.DataFrame) else [dict(r) for r in table]
    out = []
    for position, r in enumerate(sorted(records, key=lambda r: int(r.get("rank") or 0) or math.inf), start=1):
        members = tuple(sorted(int(m) for m in r["members"]))
        labels = r.get("labels")
        if labels is not None and not (isinstance(labels, float) and math.isnan(labels)):
            pairs = sorted(zip((int(m) for m in r["members"]), (str(x) for x in labels)))
            labels = tuple(label for _, label in pairs)
        else:
            labels = None
        out.append({"members": members, "labels": labels, "value": float(r["value"]),
                    "rank": int(r["rank"]) if r.get("rank") is not None else position})
    return out


def _spearman(a: np.ndarray, b: np.ndarray) -> float | None:
    if len(a) < 2:
        return None
    ra = pd.Series(a).rank().to_numpy()
    rb = pd.Series(b).rank().to_numpy()
    if np.std(ra) == 0 or np.std(rb) == 0:
        return None
    return float(np.corrcoef(ra, rb)[0, 1])


def diff_rankings(candidate: pd.DataFrame | Iterable[Mapping[str, Any]],
                  baseline: pd.DataFrame | Iterable[Mapping[str, Any]], *, k: int, subject: str = "") -> SubjectDiff:
    """Compare two ranked interaction tables of the same subject over their top ``k``."""
    cand, base = ranking_rows(candidate), ranking_rows(baseline)
    by_c = {r["members"]: r for r in cand}
    by_b = {r["members"]: r for r in base}
    top_c = [r["members"] for r in cand[:k]]
    top_b = [r["members"] for r in base[:k]]
    set_c, set_b = set(top_c), set(top_b)

    def change(m: Members) -> Change:
        c, b = by_c.get(m), by_b.get(m)
        labels = (c or b or {}).get("labels")
        return Change(m, labels, c["value"] if c else None, b["value"] if b else None,
                      c["rank"] if c else None, b["rank"] if b else None)

    appeared = tuple(change(m) for m in top_c if m not in set_b)
    disappeared = tuple(change(m) for m in top_b if m not in set_c)
    both = [m for m in top_c if m in set_b]
    kept = tuple(change(m) for m in both)
    flips = tuple(c for c in kept if c.candidate_value is not None and c.baseline_value is not None
                  and np.sign(c.candidate_value) * np.sign(c.baseline_value) < 0)
    union = set_c | set_b
    jaccard = len(set_c & set_b) / len(union) if union else 1.0
    ordered = top_c + [m for m in top_b if m not in set_c]
    correlation = _spearman(np.array([by_c[m]["value"] if m in by_c else 0.0 for m in ordered]),
                            np.array([by_b[m]["value"] if m in by_b else 0.0 for m in ordered]))
    below = len(cand) + 1
    shifts = {}
    for m in top_b:
        rank_c = by_c[m]["rank"] if m in by_c else below
        shifts[change(m).name()] = abs(rank_c - by_b[m]["rank"])
    return SubjectDiff(subject=subject, k=int(k), appeared=appeared, disappeared=disappeared, sign_flips=flips,
                       kept=kept, jaccard=float(jaccard), rank_correlation=correlation,
                       max_rank_shift=int(max(shifts.values(), default=0)), rank_shifts=shifts)
