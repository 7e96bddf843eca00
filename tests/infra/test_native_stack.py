"""The production stack as local processes (infra/stack.sh), end to end: an audit submitted THROUGH THE
PREFECT API to the ``spex-audit/audit`` deployment, run by the stack's worker, recorded in the stack's
Postgres metadata DB and its MLflow tracking server.

Real components only: the local Postgres (throwaway databases, dropped afterwards), ``mlflow server``,
``prefect server start``, ``prefect worker start``, ``prefect deploy`` of the repo's prefect.yaml, and a
tiny BERT classifier built from a config and saved with ``save_pretrained``. Postgres unreachable:
skipped locally, a failure where ``SPEX_REQUIRE_POSTGRES=1`` (CI).
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from tests.flows.flow_models import features_spec, tiny_bert

ROOT = Path(__file__).resolve().parents[2]
STACK = ROOT / "infra" / "stack.sh"

pytestmark = [pytest.mark.postgres, pytest.mark.slow, pytest.mark.timeout(900)]


@dataclass(frozen=True)
class Stack:
    """Where the started stack is, as a client sees it."""

    run_dir: Path
    env: dict[str, str]  # the environment stack.sh ran with (for `status` / `stop`)
    api_url: str  # PREFECT_API_URL
    tracking_uri: str  # MLFLOW_TRACKING_URI
    database_url: str  # SPEX_DATABASE_URL (the spex metadata DB)

    def log(self, name: str, lines: int = 60) -> str:
        """The last lines of a service's log (failure messages quote them)."""
        path = self.run_dir / "logs" / f"{name}.log"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else "(no log)"


def _stack_cli(command: str, env: dict[str, str], timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", str(STACK), command], env=env, capture_output=True, text=True, timeout=timeout,
                          cwd=ROOT, stdin=subprocess.DEVNULL)


def _read_env_file(path: Path) -> dict[str, str]:
    """``export KEY=value`` lines of the run dir's stack.env."""
    pairs = (line.removeprefix("export ").split("=", 1) for line in path.read_text().splitlines() if "=" in line)
    return {key: value for key, value in pairs}


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _drop_databases(server_url: str, names: list[str]) -> None:
    engine = sa.create_engine(server_url, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as connection:
            for name in names:
                connection.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        engine.dispose()


@pytest.fixture(scope="module")
def stack(postgres_database: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """The stack, started by ``infra/stack.sh start`` on throwaway databases of the test Postgres server
    (``postgres_database`` decides skip vs fail), stopped — and its databases dropped — even when a test fails."""
    url = make_url(postgres_database)
    server_url = url.set(database="postgres").render_as_string(hide_password=False)
    tag = uuid.uuid4().hex[:10]
    names = {"SPEX_STACK_DB_SPEX": f"stack_{tag}_spex", "SPEX_STACK_DB_MLFLOW": f"stack_{tag}_mlflow",
             "SPEX_STACK_DB_PREFECT": f"stack_{tag}_prefect"}
    run_dir = tmp_path_factory.mktemp("stack")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "MLFLOW_", "SPEX_"))}
    env.update(names)
    env.update({
        "SPEX_STACK_DIR": str(run_dir),
        "SPEX_STACK_PYTHON": sys.executable,
        "SPEX_STACK_PG_HOST": url.host or "127.0.0.1",
        "SPEX_STACK_PG_PORT": str(url.port or 5432),
        "SPEX_STACK_PG_USER": url.username or "postgres",
        "SPEX_STACK_THREADS": "1",
        "SPEX_STACK_TIMEOUT": "400",
        "DO_NOT_TRACK": "1",
        "MLFLOW_DISABLE_TELEMETRY": "true",
    })
    if url.password:
        env["PGPASSWORD"] = url.password  # libpq's way: never inside the URLs the stack writes
    try:
        started = _stack_cli("start", env, timeout=600)
        assert started.returncode == 0, f"stack.sh start failed:\n{started.stderr[-6000:]}"
        settings = _read_env_file(run_dir / "stack.env")
        yield Stack(run_dir, env, settings["PREFECT_API_URL"], settings["MLFLOW_TRACKING_URI"],
                    settings["SPEX_DATABASE_URL"])
    finally:
        groups = [int(f.read_text().split()[0]) for f in (run_dir / "pids").glob("*.pid")]
        stopped = _stack_cli("stop", env, timeout=180)
        _drop_databases(server_url, list(names.values()))
        assert stopped.returncode == 0, stopped.stderr
        assert not [g for g in groups if _group_alive(g)], "stack.sh stop left processes of the stack running"


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_bert(tmp_path_factory.mktemp("tiny-bert"), seed=5)


