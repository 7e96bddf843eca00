"""Stage 4 as a task: the interaction tables of the recovered spectrum (:mod:`spex.audit.search`).
Cheap and model-free: not cached."""

from __future__ import annotations

from prefect import task

from spex.audit import search as tables
from spex.audit.fitting import Fit


@task(name="search-interactions")
def search(fit: Fit, labels: list[str], index: str, order: int | None, record_top: int,
           confidence: float) -> tables.Tables:
    """:func:`spex.audit.search.interaction_tables` of the fit's spectrum, with its uncertainty."""
    return tables.interaction_tables(fit.spectrum, labels, index=index, order=order, record_top=record_top,
                                     uncertainty=fit.uncertainty, level=confidence)
