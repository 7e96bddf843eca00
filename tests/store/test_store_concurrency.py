"""Four processes record audits into one database at once — including the first-use migration of an
empty database and audits that all of them record under the same ids: no errors, no duplicates,
every audit complete."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
import sqlalchemy as sa
from store_scenarios import interaction_table
from store_writer import OWN, SHARED, SUBJECTS

from spex.records.metadata import MetadataStore

WORKERS = 4
WRITER = Path(__file__).with_name("store_writer.py")


def _expected_interactions(seed: int) -> int:
    return sum(len(interaction_table(seed + len(key))) for key in SUBJECTS)


@pytest.mark.parametrize("backend", ["postgres", "sqlite"])
def test_four_processes_record_audits_at_once(backend, request, tmp_path):
    url = request.getfixturevalue("postgres_url") if backend == "postgres" else f"sqlite:///{tmp_path / 'spex.db'}"
    go = tmp_path / "go"
    procs = [
        subprocess.Popen(
            [sys.executable, str(WRITER), url, str(w), str(go)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for w in range(WORKERS)
    ]
    deadline = time.monotonic() + 120
    while not all((tmp_path / f"ready-{w}").exists() for w in range(WORKERS)):
        assert time.monotonic() < deadline and all(p.poll() is None for p in procs), "a writer died before starting"
        time.sleep(0.02)
    go.touch()
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=180)
        results.append((proc.returncode, out, err))
    for rc, out, err in results:
        assert rc == 0, err[-3000:]
        assert "Traceback" not in err
    assert sorted(sum((json.loads(out) for _, out, _ in results), [])) == sorted(
        [f"shared-{k}" for k in range(SHARED)] * WORKERS + [f"w{w}-{k}" for w in range(WORKERS) for k in range(OWN)]
    )

    with MetadataStore(url) as store:
        counts = store.counts()
        n_audits = SHARED + WORKERS * OWN
        assert counts["model_versions"] == 2
        assert counts["subjects"] == len(SUBJECTS)
        assert counts["audits"] == n_audits
        assert counts["audit_subjects"] == n_audits * len(SUBJECTS)
        assert counts["ablation_sets"] == 2 * n_audits * len(SUBJECTS)
        assert counts["proxy_models"] == counts["validations"] == n_audits * len(SUBJECTS)
        assert counts["gate_results"] == 2 * n_audits
        seeds = list(range(SHARED)) + [100 * w + k for w in range(WORKERS) for k in range(OWN)]
        assert counts["interactions"] == sum(_expected_interactions(seed) for seed in seeds)
        audits = store.list_audits(limit=None)
        assert {a.status for a in audits} == {"succeeded"} and {a.passed for a in audits} == {True}
        assert all(a.n_subjects == len(SUBJECTS) for a in audits)
        with store.engine.connect() as connection:  # the schema was migrated once, to one revision
            assert connection.execute(sa.text("SELECT count(*) FROM alembic_version")).scalar_one() == 1
