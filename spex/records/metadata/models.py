"""The relational schema of audit metadata (SQLAlchemy 2 declarative models).

Why these tables and keys:

* Every table has a **natural key** (a unique constraint) besides its surrogate id, so recording the
  same audit twice — a retried flow, two workers racing — updates rows instead of adding copies; the
  repository writes with ``INSERT .. ON CONFLICT`` on exactly these keys.
* ``subjects`` are global (keyed by lens + content digest), not per audit: the same prompt audited on
  model v1 and v2 is one subject, which is what makes "the top interactions of a subject across model
  versions" one indexed lookup (``ix_interactions_subject_top``) instead of a fuzzy match.
* ``audit_subjects`` links an audit to the subjects it covered and holds what is per (audit, subject):
  the MLflow nested run id, calls, seconds.
* Types that differ per backend are chosen once here (JSON -> JSONB on Postgres, BigInteger ids ->
  INTEGER on SQLite so they autoincrement, timezone-aware UTC datetimes on both), so the repository
  has one code path.

The Alembic migrations in ``spex/records/metadata/migrations`` create exactly this schema; a test compares the
two so they cannot drift.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

from spex.records.gate import Gate

# Deterministic constraint names: migrations can drop/alter them by name on both backends.
NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

AUDIT_STATUSES = ("running", "succeeded", "failed")
# An audit's verdict and a gate's state (spex.records.gate.STATES; spelled out here, the schema's own copy).
VERDICTS = ("passed", "failed", "undecided")

JSONType = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
# SQLite only autoincrements a column declared exactly INTEGER PRIMARY KEY.
BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


class UTCDateTime(TypeDecorator[dt.datetime]):
    """A timezone-aware UTC datetime on both backends.

    SQLite has no timezone type and hands back naive datetimes; without this, values read from
    SQLite and Postgres would compare differently. Naive inputs are taken as UTC.
    """

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect: sa.Dialect) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            value = value.replace(tzinfo=dt.timezone.utc)
        return value.astimezone(dt.timezone.utc)

    def process_result_value(self, value: dt.datetime | None, dialect: sa.Dialect) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=dt.timezone.utc)
        return value.astimezone(dt.timezone.utc)


def utcnow() -> dt.datetime:
    """Now, timezone-aware UTC (the only clock the store writes)."""
    return dt.datetime.now(dt.timezone.utc)


class Base(DeclarativeBase):
    """Declarative base carrying the naming convention."""

    metadata = sa.MetaData(naming_convention=NAMING_CONVENTION)


class ModelVersion(Base):
    """One version of an audited model: what was audited, identified well enough to find it again."""

    __tablename__ = "model_versions"
    __table_args__ = (sa.UniqueConstraint("name", "revision"),)

    id: Mapped[int] = mapped_column(sa.Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(sa.String(255), nullable=False)
    # HF revision, weights digest or "models:/name/3": whatever pins the weights.
    revision: Mapped[str] = mapped_column(sa.String(255), nullable=False)
    source_uri: Mapped[str | None] = mapped_column(sa.Text)
    registry_version: Mapped[str | None] = mapped_column(sa.String(64))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)


class Audit(Base):
    """One audit run of one model version (optionally against a baseline version)."""

    __tablename__ = "audits"
    __table_args__ = (
        sa.CheckConstraint(f"status IN {AUDIT_STATUSES!r}", name="status"),
        sa.CheckConstraint(f"verdict IN {VERDICTS!r}", name="verdict"),
        # "audits of model M with status S, newest first"
        sa.Index("ix_audits_model_status", "model_version_id", "status", "started_at"),
        sa.Index("ix_audits_status_started", "status", "started_at"),
    )

    id: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    model_version_id: Mapped[int] = mapped_column(
        sa.ForeignKey("model_versions.id", ondelete="RESTRICT"), nullable=False
    )
    baseline_model_version_id: Mapped[int | None] = mapped_column(
        sa.ForeignKey("model_versions.id", ondelete="RESTRICT")
    )
    kind: Mapped[str] = mapped_column(sa.String(32), nullable=False, default="audit")
    spec: Mapped[dict[str, Any]] = mapped_column(JSONType, nullable=False)
    status: Mapped[str] = mapped_column(sa.String(16), nullable=False, default="running")
    passed: Mapped[bool | None] = mapped_column(sa.Boolean)  # verdict == "passed"
    # passed | failed | undecided (a gate within noise); NULL while running or without gates.
    verdict: Mapped[str | None] = mapped_column(sa.String(16))
    started_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)
    finished_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    code_version: Mapped[str | None] = mapped_column(sa.String(255))
    library_versions: Mapped[dict[str, Any]] = mapped_column(JSONType, nullable=False, default=dict)
    seeds: Mapped[Any] = mapped_column(JSONType, nullable=False, default=dict)
    error: Mapped[str | None] = mapped_column(sa.Text)
    mlflow_experiment_id: Mapped[str | None] = mapped_column(sa.String(64))
    mlflow_run_id: Mapped[str | None] = mapped_column(sa.String(64))


class Subject(Base):
    """What is explained: a prompt (features lens), a prompt set (heads), a target (data)."""

    __tablename__ = "subjects"
    __table_args__ = (sa.UniqueConstraint("lens", "content_digest"), sa.Index("ix_subjects_key", "key"))

    id: Mapped[int] = mapped_column(sa.Integer, primary_key=True, autoincrement=True)
    lens: Mapped[str] = mapped_column(sa.String(32), nullable=False)
    content_digest: Mapped[str] = mapped_column(sa.String(128), nullable=False)
    key: Mapped[str] = mapped_column(sa.String(255), nullable=False)  # a human name, e.g. "sst2-12"
    n_features: Mapped[int | None] = mapped_column(sa.Integer)
    labels: Mapped[list[str] | None] = mapped_column(JSONType)
    description: Mapped[str | None] = mapped_column(sa.Text)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)


class AuditSubject(Base):
    """A subject as covered by one audit: its nested MLflow run and per-subject cost."""

    __tablename__ = "audit_subjects"
    __table_args__ = (sa.UniqueConstraint("audit_id", "subject_id"), sa.Index("ix_audit_subjects_subject", "subject_id"))

    id: Mapped[int] = mapped_column(sa.Integer, primary_key=True, autoincrement=True)
    audit_id: Mapped[str] = mapped_column(sa.ForeignKey("audits.id", ondelete="CASCADE"), nullable=False)
    subject_id: Mapped[int] = mapped_column(sa.ForeignKey("subjects.id", ondelete="RESTRICT"), nullable=False)
    mlflow_run_id: Mapped[str | None] = mapped_column(sa.String(64))
    metrics: Mapped[dict[str, Any]] = mapped_column(JSONType, nullable=False, default=dict)
    recorded_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)


class AblationSet(Base):
    """A set of (mask, value) pairs measured for a subject: where it is stored and how to check it."""

    __tablename__ = "ablation_sets"
    __table_args__ = (
        sa.UniqueConstraint("audit_id", "subject_id", "role"),
        sa.Index("ix_ablation_sets_fingerprint", "fingerprint"),
        sa.Index("ix_ablation_sets_subject", "subject_id"),
    )

    id: Mapped[int] = mapped_column(sa.Integer, primary_key=True, autoincrement=True)
    audit_id: Mapped[str] = mapped_column(sa.ForeignKey("audits.id", ondelete="CASCADE"), nullable=False)
    subject_id: Mapped[int] = mapped_column(sa.ForeignKey("subjects.id", ondelete="RESTRICT"), nullable=False)
    role: Mapped[str] = mapped_column(sa.String(32), nullable=False, default="train")  # train | holdout | coded
    fingerprint: Mapped[str] = mapped_column(sa.String(128), nullable=False)
    n_features: Mapped[int] = mapped_column(sa.Integer, nullable=False)
    count: Mapped[int] = mapped_column(sa.Integer, nullable=False)
    location: Mapped[str | None] = mapped_column(sa.Text)  # ablation store path / artifact URI
    size_bytes: Mapped[int | None] = mapped_column(sa.BigInteger)
    sha256: Mapped[str | None] = mapped_column(sa.String(64))
    mlflow_dataset_digest: Mapped[str | None] = mapped_column(sa.String(64))
    recorded_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)


class ProxyModel(Base):
    """The fitted surrogate (LightGBM for ProxySPEX) of a subject's value function."""

    __tablename__ = "proxy_models"
    __table_args__ = (sa.UniqueConstraint("audit_id", "subject_id", "name"), sa.Index("ix_proxy_models_subject", "subject_id"))

    id: Mapped[int] = mapped_column(sa.Integer, primary_key=True, autoincrement=True)
    audit_id: Mapped[str] = mapped_column(sa.ForeignKey("audits.id", ondelete="CASCADE"), nullable=False)
    subject_id: Mapped[int] = mapped_column(sa.ForeignKey("subjects.id", ondelete="RESTRICT"), nullable=False)
    name: Mapped[str] = mapped_column(sa.String(64), nullable=False, default="proxy")
    method: Mapped[str] = mapped_column(sa.String(64), nullable=False, default="proxyspex")
    hyperparameters: Mapped[dict[str, Any]] = mapped_column(JSONType, nullable=False, default=dict)
    cv_r2: Mapped[float | None] = mapped_column(sa.Float)
    mlflow_model_uri: Mapped[str | None] = mapped_column(sa.Text)
    recorded_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)


