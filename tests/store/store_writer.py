"""One of several processes recording audits into the same database at once (see
``test_store_concurrency.py``). Usage: ``store_writer.py URL WORKER GO_FILE``.

It signals ``ready-<WORKER>`` next to GO_FILE, then waits for GO_FILE so that all workers open the (still empty) database together — first-use
migration included — then records audits shared by every worker (same ids, same content) and audits
of its own.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from store_scenarios import record_audit  # noqa: E402

from spex.records.metadata import MetadataStore, ModelRef  # noqa: E402

SHARED = 3
OWN = 3
SUBJECTS = ("s0", "s1", "s2")
MODELS = (ModelRef("sentiment", "rev-1"), ModelRef("sentiment", "rev-2"))


def main() -> None:
    url, worker, go = sys.argv[1], int(sys.argv[2]), Path(sys.argv[3])
    (go.parent / f"ready-{worker}").touch()  # imports done: the parent starts everyone together
    deadline = time.monotonic() + 60
    while not go.exists():
        if time.monotonic() > deadline:
            raise SystemExit("GO file never appeared")
        time.sleep(0.01)
    recorded = []
    with MetadataStore(url) as store:
        for k in range(max(SHARED, OWN)):
            if k < SHARED:
                audit_id = f"shared-{k}"
                record_audit(store, audit_id, model=MODELS[k % 2], subjects=SUBJECTS, seed=k)
                recorded.append(audit_id)
            if k < OWN:
                audit_id = f"w{worker}-{k}"
                record_audit(store, audit_id, model=MODELS[(worker + k) % 2], subjects=SUBJECTS, seed=100 * worker + k)
                recorded.append(audit_id)
    print(json.dumps(recorded))


if __name__ == "__main__":
    main()