def test_start_fails_cleanly_when_postgres_is_unreachable(tmp_path: Path):
    """A start that cannot reach Postgres says so in one line, exits 1 and leaves nothing running."""
    import socket

    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "MLFLOW_", "SPEX_"))}
    env.update({"SPEX_STACK_DIR": str(tmp_path), "SPEX_STACK_PYTHON": sys.executable, "SPEX_STACK_PG_PORT": str(port)})
    started = _stack_cli("start", env, timeout=120)
    assert started.returncode == 1
    assert f"Postgres at postgres@127.0.0.1:{port} is unreachable" in started.stderr
    assert not list((tmp_path / "pids").glob("*.pid"))
    assert _stack_cli("status", env, timeout=60).returncode == 3  # nothing running
    assert _stack_cli("stop", env, timeout=60).returncode == 0  # stopping nothing is fine


def test_status_reports_every_service_up(stack: Stack):
    status = _stack_cli("status", stack.env, timeout=60)
    assert status.returncode == 0, status.stdout + status.stderr
    lines = dict(line.split(None, 1) for line in status.stdout.splitlines())
    assert set(lines) == {"mlflow", "prefect-server", "worker"}
    assert "healthy" in lines["mlflow"] and "healthy" in lines["prefect-server"] and "online" in lines["worker"]
    client_env = _stack_cli("env", stack.env, timeout=30).stdout
    assert f"export PREFECT_API_URL={stack.api_url}" in client_env
    assert f"export SPEX_DATABASE_URL={stack.database_url}" in client_env


def test_the_deployments_of_prefect_yaml_are_registered(stack: Stack):
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    async def read() -> dict[str, object]:
        async with get_client() as client:
            return {name: await client.read_deployment_by_name(name) for name in
                    ("spex-audit/audit", "spex-release-audit/release", "spex-audit/nightly-champion-audit")}

    import asyncio

    with temporary_settings(updates={PREFECT_API_URL: stack.api_url}):
        found = asyncio.run(read())
    for deployment in found.values():
        assert deployment.work_pool_name == "spex"
    nightly = found["spex-audit/nightly-champion-audit"]
    (schedule,) = nightly.schedules
    assert schedule.schedule.cron == "0 2 * * *" and schedule.active
    assert nightly.parameters["model"] == "models:/spex-demo-sentiment@champion"


def test_an_audit_submitted_through_the_prefect_api(stack: Stack, tiny_model: Path):
    from mlflow import MlflowClient
    from prefect.deployments import run_deployment
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from spex.records.metadata import MetadataStore

    # one short prompt: few features, so the budget covers every mask and the run is quick
    spec = features_spec(tiny_model, subjects=[{"id": "food", "prompt": "The food was not bad."}],
                         budget="auto", holdout=16, removal_r=1,
                         gates={"faithfulness_min": -1.0})
    with temporary_settings(updates={PREFECT_API_URL: stack.api_url}):
        flow_run = run_deployment("spex-audit/audit", parameters={"spec": spec}, timeout=600, poll_interval=2)
    assert flow_run.state is not None and flow_run.state.is_completed(), (
        f"flow run {flow_run.name} ended {flow_run.state}\n--- worker log ---\n{stack.log('worker')}")
    audit_id = flow_run.id.hex  # the audit flow records under its flow run's id

    # --- the metadata rows in the stack's Postgres
    with MetadataStore(stack.database_url) as store:
        record = store.get_audit(audit_id)
        assert record.status == "succeeded" and record.passed is True and record.kind == "audit"
        assert record.model.source_uri == str(tiny_model)
        (subject,) = record.subjects
        assert subject.subject.key == "food" and subject.validation is not None
        ranking = store.get_interactions(record.id, subject.subject.id, index="fbii")
        assert len(ranking) > 0 and list(ranking["rank"])[:3] == [1, 2, 3]
        run_id = record.mlflow_run_id
    assert run_id

    # --- the MLflow runs on the stack's tracking server (artifacts served by it)
    client = MlflowClient(stack.tracking_uri)
    parent = client.get_run(run_id)
    assert parent.info.status == "FINISHED" and parent.data.tags["spex.audit_id"] == audit_id
    assert parent.info.artifact_uri.startswith("mlflow-artifacts:")  # proxied by the server, not a local path
    children = client.search_runs([parent.info.experiment_id],
                                  filter_string=f"tags.`mlflow.parentRunId` = '{run_id}'")
    assert [c.data.tags["spex.subject"] for c in children] == ["food"]
    assert "heldout_r2" in children[0].data.metrics
    assert "ablation/train.parquet" in {a.path for a in client.list_artifacts(children[0].info.run_id, "ablation")}
    assert any((stack.run_dir / "mlartifacts").rglob("train.parquet"))  # stored in the stack's artifact folder
