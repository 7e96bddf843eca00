"""Fixtures of the reliability suite: real processes, real services, nothing mocked.

* ``rel_model``: a tiny real BERT classifier saved with ``save_pretrained`` (loaded by spex's real code).
* ``prefect_api``: one ``prefect server`` process for the session (its own PREFECT_HOME in a tmp dir);
  every audit subprocess talks to it instead of starting Prefect's ephemeral server (~10 s each, and an
  orphan when the audit is killed with SIGKILL).
* ``spex_run`` / ``spex_start``: run the real CLI (``tests/reliability/fault_driver.py`` → ``flows.cli``) in a
  subprocess with its own process group (so a killed run's children are cleaned up too), a given data
  dir, metadata DB, tracking URI and extra environment (e.g. ``SPEX_FAULT_KILL_AT``).
* ``pg_schema``: a fresh schema in the session's Postgres test database (``tests/conftest.py``).
"""

from __future__ import annotations

import json
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests import postgres_testing as pg
from tests.flows.flow_models import features_spec

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
DRIVER = HERE / "fault_driver.py"
SERVER_START_TIMEOUT_S = 180
AUDIT_TIMEOUT_S = 300

# The environment of every audit subprocess starts from ours minus what would point it elsewhere.
_DROP = ("SPEX_DATABASE_URL", "MLFLOW_TRACKING_URI", "PREFECT_API_URL", "SPEX_FAULT_KILL_AT", "SPEX_DATA_DIR",
         "PREFECT_LOCAL_STORAGE_PATH", "PREFECT_RESULTS_LOCAL_STORAGE_PATH", "FAULT_DRIVER_ACTIONS")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stop_group(proc: subprocess.Popen, grace: float = 10) -> None:
    """Stop a process started with ``start_new_session`` and everything it started: TERM, then KILL."""
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 15)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            break
        try:
            proc.wait(timeout=wait)
            break
        except subprocess.TimeoutExpired:
            continue
    try:  # the leader may be gone while a child lives on (e.g. a server it started)
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def wait_http(url: str, proc: subprocess.Popen, log: Path, timeout: float = SERVER_START_TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            tail = log.read_text(errors="replace")[-3000:] if log.exists() else ""
            pytest.fail(f"{url} did not come up (rc={proc.poll()}):\n{tail}", pytrace=False)
        time.sleep(0.3)


@pytest.fixture(scope="session")
def rel_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.flows.flow_models import tiny_bert

    return tiny_bert(tmp_path_factory.mktemp("rel-bert"), seed=2)


@pytest.fixture(scope="session")
def prefect_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """URL of a Prefect API server shared by every audit subprocess of the session."""
    home = tmp_path_factory.mktemp("prefect-home")
    port = free_port()
    log = home / "server.log"
    env = {**os.environ, "PREFECT_HOME": str(home), "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
           "PREFECT_UI_ENABLED": "false", "DO_NOT_TRACK": "1"}
    env.pop("PREFECT_API_URL", None)
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port",
                                 str(port), "--no-services", "--no-ui"],
                                stdout=out, stderr=subprocess.STDOUT, env=env, cwd=home, start_new_session=True)
    try:
        wait_http(f"http://127.0.0.1:{port}/api/health", proc, log)
        yield f"http://127.0.0.1:{port}/api"
    finally:
        stop_group(proc)


@dataclass
class Run:
    """What one CLI subprocess did."""

    args: list[str]
    returncode: int
    stdout: str
    stderr: str
    seconds: float

    @property
    def killed(self) -> bool:
        return self.returncode == -signal.SIGKILL

    def json(self) -> dict[str, Any]:
        return json.loads(self.stdout)

    def __str__(self) -> str:
        return (f"spex {' '.join(self.args)} -> rc={self.returncode} in {self.seconds:.1f}s\n"
                f"--- stdout (tail)\n{self.stdout[-2000:]}\n--- stderr (tail)\n{self.stderr[-4000:]}")


