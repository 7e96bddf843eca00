"""Initial schema: model versions, audits, subjects, ablation sets, proxies, interactions,
validations, gate results.

Written by hand and frozen: it must keep creating this exact schema even after the models change
(later changes get their own revisions). ``tests/store/test_migrations.py`` checks that head
matches ``spex.records.metadata.models`` on both backends.

Revision ID: 0001_initial
Revises:
Create Date: 2026-11-24
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001_initial"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
BIGID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
TS = sa.DateTime(timezone=True)


def _id() -> sa.Column:
    return sa.Column("id", sa.Integer(), autoincrement=True, nullable=False)


def _audit_fk(table: str) -> sa.Column:
    return sa.Column(
        "audit_id", sa.String(64),
        sa.ForeignKey("audits.id", ondelete="CASCADE", name=f"fk_{table}_audit_id_audits"), nullable=False,
    )


def _subject_fk(table: str) -> sa.Column:
    return sa.Column(
        "subject_id", sa.Integer(),
        sa.ForeignKey("subjects.id", ondelete="RESTRICT", name=f"fk_{table}_subject_id_subjects"), nullable=False,
    )


def upgrade() -> None:
    op.create_table(
        "model_versions",
        _id(),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("revision", sa.String(255), nullable=False),
        sa.Column("source_uri", sa.Text(), nullable=True),
        sa.Column("registry_version", sa.String(64), nullable=True),
        sa.Column("created_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_model_versions"),
        sa.UniqueConstraint("name", "revision", name="uq_model_versions_name_revision"),
    )
    op.create_table(
        "audits",
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("model_version_id", sa.Integer(), nullable=False),
        sa.Column("baseline_model_version_id", sa.Integer(), nullable=True),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("spec", JSON, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("passed", sa.Boolean(), nullable=True),
        sa.Column("started_at", TS, nullable=False),
        sa.Column("finished_at", TS, nullable=True),
        sa.Column("code_version", sa.String(255), nullable=True),
        sa.Column("library_versions", JSON, nullable=False),
        sa.Column("seeds", JSON, nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("mlflow_experiment_id", sa.String(64), nullable=True),
        sa.Column("mlflow_run_id", sa.String(64), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_audits"),
        sa.ForeignKeyConstraint(
            ["model_version_id"], ["model_versions.id"], name="fk_audits_model_version_id_model_versions",
            ondelete="RESTRICT",
        ),
        sa.ForeignKeyConstraint(
            ["baseline_model_version_id"], ["model_versions.id"],
            name="fk_audits_baseline_model_version_id_model_versions", ondelete="RESTRICT",
        ),
        sa.CheckConstraint("status IN ('running', 'succeeded', 'failed')", name="ck_audits_status"),
    )
    op.create_index("ix_audits_model_status", "audits", ["model_version_id", "status", "started_at"])
    op.create_index("ix_audits_status_started", "audits", ["status", "started_at"])

    op.create_table(
        "subjects",
        _id(),
        sa.Column("lens", sa.String(32), nullable=False),
        sa.Column("content_digest", sa.String(128), nullable=False),
        sa.Column("key", sa.String(255), nullable=False),
        sa.Column("n_features", sa.Integer(), nullable=True),
        sa.Column("labels", JSON, nullable=True),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("created_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_subjects"),
        sa.UniqueConstraint("lens", "content_digest", name="uq_subjects_lens_content_digest"),
    )
    op.create_index("ix_subjects_key", "subjects", ["key"])

    op.create_table(
        "audit_subjects",
        _id(),
        _audit_fk("audit_subjects"),
        _subject_fk("audit_subjects"),
        sa.Column("mlflow_run_id", sa.String(64), nullable=True),
        sa.Column("metrics", JSON, nullable=False),
        sa.Column("recorded_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_audit_subjects"),
        sa.UniqueConstraint("audit_id", "subject_id", name="uq_audit_subjects_audit_id_subject_id"),
    )
    op.create_index("ix_audit_subjects_subject", "audit_subjects", ["subject_id"])

    op.create_table(
        "ablation_sets",
        _id(),
        _audit_fk("ablation_sets"),
        _subject_fk("ablation_sets"),
        sa.Column("role", sa.String(32), nullable=False),
        sa.Column("fingerprint", sa.String(128), nullable=False),
        sa.Column("n_features", sa.Integer(), nullable=False),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.Column("location", sa.Text(), nullable=True),
        sa.Column("size_bytes", sa.BigInteger(), nullable=True),
        sa.Column("sha256", sa.String(64), nullable=True),
        sa.Column("mlflow_dataset_digest", sa.String(64), nullable=True),
        sa.Column("recorded_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_ablation_sets"),
        sa.UniqueConstraint("audit_id", "subject_id", "role", name="uq_ablation_sets_audit_id_subject_id_role"),
    )
    op.create_index("ix_ablation_sets_fingerprint", "ablation_sets", ["fingerprint"])
    op.create_index("ix_ablation_sets_subject", "ablation_sets", ["subject_id"])

    op.create_table(
        "proxy_models",
        _id(),
        _audit_fk("proxy_models"),
        _subject_fk("proxy_models"),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("method", sa.String(64), nullable=False),
        sa.Column("hyperparameters", JSON, nullable=False),
        sa.Column("cv_r2", sa.Float(), nullable=True),
        sa.Column("mlflow_model_uri", sa.Text(), nullable=True),
        sa.Column("recorded_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_proxy_models"),
        sa.UniqueConstraint("audit_id", "subject_id", "name", name="uq_proxy_models_audit_id_subject_id_name"),
    )
    op.create_index("ix_proxy_models_subject", "proxy_models", ["subject_id"])

    op.create_table(
        "interactions",
        sa.Column("id", BIGID, autoincrement=True, nullable=False),
        _audit_fk("interactions"),
        _subject_fk("interactions"),
        sa.Column("index_name", sa.String(32), nullable=False),
        sa.Column("rank", sa.Integer(), nullable=False),
        sa.Column("order", sa.Integer(), nullable=False),
        sa.Column("members_key", sa.Text(), nullable=False),
        sa.Column("members", JSON, nullable=False),
        sa.Column("labels", JSON, nullable=True),
        sa.Column("value", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_interactions"),
        sa.UniqueConstraint(
            "audit_id", "subject_id", "index_name", "rank", name="uq_interactions_audit_id_subject_id_index_name_rank"
        ),
        sa.UniqueConstraint(
            "audit_id", "subject_id", "index_name", "members_key",
            name="uq_interactions_audit_id_subject_id_index_name_members_key",
        ),
    )
    op.create_index("ix_interactions_subject_top", "interactions", ["subject_id", "index_name", "rank"])

    op.create_table(
        "validations",
        _id(),
        _audit_fk("validations"),
        _subject_fk("validations"),
        sa.Column("heldout_r2", sa.Float(), nullable=True),
        sa.Column("n_heldout", sa.Integer(), nullable=True),
        sa.Column("removal", JSON, nullable=True),
        sa.Column("exact_r2", sa.Float(), nullable=True),
        sa.Column("metrics", JSON, nullable=False),
        sa.Column("recorded_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_validations"),
        sa.UniqueConstraint("audit_id", "subject_id", name="uq_validations_audit_id_subject_id"),
    )
    op.create_index("ix_validations_subject", "validations", ["subject_id"])

    op.create_table(
        "gate_results",
        _id(),
        _audit_fk("gate_results"),
        sa.Column("metric", sa.String(128), nullable=False),
        sa.Column("comparator", sa.String(8), nullable=False),
        sa.Column("threshold", sa.Float(), nullable=False),
        sa.Column("value", sa.Float(), nullable=True),
        sa.Column("passed", sa.Boolean(), nullable=False),
        sa.Column("details", JSON, nullable=False),
        sa.Column("recorded_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_gate_results"),
        sa.UniqueConstraint("audit_id", "metric", name="uq_gate_results_audit_id_metric"),
    )


def downgrade() -> None:
    for table in (
        "gate_results",
        "validations",
        "interactions",
        "proxy_models",
        "ablation_sets",
        "audit_subjects",
        "subjects",
        "audits",
        "model_versions",
    ):
        op.drop_table(table)
