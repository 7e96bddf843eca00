"""Engines for the two supported backends, and secret-free descriptions of database URLs.

One code path serves SQLite (embedded default) and Postgres (production): the differences live
here, at connection time, not in the repository:

* SQLite: foreign keys are off by default (turned on), readers block writers without WAL (WAL on),
  and Python's sqlite3 starts transactions lazily, so two processes that both read before writing
  deadlock into "database is locked" regardless of the busy timeout. Every transaction therefore
  starts with ``BEGIN IMMEDIATE`` (takes the write lock up front, waits up to the busy timeout).
* Postgres: ``postgresql://`` URLs are routed to psycopg 3 (the only driver installed);
  ``pool_pre_ping`` survives server restarts between audits.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import URL, make_url

SUPPORTED_BACKENDS = ("sqlite", "postgresql")
SQLITE_BUSY_TIMEOUT_S = 60.0

# scheme://user:secret@host  ->  scheme://user:***@host (any scheme: DB URLs, MLflow URIs, ...). The
# secret runs to the LAST "@" before a space: a raw "@", ":" or "/" in a password (``Hunter2@Zeta9``)
# must not leave its tail in view; hiding too much (a host) is the safe side of that choice.
_CREDENTIALS = re.compile(r"(?P<head>\b[a-zA-Z][a-zA-Z0-9+.\-]*://[^:/@\s]*:)(?P<secret>\S+)@")
SETTING = "SPEX_DATABASE_URL / --db"
SQLITE_HINT = "sqlite:////absolute/path/spex.db"
# key=value style DSNs: password=secret
_PASSWORD_KV = re.compile(r"(?i)(?P<head>\bpassword\s*=\s*)(?P<secret>'[^']*'|\S+)")


class StoreConfigError(ValueError):
    """The database URL names a backend spex does not support (message never contains a password)."""


def mask_secrets(text: str) -> str:
    """``text`` with passwords in URLs and ``password=`` pairs replaced by ``***``.

    Applied to everything the store writes to logs, error columns and CLI messages, because driver
    errors and user-supplied error strings may echo a connection URL.
    """
    text = _CREDENTIALS.sub(lambda m: m.group("head") + "***@", text)
    return _PASSWORD_KV.sub(lambda m: m.group("head") + "***", text)


def normalize_url(url: str | URL) -> URL:
    """Parse ``url`` and route plain ``postgresql://`` (and ``postgres://``) to psycopg 3."""
    parsed = _parse(url)
    backend = parsed.get_backend_name()
    if backend == "postgres":
        parsed = parsed.set(drivername="postgresql+psycopg")
    elif backend == "postgresql" and parsed.drivername in ("postgresql", "postgresql+psycopg2"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    if parsed.get_backend_name() not in SUPPORTED_BACKENDS:
        raise StoreConfigError(
            f"{SETTING}: unsupported database backend {parsed.get_backend_name()!r} in {describe_url(parsed)}; "
            f"fix: use {SQLITE_HINT} or postgresql+psycopg://USER:PASSWORD@HOST:PORT/DB"
        )
    return parsed


def _parse(url: str | URL) -> URL:
    """``url`` parsed, or a one-line :class:`StoreConfigError` that names the setting and the fix.

    Why here: every URL the store opens passes through :func:`normalize_url`, so a plain file path, a
    port that is not a number or a raw ``@`` in a password is refused once, before any connection, and
    never as a driver's message that echoes the part of the password after the ``@``."""
    if isinstance(url, URL):
        return url
    shown = mask_secrets(url)
    try:
        parsed = make_url(url)
    except sa.exc.ArgumentError:
        sqlite = f"sqlite:///{Path(url).expanduser().absolute()}" if "://" not in url else SQLITE_HINT
        raise StoreConfigError(f"{SETTING}: {shown!r} is not a database URL; fix: for a SQLite file write "
                               f"{sqlite} (sqlite:/// and then the absolute path), for Postgres "
                               f"postgresql+psycopg://USER:PASSWORD@HOST:PORT/DB") from None
    except ValueError:  # make_url turns the port into an int
        raise StoreConfigError(f"{SETTING}: {shown!r} has a port that is not a number; fix: write the port "
                               f"as digits, e.g. HOST:5432") from None
    if "@" in (parsed.host or ""):
        raise StoreConfigError(f"{SETTING}: {shown!r} has a raw `@` in its password or user name; fix: "
                               f"URL-encode `@` as `%40` (and `:` as `%3A`, `/` as `%2F`)")
    return parsed


def describe_url(url: str | URL) -> str:
    """The URL as it may be shown to people: password hidden."""
    try:
        parsed = make_url(url) if isinstance(url, str) else url
    except (sa.exc.ArgumentError, ValueError):
        return mask_secrets(str(url))
    if "@" in (parsed.host or ""):  # a raw "@" in the password: the parser cut the password short
        return mask_secrets(parsed.render_as_string(hide_password=False))
    return parsed.render_as_string(hide_password=True)


def create_engine(url: str | URL, **kwargs: Any) -> sa.Engine:
    """An engine for ``url`` configured for safe concurrent use on either backend."""
    parsed = normalize_url(url)
    if parsed.get_backend_name() == "sqlite":
        database = parsed.database
        if database and database != ":memory:" and not database.startswith("file:"):
            Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)
        connect_args = dict(kwargs.pop("connect_args", {}))
        connect_args.setdefault("timeout", SQLITE_BUSY_TIMEOUT_S)
        connect_args.setdefault("check_same_thread", False)
        engine = sa.create_engine(parsed, connect_args=connect_args, **kwargs)
        _configure_sqlite(engine)
        return engine
    kwargs.setdefault("pool_pre_ping", True)
    return sa.create_engine(parsed, **kwargs)


def _configure_sqlite(engine: sa.Engine) -> None:
    @sa.event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, connection_record: Any) -> None:
        # Take transaction control away from the sqlite3 module (it would BEGIN DEFERRED lazily).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={int(SQLITE_BUSY_TIMEOUT_S * 1000)}")
        if engine.url.database not in (None, "", ":memory:"):
            cursor.execute("PRAGMA journal_mode=WAL")
        cursor.close()

    @sa.event.listens_for(engine, "begin")
    def _on_begin(connection: sa.Connection) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")