class Interaction(Base):
    """One ranked interaction of one subject under one index, as found by one audit."""

    __tablename__ = "interactions"
    __table_args__ = (
        sa.UniqueConstraint("audit_id", "subject_id", "index_name", "rank"),
        sa.UniqueConstraint("audit_id", "subject_id", "index_name", "members_key"),
        # "top interactions of this subject": by subject and index, best rank first, across audits.
        sa.Index("ix_interactions_subject_top", "subject_id", "index_name", "rank"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    audit_id: Mapped[str] = mapped_column(sa.ForeignKey("audits.id", ondelete="CASCADE"), nullable=False)
    subject_id: Mapped[int] = mapped_column(sa.ForeignKey("subjects.id", ondelete="RESTRICT"), nullable=False)
    index_name: Mapped[str] = mapped_column(sa.String(32), nullable=False)
    rank: Mapped[int] = mapped_column(sa.Integer, nullable=False)
    order: Mapped[int] = mapped_column(sa.Integer, nullable=False)
    # Canonical "3,7,12" (sorted): equal sets compare equal in SQL, across audits and versions.
    members_key: Mapped[str] = mapped_column(sa.Text, nullable=False)
    members: Mapped[list[int]] = mapped_column(JSONType, nullable=False)
    labels: Mapped[list[str] | None] = mapped_column(JSONType)
    value: Mapped[float] = mapped_column(sa.Float, nullable=False)
    # The value's standard error and confidence interval (level: the spec's ranking.confidence); NULL
    # where unknown and for rows recorded before revision 0002.
    se: Mapped[float | None] = mapped_column(sa.Float)
    ci_low: Mapped[float | None] = mapped_column(sa.Float)
    ci_high: Mapped[float | None] = mapped_column(sa.Float)


class Validation(Base):
    """How faithful an audit's explanation of a subject is, measured with real model calls."""

    __tablename__ = "validations"
    __table_args__ = (sa.UniqueConstraint("audit_id", "subject_id"), sa.Index("ix_validations_subject", "subject_id"))

    id: Mapped[int] = mapped_column(sa.Integer, primary_key=True, autoincrement=True)
    audit_id: Mapped[str] = mapped_column(sa.ForeignKey("audits.id", ondelete="CASCADE"), nullable=False)
    subject_id: Mapped[int] = mapped_column(sa.ForeignKey("subjects.id", ondelete="RESTRICT"), nullable=False)
    heldout_r2: Mapped[float | None] = mapped_column(sa.Float)
    n_heldout: Mapped[int | None] = mapped_column(sa.Integer)
    removal: Mapped[Any] = mapped_column(JSONType, nullable=True)  # e.g. [{"k": 1, "predicted": .., "measured": ..}]
    exact_r2: Mapped[float | None] = mapped_column(sa.Float)  # against the full transform, small n only
    metrics: Mapped[dict[str, Any]] = mapped_column(JSONType, nullable=False, default=dict)
    recorded_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)


class GateResult(Base):
    """One release gate: ``value <comparator> threshold`` and whether it held (``state``: passed,
    failed, or undecided when the value is within noise of the threshold)."""

    __tablename__ = "gate_results"
    __table_args__ = (sa.UniqueConstraint("audit_id", "metric"), sa.CheckConstraint(f"state IN {VERDICTS!r}", name="state"))

    id: Mapped[int] = mapped_column(sa.Integer, primary_key=True, autoincrement=True)
    audit_id: Mapped[str] = mapped_column(sa.ForeignKey("audits.id", ondelete="CASCADE"), nullable=False)
    metric: Mapped[str] = mapped_column(sa.String(128), nullable=False)
    comparator: Mapped[str] = mapped_column(sa.String(8), nullable=False, default=">=")
    threshold: Mapped[float] = mapped_column(sa.Float, nullable=False)
    value: Mapped[float | None] = mapped_column(sa.Float)
    passed: Mapped[bool] = mapped_column(sa.Boolean, nullable=False)  # state == "passed"
    state: Mapped[str | None] = mapped_column(sa.String(16))  # NULL: a row from before 0002 (passed decides)
    details: Mapped[dict[str, Any]] = mapped_column(JSONType, nullable=False, default=dict)
    recorded_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)

    def to_gate(self) -> Gate:
        """The row as the :class:`~spex.records.gate.Gate` it recorded (a NULL state follows ``passed``)."""
        return Gate(metric=self.metric, threshold=self.threshold, value=self.value, passed=self.passed,
                    comparator=self.comparator, details=self.details, state=self.state)


TABLES = tuple(Base.metadata.sorted_tables)
