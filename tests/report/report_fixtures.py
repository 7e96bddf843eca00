"""A recorded baseline audit and a release audit written straight through the metadata store's API
(no model, no flow): what the report is built from, with hostile text in it (markup, a script tag,
SQL, emoji, right-to-left script) that must be shown as text and never run."""

from __future__ import annotations

import json
from typing import Any

import pandas as pd

PROMPT = "The <b>food</b> was not bad 😋 but ‏الخدمة‏ was slow'; DROP TABLE audits; -- <script>alert(1)</script>"
SPEC: dict[str, Any] = {"lens": "features", "method": "proxyspex", "budget": "auto", "alpha": 4, "seed": 0,
                        "holdout": 64, "ranking": {"index": "fbii", "order": 2, "top_k": 5, "record_top": 50}}


def segment(text: str) -> list[tuple[int, int]]:
    import re

    return [m.span() for m in re.finditer(r"\S+", text)]


Z95 = 1.959963984540054  # the normal quantile of a 95 % interval


def standard_error(rank: int) -> float:
    """The fixtures' standard error of the row at ``rank`` (NaN, unknown, for rank 3: the report must say so)."""
    return float("nan") if rank == 3 else 0.01 + 0.004 * rank


def table(rows: list[tuple[tuple[int, ...], float]], labels: list[str], index: str) -> pd.DataFrame:
    """An interaction table, strongest first, each value with its standard error and 95 % interval."""
    rows = sorted(rows, key=lambda r: -abs(r[1]))
    se = [standard_error(rank) for rank in range(1, len(rows) + 1)]
    frame = pd.DataFrame({"members": [m for m, _ in rows], "labels": [tuple(labels[i] for i in m) for m, _ in rows],
                          "order": [len(m) for m, _ in rows], "value": [v for _, v in rows],
                          "rank": list(range(1, len(rows) + 1)), "se": se,
                          "ci_low": [v - Z95 * e for (_, v), e in zip(rows, se)],
                          "ci_high": [v + Z95 * e for (_, v), e in zip(rows, se)]})
    frame.attrs["index"] = index
    return frame


def record(store: Any, *, audit_id: str, revision: str, kind: str, shift: float,
           baseline: tuple[Any, str] | None = None) -> str:
    from spex.records.metadata import Gate, ModelRef

    spans = segment(PROMPT)
    labels = [PROMPT[a:b] for a, b in spans]
    n = len(labels)
    model = ModelRef("tiny-sentiment", revision, source_uri=f"models:/tiny-sentiment/{revision}", registry_version=revision)
    spec = dict(SPEC)
    if baseline is not None:
        spec["_audit"] = {"baseline_audit_id": baseline[1]}
    store.start_audit(model, spec, audit_id=audit_id, kind=kind, baseline=baseline[0] if baseline else None)
    view = {"kind": "text", "text": PROMPT, "spans": [list(s) for s in spans]}
    sid = store.record_subject(audit_id, lens="features", content_digest="d" * 32, key="hostile <i>subject</i>",
                               labels=labels, n_features=n, description=json.dumps(view),
                               metrics={"budget": 200, "method": "proxyspex", "exact": False, "masks_computed": 200,
                                        "masks_from_store": 0, "full_value": 1.5, "baseline_value": 0.1,
                                        "empty_value": -0.2, "target": "positive <script>x</script>"})
    singles = [((i,), (i - n / 2) * 0.1 + shift * (i % 2)) for i in range(n)]
    pairs = [((i, i + 1), 0.05 * ((-1) ** i) + shift * 0.01 * i) for i in range(n - 1)]
    store.record_interactions(audit_id, sid, table(singles + pairs, labels, "fbii"), index="fbii")
    store.record_interactions(audit_id, sid, table(singles, labels, "shapley"), index="shapley")
    store.record_interactions(audit_id, sid, table(pairs, labels, "pairs"), index="pairs")
    store.record_validation(audit_id, sid, heldout_r2=0.93, n_heldout=64, removal={
        "r": 2, "full_value": 1.5, "choices": [
            {"direction": "down", "features": [0, 3], "labels": [labels[0], labels[3]], "predicted_change": -0.8,
             "actual_change": -0.7, "agrees": True, "method": "milp", "optimal": True},
            {"direction": "up", "features": [1, 2], "labels": [labels[1], labels[2]], "predicted_change": 0.3,
             "actual_change": -0.1, "agrees": False, "method": "milp", "optimal": True}]})
    gates = [Gate("faithfulness_min", 0.5, 0.93, True)]
    if baseline is not None:
        gates += [Gate("top_k_jaccard_min", 0.9, 0.43, False), Gate("max_rank_shift", 3, 7, False, "<="),
                  Gate("max_significant_changes", 0, 1, False, "<=", {"note": "within noise"}, state="undecided")]
    store.record_gates(audit_id, gates)
    store.finish_audit(audit_id)
    return audit_id


def recorded_release(store: Any) -> tuple[str, str]:
    """(baseline audit id, release audit id) recorded in ``store``."""
    from spex.records.metadata import ModelRef

    base = record(store, audit_id="a" * 32, revision="1", kind="audit", shift=0.0)
    ref = ModelRef("tiny-sentiment", "1", source_uri="models:/tiny-sentiment/1", registry_version="1")
    release = record(store, audit_id="b" * 32, revision="2", kind="release", shift=0.35, baseline=(ref, base))
    return base, release
