"""Stage 2: run the model on a chunk of masks (the only stage that calls the model on masks).

A subject's masks are split into chunks, one task run each, so progress, retries and caching are per
chunk: a crash or a retry repeats one chunk, a rerun skips every chunk already cached. Behind the task,
the ablation store is the cache that survives everything else (it is content-addressed by the value
function's fingerprint and the mask bits): the task looks the chunk up there FIRST and touches the model
only for what is missing, so even without Prefect's cache a rerun makes no model call.

Model calls hold one of the machine's ``SPEX_MODEL_CONCURRENCY`` model slots (default 1: one per
accelerator; kernel file locks, see :func:`tasks.runtime.model_slot`, released even when the process is
killed), so concurrent audits and concurrent chunk tasks never oversubscribe a GPU.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
from prefect import task

from tasks import runtime
from tasks.caching import RETRIES, key_on


@task(name="ablate", cache_key_fn=key_on("fingerprint", "masks", "store_root"), persist_result=True, **RETRIES)
def ablate(spec: dict[str, Any], subject_id: str, fingerprint: str, masks: np.ndarray, store_root: str,
           role: str = "train", limit: bool = True, threads: int | None = None) -> dict[str, Any]:
    """Values of the subject's value function on ``masks`` (float64, in mask order) and what it cost.

    ``limit``: hold one of the machine's model slots (:func:`tasks.runtime.model_slot`) for the model
    calls (the local runner; Ray tasks leave that to Ray's GPU accounting). ``threads``: torch threads of this process (a Ray worker: 1 per CPU slot).
    Neither is in the cache key: they change how the values are computed, not what they are.
    """
    from contextlib import nullcontext

    from spex.ablation import AblationEngine
    from tasks.runners import worker_identity

    start = time.perf_counter()
    if threads:
        import torch

        if torch.get_num_threads() != int(threads):
            torch.set_num_threads(int(threads))
    store = runtime.ablation_store(store_root)
    values, found = store.lookup(fingerprint, masks)
    stats: dict[str, Any] = {"masks": int(len(masks)), "from_store": int(found.sum()), "computed": 0,
                             "compute_seconds": 0.0, "tokens": 0.0, "oom_halvings": 0}
    runtime.emit("masks", subject=subject_id, role=role, count=int(found.sum()), computed=False)
    missing = np.flatnonzero(~found)
    if len(missing):
        audit_spec = runtime.spec_from(spec)
        with runtime.model_slot() if limit else nullcontext():  # crash-safe: see runtime.model_slot
            vf = runtime.value_function(audit_spec, subject_id)
            if vf.fingerprint != fingerprint:
                raise RuntimeError(
                    f"subject {subject_id!r}: the value function's fingerprint changed since it was prepared "
                    f"({fingerprint[:12]} -> {vf.fingerprint[:12]}): the model or the lens code changed under a cached "
                    f"audit; rerun with a fresh cache (spex audit --no-cache)"
                )
            batch = audit_spec.batch
            engine = AblationEngine(store, token_budget=batch.token_budget, max_batch=batch.max_batch,
                                    chunk_size=batch.chunk_size, progress=False)
            step = max(batch.max_batch, 16)
            todo = masks[missing]
            for lo in range(0, len(todo), step):  # slices: progress events at the model's pace
                part = slice(lo, lo + step)
                values[missing[part]] = engine.values(vf, todo[part])
                runtime.emit("masks", subject=subject_id, role=role, count=len(todo[part]), computed=True,
                             seconds=engine.total.compute_seconds)
                runtime.fault_point("ablate")  # reliability tests only (inert unless SPEX_FAULT_KILL_AT is set)
            total = engine.total
            stats.update(computed=int(total.computed), compute_seconds=float(total.compute_seconds),
                         tokens=float(total.tokens), oom_halvings=int(total.oom_halvings))
            runtime.COUNTERS["masks_computed"] += int(total.computed)
    if not np.all(np.isfinite(values)):
        raise RuntimeError(f"subject {subject_id!r}: {int((~np.isfinite(values)).sum())} masks have no value after ablation")
    stats["seconds"] = time.perf_counter() - start
    stats["worker"] = worker_identity()  # which process computed it, and how many models it has loaded
    return {"values": values, "stats": stats}
