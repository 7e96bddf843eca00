"""Alembic migrations of the metadata store, shipped inside the package (see ``spex.records.metadata.migrate``)."""
