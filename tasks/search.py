"""Stage 4 as a task: the interaction tables of the recovered spectrum (:mod:`spex.audit.search`).
Cheap and model-free: not cached."""

from __future__ import annotations

from prefect import task

from spex.audit import search as tables
from spex.engine.spectrum import Spectrum


@task(name="search-interactions")
def search(spectrum: Spectrum, labels: list[str], index: str, order: int | None, record_top: int) -> tables.Tables:
    """:func:`spex.audit.search.interaction_tables`."""
    return tables.interaction_tables(spectrum, labels, index=index, order=order, record_top=record_top)
