"""Cache keys and retry policy shared by the stage tasks.

Why custom cache keys: Prefect's default cache policy includes the flow run id, so nothing would be
reused across runs; its ``INPUTS`` policy hashes whole arguments (slow for mask matrices, and it would
miss that two specs differing only in their name do the same work). Each stage names the inputs that
determine its output and the key is a content hash of exactly those (mask matrices by
:func:`spex.engine.sampling.digest`). ``CACHE_VERSION`` is bumped when a stage's output changes for the same
inputs.

Why a retry condition: a transient failure (a database restart, an MLflow server blip, a flaky file
system) is retried with exponential back-off; bad input (``SpexInputError``, a spec error, a
``ValueError``) fails at once — retrying it only delays the one-line error the user needs.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from prefect.tasks import exponential_backoff

from spex.content import content_hash

CACHE_VERSION = 1




def key_on(*names: str) -> Callable[[Any, dict[str, Any]], str]:
    """A ``cache_key_fn`` hashing only the named task parameters (plus the task's name and version)."""

    def cache_key(context: Any, parameters: dict[str, Any]) -> str:
        task_name = getattr(getattr(context, "task", None), "name", "task")
        return f"spex-{task_name}-v{CACHE_VERSION}-" + content_hash([parameters.get(n) for n in names])

    cache_key.__name__ = f"key_on_{'_'.join(names)}"
    return cache_key


def is_transient(task: Any, task_run: Any, state: Any) -> bool:
    """``retry_condition_fn``: retry unless the failure is bad input."""
    from spex.errors import SpexInputError

    try:
        exc = state.result(raise_on_failure=False)
    except Exception:  # noqa: BLE001  (the failure's details are gone: assume transient)
        return True
    if hasattr(exc, "close") and hasattr(exc, "send"):  # a coroutine (called from async code): cannot tell
        exc.close()
        return True
    if isinstance(exc, (SpexInputError, ValueError, TypeError, KeyError, AssertionError, NotImplementedError)):
        return False
    return True


RETRIES: dict[str, Any] = {
    "retries": 2,
    "retry_delay_seconds": exponential_backoff(backoff_factor=2),
    "retry_jitter_factor": 0.5,
    "retry_condition_fn": is_transient,
}
"""Retry settings of every stage task: 2 retries after ~2 s and ~4 s (jittered), transient errors only."""
