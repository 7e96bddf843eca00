"""Connections to the metadata DB: the engine's lifecycle, short transactions, and the retries that
let an audit outlive a database restart.

* **Short transactions** (one per store call, ``Session`` per call): the store is thread-safe and many
  processes can record into one Postgres.
* **A deadlock victim is retried** a few times: the database may choose one under load even with the
  writers' fixed lock order.
* **A database that goes away comes back.** A lost or refused connection (Postgres restarted, a
  failover, a network blip; SQLite busy) retries the whole transaction with exponential back-off for up
  to ``SPEX_DB_RETRY_SECONDS`` (default 60) before the error surfaces: every write is idempotent, so
  re-running a transaction whose commit was lost in flight is safe. Opening the store does not wait: a
  database that is down when an audit starts is a one-line error before any model call.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.orm import Session

from spex.records.metadata import migrate as migrations
from spex.records.metadata.db import create_engine, describe_url

log = logging.getLogger(__name__)

R = TypeVar("R")

_RETRYABLE_SQLSTATES = {"40001", "40P01"}  # serialization failure, deadlock detected
# admin shutdown, crash shutdown, cannot connect now (starting up / shutting down), too many connections
_UNAVAILABLE_SQLSTATES = {"57P01", "57P02", "57P03", "53300"}


def _unavailable(exc: sa.exc.DBAPIError, backend: str) -> bool:
    """True when ``exc`` says the database is (for now) unreachable, not that the statement is wrong."""
    if exc.connection_invalidated:
        return True
    if not isinstance(exc, sa.exc.OperationalError):
        return False
    if backend == "sqlite":
        text = str(exc.orig).lower()
        return "locked" in text or "busy" in text
    sqlstate = getattr(exc.orig, "sqlstate", None)
    return sqlstate is None or sqlstate.startswith("08") or sqlstate in _UNAVAILABLE_SQLSTATES


def _retry_seconds() -> float:
    from spex import settings

    return settings.current().db_retry_seconds


def oneline(exc: BaseException) -> str:
    """The first line of a database error (the driver's message, not SQLAlchemy's wrapper)."""
    text = str(getattr(exc, "orig", None) or exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


class Sessions:
    """The engine of one metadata DB and the transactions run on it (the base of every store part).

    ``url`` defaults to ``SPEX_DATABASE_URL`` (or SQLite in the data dir). The schema is migrated to
    head on opening unless ``migrate=False``.
    """

    def __init__(self, url: str | None = None, *, migrate: bool = True, **engine_kwargs: Any) -> None:
        if url is None:
            from spex.settings import database_url

            url = database_url()
        self.engine = create_engine(url, **engine_kwargs)
        self.url = describe_url(self.engine.url)
        if migrate:
            try:
                migrations.ensure_schema(self.engine)
            except sa.exc.OperationalError as exc:
                self.engine.dispose()
                raise ConnectionError(f"cannot open the metadata DB at {self.url}: {oneline(exc)}") from exc

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.url!r})"

    def __enter__(self) -> Sessions:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Release pooled connections."""
        self.engine.dispose()

    @property
    def backend(self) -> str:
        """``"sqlite"`` or ``"postgresql"``."""
        return self.engine.dialect.name

    @contextmanager
    def _tx(self) -> Iterator[Session]:
        with Session(self.engine, expire_on_commit=False) as session, session.begin():
            yield session

    def _run(self, work: Callable[[Session], R], *, attempts: int = 4) -> R:
        """Run ``work`` in a transaction, retrying when the database picked it as a deadlock victim
        (``attempts`` times) or could not be reached (back-off up to ``SPEX_DB_RETRY_SECONDS``)."""
        attempt, deadline, delay = 0, None, 0.25
        while True:
            attempt += 1
            try:
                with self._tx() as session:
                    return work(session)
            except sa.exc.DBAPIError as exc:
                sqlstate = getattr(exc.orig, "sqlstate", None)
                if sqlstate in _RETRYABLE_SQLSTATES and attempt < attempts:
                    time.sleep(0.05 * attempt)
                    continue
                if not _unavailable(exc, self.backend):
                    raise
                now = time.monotonic()
                deadline = now + _retry_seconds() if deadline is None else deadline
                if now + delay > deadline:
                    raise
                log.warning("metadata DB %s unavailable (%s); retrying in %.1fs", self.url, oneline(exc), delay)
                time.sleep(delay)
                delay = min(delay * 2, 5.0)
