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

The noise-aware part (``tested``, issue 12): every interaction of the union of both top k is a test of
"did this value change?": Δ = candidate − baseline, se(Δ) = sqrt(se_c² + se_b²), z = Δ / se(Δ), a
two-sided normal p-value, and Benjamini–Hochberg over the interactions tested (false-discovery rate
``fdr``). A change is *significant* when BH rejects it and |Δ| ≥ ``min_effect`` (a practical floor).
Each tested interaction gets one class:

* ``sign_flip``: significant, and both values are distinguishable from 0 with opposite signs;
* ``appeared`` / ``disappeared``: significant, and only the candidate's / only the baseline's value is
  distinguishable from 0;
* ``changed``: significant otherwise;
* ``within_noise``: not significant — and, with ``min_effect`` > 0, ``equivalent`` when the whole
  interval of Δ lies inside ±min_effect (more masks cannot make it a change), ``unresolved`` when not
  (more masks could): the adaptive budget adds masks for those.

An interaction one version did not record (below its ``record_top`` ranks) counts as 0 with the median
standard error of that version's recorded interactions of the same order: its value is below that
table's floor, and its error is what any coefficient of that order gets from that design.

The rank metrics stay as information. Besides the plain ones above, ``resolved_jaccard`` and
``resolved_max_rank_shift`` count only what the intervals can tell apart: an interaction's *rank
interval* runs from 1 + (how many are surely larger) to 1 + (how many may be larger), comparing the
intervals of |value|; a shift counts only by the gap between the two versions' rank intervals, and the
Jaccard is taken over interactions whose membership in the top k is decided in both versions.

Pure pandas/numpy/scipy (pandas imported with this module, not with ``spex.engine``): usable from a
notebook on two ``Explanation.interactions()`` tables.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from scipy.stats import norm

Members = tuple[int, ...]
SIGNIFICANT_KINDS = ("changed", "appeared", "disappeared", "sign_flip")
DEFAULT_FDR = 0.05


@dataclass(frozen=True)
class Change:
    """One interaction in a diff, with its labels and its place in each version."""

    members: Members
    labels: tuple[str, ...] | None
    candidate_value: float | None
    baseline_value: float | None
    candidate_rank: int | None
    baseline_rank: int | None
    candidate_se: float | None = None
    baseline_se: float | None = None
    delta: float | None = None
    delta_se: float | None = None
    z: float | None = None
    p_value: float | None = None
    q_value: float | None = None  # the BH-adjusted p-value
    significant: bool = False
    kind: str = "within_noise"  # changed | appeared | disappeared | sign_flip | within_noise
    resolution: str | None = None  # for within_noise with min_effect > 0: equivalent | unresolved

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
    tested: tuple[Change, ...] = ()
    fdr: float = 0.05
    min_effect: float = 0.0
    resolved_jaccard: float | None = None
    resolved_max_rank_shift: int | None = None

    @property
    def significant(self) -> tuple[Change, ...]:
        """The tested interactions whose change is significant (after BH) and at least ``min_effect``."""
        return tuple(c for c in self.tested if c.significant)

    @property
    def unresolved(self) -> tuple[Change, ...]:
        """Within noise, yet not shown to be smaller than ``min_effect``: more masks could decide them."""
        return tuple(c for c in self.tested if c.resolution == "unresolved")

    def metrics(self) -> dict[str, float | int | None]:
        """Flat numbers for MLflow metrics, DB metrics and gate details."""
        kinds = [c.kind for c in self.tested]
        return {
            "top_k": self.k,
            "appeared": len(self.appeared),
            "disappeared": len(self.disappeared),
            "sign_flips": len(self.sign_flips),
            "jaccard": self.jaccard,
            "rank_correlation": self.rank_correlation,
            "max_rank_shift": self.max_rank_shift,
            "significant_changes": len(self.significant),
            "unresolved_changes": len(self.unresolved),
            **{f"significant_{kind}": kinds.count(kind) for kind in SIGNIFICANT_KINDS},
            "resolved_jaccard": self.resolved_jaccard,
            "resolved_max_rank_shift": self.resolved_max_rank_shift,
        }

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        for key in ("appeared", "disappeared", "sign_flips", "kept", "tested"):
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
        se = r.get("se")
        se = float(se) if se is not None and np.isfinite(float(se)) else None
        out.append({"members": members, "labels": labels, "value": float(r["value"]),
                    "rank": int(r["rank"]) if r.get("rank") is not None else position, "se": se})
    return out


