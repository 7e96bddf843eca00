"""Uncertainty and three-way verdicts: ``interactions.se``/``ci_low``/``ci_high``, ``gate_results.state``,
``audits.verdict``.

* Every interaction gets its standard error and confidence interval (nullable floats: unknown, and
  every row recorded before this revision, is NULL).
* A gate is ``passed``, ``failed`` or ``undecided`` (its value within the noise of its threshold), and an
  audit's verdict is the same three-way answer (:func:`spex.records.gate.verdict`); ``passed`` stays,
  equal to ``state == 'passed'`` / ``verdict == 'passed'``.

Rows recorded before this revision are given the state and verdict their ``passed`` column implies
(``passed`` -> ``passed``, else ``failed``; an audit without ``passed`` — running, or finished without
gates — keeps a NULL verdict), so old and new rows read the same way.

The two text columns carry a CHECK of their values. They are added with one plain ``ALTER TABLE ..
ADD COLUMN .. CHECK`` that SQLite (>= 3.37 checks existing rows too) and Postgres both accept: SQLite
cannot add a constraint to an existing table any other way short of copying the table, and copying
``audits`` would, with foreign keys on, cascade-delete every row that points at it.

Written by hand and frozen, like 0001.

Revision ID: 0002_uncertainty_and_verdicts
Revises: 0001_initial
Create Date: 2026-12-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002_uncertainty_and_verdicts"
down_revision: str | Sequence[str] | None = "0001_initial"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

STATES = ("passed", "failed", "undecided")
INTERVAL_COLUMNS = ("se", "ci_low", "ci_high")


def _add_checked_state(table: str, column: str) -> None:
    allowed = ", ".join(f"'{s}'" for s in STATES)
    op.execute(sa.text(
        f"ALTER TABLE {table} ADD COLUMN {column} VARCHAR(16) "
        f"CONSTRAINT ck_{table}_{column} CHECK ({column} IN ({allowed}))"
    ))


def upgrade() -> None:
    for column in INTERVAL_COLUMNS:
        op.add_column("interactions", sa.Column(column, sa.Float(), nullable=True))
    _add_checked_state("gate_results", "state")
    _add_checked_state("audits", "verdict")
    op.execute(sa.text("UPDATE gate_results SET state = CASE WHEN passed THEN 'passed' ELSE 'failed' END"))
    op.execute(sa.text(
        "UPDATE audits SET verdict = CASE WHEN passed THEN 'passed' ELSE 'failed' END WHERE passed IS NOT NULL"
    ))


def downgrade() -> None:
    # Plain DROP COLUMN on both backends (SQLite >= 3.35 drops a column whose only CHECK is its own).
    op.execute(sa.text("ALTER TABLE audits DROP COLUMN verdict"))
    op.execute(sa.text("ALTER TABLE gate_results DROP COLUMN state"))
    for column in reversed(INTERVAL_COLUMNS):
        op.drop_column("interactions", column)
