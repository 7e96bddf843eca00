"""Stage 4: read the interactions out of the recovered spectrum (no model call; cheap, not cached).

Three tables per subject, each a list of JSON rows (members, labels, order, value, rank, and the
value's standard error ``se`` with its interval ``ci_low``/``ci_high`` — None where unknown):

* ``ranking`` — the spec's index (default Faith-Banzhaf of order 2), its top ``record_top`` rows: what
  is recorded, diffed between versions and gated;
* ``shapley`` — every feature's Shapley value: the first-order effect the report shades the text by;
* ``pairs`` — Faith-Banzhaf order-2 pair terms (strongest first, at most ``MAX_PAIRS``): the report's
  pairwise heatmap.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from spex.engine.indices import compute
from spex.engine.spectrum import Spectrum
from spex.engine.uncertainty import DEFAULT_LEVEL, Uncertainty

MAX_PAIRS = 5000

Rows = list[dict[str, Any]]


@dataclass(frozen=True)
class Tables:
    """A subject's interaction tables (see the module docstring) and the spectrum's reference values:
    its ``constant``, the index's value of the empty set (``baseline_value``) and the prediction on
    the all-removed mask (``empty_value``)."""

    index: str
    order: int | None
    constant: float
    baseline_value: float
    empty_value: float
    ranking: Rows
    shapley: Rows
    pairs: Rows

    def stored(self) -> dict[str, Rows]:
        """The tables the metadata DB keeps, by index name: the ranking, Shapley values, pair terms."""
        out = {self.index: self.ranking}
        if self.index != "shapley":
            out["shapley"] = self.shapley
        out["pairs"] = self.pairs
        return out


def rows(table: pd.DataFrame) -> Rows:
    """An interaction DataFrame as JSON rows."""
    out = []
    for r in table.to_dict("records"):
        row = {"members": [int(m) for m in r["members"]], "order": int(r["order"]), "value": float(r["value"]),
               "rank": int(r["rank"])}
        if "labels" in r and r["labels"] is not None:
            row["labels"] = [str(x) for x in r["labels"]]
        for key in UNCERTAINTY_FIELDS:
            if key in r:
                row[key] = _finite(r[key])
        out.append(row)
    return out


UNCERTAINTY_FIELDS = ("se", "ci_low", "ci_high")


def _finite(x: Any) -> float | None:
    """A float, or None for NaN/inf (JSON and the DB have no NaN: unknown is null)."""
    x = float(x)
    return x if np.isfinite(x) else None


def interaction_frame(table: Rows, index: str) -> pd.DataFrame:
    """JSON rows back as spex's interaction table, ``attrs["index"]`` set (what the stores take)."""
    frame = pd.DataFrame({
        "members": [tuple(r["members"]) for r in table],
        "labels": [tuple(r["labels"]) if r.get("labels") is not None else None for r in table],
        "order": [int(r["order"]) for r in table],
        "value": [float(r["value"]) for r in table],
        "rank": [int(r["rank"]) for r in table],
        **{key: [np.nan if r.get(key) is None else float(r[key]) for r in table] for key in UNCERTAINTY_FIELDS
           if any(key in r for r in table)},
    })
    frame.attrs["index"] = index
    return frame


def interaction_tables(spectrum: Spectrum, labels: list[str], *, index: str, order: int | None,
                       record_top: int, uncertainty: Uncertainty | None = None,
                       level: float = DEFAULT_LEVEL) -> Tables:
    """The ranking, Shapley and pair tables of ``spectrum`` (see the module docstring), each value with
    its standard error and ``level`` interval when the fit's ``uncertainty`` is given."""
    covariance = uncertainty if uncertainty is not None else Uncertainty.unknown(len(spectrum))
    ranking = spectrum.interactions(index=index, order=order, top=record_top, labels=labels, uncertainty=covariance,
                                    level=level)
    shapley = spectrum.interactions(index="shapley", labels=labels, uncertainty=covariance, level=level)
    pairs = spectrum.interactions(index="fbii", order=2, labels=labels, uncertainty=covariance, level=level)
    pairs = pairs[pairs["order"] == 2].head(MAX_PAIRS)
    pairs = pairs.assign(rank=range(1, len(pairs) + 1))
    members, values = compute(spectrum, index, order)
    empty_value = float(spectrum.predict(np.zeros((1, spectrum.n), dtype=bool))[0])
    empty = [float(v) for m, v in zip(members, values) if (m < 0).all()]
    return Tables(index=index, order=order, constant=float(spectrum.constant),
                  baseline_value=empty[0] if empty else empty_value, empty_value=empty_value,
                  ranking=rows(ranking), shapley=rows(shapley), pairs=rows(pairs))
