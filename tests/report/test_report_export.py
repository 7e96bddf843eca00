"""The JSON export carries what the metadata DB recorded: every interaction's standard error and
interval (null where unknown — never NaN, which is not JSON), each gate's state and the audit's verdict."""

from __future__ import annotations

import json
import math
from pathlib import Path

from tests.report.report_fixtures import recorded_release, standard_error


def _strict(text: str) -> dict:
    def refuse(constant: str) -> None:
        raise AssertionError(f"{constant} in the JSON export")

    return json.loads(text, parse_constant=refuse)


def test_the_export_carries_intervals_gate_states_and_the_verdict(tmp_path: Path):
    from spex.records.metadata import MetadataStore
    from spex.report import write_audit_report

    with MetadataStore(f"sqlite:///{tmp_path / 'meta.db'}") as store:
        _, release = recorded_release(store)
        paths = write_audit_report(store, release, tmp_path / "out")
        (subject,) = store.get_audit(release).subjects
        recorded = {name: store.get_interactions(release, subject.subject.id, index=name)
                    for name in ("fbii", "shapley", "pairs")}
    document = _strict(paths["json"].read_text())

    assert document["audit"]["verdict"] == "failed" and document["audit"]["passed"] is False
    assert document["audit"]["confidence"] == 0.95
    assert {g["metric"]: g["state"] for g in document["gates"]} == {
        "faithfulness_min": "passed", "top_k_jaccard_min": "failed", "max_rank_shift": "failed",
        "max_significant_changes": "undecided"}

    (exported,) = document["subjects"].values()
    for name, rows in (("fbii", exported["interactions"]), ("pairs", exported["pairs"])):
        table = recorded[name]
        assert [r["rank"] for r in rows] == list(table["rank"])
        for row, want in zip(rows, table.itertuples()):
            for key in ("se", "ci_low", "ci_high"):
                value = getattr(want, key)
                assert row[key] == (None if math.isnan(value) else value), (name, row["rank"], key)
        assert rows[2]["se"] is None and rows[0]["se"] == standard_error(1)  # the fixture's unknown rank 3
    shapley = recorded["shapley"]
    se_by_feature = {m[0]: (None if math.isnan(se) else se) for m, se in zip(shapley["members"], shapley["se"])}
    assert exported["first_order"]["se"] == [se_by_feature.get(i) for i in range(exported["n_players"])]
