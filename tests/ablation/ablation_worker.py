"""A separate process that computes values through the engine (kill -9 and concurrency tests).

usage: ablation_worker.py ROOT N START STOP SEED DELAY CHUNK MAX_BATCH COMPACT_ABOVE
Computes masks [START, STOP) of ``unique_masks(N, STOP_MAX, SEED)`` and exits 0 only if every value
it got back equals the reference function; prints a JSON summary.
"""

from __future__ import annotations

import json
import sys

import numpy as np
from ablation_vfs import CountingVF, reference, unique_masks

from spex.ablation import AblationEngine, AblationStore


def main() -> int:
    root, n, start, stop, seed, delay, chunk, max_batch, compact_above = sys.argv[1:10]
    n, start, stop, seed = int(n), int(start), int(stop), int(seed)
    masks = unique_masks(n, 4096, seed)[start:stop]
    vf = CountingVF(n, delay=float(delay))
    engine = AblationEngine(AblationStore(root), max_batch=int(max_batch), chunk_size=int(chunk),
                            flush_seconds=3600, progress=False, compact_above=int(compact_above))
    # several requests, like a method asking for its masks in rounds
    got = np.concatenate([engine.values(vf, part) for part in np.array_split(masks, 4)])
    ok = bool(np.array_equal(got, reference(masks)))
    print(json.dumps({"ok": ok, "computed": vf.masks_computed, "from_store": engine.total.from_store}))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
