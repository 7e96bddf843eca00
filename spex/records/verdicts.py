"""Release verdicts on a registry model version: one set of tags per spec, and an aggregate that a later
audit of another spec can never turn from failed into passed.

Several specs audit the same version (the demo runs a heads-lens and a data-lens spec on each). One
``spex.passed`` tag that every audit overwrites would say whatever the *last* audit said — a version
that failed its heads audit would read ``true`` after its data audit passed. So each spec keeps its own
tags, ``spex.spec.<key>.*`` (its latest verdict, audit id, time), and ``spex.passed`` is recomputed from
all of them: ``true`` only while every spec's latest verdict is ``passed``. A newer audit of the same spec
replaces that spec's tags; an audit that started before the one already recorded for its spec (a stale
run finishing late) does not.

``<key>`` is the spec's ``name``, kept as it is when it is already a valid, unambiguous MLflow tag key part
(letters, digits, ``_ . -``); otherwise its invalid characters become ``_`` and a digest of the name is
appended, so two names never share a key. A spec without a name is keyed by its lens
(``unnamed-<lens>``). Plain Python (no MLflow): :class:`spex.records.tracking.AuditTracker` reads and
writes the tags.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping
from dataclasses import dataclass

from spex.content import content_hash

PREFIX = "spex.spec."
TAG_PASSED = "spex.passed"
FIELDS = ("verdict", "audit_id", "time", "started", "status", "name", "faithfulness", "run_id")
VERDICTS = ("passed", "failed", "undecided")
MAX_KEY = 200  # MLflow's tag key limit is 250: prefix + key + the longest field must fit
_BAD = re.compile(r"[^A-Za-z0-9_.-]+")


def spec_key(name: str | None, lens: str | None = None) -> str:
    """The tag key part of a spec (see the module docstring)."""
    if not name:
        return f"unnamed-{_BAD.sub('_', lens or 'spec').strip('_.') or 'spec'}"
    clean = _BAD.sub("_", name).strip("_.")[:MAX_KEY]
    if clean == name and ".." not in name:
        return clean
    return f"{clean[:MAX_KEY - 9].rstrip('_.') or 'spec'}-{content_hash(name)[:8]}"


def display_name(name: str | None, lens: str | None = None) -> str:
    """A spec as people read it: its name, or ``(unnamed <lens> spec)``."""
    return name or (f"(unnamed {lens} spec)" if lens else "(unnamed spec)")


def tag(key: str, field: str) -> str:
    """The tag holding ``field`` of the spec keyed ``key``: ``spex.spec.<key>.<field>``."""
    return f"{PREFIX}{key}.{field}"


def iso(when: dt.datetime) -> str:
    """A timezone-aware UTC time as ISO 8601 (naive times are taken as UTC)."""
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.timezone.utc)
    return when.astimezone(dt.timezone.utc).isoformat()


@dataclass(frozen=True)
class SpecVerdict:
    """One spec's latest verdict on a model version, as its tags hold it."""

    key: str
    verdict: str
    audit_id: str | None
    started: dt.datetime | None


def spec_verdicts(tags: Mapping[str, str]) -> dict[str, SpecVerdict]:
    """Every spec's verdict recorded in a model version's ``tags``, by spec key."""
    out = {}
    suffix = ".verdict"
    for name, value in tags.items():
        if not (name.startswith(PREFIX) and name.endswith(suffix)):
            continue
        key = name[len(PREFIX):-len(suffix)]
        started = tags.get(tag(key, "started"))
        out[key] = SpecVerdict(key, value, tags.get(tag(key, "audit_id")), _parse(started))
    return out


def _parse(text: str | None) -> dt.datetime | None:
    try:
        return dt.datetime.fromisoformat(text) if text else None
    except ValueError:
        return None


def aggregate(tags: Mapping[str, str]) -> bool | None:
    """``spex.passed``: True only when every spec's latest verdict is ``passed``; None when no spec's is recorded."""
    verdicts = spec_verdicts(tags)
    if not verdicts:
        return None
    return all(v.verdict == "passed" for v in verdicts.values())


def supersedes(tags: Mapping[str, str], key: str, audit_id: str, started: dt.datetime | None) -> bool:
    """Whether an audit (its id and start) may replace the verdict recorded for spec ``key``: yes unless
    the recorded one is another audit that started later."""
    current = spec_verdicts(tags).get(key)
    if current is None or current.audit_id == audit_id or current.started is None or started is None:
        return True
    return _utc(started) >= _utc(current.started)


def _utc(when: dt.datetime) -> dt.datetime:
    return when.replace(tzinfo=dt.timezone.utc) if when.tzinfo is None else when
