"""Plain, immutable values the store takes and returns.

The repository hands out these dataclasses instead of ORM objects: they outlive the session that
read them (no lazy-load surprises in a Prefect task or the CLI), pickle across processes, and keep
callers independent of SQLAlchemy. :class:`Gate` is defined in :mod:`spex.records.gate` (gate
evaluation returns it too) and re-exported here with the other records.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from spex.records.gate import Gate


@dataclass(frozen=True)
class ModelRef:
    """Identifies an audited model version; ``(name, revision)`` is its natural key.

    ``revision`` is whatever pins the weights: an HF revision, a digest of a local path, or
    ``"models:/<name>/<version>"`` for an MLflow registry model (then set ``registry_version`` too).
    """

    name: str
    revision: str
    source_uri: str | None = None
    registry_version: str | None = None


@dataclass(frozen=True)
class ModelVersionRecord:
    id: int
    name: str
    revision: str
    source_uri: str | None
    registry_version: str | None
    created_at: dt.datetime


@dataclass(frozen=True)
class SubjectRecord:
    id: int
    lens: str
    content_digest: str
    key: str
    n_features: int | None
    labels: tuple[str, ...] | None
    description: str | None


@dataclass(frozen=True)
class AblationSetRecord:
    id: int
    role: str
    fingerprint: str
    n_features: int
    count: int
    location: str | None
    size_bytes: int | None
    sha256: str | None
    mlflow_dataset_digest: str | None


@dataclass(frozen=True)
class ProxyRecord:
    id: int
    name: str
    method: str
    hyperparameters: dict[str, Any]
    cv_r2: float | None
    mlflow_model_uri: str | None


@dataclass(frozen=True)
class ValidationRecord:
    id: int
    heldout_r2: float | None
    n_heldout: int | None
    removal: Any
    exact_r2: float | None
    metrics: dict[str, Any]


@dataclass(frozen=True)
class AuditSubjectRecord:
    """Everything one audit recorded about one subject."""

    subject: SubjectRecord
    mlflow_run_id: str | None
    metrics: dict[str, Any]
    ablation_sets: tuple[AblationSetRecord, ...]
    proxies: tuple[ProxyRecord, ...]
    validation: ValidationRecord | None
    interaction_counts: dict[str, int]  # index name -> rows recorded


@dataclass(frozen=True)
class AuditSummary:
    """One line of ``spex audits list``."""

    id: str
    model_name: str
    model_revision: str
    registry_version: str | None
    kind: str
    status: str
    passed: bool | None
    verdict: str | None  # passed | failed | undecided (None: running, or nothing gated)
    started_at: dt.datetime
    finished_at: dt.datetime | None
    n_subjects: int
    min_heldout_r2: float | None  # the audit's faithfulness: its worst subject
    mlflow_run_id: str | None
    error: str | None


@dataclass(frozen=True)
class AuditRecord:
    """An audit with everything recorded under it (``spex audits show``)."""

    id: str
    model: ModelVersionRecord
    baseline: ModelVersionRecord | None
    kind: str
    spec: dict[str, Any]
    status: str
    passed: bool | None  # verdict == "passed"
    verdict: str | None  # passed | failed | undecided (None: running, or nothing gated)
    started_at: dt.datetime
    finished_at: dt.datetime | None
    code_version: str | None
    library_versions: dict[str, Any]
    seeds: Any
    error: str | None
    mlflow_experiment_id: str | None
    mlflow_run_id: str | None
    subjects: tuple[AuditSubjectRecord, ...]
    gates: tuple[Gate, ...]

    @property
    def min_heldout_r2(self) -> float | None:
        """The audit's faithfulness: the lowest held-out R² over its subjects."""
        values = [s.validation.heldout_r2 for s in self.subjects if s.validation and s.validation.heldout_r2 is not None]
        return min(values) if values else None
