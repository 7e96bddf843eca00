"""Fixtures shared by every suite.

``postgres_database``: one throwaway Postgres database for the session, from
``SPEX_TEST_POSTGRES_URL`` (CI, created by .ci/run) or created on 127.0.0.1:5432. Unreachable Postgres
skips the Postgres cases locally and FAILS them when ``SPEX_REQUIRE_POSTGRES=1`` (CI), so CI can
never pass on SQLite alone. Suites take fresh schemas inside it (``tests.postgres_testing.fresh_schema``).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from spex import settings
from tests import postgres_testing as pg

settings.apply_offline_defaults()  # the suite is an entry point: offline, no telemetry (as the CLI does)


@pytest.fixture(scope="session")
def postgres_database() -> Iterator[str]:
    """URL of this session's Postgres test database."""
    try:
        with pg.throwaway_database() as url:
            yield url
    except pg.PostgresUnavailable as exc:
        if pg.postgres_required():
            pytest.fail(f"{exc} (SPEX_REQUIRE_POSTGRES=1)", pytrace=False)
        pytest.skip(str(exc))
