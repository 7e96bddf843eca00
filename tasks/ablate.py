"""Stage 2 as a task: a chunk of masks through the model (:func:`spex.audit.ablate.ablate_chunk`).

One task run per chunk (``tasks.runners`` cuts a subject's masks into chunks), so progress, retries and
caching are per chunk. The ablation store behind it is the cache that survives everything else: the
chunk looks its masks up there first, so even without Prefect's cache a rerun makes no model call.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from prefect import task

from spex.audit import runtime
from spex.audit.ablate import ChunkValues, ablate_chunk
from tasks.caching import RETRIES, key_on


def ablate_run_name() -> str:
    """``ablate <subject> · <role> · masks <from>–<to>``: what a chunk's task run is, in the Prefect UI."""
    from prefect.runtime import task_run

    p = task_run.parameters
    first = int(p.get("offset") or 0)
    count = len(p["masks"]) if p.get("masks") is not None else 0
    return f"ablate {p.get('subject_id')} · {p.get('role', 'train')} · masks {first}–{first + max(count, 1) - 1}"


@task(name="ablate", task_run_name=ablate_run_name, cache_key_fn=key_on("fingerprint", "masks", "store_root"),
      persist_result=True, **RETRIES)
def ablate(spec: dict[str, Any], subject_id: str, fingerprint: str, masks: np.ndarray, store_root: str,
           role: str = "train", limit: bool = True, threads: int | None = None, offset: int = 0) -> ChunkValues:
    """The chunk's values and what they cost. ``spec`` is the spec's JSON form (the task may run in a
    Ray worker); ``limit``, ``threads`` and ``offset`` (the chunk's first mask, for its run name) are
    not in the cache key: they change how the values are computed or shown, not what they are."""
    return ablate_chunk(runtime.spec_from(spec), subject_id, fingerprint, masks, store_root, role, limit=limit,
                        threads=threads)
