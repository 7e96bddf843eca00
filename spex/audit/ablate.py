"""Stage 2: run the model on masks (the only stage that calls the model on masks).

A subject's masks are measured in chunks (:func:`ablate_chunk`), so progress, retries and caching can
be per chunk: a crash or a retry repeats one chunk, a rerun skips every chunk already measured. The
ablation store is the cache that survives everything else (content-addressed by the value function's
fingerprint and the mask bits): a chunk looks its masks up there FIRST and touches the model only for
what is missing, so a rerun makes no model call even without any other cache.

Model calls hold one of the machine's model slots (:func:`spex.ablation.slots.model_slot`: kernel file
locks, released even when the process is killed), so concurrent audits never oversubscribe a GPU.

:class:`InProcessAblation` measures a subject's masks chunk after chunk in this process — the runner of
:func:`spex.audit.run`; ``tasks.runners`` has the Prefect and Ray runners with the same interface.
"""

from __future__ import annotations

import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from spex.audit import progress, runtime
from spex.audit.spec import AuditSpec
from spex.audit.test_hooks import kill_here_for_tests


@dataclass(frozen=True)
class ChunkValues:
    """One chunk's values (float64, in mask order) and what they cost: ``masks``, ``from_store``,
    ``computed``, ``compute_seconds``, ``tokens``, ``oom_halvings``, ``seconds``, ``worker``."""

    values: np.ndarray
    stats: dict[str, Any]


def empty_stats() -> dict[str, Any]:
    """The counters of a role's (or a subject's) ablations, before any chunk is counted."""
    return {"computed": 0, "from_store": 0, "cached_chunks": 0, "chunks": 0, "compute_seconds": 0.0}


def add_stats(total: dict[str, Any], part: dict[str, Any]) -> dict[str, Any]:
    """``total`` with every counter of ``part`` added (in place; returned for chaining)."""
    for key, value in part.items():
        total[key] = total.get(key, 0) + value
    return total


@dataclass(frozen=True)
class Ablations:
    """A subject's measured values of its :class:`spex.audit.sampling.Samples` (``train``, ``holdout``,
    in mask order) and the counters of both together (:func:`empty_stats`'s keys)."""

    train: np.ndarray
    holdout: np.ndarray
    stats: dict[str, Any] = field(default_factory=empty_stats)


def ablate_chunk(spec: AuditSpec, subject_id: str, fingerprint: str, masks: np.ndarray, store_root: str,
                 role: str = "train", *, limit: bool = True, threads: int | None = None) -> ChunkValues:
    """Values of the subject's value function on ``masks``: from the ablation store where stored, the
    model otherwise (written to the store as they are computed).

    ``limit``: hold one of the machine's model slots for the model calls (Ray tasks leave that to Ray's
    GPU accounting). ``threads``: torch threads of this process (a Ray worker: one per CPU slot). Neither
    changes the values, only how they are computed.
    """
    from spex.ablation import AblationEngine
    from spex.ablation.slots import model_slot

    start = time.perf_counter()
    if threads:
        import torch

        if torch.get_num_threads() != int(threads):
            torch.set_num_threads(int(threads))
    store = runtime.ablation_store(store_root)
    values, found = store.lookup(fingerprint, masks)
    stats: dict[str, Any] = {"masks": int(len(masks)), "from_store": int(found.sum()), "computed": 0,
                             "compute_seconds": 0.0, "tokens": 0.0, "oom_halvings": 0}
    progress.emit("masks", subject=subject_id, role=role, count=int(found.sum()), computed=False)
    missing = np.flatnonzero(~found)
    if len(missing):
        with model_slot() if limit else nullcontext():  # crash-safe: see spex.ablation.slots
            vf = runtime.value_function(spec, subject_id)
            if vf.fingerprint != fingerprint:
                raise RuntimeError(
                    f"subject {subject_id!r}: the value function's fingerprint changed since it was prepared "
                    f"({fingerprint[:12]} -> {vf.fingerprint[:12]}): the model or the lens code changed under a cached "
                    f"audit; rerun with a fresh cache (spex audit --no-cache)"
                )
            batch = spec.batch
            engine = AblationEngine(store, token_budget=batch.token_budget, max_batch=batch.max_batch,
                                    chunk_size=batch.chunk_size, progress=False)
            step = max(batch.max_batch, 16)
            todo = masks[missing]
            for lo in range(0, len(todo), step):  # slices: progress events at the model's pace
                part = slice(lo, lo + step)
                values[missing[part]] = engine.values(vf, todo[part])
                progress.emit("masks", subject=subject_id, role=role, count=len(todo[part]), computed=True,
                              seconds=engine.total.compute_seconds)
                kill_here_for_tests("ablate")
            total = engine.total
            stats.update(computed=int(total.computed), compute_seconds=float(total.compute_seconds),
                         tokens=float(total.tokens), oom_halvings=int(total.oom_halvings))
            runtime.COUNTERS["masks_computed"] += int(total.computed)
    if not np.all(np.isfinite(values)):
        raise RuntimeError(f"subject {subject_id!r}: {int((~np.isfinite(values)).sum())} masks have no value after ablation")
    stats["seconds"] = time.perf_counter() - start
    stats["worker"] = runtime.worker_identity()  # which process computed it, and how many models it has loaded
    return ChunkValues(values, stats)


@dataclass
class InProcessPending:
    """A submission of :class:`InProcessAblation`: measured when gathered, chunk after chunk."""

    spec: dict[str, Any]
    subject_id: str
    fingerprint: str
    masks: np.ndarray
    store_root: str
    role: str
    chunk: int

    def measure(self, part: np.ndarray) -> tuple[ChunkValues, bool]:
        """One chunk's values, and whether they came from a cache that bypassed :func:`ablate_chunk`
        (never here; the Prefect runner's task cache can)."""
        audit_spec = runtime.spec_from(self.spec)
        return ablate_chunk(audit_spec, self.subject_id, self.fingerprint, part, self.store_root, self.role), False

    def gather(self) -> tuple[np.ndarray, dict[str, Any]]:
        """(values in mask order, the role's counters: :func:`empty_stats`'s keys)."""
        values = np.empty(len(self.masks))
        stats = empty_stats()
        for lo in range(0, len(self.masks), self.chunk):
            part = self.masks[lo:lo + self.chunk]
            result, cached = self.measure(part)
            values[lo:lo + len(part)] = result.values
            stats["chunks"] += 1
            if cached:
                stats["cached_chunks"] += 1
                stats["from_store"] += len(part)
                progress.emit("masks", subject=self.subject_id, role=self.role, count=len(part), computed=False)
            else:
                add_stats(stats, {k: result.stats[k] for k in ("computed", "from_store", "compute_seconds")})
        return values, stats


class InProcessAblation:
    """Measures each submission in this process when it is gathered (nothing runs concurrently)."""

    concurrent = False
    slots = 1

    def submit(self, spec: dict[str, Any], subject_id: str, fingerprint: str, masks: np.ndarray, store_root: str,
               role: str, chunk: int, refresh: bool = False) -> InProcessPending:
        return InProcessPending(spec, subject_id, fingerprint, masks, store_root, role, chunk)

    def running(self) -> int:
        return 0

    def describe(self) -> dict[str, Any]:
        return {"runner": "local"}
