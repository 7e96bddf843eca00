"""Resources as faults: the accelerator out of memory above some batch size, and a data dir that cannot
be written (read-only) or is full.

* Out of memory: the tiny model's ``forward`` raises ``torch.OutOfMemoryError`` for batches above 4
  masks (the driver's ``FAULT_DRIVER_OOM_ABOVE``: a simulated device, spex's code untouched). The audit
  halves its batches and completes through the whole flow, with exactly the values and interactions of
  the run that never ran out of memory.
* Data dir: a real filesystem that is read-only, or full (a small tmpfs filled to the last byte): the
  audit stops with one line and exit 2 before a model is loaded, let alone called.
"""

from __future__ import annotations

import contextlib
import errno
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from tests.reliability.conftest import write_spec
from tests.reliability.fault_checks import rankings, store_contents, store_health
from tests.tolerances import assert_close


def test_out_of_memory_above_a_batch_size(spex_run, rel_model, reference_audit, tmp_path):
    spec = write_spec(tmp_path / "spec.yaml", rel_model)  # max_batch 8
    data = tmp_path / "data"
    run = spex_run(["audit", str(spec), "--json", "--top", "50"], data_dir=data,
                   env={"FAULT_DRIVER_OOM_ABOVE": "4"})
    assert run.returncode == 0, str(run)
    ooms = [line for line in run.stderr.splitlines() if line.startswith("OOM ")]
    assert ooms and all(int(line.split("batch=")[1]) > 4 for line in ooms)
    result = run.json()
    assert result["model_calls"]["masks_computed"] == reference_audit["result"]["model_calls"]["masks_computed"]
    # The same values and interactions, to float32 rounding: a float32 model's output moves in the last
    # bits with the batch it ran in (padding length, kernel blocking), and these ran 4 rows at a time
    # instead of 8. (With the same batch settings values are bit-identical: see test_faults_determinism.)
    mine, theirs = store_contents(data / "ablations"), store_contents(reference_audit["data"] / "ablations")
    assert sorted(mine) == sorted(theirs)
    for fp in theirs:
        np.testing.assert_array_equal(mine[fp][0], theirs[fp][0])
        assert_close(mine[fp][1], theirs[fp][1])
    got, want = rankings(result), rankings(reference_audit["result"])
    for key in want:
        assert [m for m, _, _ in got[key][:5]] == [m for m, _, _ in want[key][:5]]
        np.testing.assert_allclose([v for _, v, _ in got[key]], [v for _, v, _ in want[key]], rtol=1e-4, atol=1e-5)
    store_health(data / "ablations")


@contextlib.contextmanager
def tmpfs(path: Path, options: str) -> Iterator[bool]:
    """Mount a tmpfs at ``path`` (True), or yield False where this machine does not allow mounting."""
    path.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], capture_output=True)
    try:
        yield mounted.returncode == 0
    finally:
        if mounted.returncode == 0:
            subprocess.run(["umount", "-l", str(path)], capture_output=True)


def spex_cli(*args: str):
    from typer.testing import CliRunner

    from flows.cli import QUIET_ENV, app

    return CliRunner().invoke(app, list(args), env={k: os.environ.get(k) for k in QUIET_ENV})


def _expect_clean_stop(spec: Path, data: Path, monkeypatch: pytest.MonkeyPatch, reason: str) -> str:
    from spex.audit import runtime

    monkeypatch.setenv("SPEX_DATA_DIR", str(data))
    for key in ("SPEX_DATABASE_URL", "MLFLOW_TRACKING_URI", "SPEX_FAULT_KILL_AT"):
        monkeypatch.delenv(key, raising=False)
    loads = runtime.COUNTERS["model_loads"]
    result = spex_cli("audit", str(spec))
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: the data dir "), result.stderr
    assert reason in lines[0] and "fix:" in lines[0], lines[0]
    assert runtime.COUNTERS["model_loads"] == loads
    return lines[0]


def test_data_dir_read_only(rel_model, tmp_path, monkeypatch):
    spec = write_spec(tmp_path / "spec.yaml", rel_model)
    data = tmp_path / "ro"
    with tmpfs(data, "ro,size=1m") as mounted:
        if not mounted:  # no mount allowed here: as a non-root user, file modes do the same
            assert os.geteuid() != 0, "root without mount: cannot make a read-only data dir"
            data.chmod(0o500)
        _expect_clean_stop(spec, data, monkeypatch, "Read-only file system" if mounted else "Permission denied")
        assert list(data.iterdir()) == []


def test_data_dir_full(rel_model, tmp_path, monkeypatch):
    spec = write_spec(tmp_path / "spec.yaml", rel_model)
    data = tmp_path / "full"
    with tmpfs(data, "size=512k") as mounted:
        if mounted:
            fd = os.open(data / "filler", os.O_WRONLY | os.O_CREAT, 0o644)
            try:  # fill it to the last page
                with contextlib.suppress(OSError):
                    while True:
                        os.write(fd, b"x" * 4096)
            finally:
                os.close(fd)
            with pytest.raises(OSError) as full:
                (data / "one-more").write_bytes(b"x" * 8192)
            assert full.value.errno == errno.ENOSPC
            _expect_clean_stop(spec, data, monkeypatch, "No space left on device")
        else:  # no mount allowed: the free-space floor stands in for a full disk
            monkeypatch.setenv("SPEX_MIN_FREE_MB", str(10**9))
            _expect_clean_stop(spec, data, monkeypatch, "MB free")
        assert not (data / "ablations").exists() and not (data / "spex.db").exists()
