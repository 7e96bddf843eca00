"""Determinism: the same spec and seed, audited twice from nothing (fresh data dir, another process,
another hash seed), give identical masks, identical values (CPU, bit for bit) and identical rankings."""

from __future__ import annotations

import numpy as np

from tests.reliability.conftest import write_spec
from tests.reliability.fault_checks import rankings, store_contents


def test_same_spec_and_seed_twice(spex_run, rel_model, reference_audit, tmp_path):
    from spex.records.metadata import MetadataStore

    spec = write_spec(tmp_path / "spec.yaml", rel_model)
    data = tmp_path / "data"
    run = spex_run(["audit", str(spec), "--json", "--top", "50"], data_dir=data, fresh=True,
                   env={"PYTHONHASHSEED": "12345"})  # a new interpreter: its own imports and hash seed
    assert run.returncode == 0, str(run)
    again, first = run.json(), reference_audit["result"]
    assert again["model_calls"]["masks_computed"] == first["model_calls"]["masks_computed"] > 0  # computed afresh

    # values: every (mask, value) the two runs measured, bit for bit
    mine, theirs = store_contents(data / "ablations"), store_contents(reference_audit["data"] / "ablations")
    assert sorted(mine) == sorted(theirs)
    for fp in mine:
        np.testing.assert_array_equal(mine[fp][0], theirs[fp][0])
        np.testing.assert_array_equal(mine[fp][1], theirs[fp][1])

    # masks in order: the ablation sets' content digests (of the ordered masks and their values)
    def digests(data_dir, audit_id):
        with MetadataStore(f"sqlite:///{data_dir / 'spex.db'}") as store:
            record = store.get_audit(audit_id)
        return {(s.subject.key, a.role): (a.count, a.mlflow_dataset_digest) for s in record.subjects
                for a in s.ablation_sets}

    assert digests(data, again["audit_id"]) == digests(reference_audit["data"], first["audit_id"])

    # rankings and the held-out faithfulness
    assert rankings(again) == rankings(first)
    for key, subject in again["subjects"].items():
        assert subject["heldout_r2"] == first["subjects"][key]["heldout_r2"]
        assert subject["removal"] == first["subjects"][key]["removal"]
