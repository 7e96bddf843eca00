"""Stage 4: read the interactions out of the recovered spectrum (no model call; cheap, not cached).

Three tables per subject, each a list of JSON rows (members, labels, order, value, rank):

* ``ranking`` — the spec's index (default Faith-Banzhaf of order 2), its top ``record_top`` rows: what
  is recorded, diffed between versions and gated;
* ``shapley`` — every feature's Shapley value: the first-order effect the report shades the text by;
* ``pairs`` — Faith-Banzhaf order-2 pair terms (strongest first, at most ``MAX_PAIRS``): the report's
  pairwise heatmap.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from prefect import task

from tasks import runtime

MAX_PAIRS = 5000


def rows(table: Any) -> list[dict[str, Any]]:
    """An interaction DataFrame as JSON rows."""
    out = []
    for r in table.to_dict("records"):
        row = {"members": [int(m) for m in r["members"]], "order": int(r["order"]), "value": float(r["value"]),
               "rank": int(r["rank"])}
        if "labels" in r and r["labels"] is not None:
            row["labels"] = [str(x) for x in r["labels"]]
        out.append(row)
    return out


def interaction_tables(spectrum_json: str, labels: list[str], *, index: str, order: int | None,
                       record_top: int) -> dict[str, Any]:
    from spex.engine.spectrum import Spectrum

    spectrum = Spectrum.from_json(spectrum_json)
    ranking = spectrum.interactions(index=index, order=order, top=record_top, labels=labels)
    shapley = spectrum.interactions(index="shapley", labels=labels)
    pairs = spectrum.interactions(index="fbii", order=2, labels=labels)
    pairs = pairs[pairs["order"] == 2].head(MAX_PAIRS)
    pairs = pairs.assign(rank=range(1, len(pairs) + 1))
    from spex.engine.indices import compute

    members, values = compute(spectrum, index, order)
    empty = [float(v) for m, v in zip(members, values) if (m < 0).all()]
    baseline = empty[0] if empty else float(spectrum.predict(np.zeros((1, spectrum.n), dtype=bool))[0])
    return {
        "index": index,
        "order": order,
        "constant": float(spectrum.constant),
        "baseline_value": baseline,
        "empty_value": float(spectrum.predict(np.zeros((1, spectrum.n), dtype=bool))[0]),
        "ranking": rows(ranking),
        "shapley": rows(shapley),
        "pairs": rows(pairs),
    }


@task(name="search-interactions")
def search(spectrum_json: str, labels: list[str], index: str, order: int | None, record_top: int,
           subject: str = "") -> dict[str, Any]:
    """The subject's ranked interactions, first-order effects and pair terms (see the module docstring)."""
    tables = interaction_tables(spectrum_json, labels, index=index, order=order, record_top=record_top)
    runtime.emit("stage_done", subject=subject, stage="search", rows=len(tables["ranking"]))
    return tables
