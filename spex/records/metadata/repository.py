"""The metadata store's API: record an audit as it runs, read audits back.

``MetadataStore`` is the one facade; its parts each have one job:

* :mod:`~spex.records.metadata.sessions` — the engine, short transactions, and retries when the
  database picks a deadlock victim or goes away for a while (``SPEX_DB_RETRY_SECONDS``);
* :mod:`~spex.records.metadata.writes` — idempotent, all-or-nothing writes that mark the audit failed
  when they fail;
* :mod:`~spex.records.metadata.reads` — audits, lists and interaction tables read back as plain
  dataclasses (``spex.records.metadata.records``), never ORM objects.
"""

from __future__ import annotations

from spex.records.metadata.reads import Reads
from spex.records.metadata.writes import Writes


class MetadataStore(Writes, Reads):
    """Audit metadata in SQLite or Postgres.

    ``MetadataStore()`` uses ``SPEX_DATABASE_URL`` (default: SQLite in the data dir). The schema is
    migrated to head on first use (pass ``migrate=False`` to leave it alone). Thread-safe: each call
    opens its own short session. Usable as a context manager (disposes the engine's connections).
    """