def _spearman(a: np.ndarray, b: np.ndarray) -> float | None:
    if len(a) < 2:
        return None
    ra = pd.Series(a).rank().to_numpy()
    rb = pd.Series(b).rank().to_numpy()
    if np.std(ra) == 0 or np.std(rb) == 0:
        return None
    return float(np.corrcoef(ra, rb)[0, 1])


def benjamini_hochberg(p_values: Sequence[float] | np.ndarray, fdr: float) -> tuple[np.ndarray, np.ndarray]:
    """(rejected, adjusted p-values) of the Benjamini–Hochberg step-up procedure at level ``fdr``.

    Sort p(1) ≤ … ≤ p(m); reject the k smallest for the largest k with p(k) ≤ k·fdr/m. The adjusted
    value of p(i) is min_{j ≥ i} m·p(j)/j (capped at 1), so ``adjusted <= fdr`` is the same decision.
    NaN p-values (an untestable interaction) are never rejected and do not count in m."""
    if not 0.0 < fdr < 1.0:
        raise ValueError(f"fdr must be in (0, 1); got {fdr!r}")
    p = np.asarray(p_values, dtype=np.float64)
    adjusted = np.full(len(p), np.nan)
    finite = np.flatnonzero(np.isfinite(p))
    m = len(finite)
    if m:
        order = finite[np.argsort(p[finite], kind="stable")]
        scaled = p[order] * m / np.arange(1, m + 1)
        adjusted[order] = np.minimum(1.0, np.minimum.accumulate(scaled[::-1])[::-1])
    rejected = np.zeros(len(p), dtype=bool)
    rejected[finite] = adjusted[finite] <= fdr
    return rejected, adjusted


def rank_intervals(rows: Sequence[Mapping[str, Any]], critical: float) -> dict[Members, tuple[int, int]]:
    """Per interaction, (best, worst) rank its interval allows among ``rows``: 1 + how many are surely
    larger in |value| (their interval of |value| lies above), 1 + how many may be larger (overlap)."""
    values = np.array([r["value"] for r in rows], dtype=np.float64)
    se = np.array([r.get("se") if r.get("se") is not None else 0.0 for r in rows], dtype=np.float64)
    low, high = values - critical * se, values + critical * se
    abs_low = np.where((low <= 0) & (high >= 0), 0.0, np.minimum(np.abs(low), np.abs(high)))
    abs_high = np.maximum(np.abs(low), np.abs(high))
    surely_above = (abs_low[None, :] > abs_high[:, None]).sum(axis=1)
    maybe_above = (abs_high[None, :] >= abs_low[:, None]).sum(axis=1) - 1  # minus itself
    return {r["members"]: (int(1 + a), int(1 + b)) for r, a, b in zip(rows, surely_above, maybe_above, strict=True)}


def _typical_se(rows: Sequence[Mapping[str, Any]]) -> dict[int, float]:
    """The median recorded se per order (and under -1 over all orders): the error of an unrecorded one."""
    by_order: dict[int, list[float]] = {}
    for r in rows:
        if r.get("se") is not None:
            by_order.setdefault(len(r["members"]), []).append(float(r["se"]))
            by_order.setdefault(-1, []).append(float(r["se"]))
    return {o: float(np.median(v)) for o, v in by_order.items()}


def _classify(c: float, se_c: float, b: float, se_b: float, critical: float) -> str:
    """The class of a significant change from whether each value is distinguishable from 0."""
    c_nonzero, b_nonzero = abs(c) > critical * se_c, abs(b) > critical * se_b
    if c_nonzero and b_nonzero and np.sign(c) != np.sign(b):
        return "sign_flip"
    if c_nonzero and not b_nonzero:
        return "appeared"
    if b_nonzero and not c_nonzero:
        return "disappeared"
    return "changed"


def diff_rankings(candidate: pd.DataFrame | Iterable[Mapping[str, Any]],
                  baseline: pd.DataFrame | Iterable[Mapping[str, Any]], *, k: int, subject: str = "",
                  fdr: float = DEFAULT_FDR, min_effect: float = 0.0, level: float = 0.95) -> SubjectDiff:
    """Compare two ranked interaction tables of the same subject over their top ``k``: the rank
    metrics, and the noise-aware tests of the union of both top k (see the module docstring) at
    false-discovery rate ``fdr`` with a practical floor ``min_effect``; ``level`` is the confidence of
    the intervals used to tell a value from 0 and ranks apart."""
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1); got {level!r}")
    if min_effect < 0:
        raise ValueError(f"min_effect must be >= 0; got {min_effect!r}")
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
    critical = float(norm.ppf(0.5 + level / 2.0))
    tested = _tests(ordered, by_c, by_b, _typical_se(cand), _typical_se(base), fdr, min_effect, critical)
    resolved_jaccard, resolved_shift = _resolved_ranks(cand, base, ordered, k, critical)
    return SubjectDiff(subject=subject, k=int(k), appeared=appeared, disappeared=disappeared, sign_flips=flips,
                       kept=kept, jaccard=float(jaccard), rank_correlation=correlation,
                       max_rank_shift=int(max(shifts.values(), default=0)), rank_shifts=shifts, tested=tested,
                       fdr=float(fdr), min_effect=float(min_effect), resolved_jaccard=resolved_jaccard,
                       resolved_max_rank_shift=resolved_shift)


