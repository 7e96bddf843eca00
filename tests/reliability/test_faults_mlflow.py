"""The MLflow tracking server as a fault: killed in the middle of an audit.

* Down for a while (killed, restarted at once; it takes seconds to come back): the MLflow client's own
  HTTP retries carry the audit over the gap; it completes with everything logged.
* Down for longer than every retry (the client allowed no HTTP retries here, to keep the test short):
  the record task's retries run out, the audit stops with exit 2 and one line naming MLflow, the DB says
  ``failed``; once the server is back the rerun completes without a model call and logs every ablation
  set and proxy. Nothing is dropped silently: a subject is either fully recorded or the audit failed.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.reliability.conftest import free_port, write_spec
from tests.reliability.fault_checks import rankings


@pytest.fixture
def mlflow_server(tmp_path: Path) -> Any:
    """A private ``mlflow server`` (SQLite backend, proxied artifacts) with start / kill command lines
    that can also run from inside an audit process (the driver's actions)."""
    import subprocess

    from tests.reliability.conftest import wait_http

    root = tmp_path / "mlflow-server"
    root.mkdir()
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server = (f"{sys.executable} -m mlflow server --backend-store-uri sqlite:///{root}/mlflow.db --serve-artifacts "
              f"--artifacts-destination {root}/artifacts --host 127.0.0.1 --port {port} --workers 1")
    env = "MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false MLFLOW_DISABLE_TELEMETRY=true DO_NOT_TRACK=1"
    # `VAR=.. setsid server &` as one simple command: $! is the server's pid, and its own process group
    start = ["sh", "-c", f"cd {root}; {env} setsid {server} >> {root}/server.log 2>&1 < /dev/null & "
                         f"echo $! > {root}/pid; echo $! >> {root}/pids"]
    kill = [sys.executable, "-c", f"import os, signal; os.killpg(int(open('{root}/pid').read()), signal.SIGKILL)"]

    class Server:
        def __init__(self) -> None:
            self.url, self.start, self.kill, self.root = url, start, kill, root

        def up(self) -> None:
            subprocess.run(start, check=True)

        def wait(self) -> None:
            proc = subprocess.Popen(["sleep", "600"])  # wait_http wants a process to watch: the server is not ours
            try:
                wait_http(f"{url}/health", proc, root / "server.log")
            finally:
                proc.kill()
                proc.wait()

    s = Server()
    s.up()
    s.wait()
    yield s
    import signal

    for pid in (root / "pids").read_text().split():  # every server this test started, dead or alive
        try:
            os.killpg(int(pid), signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


def _recorded_everything(tracking: str, store_url: str, audit_id: str, result: dict[str, Any]) -> None:
    """The audit's MLflow runs carry every ablation set and proxy the DB points at."""
    from mlflow import MlflowClient

    from spex.records.metadata import MetadataStore

    client = MlflowClient(tracking)
    with MetadataStore(store_url) as store:
        record = store.get_audit(audit_id)
    assert record.status == "succeeded"
    assert client.get_run(record.mlflow_run_id).info.status == "FINISHED"
    for s in record.subjects:
        run = client.get_run(s.mlflow_run_id)
        assert run.info.status == "FINISHED" and run.data.tags["mlflow.parentRunId"] == record.mlflow_run_id
        artifacts = {a.path for a in client.list_artifacts(s.mlflow_run_id, "ablation")}
        assert artifacts == {"ablation/train.parquet", "ablation/holdout.parquet"}
        assert {a.role for a in s.ablation_sets} == {"train", "holdout"}
        assert [o.model_id for o in run.outputs.model_outputs] == [s.proxies[0].mlflow_model_uri.removeprefix("models:/")]
        assert s.interaction_counts["fbii"] == len(result["subjects"][s.subject.key]["top"])


def test_mlflow_server_down_mid_audit(spex_run, rel_model, mlflow_server, reference_audit, tmp_path):
    spec = write_spec(tmp_path / "spec.yaml", rel_model)
    data = tmp_path / "data"
    db = f"sqlite:///{tmp_path / 'meta.db'}"
    args = ["audit", str(spec), "--json", "--top", "50"]

    # 1. killed after subject 1's proxy fit and restarted at once: the client's retries bridge the gap
    actions = [{"event": "stage_done", "stage": "fit", "subject": "food", "run": mlflow_server.kill,
                "after": 0.0, "then": mlflow_server.start}]
    first = spex_run(args, data_dir=data, db=db, tracking_uri=mlflow_server.url,
                     env={"FAULT_DRIVER_ACTIONS": json.dumps(actions)})
    assert first.returncode == 0, str(first)
    log = first.stderr.splitlines()
    killed = next(i for i, line in enumerate(log) if line.startswith("ACTION run"))
    assert log[killed + 1] == "ACTION done rc=0", log[killed:killed + 3]
    recorded = next(i for i, line in enumerate(log)
                    if line.startswith("EVENT") and '"record"' in line and '"food"' in line)
    assert killed < recorded
    result = first.json()
    assert rankings(result) == rankings(reference_audit["result"])
    _recorded_everything(mlflow_server.url, db, result["audit_id"], result)

    # 2. killed once subject 1 is recorded and left down: the audit stops cleanly ...
    mlflow_server.wait()
    actions = [{"event": "subject_done", "subject": "food", "run": mlflow_server.kill}]
    second = spex_run(args, data_dir=data, db=db, tracking_uri=mlflow_server.url,
                      env={"FAULT_DRIVER_ACTIONS": json.dumps(actions), "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0"})
    assert second.returncode == 2, str(second)
    line = [x for x in second.stderr.splitlines() if x.startswith("error: ")]
    assert len(line) == 1 and "MLflow" in line[0] and "fix:" in line[0], second.stderr[-3000:]
    from spex.records.metadata import MetadataStore

    with MetadataStore(db) as store:
        failed = [a for a in store.list_audits() if a.status == "failed"]
        assert len(failed) == 1 and failed[0].error
        record = store.get_audit(failed[0].id)
        subjects = {s.subject.key: s for s in record.subjects}
        # what was recorded is whole (subject 1); subject 2 has no partial proxy claiming to be logged
        assert len(subjects["food"].proxies) == 1
        assert "movie" not in subjects or not subjects["movie"].proxies

    # ... and once the server is back, the rerun completes from the ablation store alone
    mlflow_server.up()
    mlflow_server.wait()
    third = spex_run(args, data_dir=data, db=db, tracking_uri=mlflow_server.url)
    assert third.returncode == 0, str(third)
    result = third.json()
    assert result["model_calls"]["masks_computed"] == 0
    assert rankings(result) == rankings(reference_audit["result"])
    _recorded_everything(mlflow_server.url, db, result["audit_id"], result)
    assert (mlflow_server.root / "artifacts").is_dir()  # the artifacts went through the server
