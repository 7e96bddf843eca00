"""Fixtures of the tracking suite: a real ``mlflow server`` process backed by Postgres.

The server's backend store is its own fresh schema in the session's Postgres test database (the
metadata store under test gets another), artifacts are proxied (``--serve-artifacts``) into a tmp
folder. Without a reachable Postgres the server tests skip locally and fail in CI
(``SPEX_REQUIRE_POSTGRES=1``).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import postgres_testing as pg

SERVER_START_TIMEOUT_S = 180


@pytest.fixture
def metadata_url(postgres_database: str) -> Iterator[str]:
    """A fresh schema for the spex metadata store."""
    with pg.fresh_schema(postgres_database, prefix="store") as url:
        yield url


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


@pytest.fixture(scope="session")
def mlflow_server(postgres_database: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """URL of a running ``mlflow server`` (stopped, and its schema dropped, after the session)."""
    root = tmp_path_factory.mktemp("mlflow-server")
    artifacts = root / "artifacts"
    log_path = root / "server.log"
    with pg.fresh_schema(postgres_database, prefix="mlflow") as backend_uri:
        port = _free_port()
        url = f"http://127.0.0.1:{port}"
        env = {
            **os.environ,
            "MLFLOW_DISABLE_TELEMETRY": "true",
            "DO_NOT_TRACK": "1",
            # No background job runner (a tree of huey consumers for GenAI jobs spex never submits):
            # it doubles start-up time and takes ~15 s to shut down gracefully.
            "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
        }
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(
                [
                    sys.executable, "-m", "mlflow", "server",
                    "--backend-store-uri", backend_uri,
                    "--serve-artifacts", "--artifacts-destination", str(artifacts),
                    "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=root,
                env=env,
                start_new_session=True,  # its own process group: stopped as a whole below
            )
        try:
            deadline = time.monotonic() + SERVER_START_TIMEOUT_S
            while not _healthy(url):
                if proc.poll() is not None or time.monotonic() > deadline:
                    tail = Path(log_path).read_text(errors="replace")[-4000:]
                    pytest.fail(f"mlflow server did not come up (rc={proc.poll()}):\n{tail}", pytrace=False)
                time.sleep(0.5)
            yield url
        finally:
            _stop_group(proc)


def _stop_group(proc: subprocess.Popen) -> None:
    """Stop the server and every process it started (its own process group): TERM, then KILL."""
    for sig, grace in ((signal.SIGTERM, 5), (signal.SIGKILL, 15)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            continue
        try:  # the leader is gone; are any of its children left?
            os.killpg(proc.pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.5)


@pytest.fixture
def global_tracking_uri():
    """Point MLflow's process-global tracking URI somewhere for the duration of a test (model
    loading by ``models:/`` URI reads it), and restore it afterwards."""
    import mlflow

    previous = mlflow.get_tracking_uri() if os.environ.get("MLFLOW_TRACKING_URI") else None
    yield mlflow.set_tracking_uri
    mlflow.set_tracking_uri(previous)
