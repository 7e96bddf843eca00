"""The outcome of one release gate: the single type that gate evaluation (:mod:`spex.audit.gates`)
returns and the metadata store records and reads back.

It lives in ``spex.records`` (not in ``spex.audit``) because the store needs it and layers point one
way: ``spex.audit`` may import ``spex.records``, never the reverse. Plain Python, no SQLAlchemy, so that
evaluating gates in a notebook does not pull in the database layer.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class Gate:
    """A release gate's outcome: ``value <comparator> threshold`` held (``passed``) or not.

    ``details`` says why (per-subject values, forbidden hits, a note when it could not be measured).
    """

    metric: str
    threshold: float
    value: float | None
    passed: bool
    comparator: str = ">="
    details: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """Plain values (a Prefect task result, JSON): the inverse of :meth:`from_dict`."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Gate:
        """A gate from :meth:`as_dict`'s form; ``comparator`` and ``details`` may be left out."""
        return cls(
            metric=data["metric"],
            threshold=data["threshold"],
            value=data["value"],
            passed=data["passed"],
            comparator=data.get("comparator", ">="),
            details=dict(data.get("details") or {}),
        )
