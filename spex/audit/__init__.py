"""The audit around the engine: the spec, the pipeline stages as plain functions, the release gates.

``spex.audit.run(spec)`` runs a whole audit in this process, without Prefect (:mod:`spex.audit.pipeline`).
"""

from typing import Any

_PIPELINE = ("run", "AuditOutcome", "SubjectOutcome")


def __getattr__(name: str) -> Any:
    """``spex.audit.run`` & co, imported on first use: ``import spex.audit.spec`` stays light."""
    if name in _PIPELINE:
        from spex.audit import pipeline

        return getattr(pipeline, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
