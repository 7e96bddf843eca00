"""The metadata DB as a fault: Postgres unreachable when an audit starts (one line, exit 2, no model
call), and Postgres restarted in the middle of an audit (the writes wait and retry; nothing is lost).

The restart is of a private PostgreSQL instance this module starts (``initdb`` + ``pg_ctl`` on a free
port, in a temp dir, as the ``postgres`` user when run as root) — never the machine's shared server.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.reliability.conftest import free_port, write_spec
from tests.reliability.fault_checks import rankings, store_health


@pytest.fixture(scope="module")
def private_postgres() -> Iterator[dict[str, Any]]:
    """A PostgreSQL server of our own: ``url``, and the ``start`` / ``stop`` command lines."""
    from tests import postgres_testing as pg

    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl")) or ([shutil.which("pg_ctl")] if shutil.which("pg_ctl") else [])
    if not found:
        message = "no PostgreSQL server binaries (initdb, pg_ctl) to run a private instance"
        if pg.postgres_required():
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    bindir = Path(found[-1]).parent
    as_user: list[str] = []
    root = Path(tempfile.mkdtemp(prefix="spex-pg-"))
    if os.geteuid() == 0:  # initdb refuses to run as root
        as_user = ["runuser", "-u", "postgres", "--"]
        shutil.chown(root, "postgres", "postgres")
    data, port = root / "data", free_port()
    subprocess.run([*as_user, str(bindir / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust", "--no-sync",
                    "-E", "UTF8"], check=True, capture_output=True)
    ctl = [*as_user, str(bindir / "pg_ctl"), "-D", str(data), "-l", str(root / "server.log"), "-w", "-t", "60"]
    start = [*ctl, "-o", f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off", "start"]
    stop = [*ctl, "-m", "fast", "stop"]
    subprocess.run(start, check=True, capture_output=True)
    try:
        yield {"url": f"postgresql+psycopg://postgres@127.0.0.1:{port}/postgres", "start": start, "stop": stop,
               "port": port}
    finally:
        subprocess.run(stop, capture_output=True)
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def cli_data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("SPEX_DATA_DIR", str(tmp_path / "data"))
    for key in ("SPEX_DATABASE_URL", "MLFLOW_TRACKING_URI", "SPEX_FAULT_KILL_AT"):
        monkeypatch.delenv(key, raising=False)
    return tmp_path / "data"


def spex_cli(*args: str):
    """The CLI in this process (a preflight failure never starts Prefect or loads a model)."""
    from typer.testing import CliRunner

    from flows.cli import QUIET_ENV, app

    return CliRunner().invoke(app, list(args), env={k: os.environ.get(k) for k in QUIET_ENV})


def test_postgres_unreachable_at_start(cli_data_dir, rel_model, tmp_path):
    from spex.audit import runtime

    spec = write_spec(tmp_path / "spec.yaml", rel_model)
    down = f"postgresql+psycopg://spex:secret@127.0.0.1:{free_port()}/spex"  # nothing listens there
    loads = runtime.COUNTERS["model_loads"]
    result = spex_cli("audit", str(spec), "--db", down)
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "metadata DB" in lines[0] and "fix:" in lines[0] and "secret" not in lines[0], lines[0]
    assert runtime.COUNTERS["model_loads"] == loads  # no model loaded, let alone called
    assert not (cli_data_dir / "ablations").exists() and not (cli_data_dir / "mlflow.db").exists()


def test_store_waits_for_a_restarted_postgres(private_postgres):
    """A write issued while Postgres is down waits for it (bounded back-off) and lands once."""
    from spex.records.metadata import MetadataStore, ModelRef

    with MetadataStore(private_postgres["url"]) as store:
        first = store.record_model_version(ModelRef("m", "r1"))  # a pooled connection, soon stale
        subprocess.run(private_postgres["stop"], check=True, capture_output=True)
        restart = threading.Timer(2.0, subprocess.run, args=(private_postgres["start"],),
                                  kwargs={"check": True, "capture_output": True})
        restart.start()
        try:
            second = store.record_model_version(ModelRef("m", "r2"))  # issued while the server is down
            again = store.record_model_version(ModelRef("m", "r1"))
        finally:
            restart.join()
        assert again == first and second != first
        assert store.counts()["model_versions"] == 2


@pytest.mark.postgres
def test_postgres_restarted_mid_audit(spex_run, rel_model, private_postgres, reference_audit, tmp_path):
    """Postgres goes down after subject 2's proxy fit (subject 1 recorded, subject 2 not yet) and comes
    back 4 s later: the audit waits, completes, and records exactly what an undisturbed run records."""
    import json

    from spex.records.metadata import MetadataStore

    spec = write_spec(tmp_path / "spec.yaml", rel_model)
    actions = [{"event": "stage_done", "stage": "fit", "subject": "movie", "run": private_postgres["stop"],
                "after": 4.0, "then": private_postgres["start"]}]
    run = spex_run(["audit", str(spec), "--json", "--top", "50"], data_dir=tmp_path / "data",
                   db=private_postgres["url"], env={"FAULT_DRIVER_ACTIONS": json.dumps(actions)})
    assert run.returncode == 0, str(run)
    log = run.stderr.splitlines()
    stopped = next(i for i, line in enumerate(log) if line.startswith("ACTION run"))
    restarted = next(i for i, line in enumerate(log) if line.startswith("ACTION then"))
    recorded = next(i for i, line in enumerate(log)
                    if line.startswith("EVENT") and '"stage_done"' in line and '"record"' in line and '"movie"' in line)
    assert stopped < restarted < recorded, "subject 2 was recorded only once Postgres was back"
    result = run.json()
    assert rankings(result) == rankings(reference_audit["result"])
    store_health(tmp_path / "data" / "ablations")
    with MetadataStore(private_postgres["url"]) as store:
        record = store.get_audit(result["audit_id"])
        assert record.status == "succeeded" and record.error is None
        for s in record.subjects:
            assert {a.role for a in s.ablation_sets} == {"train", "holdout"} and len(s.proxies) == 1
            assert s.interaction_counts["fbii"] == len(result["subjects"][s.subject.key]["top"])
        assert store.counts()["audits"] == 1
