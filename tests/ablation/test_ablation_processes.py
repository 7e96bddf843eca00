"""The store across real processes: a writer killed with SIGKILL mid-run, and concurrent writers."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from ablation_vfs import CountingVF, reference, unique_masks

import spex
from spex.ablation import AblationEngine, AblationStore
from spex.ablation.store import CHUNK_SUFFIX, TMP_PREFIX

HERE = Path(__file__).resolve().parent
WORKER = HERE / "ablation_worker.py"
REPO = Path(spex.__file__).resolve().parents[1]
N = 24
SEED = 21

pytestmark = pytest.mark.skipif(os.name != "posix", reason="SIGKILL semantics")


def start_worker(root: Path, start: int, stop: int, *, delay: float, chunk: int, max_batch: int,
                 compact_above: int = 256) -> subprocess.Popen[str]:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    args = [sys.executable, str(WORKER), str(root), str(N), str(start), str(stop), str(SEED), str(delay),
            str(chunk), str(max_batch), str(compact_above)]
    return subprocess.Popen(args, env=env, cwd=HERE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def chunk_names(directory: Path) -> list[str]:
    if not directory.is_dir():
        return []
    return [p.name for p in directory.iterdir() if p.name.endswith(CHUNK_SUFFIX)]


def test_killed_mid_run_loses_at_most_the_chunk_in_flight(tmp_path):
    total, chunk = 200, 10
    masks = unique_masks(N, 4096, SEED)[:total]
    fingerprint = CountingVF(N).fingerprint
    directory = AblationStore(tmp_path).path(fingerprint)
    proc = start_worker(tmp_path, 0, total, delay=0.02, chunk=chunk, max_batch=5)
    deadline = time.monotonic() + 60
    try:
        while len(chunk_names(directory)) < 3:  # let it write a few chunks, then kill it mid-chunk
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "the worker wrote no chunks"
            time.sleep(0.005)
        time.sleep(0.03)  # into the next batch
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait(timeout=30)
        proc.stdout.close()  # type: ignore[union-attr]
        proc.stderr.close()  # type: ignore[union-attr]
    assert proc.returncode == -signal.SIGKILL

    store = AblationStore(tmp_path)
    stored = store.count(fingerprint)
    assert 3 * chunk <= stored < total, "it was killed before finishing"
    assert stored % chunk == 0, "only whole chunks are visible"
    assert store.stats(fingerprint).corrupt_chunks == ()
    values, found = store.lookup(fingerprint, masks)
    np.testing.assert_array_equal(values[found], reference(masks[found]))

    rerun = CountingVF(N)
    engine = AblationEngine(store, progress=False)
    got = engine.values(rerun, masks)
    assert rerun.masks_computed == total - stored  # exactly the missing masks
    np.testing.assert_array_equal(got, reference(masks))  # = an uninterrupted run
    assert engine.last.from_store == stored
    leftovers = [p.name for p in directory.iterdir() if p.name.startswith(TMP_PREFIX)]
    assert len(leftovers) <= 1  # at most the temp file of the chunk in flight, which readers ignore


def test_concurrent_writers_of_one_fingerprint(tmp_path):
    """Four processes on overlapping mask ranges of one fingerprint, with compaction racing writes."""
    ranges = [(0, 300), (150, 450), (300, 600), (0, 600)]
    procs = [start_worker(tmp_path, a, b, delay=0.002, chunk=8, max_batch=4, compact_above=6) for a, b in ranges]
    outputs = []
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        outputs.append(json.loads(out.strip().splitlines()[-1]))
    assert all(o["ok"] for o in outputs)

    masks = unique_masks(N, 4096, SEED)[:600]
    store = AblationStore(tmp_path)
    fingerprint = CountingVF(N).fingerprint
    stats = store.stats(fingerprint)
    assert stats.count == 600 and stats.conflicts == 0 and stats.corrupt_chunks == ()
    values, found = store.lookup(fingerprint, masks)
    assert found.all()
    np.testing.assert_array_equal(values, reference(masks))
    # every mask was computed at least once, and the store never lost one
    assert sum(o["computed"] for o in outputs) >= 600
    rerun = CountingVF(N)
    AblationEngine(store, progress=False).values(rerun, masks)
    assert rerun.masks_computed == 0
