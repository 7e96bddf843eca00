"""Audit metadata in a relational database (SQLite embedded default, Postgres in production).

    from spex.records.metadata import MetadataStore, ModelRef
    store = MetadataStore()                       # SPEX_DATABASE_URL or SQLite in the data dir
    audit_id = store.start_audit(ModelRef("sentiment", "sha256:..."), spec, audit_id=flow_run_id)
    with store.recording(audit_id):               # failed + error on exception, succeeded otherwise
        sid = store.record_subject(audit_id, lens="features", content_digest=d, labels=words)
        store.record_interactions(audit_id, sid, spectrum.interactions(index="fbii"))
        ...

The store is one facade (``repository``) over three parts: ``sessions`` (engine, transactions,
retries), ``writes`` (idempotent recording) and ``reads``. Imports SQLAlchemy and Alembic, never MLflow
or Prefect (see ``spex.records.tracking`` for MLflow).
"""

from spex.records.gate import Gate
from spex.records.metadata.db import (
    StoreConfigError,
    create_engine,
    describe_url,
    mask_secrets,
)
from spex.records.metadata.errors import AuditNotFound, SubjectNotFound
from spex.records.metadata.migrate import (
    SchemaTooNew,
    current_revision,
    downgrade,
    ensure_schema,
    head_revision,
    upgrade,
)
from spex.records.metadata.records import (
    AblationSetRecord,
    AuditRecord,
    AuditSubjectRecord,
    AuditSummary,
    ModelRef,
    ModelVersionRecord,
    ProxyRecord,
    SubjectRecord,
    ValidationRecord,
)
from spex.records.metadata.repository import MetadataStore
from spex.records.metadata.writes import format_error, members_key

__all__ = [
    "AblationSetRecord",
    "AuditNotFound",
    "AuditRecord",
    "AuditSubjectRecord",
    "AuditSummary",
    "Gate",
    "MetadataStore",
    "ModelRef",
    "ModelVersionRecord",
    "ProxyRecord",
    "SchemaTooNew",
    "StoreConfigError",
    "SubjectNotFound",
    "SubjectRecord",
    "ValidationRecord",
    "create_engine",
    "current_revision",
    "describe_url",
    "downgrade",
    "ensure_schema",
    "format_error",
    "head_revision",
    "mask_secrets",
    "members_key",
    "upgrade",
]
