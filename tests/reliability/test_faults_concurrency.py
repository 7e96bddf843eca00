"""Four audits at once against one Postgres and one ablation store, some sharing value-function
fingerprints: all complete, no duplicate rows, no damaged chunks, and the two identical audits agree.

Each audit is its own process with its own scratch data dir (local MLflow store, Prefect results,
reports); their ``ablations`` folders are one shared store (a symlink, as a shared file system would
be), and the metadata DB is one Postgres schema.
"""

from __future__ import annotations

import numpy as np
import pytest

from tests.reliability.conftest import write_spec
from tests.reliability.fault_checks import assert_close_rankings, rankings, store_health

SERVICE = {"id": "service", "prompt": "Great movie and a lovely place, but terrible service: we will never come again."}


@pytest.mark.postgres
def test_four_audits_at_once(spex_start, rel_model, pg_schema, reference_audit, tmp_path):
    from spex.ablation import AblationStore
    from spex.records.metadata import MetadataStore

    shared = tmp_path / "shared-ablations"
    shared.mkdir()
    specs = {
        "a": write_spec(tmp_path / "a.yaml", rel_model),                 # the reference spec
        "b": write_spec(tmp_path / "b.yaml", rel_model),                 # the same again: same fingerprints, masks
        "c": write_spec(tmp_path / "c.yaml", rel_model, seed=4),         # same fingerprints, other masks
        "d": write_spec(tmp_path / "d.yaml", rel_model, seed=5,          # one shared subject, one of its own
                        subjects=[{"id": "food", "prompt": "The food was not bad at all, but the service was slow."},
                                  SERVICE]),
    }
    pending = {}
    for name, spec in specs.items():
        data = tmp_path / name / "data"
        data.mkdir(parents=True)
        (data / "ablations").symlink_to(shared, target_is_directory=True)
        pending[name] = spex_start(["audit", str(spec), "--json", "--top", "50"], data_dir=data, db=pg_schema)
    runs = {name: p.wait() for name, p in pending.items()}
    for name, run in runs.items():
        assert run.returncode == 0, f"audit {name}:\n{run}"
    results = {name: run.json() for name, run in runs.items()}

    # the shared store: whole chunks only; a mask two audits computed at the same moment holds one value
    store_health_tolerant(shared)
    store = AblationStore(shared)
    assert len(store.fingerprints()) == 3  # food, movie, service
    # a and b are the reference audit, run twice at once: same interactions as the reference. Values agree
    # to float32 rounding, not bit for bit: with the store shared, some of a's masks were computed by c or d
    # in other batches (another padding); same batches give bit-identical values (test_faults_determinism).
    assert_close_rankings(rankings(results["a"]), rankings(reference_audit["result"]))
    assert_close_rankings(rankings(results["b"]), rankings(reference_audit["result"]))

    with MetadataStore(pg_schema) as meta:
        counts = meta.counts()
        audits = meta.list_audits()
        assert len(audits) == 4 and all(a.status == "succeeded" for a in audits)
        assert counts["model_versions"] == 1 and counts["subjects"] == 3  # shared, not duplicated
        assert counts["audit_subjects"] == 8 and counts["ablation_sets"] == 16 and counts["proxy_models"] == 8
        expected_rows = 0
        for name, result in results.items():
            record = meta.get_audit(result["audit_id"])
            assert {s.subject.key for s in record.subjects} == set(result["subjects"])
            for s in record.subjects:
                table = meta.get_interactions(record.id, s.subject.id, index="fbii")
                assert list(table["rank"]) == list(range(1, len(table) + 1))  # one row per rank
                assert len(set(table["members"])) == len(table)  # no member set twice
                assert len(table) == len(result["subjects"][s.subject.key]["top"])
                expected_rows += sum(s.interaction_counts.values())
        assert counts["interactions"] == expected_rows


def store_health_tolerant(root) -> None:
    """As :func:`store_health`, except that a mask computed by two audits at the same moment may hold
    values differing in float32's last bits (they ran in different batches); it is kept once."""
    from spex.ablation import AblationStore

    store = AblationStore(root)
    for fp in store.fingerprints():
        stats = store.stats(fp)
        assert stats.corrupt_chunks == (), stats
        assert stats.max_conflict < 1e-5, stats
        masks, values = store.load(fp)
        assert len(np.unique(np.packbits(masks, axis=1), axis=0)) == len(masks) == stats.count
    if all(store.stats(fp).conflicts == 0 for fp in store.fingerprints()):
        store_health(root)
