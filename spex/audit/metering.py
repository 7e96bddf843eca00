"""Seconds and peak resident memory per pipeline stage: what a capacity plan needs to know of an audit.

:class:`StageMeter` is the engine's :class:`~spex.engine.methods.base.StageTimer` that also records the
peak resident set size (RSS) of this process during each stage, in MiB. On Linux the kernel's high-water
mark (``VmHWM``) is reset at the start of each stage (``/proc/self/clear_refs``, value 5), so a stage's
figure is its own peak, not the largest of the stages before it; where that reset is refused (other
systems, a locked-down ``/proc``) the figure is the process's peak so far (``mode = "since-start"``),
which still bounds every stage from above.

The figure is the audit process's: ablation chunks that run elsewhere (Ray workers) are not in it.
"""

from __future__ import annotations

import resource
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from spex.engine.methods.base import StageTimer

_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")


def _status_kib(key: str) -> int | None:
    """A ``kB`` field of ``/proc/self/status`` (Linux), or None."""
    try:
        for line in _STATUS.read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


def peak_rss_mib() -> float:
    """The process's peak RSS since start or since the last :func:`reset_peak`, in MiB."""
    hwm = _status_kib("VmHWM")
    if hwm is not None:
        return hwm / 1024
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


def current_rss_mib() -> float | None:
    """The process's resident set size now, in MiB (None where /proc is unavailable)."""
    rss = _status_kib("VmRSS")
    return rss / 1024 if rss is not None else None


def reset_peak() -> bool:
    """Reset the kernel's peak-RSS mark to the current RSS; False where the system does not allow it."""
    try:
        _CLEAR_REFS.write_text("5")
        return True
    except OSError:
        return False


class StageMeter(StageTimer):
    """``with meter.stage("fit"): ...`` accumulates the stage's seconds (``seconds``) and keeps its peak
    RSS in MiB (``peak_rss_mib``; the largest over repeated entries); ``mode`` says whether the peaks
    are per stage (``"per-stage"``) or the process's peak so far (``"since-start"``)."""

    def __init__(self) -> None:
        super().__init__()
        self.peak_rss_mib: dict[str, float] = {}
        self.mode = "per-stage"

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        if not reset_peak():
            self.mode = "since-start"
        try:
            with super().stage(name):
                yield
        finally:
            self.peak_rss_mib[name] = round(max(self.peak_rss_mib.get(name, 0.0), peak_rss_mib()), 1)

    def report(self) -> dict[str, object]:
        """The stats entry of a subject: peaks per stage, the largest, and the mode."""
        return {"stages": dict(self.peak_rss_mib), "max": max(self.peak_rss_mib.values(), default=0.0),
                "mode": self.mode}
