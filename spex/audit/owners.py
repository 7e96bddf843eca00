"""Who runs an audit: this machine and this process, stored with the audit when it opens, so that a
later audit on the same machine can tell it crashed (:mod:`spex.audit.reaping`)."""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Any


def _start_ticks(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (Linux ``/proc``), or None where unknown.
    With the pid it names one process for good: a pid reused later starts at another time."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[19])  # field 22; the command name may hold spaces


def process_owner() -> dict[str, Any]:
    """Who runs this audit (stored with it): this machine and this process."""
    return {"host": socket.gethostname(), "pid": os.getpid(), "start": _start_ticks(os.getpid())}


def owner_gone(owner: dict[str, Any]) -> bool:
    """True when ``owner`` was a process on THIS machine that no longer runs (killed, crashed). An
    owner on another machine is never judged gone."""
    if owner.get("host") != socket.gethostname() or not isinstance(owner.get("pid"), int):
        return False
    pid = owner["pid"]
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, another user's
        pass
    start = _start_ticks(pid)
    return owner.get("start") is not None and start is not None and start != owner["start"]
