"""The machine's model slots: how many processes may call a model on this machine at once.

A slot is an exclusive kernel lock (``flock``) on a file in ``SPEX_LOCK_DIR`` (default: a per-user
folder in the temp dir); there are ``SPEX_MODEL_CONCURRENCY`` of them (default 1: one accelerator).

Why kernel locks and not Prefect's global concurrency limit: a process killed while holding a Prefect
slot (``kill -9``, the OOM killer) leaves it taken — for the 5-minute lease on a Prefect server, and
for ever with the ephemeral API (its leases live in a server process that dies with the run, and it
runs no repossessor), so the rerun of a killed audit hung. The kernel releases a dead process's lock
at once. The slots are per machine, which is what they count (local accelerators); Ray tasks do not
take one (Ray's resource accounting does that job).
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager

from spex import settings


@contextmanager
def model_slot(poll_seconds: float = 0.2) -> Iterator[None]:
    """Hold one of this machine's model slots while calling the model; waits while all are taken.
    Where ``fcntl`` is missing (not POSIX) there are no machine-wide slots: the ablation engine's
    out-of-memory back-off still protects the device."""
    try:
        import fcntl
    except ImportError:
        yield
        return
    current = settings.current()
    slots, folder = current.model_concurrency, current.model_lock_dir
    folder.mkdir(parents=True, exist_ok=True)
    held = None
    while held is None:
        for i in range(slots):
            fd = os.open(folder / f"model-slot-{i}.lock", os.O_RDWR | os.O_CREAT, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue
            held = fd
            break
        else:
            time.sleep(poll_seconds)
    try:
        yield
    finally:
        fcntl.flock(held, fcntl.LOCK_UN)
        os.close(held)
