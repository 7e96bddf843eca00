"""Migrations: up, down and up again on both backends; the head schema equals the models; the
packaged migrations work without alembic.ini from any directory; first use migrates; concurrent
first use migrates once."""

from __future__ import annotations

import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from spex.records.metadata import (
    MetadataStore,
    create_engine,
    current_revision,
    downgrade,
    head_revision,
    upgrade,
)
from spex.records.metadata.migrate import MIGRATIONS_DIR
from spex.records.metadata.models import Base

SPEX_TABLES = {t.name for t in Base.metadata.sorted_tables}


def _tables(engine: sa.Engine) -> set[str]:
    return set(sa.inspect(engine).get_table_names()) - {"alembic_version"}


def test_migrations_ship_inside_the_package(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no alembic.ini anywhere near
    assert MIGRATIONS_DIR.is_dir() and (MIGRATIONS_DIR / "env.py").is_file()
    package = MIGRATIONS_DIR.parent  # spex/records/metadata
    assert (package.name, package.parent.name, package.parent.parent.name) == ("metadata", "records", "spex")
    assert head_revision() == "0002_uncertainty_and_verdicts"


def test_upgrade_downgrade_upgrade(db_url):
    engine = create_engine(db_url)
    try:
        assert current_revision(engine) is None
        assert _tables(engine) == set()

        assert upgrade(engine) == head_revision()
        assert _tables(engine) == SPEX_TABLES

        assert downgrade(engine, "base") is None
        assert _tables(engine) == set()

        assert upgrade(engine) == head_revision()
        assert _tables(engine) == SPEX_TABLES
        assert upgrade(engine) == head_revision()  # idempotent at head
    finally:
        engine.dispose()


def test_head_schema_matches_the_models(db_url):
    """The hand-written migration and the ORM models describe the same schema (types, nullability,
    indexes, unique constraints): autogenerate finds nothing to do."""
    engine = create_engine(db_url)
    try:
        upgrade(engine)
        with engine.connect() as connection:
            context = MigrationContext.configure(connection, opts={"compare_type": True})
            diff = compare_metadata(context, Base.metadata)
        assert diff == []
        indexes = {ix["name"] for ix in sa.inspect(engine).get_indexes("interactions")}
        assert "ix_interactions_subject_top" in indexes
        assert "ix_audits_model_status" in {ix["name"] for ix in sa.inspect(engine).get_indexes("audits")}
    finally:
        engine.dispose()


def test_first_use_migrates(db_url):
    with MetadataStore(db_url) as store:
        assert current_revision(store.engine) == head_revision()
        assert set(store.counts()) == SPEX_TABLES
    with MetadataStore(db_url) as store:  # second open: nothing to do, still at head
        assert current_revision(store.engine) == head_revision()


def test_store_without_migration_leaves_the_database_alone(db_url):
    with MetadataStore(db_url, migrate=False) as store:
        assert current_revision(store.engine) is None


def test_a_database_migrated_by_a_newer_spex_is_refused(db_url):
    import pytest
    from typer.testing import CliRunner

    from spex.cli import app
    from spex.records.metadata import SchemaTooNew

    engine = create_engine(db_url)
    try:
        upgrade(engine)
        with engine.begin() as connection:
            connection.execute(sa.text("UPDATE alembic_version SET version_num = '9999_from_the_future'"))
    finally:
        engine.dispose()
    with pytest.raises(SchemaTooNew, match="9999_from_the_future"):
        MetadataStore(db_url)
    result = CliRunner().invoke(app, ["audits", "list", "--db", db_url])
    assert result.exit_code == 2 and "upgrade spex instead of the database" in result.stderr
