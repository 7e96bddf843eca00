"""Fixtures of the store suite: every store test runs on SQLite and on a real Postgres.

Postgres comes from ``SPEX_TEST_POSTGRES_URL`` (CI) or a database created on 127.0.0.1:5432 for the
session; each test gets its own fresh schema. Unreachable Postgres skips those cases locally and
fails them when ``SPEX_REQUIRE_POSTGRES=1`` (CI), so CI can never pass on SQLite alone.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests import postgres_testing as pg


@pytest.fixture
def postgres_url(postgres_database: str) -> Iterator[str]:
    """A fresh, empty schema in the test database, as a URL."""
    with pg.fresh_schema(postgres_database, prefix="store") as url:
        yield url


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path) -> str:
    """An empty metadata database on each backend."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'spex.db'}"
    return request.getfixturevalue("postgres_url")


@pytest.fixture
def store(db_url: str):
    """A migrated store on each backend."""
    from spex.records.metadata import MetadataStore

    with MetadataStore(db_url) as s:
        yield s
