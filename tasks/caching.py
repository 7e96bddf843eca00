"""Cache keys, retry policy and result storage shared by the stage tasks.

Why custom cache keys: Prefect's default cache policy includes the flow run id, so nothing would be
reused across runs; its ``INPUTS`` policy hashes whole arguments (slow for mask matrices, and it would
miss that two specs differing only in their name do the same work). Each stage names the inputs that
determine its output — a parameter, or a field of one (``"plan.fingerprint"``) — and the key is a
content hash of exactly those (:func:`spex.content.content_hash`: mask matrices by their bits).
``CACHE_VERSION`` is bumped when a stage's output changes for the same inputs (2: typed stage outputs; 3: fits carry their uncertainty).

Why a retry condition: a transient failure (a database restart, an MLflow server blip, a flaky file
system) is retried with exponential back-off; bad input (``SpexInputError``, a spec error, a
``ValueError``) fails at once — retrying it only delays the one-line error the user needs.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from prefect.tasks import exponential_backoff

from spex import settings
from spex.content import content_hash

CACHE_VERSION = 3


def _lookup(parameters: dict[str, Any], name: str) -> Any:
    """A parameter, or a field of one for a dotted name (``plan.fingerprint``)."""
    head, *fields = name.split(".")
    value = parameters.get(head)
    for part in fields:
        value = getattr(value, part)
    return value


def key_on(*names: str) -> Callable[[Any, dict[str, Any]], str]:
    """A ``cache_key_fn`` hashing only the named task parameters or parameter fields (plus the
    task's name and ``CACHE_VERSION``)."""

    def cache_key(context: Any, parameters: dict[str, Any]) -> str:
        task_name = getattr(getattr(context, "task", None), "name", "task")
        return f"spex-{task_name}-v{CACHE_VERSION}-" + content_hash([_lookup(parameters, n) for n in names])

    cache_key.__name__ = f"key_on_{'_'.join(n.replace('.', '_') for n in names)}"
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


@contextmanager
def results_in_data_dir() -> Iterator[None]:
    """Keep Prefect's task results (the task cache) under the spex data dir while flows run in this
    process — unless the operator configured Prefect's result storage (then theirs is used).

    Why outside the flow: a task's result store is the flow run's, fixed when the run starts, so the
    setting must be in force before the flow is called (the CLI, the demo and the tests wrap their
    calls in this). Deployments served by workers use Prefect's configured storage, as usual.
    """
    from prefect.settings import PREFECT_LOCAL_STORAGE_PATH, temporary_settings

    configured = any(os.environ.get(k) for k in ("PREFECT_LOCAL_STORAGE_PATH", "PREFECT_RESULTS_LOCAL_STORAGE_PATH",
                                                  "PREFECT_RESULTS_DEFAULT_STORAGE_BLOCK"))
    if configured:
        yield
        return
    with temporary_settings(updates={PREFECT_LOCAL_STORAGE_PATH: settings.data_dir() / "prefect" / "results"}):
        yield
