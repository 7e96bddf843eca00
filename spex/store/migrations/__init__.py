"""Alembic migrations of the metadata store, shipped inside the package (see ``spex.store.migrate``)."""
