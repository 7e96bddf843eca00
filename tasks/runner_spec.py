"""The ``--runner`` value, parsed: which chunk runner an audit uses (:mod:`tasks.runners` runs them).

Apart from :mod:`tasks.runners` because the CLI checks ``--runner`` before anything else starts, and
before Prefect is imported (a bad value is one line and creates no store, no Prefect home):
this module imports neither Prefect nor Ray.
"""

from __future__ import annotations

from dataclasses import dataclass

from spex.errors import SpexInputError

LOCAL = "local"
RAY = "ray"


@dataclass(frozen=True)
class RunnerSpec:
    """A parsed ``--runner`` value: ``local``, ``ray`` (a temporary local cluster, or the one named by
    ``RAY_ADDRESS``) or ``ray=ADDRESS`` (``auto``, ``HOST:PORT`` of a head node, ``ray://HOST:10001``)."""

    kind: str = LOCAL
    address: str | None = None

    def __str__(self) -> str:
        return self.kind if self.address is None else f"{self.kind}={self.address}"


def parse_runner(value: str | RunnerSpec | None) -> RunnerSpec:
    """The runner named by ``value``; a :class:`spex.errors.SpexInputError` names a bad one."""
    if isinstance(value, RunnerSpec):
        return value
    text = (value or LOCAL).strip()
    kind, sep, address = text.partition("=")
    kind = kind.strip().lower()
    address = address.strip()
    if kind == LOCAL and not sep:
        return RunnerSpec(LOCAL)
    if kind == RAY:
        if sep and not address:
            raise SpexInputError("--runner ray=ADDRESS needs an address after '='; fix: --runner ray (a local "
                                 "cluster) or --runner ray=HOST:PORT / ray=ray://HOST:10001 / ray=auto")
        return RunnerSpec(RAY, address or None)
    raise SpexInputError(f"unknown runner {text!r}; fix: --runner local (default), --runner ray (a local Ray "
                         f"cluster) or --runner ray=ADDRESS (an existing Ray cluster)")
