"""``kill -9`` of the audit process at five different points (during ablation, proxy fit, recording,
publishing): every rerun goes on from what was stored, computes no mask twice, and the last one ends
with exactly the interactions of an uninterrupted run.

The kill points are the package's test hook (``SPEX_FAULT_KILL_AT=<stage>:<n>``, inert unless set, see
``spex.audit.test_hooks.kill_here_for_tests``): the process SIGKILLs itself there, with no cleanup of any kind. The runs
are chained on one data dir and one Postgres schema — each rerun is killed at the next point — so one
chain exercises every point and also a run that resumes from several earlier kills.
"""

from __future__ import annotations

import numpy as np
import pytest

from tests.reliability.conftest import write_spec
from tests.reliability.fault_checks import (
    events,
    masks_computed,
    rankings,
    store_contents,
    store_health,
    store_snapshot,
)

# (kill point, what it interrupts) — counts are per process: the chain's later runs skip cached work.
CHAIN = [
    ("ablate:2", "subject 1, train masks: after the 2nd slice reached the ablation store"),
    ("fit:1", "subject 1: the proxy fit (its ablations complete and stored)"),
    ("record:1", "subject 1: recording — MLflow run and ablation sets written, proxy and interactions not"),
    ("ablate:3", "subject 2, train masks (subject 1 recorded under this run's audit)"),
    ("publish:1", "the audit is finished in the DB; its report and MLflow run not yet"),
]


@pytest.mark.postgres
def test_kill_9_at_five_points_then_rerun(spex_run, rel_model, pg_schema, reference_audit, tmp_path):
    from spex.records.metadata import MetadataStore

    spec = write_spec(tmp_path / "spec.yaml", rel_model)
    data = tmp_path / "data"
    store_root = data / "ablations"
    args = ["audit", str(spec), "--json", "--top", "50"]
    killed_ids = []
    for point, what in CHAIN:
        before = store_snapshot(store_root)
        run = spex_run(args, data_dir=data, db=pg_schema, env={"SPEX_FAULT_KILL_AT": point})
        assert run.killed, f"{point} ({what}) was not reached:\n{run}"
        after = store_snapshot(store_root)
        new = sum(after.values()) - sum(before.values())
        # every mask it computed is new to the store: nothing stored was computed again
        assert masks_computed(run.stderr) == new, f"{point}: computed {masks_computed(run.stderr)}, stored {new}"
        store_health(store_root)
        killed_ids += [e["audit_id"] for e in events(run.stderr) if e.get("event") == "audit_start"]
    assert sum(store_snapshot(store_root).values()) > 0

    before = store_snapshot(store_root)
    final = spex_run(args, data_dir=data, db=pg_schema)
    assert final.returncode == 0, str(final)
    result = final.json()
    new = sum(store_snapshot(store_root).values()) - sum(before.values())
    assert result["model_calls"]["masks_computed"] == masks_computed(final.stderr) == new
    store_health(store_root)

    # identical to the uninterrupted run: rankings, held-out R², and every stored value bit for bit
    reference = reference_audit["result"]
    assert rankings(result) == rankings(reference)
    for key, subject in result["subjects"].items():
        assert subject["heldout_r2"] == reference["subjects"][key]["heldout_r2"]
    mine, theirs = store_contents(store_root), store_contents(reference_audit["data"] / "ablations")
    assert sorted(mine) == sorted(theirs)
    for fp in mine:
        np.testing.assert_array_equal(mine[fp][0], theirs[fp][0])
        np.testing.assert_array_equal(mine[fp][1], theirs[fp][1])

    # the metadata DB: the final audit succeeded with everything; the killed ones never pass for it
    with MetadataStore(pg_schema) as store:
        record = store.get_audit(result["audit_id"])
        assert record.status == "succeeded" and record.passed is not False  # no gates: None
        assert {s.subject.key for s in record.subjects} == {"food", "movie"}
        for s in record.subjects:
            assert {a.role for a in s.ablation_sets} == {"train", "holdout"} and len(s.proxies) == 1
            assert s.validation is not None and s.interaction_counts["fbii"] == len(result["subjects"][s.subject.key]["top"])
        audits = {a.id: a for a in store.list_audits()}
    assert len(audits) == len(CHAIN) + 1 and len(set(killed_ids)) == len(CHAIN)
    for audit_id in killed_ids[:-1]:  # killed before finishing: the next run found the process gone
        assert audits[audit_id].status == "failed", audits[audit_id]
        assert audits[audit_id].error.startswith("crashed: process"), audits[audit_id].error
    assert audits[killed_ids[-1]].status == "succeeded"  # killed after the DB said so, before MLflow did
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{data / 'mlflow.db'}")
    for audit_id in killed_ids[:-1]:  # ... and closed its MLflow runs: none left RUNNING
        run_id = audits[audit_id].mlflow_run_id
        assert run_id and client.get_run(run_id).info.status == "FAILED"
        children = client.search_runs([client.get_run(run_id).info.experiment_id],
                                      filter_string=f"tags.`mlflow.parentRunId` = '{run_id}'")
        assert all(c.info.status != "RUNNING" for c in children)

    # A torn Prefect result file — what a kill in the middle of Prefect's result write leaves (Prefect
    # writes results in place, not atomically): the rerun takes it as a cache miss and redoes that stage
    # from the ablation store, with no model call and the same interactions.
    results = sorted((data / "prefect" / "results").iterdir())
    assert results
    for path in results:
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    torn = spex_run(args, data_dir=data, db=pg_schema)
    assert torn.returncode == 0, str(torn)
    assert torn.json()["model_calls"]["masks_computed"] == masks_computed(torn.stderr) == 0
    assert rankings(torn.json()) == rankings(reference)
