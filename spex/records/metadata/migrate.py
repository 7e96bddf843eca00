"""Schema migrations, applied in code (no alembic.ini) and safe when many processes start at once.

Why it looks like this:

* The Alembic ``Config`` is built here and points at ``spex/records/metadata/migrations`` inside the installed
  package, so ``spex db upgrade`` and first use work from any working directory and a wheel.
* Migrations run inside one transaction that first takes a lock: ``pg_advisory_xact_lock`` on
  Postgres, ``BEGIN IMMEDIATE`` (the engine's default, see ``spex.records.metadata.db``) on SQLite. Several
  workers opening a fresh database at once therefore migrate it exactly once; the others wait, then
  find it at head. Postgres DDL is transactional, so a failed migration leaves nothing half-done.
* ``ensure_schema`` checks the revision without the lock first and remembers databases already at
  head in this process, so opening a store is one cheap query.
"""

from __future__ import annotations

import threading
from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
_LOCK_KEY = 0x5E7_5707E  # arbitrary constant: "the spex metadata schema" advisory lock

_at_head: set[str] = set()
_at_head_lock = threading.Lock()


class SchemaTooNew(RuntimeError):
    """The database was migrated by a newer spex than the one running."""


def _known(revision: str) -> bool:
    try:
        return ScriptDirectory.from_config(alembic_config()).get_revision(revision) is not None
    except Exception:  # alembic raises several kinds for unknown ids
        return False


def alembic_config(connection: sa.Connection | None = None) -> Config:
    """An Alembic config for the packaged migrations, bound to ``connection`` when given."""
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR).replace("%", "%%"))
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


def head_revision() -> str:
    """The newest revision shipped with this version of spex."""
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None
    return head


def current_revision(engine: sa.Engine) -> str | None:
    """The revision the database is at (``None``: never migrated)."""
    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def _cache_key(engine: sa.Engine) -> str:
    return engine.url.render_as_string(hide_password=False) + f"#{id(engine)}"


def _locked(connection: sa.Connection) -> None:
    if connection.dialect.name == "postgresql":
        connection.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": _LOCK_KEY})
    # SQLite: the transaction began with BEGIN IMMEDIATE, which already holds the write lock.


def upgrade(engine: sa.Engine, revision: str = "head") -> str | None:
    """Migrate the database up to ``revision`` (default: head); returns the revision reached."""
    with engine.begin() as connection:
        _locked(connection)
        command.upgrade(alembic_config(connection), revision)
    with _at_head_lock:
        _at_head.discard(_cache_key(engine))
    return current_revision(engine)


def downgrade(engine: sa.Engine, revision: str = "base") -> str | None:
    """Migrate the database down to ``revision`` (default: base, i.e. drop every spex table)."""
    with engine.begin() as connection:
        _locked(connection)
        command.downgrade(alembic_config(connection), revision)
    with _at_head_lock:
        _at_head.discard(_cache_key(engine))
    return current_revision(engine)


def ensure_schema(engine: sa.Engine) -> None:
    """Bring the database to head unless this process already saw it there (first-use migration)."""
    key = _cache_key(engine)
    with _at_head_lock:
        if key in _at_head:
            return
    head = head_revision()
    current = current_revision(engine)
    if current is not None and current != head and not _known(current):
        raise SchemaTooNew(
            f"the metadata DB is at revision {current!r}, which this spex does not know (its newest is "
            f"{head!r}): it was migrated by a newer spex; upgrade spex instead of the database"
        )
    if current != head:
        upgrade(engine, "head")
    with _at_head_lock:
        _at_head.add(key)
