"""The outcome of one release gate: the single type that gate evaluation (:mod:`spex.audit.gates`)
returns and the metadata store records and reads back.

It lives in ``spex.records`` (not in ``spex.audit``) because the store needs it and layers point one
way: ``spex.audit`` may import ``spex.records``, never the reverse. Plain Python, no SQLAlchemy, so that
evaluating gates in a notebook does not pull in the database layer.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any


STATES = ("passed", "failed", "undecided")


@dataclass(frozen=True)
class Gate:
    """A release gate's outcome: ``value <comparator> threshold`` held (``passed``) or not.

    ``state`` is ``passed``, ``failed`` or ``undecided``: a gate whose value is within the noise of its
    threshold (an interval straddles it) is undecided — not passed (``passed`` is False), not failed
    either; more masks may decide it. Left out, it follows ``passed``.
    ``details`` says why (per-subject values, forbidden hits, a note when it could not be measured).
    """

    metric: str
    threshold: float
    value: float | None
    passed: bool
    comparator: str = ">="
    details: dict[str, Any] = field(default_factory=dict)
    state: str | None = None

    def __post_init__(self) -> None:
        state = self.state or ("passed" if self.passed else "failed")
        if state not in STATES:
            raise ValueError(f"gate state must be one of {', '.join(STATES)}; got {state!r}")
        if (state == "passed") != bool(self.passed):
            raise ValueError(f"gate {self.metric!r}: state {state!r} contradicts passed={self.passed!r}")
        object.__setattr__(self, "state", state)

    def as_dict(self) -> dict[str, Any]:
        """Plain values (a Prefect task result, JSON): the inverse of :meth:`from_dict`."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Gate:
        """A gate from :meth:`as_dict`'s form; ``comparator``, ``details`` and ``state`` may be left out."""
        return cls(
            metric=data["metric"],
            threshold=data["threshold"],
            value=data["value"],
            passed=data["passed"],
            comparator=data.get("comparator", ">="),
            details=dict(data.get("details") or {}),
            state=data.get("state"),
        )


def verdict(gates: Sequence[Gate]) -> str:
    """The audit's verdict: ``failed`` if any gate failed, else ``undecided`` if any is undecided, else
    ``passed`` (no gates: passed)."""
    states = {g.state for g in gates}
    return "failed" if "failed" in states else "undecided" if "undecided" in states else "passed"
