"""What the fault tests look at after a run: the ablation store, the metadata DB, the progress events."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from spex.ablation import AblationStore


def store_snapshot(root: Path) -> dict[str, int]:
    """Distinct masks stored per fingerprint (a fresh reader: what a new process would see)."""
    store = AblationStore(root)
    return {fp: store.count(fp) for fp in store.fingerprints()}


def store_health(root: Path) -> None:
    """Every chunk whole and checksummed, no mask stored with two different values."""
    store = AblationStore(root)
    for fp in store.fingerprints():
        stats = store.stats(fp)
        assert stats.corrupt_chunks == (), f"{fp[:12]}: damaged chunks {stats.corrupt_chunks}"
        assert stats.conflicts == 0, f"{fp[:12]}: {stats.conflicts} masks with two different values"
    leftovers = [p for p in root.rglob("*") if p.is_file() and not p.name.startswith(".tmp-")
                 and not p.name.endswith((".chunk", "meta.json"))]
    assert not leftovers, leftovers


def store_contents(root: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    store = AblationStore(root)
    return {fp: store.load(fp) for fp in store.fingerprints()}


def events(stderr: str) -> list[dict[str, Any]]:
    """The progress events the driver printed (``EVENT {json}`` lines), in order."""
    return [json.loads(line[len("EVENT "):]) for line in stderr.splitlines() if line.startswith("EVENT ")]


def masks_computed(stderr: str) -> int:
    """Masks the run computed with the model, from its progress events (a killed run included: each
    slice is reported once it is in the ablation store, before the next one starts)."""
    return sum(int(e["count"]) for e in events(stderr) if e.get("event") == "masks" and e.get("computed"))


def rankings(result: dict[str, Any]) -> dict[str, list[tuple[tuple[int, ...], float, int]]]:
    """Per subject: the recorded ranking as (members, value, rank) rows (the CLI's ``--json --top 50``)."""
    return {key: [(tuple(r["members"]), float(r["value"]), int(r["rank"])) for r in s["top"]]
            for key, s in result["subjects"].items()}


def assert_close_rankings(got: dict[str, list[tuple[tuple[int, ...], float, int]]],
                          want: dict[str, list[tuple[tuple[int, ...], float, int]]]) -> None:
    """The same ranked interactions (members and ranks exactly) with values equal to float32 rounding
    of their magnitude (:mod:`tests.flows.tolerances`): what two runs agree on when some masks were
    computed in other batches (another padding)."""
    from tests.tolerances import assert_close

    assert sorted(got) == sorted(want)
    for key in want:
        assert [(m, r) for m, _, r in got[key]] == [(m, r) for m, _, r in want[key]], key
        assert_close([v for _, v, _ in got[key]], [v for _, v, _ in want[key]])
