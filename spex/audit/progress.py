"""Progress events of a running audit: what the CLI's progress display (and the reliability suite's
driver) listens to.

Stages report here, not through Prefect's logger, so the same events come from an audit under Prefect
(``flows.audit``) and one run without it (:func:`spex.audit.run`). Events are dicts with an
``event`` key; listeners live in this process only (a Ray worker's events stay in the worker).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

Listener = Callable[[dict[str, Any]], None]
_LISTENERS: list[Listener] = []
_LOCK = threading.Lock()


def subscribe(listener: Listener) -> None:
    """Receive every progress event emitted in this process from now on."""
    with _LOCK:
        _LISTENERS.append(listener)


def unsubscribe(listener: Listener) -> None:
    with _LOCK:
        if listener in _LISTENERS:
            _LISTENERS.remove(listener)


def emit(event: str, **fields: Any) -> None:
    """Tell the listeners what happened; never fails the stage (a display problem must not fail an audit)."""
    payload = {"event": event, **fields}
    with _LOCK:
        listeners = list(_LISTENERS)
    for listener in listeners:
        try:
            listener(payload)
        except Exception:  # noqa: BLE001
            pass