def _value_and_se(m: Members, rows: Mapping[Members, Mapping[str, Any]], typical: Mapping[int, float]) -> tuple[float, float]:
    """A version's value and se of ``m``: recorded, or 0 ± the typical se when below its table."""
    r = rows.get(m)
    if r is not None and r.get("se") is not None:
        return float(r["value"]), float(r["se"])
    fallback = typical.get(len(m), typical.get(-1, np.nan))
    return (float(r["value"]), fallback) if r is not None else (0.0, fallback)


def _tests(ordered: Sequence[Members], by_c: Mapping[Members, Mapping[str, Any]],
           by_b: Mapping[Members, Mapping[str, Any]], typical_c: Mapping[int, float],
           typical_b: Mapping[int, float], fdr: float, min_effect: float, critical: float) -> tuple[Change, ...]:
    """One test per interaction of the union of both top k, BH across them (module docstring)."""
    if not ordered:
        return ()
    pairs = [(_value_and_se(m, by_c, typical_c), _value_and_se(m, by_b, typical_b)) for m in ordered]
    c = np.array([p[0][0] for p in pairs])
    se_c = np.array([p[0][1] for p in pairs])
    b = np.array([p[1][0] for p in pairs])
    se_b = np.array([p[1][1] for p in pairs])
    delta = c - b
    delta_se = np.sqrt(se_c**2 + se_b**2)
    with np.errstate(divide="ignore", invalid="ignore"):
        z = np.where(delta_se > 0, delta / delta_se, np.where(delta == 0, 0.0, np.sign(delta) * np.inf))
    p = np.where(np.isnan(delta_se), np.nan, 2.0 * norm.sf(np.abs(z)))
    rejected, adjusted = benjamini_hochberg(p, fdr)
    out = []
    for i, m in enumerate(ordered):
        rc, rb = by_c.get(m), by_b.get(m)
        labels = (rc or rb or {}).get("labels")
        significant = bool(rejected[i] and abs(delta[i]) >= min_effect)
        if significant:
            kind, resolution = _classify(c[i], se_c[i], b[i], se_b[i], critical), None
        else:
            kind = "within_noise"
            resolution = None
            if min_effect > 0:
                inside = abs(delta[i]) + critical * delta_se[i] < min_effect
                resolution = "equivalent" if inside else "unresolved"
        out.append(Change(m, labels, float(c[i]) if rc else None, float(b[i]) if rb else None,
                          rc["rank"] if rc else None, rb["rank"] if rb else None, _num(se_c[i]), _num(se_b[i]),
                          float(delta[i]), _num(delta_se[i]), _num(z[i]), _num(p[i]), _num(adjusted[i]), significant,
                          kind, resolution))
    return tuple(out)


def _resolved_ranks(cand: Sequence[Mapping[str, Any]], base: Sequence[Mapping[str, Any]],
                    ordered: Sequence[Members], k: int, critical: float) -> tuple[float | None, int | None]:
    """Jaccard over interactions whose top-k membership both versions decide, and the largest gap
    between the two versions' rank intervals (module docstring); None without standard errors."""
    if not any(r.get("se") is not None for r in cand) or not any(r.get("se") is not None for r in base):
        return None, None
    ranks_c, ranks_b = rank_intervals(cand, critical), rank_intervals(base, critical)
    below_c, below_b = (len(cand) + 1, len(cand) + 1), (len(base) + 1, len(base) + 1)
    inside, either = 0, 0
    worst = 0
    for m in ordered:
        (best_c, worst_c), (best_b, worst_b) = ranks_c.get(m, below_c), ranks_b.get(m, below_b)
        decided_c = worst_c <= k or best_c > k
        decided_b = worst_b <= k or best_b > k
        if decided_c and decided_b:
            in_c, in_b = worst_c <= k, worst_b <= k
            inside += in_c and in_b
            either += in_c or in_b
        worst = max(worst, best_c - worst_b, best_b - worst_c)
    return (inside / either if either else 1.0), int(worst)


def _num(x: float) -> float | None:
    x = float(x)
    return x if np.isfinite(x) else (None if np.isnan(x) else x)