def write_spec(path: Path, model: Path | str, **overrides: Any) -> Path:
    """The flow suite's tiny two-subject features-lens spec (seeded; small batches: many kill points)."""
    spec = {**features_spec(model, seed=3, batch={"max_batch": 8, "chunk_size": 64}), **overrides}
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


class ForkServer:
    """Client of ``fault_driver.py --serve``: starts audits as forked processes (see the driver)."""

    def __init__(self, prefect_api: str, home: Path) -> None:
        env = {k: v for k, v in os.environ.items() if k not in _DROP}
        env.update({
            "PREFECT_API_URL": prefect_api, "PREFECT_HOME": str(home),
            "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
            "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false",
            "DO_NOT_TRACK": "1", "MLFLOW_DISABLE_TELEMETRY": "true", "PYTHONUNBUFFERED": "1",
        })
        self.log = home / "forkserver.log"
        self.proc = subprocess.Popen([sys.executable, str(DRIVER), "--serve"], env=env, cwd=home, text=True,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=open(self.log, "wb"),
                                     start_new_session=True)
        self.lock = threading.Lock()
        self.replies: dict[str, queue.Queue] = {}
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.ready: queue.Queue = queue.Queue()
        self.reader.start()
        try:
            self.ready.get(timeout=SERVER_START_TIMEOUT_S)
        except queue.Empty:
            pytest.fail(f"the fork server did not start:\n{self.log.read_text(errors='replace')[-3000:]}", pytrace=False)
        self.count = 0

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            message = json.loads(line)
            if message.get("ready"):
                self.ready.put(message)
                continue
            with self.lock:
                box = self.replies.setdefault(message["id"], queue.Queue())
            box.put(message)

    def _reply(self, ident: str, timeout: float) -> dict[str, Any]:
        with self.lock:
            box = self.replies.setdefault(ident, queue.Queue())
        return box.get(timeout=timeout)

    def start(self, args: list[str], env: dict[str, str | None], cwd: Path) -> "Pending":
        with self.lock:
            self.count += 1
            ident = f"run-{self.count}"
        out, err = cwd / f".{ident}.out", cwd / f".{ident}.err"
        request = {"id": ident, "args": args, "env": env, "cwd": str(cwd), "stdout": str(out), "stderr": str(err)}
        assert self.proc.stdin is not None
        with self.lock:
            self.proc.stdin.write(json.dumps(request) + "\n")
            self.proc.stdin.flush()
        pid = self._reply(ident, 60)["pid"]
        return Pending(self, ident, pid, list(args), out, err, time.monotonic())

    def close(self) -> None:
        if self.proc.stdin:
            self.proc.stdin.close()
        stop_group(self.proc, grace=5)


