"""Alembic environment: runs on the connection ``spex.records.metadata.migrate`` hands over.

There is no alembic.ini: the package builds the Alembic ``Config`` in code and passes an open
connection in ``config.attributes["connection"]``, so migrations use the exact engine settings of
the store (SQLite pragmas, psycopg routing) and never read a URL from a file.
"""

from __future__ import annotations

from alembic import context

from spex.records.metadata.models import Base

config = context.config
connection = config.attributes.get("connection")
if connection is None:  # pragma: no cover - only reachable by running alembic by hand without spex
    raise RuntimeError("run migrations through spex.records.metadata.migrate (it supplies the connection)")

context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    # SQLite cannot ALTER most things in place; batch mode copies the table instead.
    render_as_batch=connection.dialect.name == "sqlite",
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()
