"""Throwaway Postgres databases and schemas for tests (used by spex's own suite; reusable by any
test that needs a real Postgres).

The CI contract (``.ci/run``): ``SPEX_TEST_POSTGRES_URL`` names a throwaway database and
``SPEX_REQUIRE_POSTGRES=1`` turns "Postgres unreachable" from a skip into a failure. Locally, without
the variable, a database is created on 127.0.0.1:5432 and dropped afterwards.

Isolation is by *schema*: each test gets a fresh schema in that database and a URL whose libpq
``options`` put it first on ``search_path``, so unqualified tables (spex's and MLflow's) land there
and tests never see each other's rows; creating a schema costs milliseconds, a database much more.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import sqlalchemy as sa
from sqlalchemy.engine import make_url

from spex.records.metadata.db import describe_url, normalize_url

DEFAULT_SERVER_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
ENV_URL = "SPEX_TEST_POSTGRES_URL"
ENV_REQUIRE = "SPEX_REQUIRE_POSTGRES"


class PostgresUnavailable(RuntimeError):
    """No Postgres could be reached (the message says where it looked, without passwords)."""


def postgres_required() -> bool:
    """True where a missing Postgres must fail the suite (CI), not skip."""
    return os.environ.get(ENV_REQUIRE, "").strip().lower() in ("1", "true", "yes")


def _admin_engine(url: str) -> sa.Engine:
    return sa.create_engine(normalize_url(url), isolation_level="AUTOCOMMIT", pool_pre_ping=True)


def _check(url: str) -> None:
    engine = _admin_engine(url)
    try:
        with engine.connect() as connection:
            connection.execute(sa.text("SELECT 1"))
    except sa.exc.OperationalError as exc:
        raise PostgresUnavailable(f"Postgres at {describe_url(url)} is unreachable: {str(exc.orig).splitlines()[0]}") from exc
    finally:
        engine.dispose()


@contextmanager
def throwaway_database() -> Iterator[str]:
    """A Postgres database URL for this test session: ``SPEX_TEST_POSTGRES_URL`` if set, else a
    database created (and finally dropped) on the local server. Raises ``PostgresUnavailable``."""
    given = os.environ.get(ENV_URL)
    if given:
        _check(given)
        yield normalize_url(given).render_as_string(hide_password=False)
        return
    server = os.environ.get("SPEX_TEST_POSTGRES_SERVER_URL", DEFAULT_SERVER_URL)
    _check(server)
    name = f"spex_test_{uuid.uuid4().hex[:12]}"
    admin = _admin_engine(server)
    try:
        with admin.connect() as connection:
            connection.execute(sa.text(f'CREATE DATABASE "{name}"'))
        yield normalize_url(server).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as connection:
            connection.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def schema_url(database_url: str, schema: str) -> str:
    """``database_url`` with ``search_path`` set to ``schema`` (libpq ``options``)."""
    url = make_url(database_url)
    query = dict(url.query)
    query["options"] = f"-csearch_path={schema}"
    return url.set(query=query).render_as_string(hide_password=False)


@contextmanager
def fresh_schema(database_url: str, prefix: str = "t") -> Iterator[str]:
    """A new, empty schema in ``database_url`` (dropped with everything in it afterwards); yields a
    URL whose connections use it."""
    schema = f"{prefix}_{uuid.uuid4().hex[:12]}"
    admin = _admin_engine(database_url)
    try:
        with admin.connect() as connection:
            connection.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
        yield schema_url(database_url, schema)
    finally:
        with admin.connect() as connection:
            connection.execute(sa.text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        admin.dispose()