@dataclass
class Pending:
    """An audit process started by the fork server."""

    server: ForkServer
    ident: str
    pid: int
    args: list[str]
    stdout: Path
    stderr: Path
    started: float

    def wait(self, timeout: float = AUDIT_TIMEOUT_S) -> Run:
        try:
            code = self.server._reply(self.ident, timeout)["returncode"]
        except queue.Empty:
            try:
                os.killpg(self.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            pytest.fail(f"spex {' '.join(self.args)} ran past {timeout}s\n"
                        f"{self.stderr.read_text(errors='replace')[-4000:]}", pytrace=False)
        try:  # anything the run left behind in its process group
            os.killpg(self.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        return Run(self.args, code, self.stdout.read_text(errors="replace"), self.stderr.read_text(errors="replace"),
                   time.monotonic() - self.started)


def spex_env(data_dir: Path, locks: Path, db: str | None = None, tracking_uri: str | None = None,
             env: dict[str, str] | None = None) -> dict[str, str | None]:
    """The environment of one audit process: its data dir, DB, tracking URI, model-slot folder."""
    full: dict[str, str | None] = {k: None for k in _DROP}
    full.update({"SPEX_DATA_DIR": str(data_dir), "SPEX_LOCK_DIR": str(locks), "SPEX_DATABASE_URL": db,
                 "MLFLOW_TRACKING_URI": tracking_uri})
    full.update(env or {})
    return full


@pytest.fixture(scope="session")
def forkserver(prefect_api: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ForkServer]:
    server = ForkServer(prefect_api, tmp_path_factory.mktemp("forkserver"))
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def spex_start(forkserver: ForkServer, tmp_path: Path) -> Callable[..., Pending]:
    """``spex_start(args, data_dir=, db=, tracking_uri=, env=)``: the real CLI in a new process (this
    session's Prefect API, this test's model-slot folder); ``.wait()`` gives its :class:`Run`."""

    def start(args: list[str], *, data_dir: Path, **kwargs: Any) -> Pending:
        data_dir.mkdir(parents=True, exist_ok=True)
        return forkserver.start(args, spex_env(data_dir, tmp_path / "locks", **kwargs), data_dir.parent)

    return start


def fresh_process(args: list[str], env: dict[str, str | None], cwd: Path, prefect_api: str,
                  timeout: float = AUDIT_TIMEOUT_S) -> Run:
    """The CLI in a new interpreter (not forked: its own imports, its own hash seed)."""
    full = {k: v for k, v in os.environ.items() if k not in _DROP}
    full.update({"PREFECT_API_URL": prefect_api, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
                 "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
                 "TOKENIZERS_PARALLELISM": "false", "PYTHONUNBUFFERED": "1"})
    for key, value in env.items():
        if value is None:
            full.pop(key, None)
        else:
            full[key] = value
    started = time.monotonic()
    proc = subprocess.Popen([sys.executable, str(DRIVER), *args], env=full, cwd=cwd, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        stop_group(proc, grace=2)
        out, err = proc.communicate()
        pytest.fail(f"spex {' '.join(args)} ran past {timeout}s\n{err[-4000:]}", pytrace=False)
    finally:
        stop_group(proc, grace=2)
    return Run(list(args), proc.returncode, out, err, time.monotonic() - started)


@pytest.fixture
def spex_run(spex_start: Callable[..., Pending], prefect_api: str, tmp_path: Path) -> Callable[..., Run]:
    """``spex_run(args, data_dir=, ...)``: :func:`spex_start` and wait (``fresh=True``: in a new
    interpreter instead of a fork); never raises on a non-zero exit (the tests look at the code)."""

    def run(args: list[str], *, timeout: float = AUDIT_TIMEOUT_S, fresh: bool = False, **kwargs: Any) -> Run:
        if fresh:
            data_dir = kwargs.pop("data_dir")
            data_dir.mkdir(parents=True, exist_ok=True)
            return fresh_process(args, spex_env(data_dir, tmp_path / "locks", **kwargs), data_dir.parent, prefect_api,
                                 timeout)
        return spex_start(args, **kwargs).wait(timeout)

    return run


@pytest.fixture(scope="session")
def reference_audit(rel_model: Path, forkserver: ForkServer, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One uninterrupted audit of the fault spec (SQLite metadata, local MLflow store): what every
    interrupted run must end up identical to."""
    root = tmp_path_factory.mktemp("reference")
    spec = write_spec(root / "spec.yaml", rel_model)
    (root / "data").mkdir()
    run = forkserver.start(["audit", str(spec), "--json", "--top", "50"], spex_env(root / "data", root / "locks"),
                           root).wait()
    assert run.returncode == 0, str(run)
    return {"result": run.json(), "data": root / "data", "run": run}


@pytest.fixture
def pg_schema(postgres_database: str) -> Iterator[str]:
    """A fresh schema in the session's Postgres test database (the metadata store of one test)."""
    with pg.fresh_schema(postgres_database, prefix="rel") as url:
        yield url
