"""Hooks for the reliability suite only (``tests/reliability``, ``docs/reliability.md``): not
production logic, and inert unless the suite sets ``SPEX_FAULT_KILL_AT``.

They sit in the package (not under ``tests/``) because the suite kills the real ``spex`` CLI at exact
points of a real audit, and only the stage itself knows when it is at that point.
"""

from __future__ import annotations

import os
import signal
import threading

from spex import settings

_COUNTS: dict[str, int] = {}
_LOCK = threading.Lock()

KILL_POINTS = ("ablate", "fit", "record", "publish")
"""Where :func:`kill_here_for_tests` is called: ``ablate`` (a slice of computed values is in the
ablation store, the chunk not returned yet), ``fit`` (a proxy fit starts), ``record`` (a subject's
ablation sets are recorded, its proxy and interactions not yet), ``publish`` (the audit is finished
in the DB, not yet in MLflow)."""


def kill_here_for_tests(stage: str) -> None:
    """Inert unless ``SPEX_FAULT_KILL_AT=<stage>:<n>`` is set (the reliability suite does): then the
    process SIGKILLs itself the n-th time it passes ``stage`` — no cleanup, no ``finally``, exactly
    what a ``kill -9`` or the OOM killer does."""
    target = settings.current().fault_kill_at
    if not target:
        return
    with _LOCK:
        count = _COUNTS[stage] = _COUNTS.get(stage, 0) + 1
    if target.strip() == f"{stage}:{count}":
        os.kill(os.getpid(), signal.SIGKILL)
