"""Faults and settings, round two (issue 16): cases 5, 7, 8, 9, 10, 11, 16, 20, 21, 27, 31.

* ``ROWS``: settings and stores a user gets wrong, through the real CLI in process (typer's CliRunner,
  as ``test_bad_input.py``): exit 2, exactly one line on stderr that names the setting and says ``fix:``,
  nothing on stdout, no model loaded, and nothing partial (no audit row, no MLflow run, no ablation).
* ``test_every_bad_spex_setting_*``: every numeric and boolean ``SPEX_*`` setting given a bad value.
* Fresh interpreters (Prefect not yet imported): a read-only HOME gives the one right line, with no
  Prefect warning before it.
* Real audit processes: Ctrl-C (SIGINT to the process group, as a terminal sends it), SIGTERM (to the
  process, as ``docker stop`` sends it) and ``kill -9``; after each ends, no process it started is left.
  Two audits at once on a fresh data dir; a relative ``SPEX_DATA_DIR``.

docs/reliability.md ("Faults and settings, round two") lists the same cases.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import pytest

from tests.reliability.conftest import (
    _DROP,
    DRIVER,
    REPO,
    free_port,
    stop_group,
    write_spec,
)
from tests.reliability.test_bad_input import _ablations, _records, spex_cli

# A folder no one may create files in, root included (chmod does not stop root; sysfs does).
READ_ONLY_HOME = Path("/sys/kernel")
RAW_AT_PASSWORD = "Hunter2@Zeta9"
SIGNAL_EXIT_TIMEOUT_S = 90  # a bound on a hang (the defect was ~146 s), not a measurement
CHILDREN_GONE_TIMEOUT_S = 30


@dataclass(frozen=True)
class Row:
    case: int
    name: str
    args: list[str]  # CLI arguments; "<spec>" is the spec file, "<file>" a plain file
    env: dict[str, str | None]  # changes to the environment; "<file>" / "<tmp>" replaced
    names: tuple[str, ...]  # what the one line must contain
    hidden: tuple[str, ...] = ()  # what it must not contain


AUDIT = ["audit", "<spec>", "--quiet"]
ROWS = [
    Row(5, "raw @ in a Postgres password (audit)", AUDIT,
        {"SPEX_DATABASE_URL": f"postgresql+psycopg://postgres:{RAW_AT_PASSWORD}@127.0.0.1:5432/spex"},
        ("SPEX_DATABASE_URL", "`%40`"), ("Hunter2", "Zeta9")),
    Row(5, "raw @ in a Postgres password (audits list --db)",
        ["audits", "list", "--db", f"postgresql://spex:{RAW_AT_PASSWORD}@db.internal/spex"], {},
        ("SPEX_DATABASE_URL", "`%40`"), ("Hunter2", "Zeta9")),
    Row(20, "port not a number in the DB URL", AUDIT,
        {"SPEX_DATABASE_URL": "postgresql+psycopg://postgres@127.0.0.1:54x2/spex"}, ("SPEX_DATABASE_URL", "port")),
    Row(21, "a plain file path as the DB URL", AUDIT, {"SPEX_DATABASE_URL": "<tmp>/meta.db"},
        ("SPEX_DATABASE_URL", "sqlite:////")),
    Row(7, "MLflow server at a closed port", AUDIT, {"MLFLOW_TRACKING_URI": "http://127.0.0.1:<closed>"},
        ("MLFLOW_TRACKING_URI", "does not answer")),
    Row(10, "MLflow store that cannot be set up", AUDIT, {"MLFLOW_TRACKING_URI": "sqlite:///<file>/mlflow.db"},
        ("MLFLOW_TRACKING_URI", "cannot be opened")),
    Row(11, "data dir is a file (audits list)", ["audits", "list"], {"SPEX_DATA_DIR": "<file>"}, ("SPEX_DATA_DIR",)),
    Row(11, "data dir is a file (report)", ["report", "abcd1234"], {"SPEX_DATA_DIR": "<file>"}, ("SPEX_DATA_DIR",)),
    Row(11, "data dir is a file (ui)", ["ui"], {"SPEX_DATA_DIR": "<file>"}, ("SPEX_DATA_DIR",)),
    Row(11, "data dir is a file (audit)", AUDIT, {"SPEX_DATA_DIR": "<file>"}, ("SPEX_DATA_DIR",)),
    Row(11, "read-only HOME (audits list)", ["audits", "list"], {"HOME": str(READ_ONLY_HOME), "SPEX_DATA_DIR": None},
        ("SPEX_DATA_DIR",)),
    Row(11, "read-only HOME (report)", ["report", "abcd1234"], {"HOME": str(READ_ONLY_HOME), "SPEX_DATA_DIR": None},
        ("SPEX_DATA_DIR",)),
    Row(31, "SPEX_MODEL_CONCURRENCY=two (audit)", AUDIT, {"SPEX_MODEL_CONCURRENCY": "two"},
        ("SPEX_MODEL_CONCURRENCY",)),
    Row(31, "SPEX_MODEL_CONCURRENCY=two (audits list)", ["audits", "list"], {"SPEX_MODEL_CONCURRENCY": "two"},
        ("SPEX_MODEL_CONCURRENCY",)),
]


@pytest.fixture(scope="module")
def env(rel_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """A data dir of its own (SQLite metadata DB, local MLflow store), a spec of the tiny model, a file."""
    root = tmp_path_factory.mktemp("round2")
    from spex.settings import scoped_environ

    (root / "a-file").write_text("not a folder\n")
    with scoped_environ({"SPEX_DATA_DIR": str(root / "data"), "MLFLOW_TRACKING_URI": None, "SPEX_DATABASE_URL": None,
                         "SPEX_LOCK_DIR": str(root / "locks")}):
        yield {"root": root, "data": root / "data", "spec": write_spec(root / "spec.yaml", rel_model),
               "file": root / "a-file"}


def _fill(text: str, env: dict[str, Any], closed_port: int) -> str:
    return (text.replace("<spec>", str(env["spec"])).replace("<file>", str(env["file"]))
            .replace("<tmp>", str(env["root"])).replace("<closed>", str(closed_port)))


def assert_one_line(exit_code: int, stdout: str, stderr: str, names: tuple[str, ...], hidden: tuple[str, ...] = ()) -> str:
    """The contract of a refused input: exit 2, one ``error: ... fix: ...`` line naming ``names``."""
    assert exit_code == 2, (exit_code, stdout, stderr)
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    line = lines[0]
    assert line.startswith("error: ") and "fix:" in line and "Traceback" not in stderr, line
    for name in names:
        assert name in line, (name, line)
    for secret in hidden:
        assert secret not in stdout + stderr, (secret, line)
    assert stdout.strip() == "", stdout
    return line


@pytest.mark.parametrize("row", ROWS, ids=[f"{r.case}-{r.name}" for r in ROWS])
def test_bad_setting_exits_2_with_one_line_before_the_model_loads(row: Row, env: dict[str, Any]) -> None:
    from spex.audit import runtime
    from spex.settings import scoped_environ

    closed = free_port()  # nothing listens there
    before = _records(env["data"]), _ablations(env["data"])
    loads = runtime.COUNTERS["model_loads"]
    changes = {k: (None if v is None else _fill(v, env, closed)) for k, v in row.env.items()}
    with scoped_environ(changes):
        result = spex_cli(*[_fill(a, env, closed) for a in row.args])
    assert_one_line(result.exit_code, result.stdout, result.stderr, row.names, row.hidden)
    assert runtime.COUNTERS["model_loads"] == loads  # refused before the model loads
    after_audits, after_runs, running = _records(env["data"])
    assert after_audits == before[0][0] == 0 and after_runs == before[0][1] and running == []
    assert _ablations(env["data"]) == before[1]


def _bad_values() -> list[tuple[str, str]]:
    """(variable, a bad value) for every numeric and boolean ``SPEX_*`` setting (new ones included)."""
    from spex.settings import PREFIX, Settings

    bad = {int: "two", float: "lots", bool: "maybe"}
    return [(PREFIX + name.upper(), bad[info.annotation]) for name, info in Settings.model_fields.items()
            if info.annotation in bad]


@pytest.mark.parametrize(("variable", "value"), _bad_values())
@pytest.mark.parametrize("command", [AUDIT, ["audits", "list"]], ids=["audit", "audits-list"])
def test_every_bad_spex_setting_is_refused_at_start_naming_the_variable(variable: str, value: str, command: list[str],
                                                                        env: dict[str, Any]) -> None:
    from spex.settings import scoped_environ

    with scoped_environ({variable: value}):
        result = spex_cli(*[_fill(a, env, 0) for a in command])
    line = assert_one_line(result.exit_code, result.stdout, result.stderr, (f"{variable}={value!r}",))
    assert "environment variable" in line
    assert _records(env["data"])[0] == 0


@pytest.mark.parametrize("url", [
    f"postgresql+psycopg://spex:{RAW_AT_PASSWORD}@db:5432/spex",
    f"postgresql://spex:{RAW_AT_PASSWORD}@db/spex?sslmode=require",
    "postgresql://spex:Hunter2@Zeta9:x/y@db/spex",
    "postgresql://spex:Hunter2/Zeta9@db:5432/spex",
    "postgresql://spex:Hunter2:Zeta9@db/spex",
    f"https://ci:{RAW_AT_PASSWORD}@mlflow.internal:5000",
])
def test_the_whole_password_is_masked_whatever_the_urls_shape(url: str) -> None:
    from spex.records.metadata.db import describe_url, mask_secrets

    for shown in (mask_secrets(f"cannot open {url}: refused"), describe_url(url)):
        assert "Hunter2" not in shown and "Zeta9" not in shown, shown
        assert "***@" in shown, shown


# ---------------------------------------------------------------------------------------------- fresh interpreters
def cli_process(args: list[str], env: dict[str, str | None], cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess:
    """``spex ARGS`` in a new interpreter (Prefect not imported yet), no Prefect API configured."""
    full = {k: v for k, v in os.environ.items() if k not in _DROP}
    full["PYTHONPATH"] = os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])
    for key, value in env.items():
        if value is None:
            full.pop(key, None)
        else:
            full[key] = value
    proc = subprocess.Popen([sys.executable, "-m", "flows.cli", *args], env=full, cwd=cwd, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    finally:
        stop_group(proc, grace=2)
    return subprocess.CompletedProcess(args, proc.returncode, out, err)


def test_read_only_home_audit_gives_one_line_and_no_prefect_warning(env: dict[str, Any]) -> None:
    """Case 27: no data dir set, HOME read-only: the data dir's line, and nothing of Prefect before it."""
    done = cli_process(["audit", str(env["spec"]), "--quiet"], {"HOME": str(READ_ONLY_HOME), "PREFECT_HOME": None},
                       env["root"])
    assert_one_line(done.returncode, done.stdout, done.stderr, ("SPEX_DATA_DIR",))
    assert "Prefect" not in done.stderr


def test_read_only_home_with_a_data_dir_names_prefect_home(env: dict[str, Any], tmp_path: Path) -> None:
    """Case 27: the data dir is fine but Prefect's home (under HOME) is not: named before Prefect starts."""
    done = cli_process(["audit", str(env["spec"]), "--quiet"],
                       {"HOME": str(READ_ONLY_HOME), "PREFECT_HOME": None, "SPEX_DATA_DIR": str(tmp_path / "data"),
                        "SPEX_LOCK_DIR": str(tmp_path / "locks")}, env["root"])
    assert_one_line(done.returncode, done.stdout, done.stderr, ("PREFECT_HOME",))
    assert "UserWarning" not in done.stderr


# ---------------------------------------------------------------------------------------------- real audit processes
class AuditProcess:
    """A real ``spex audit`` (the fault driver: progress events on stderr) with Prefect's API left to the
    CLI, its own data dir and Prefect home; :meth:`cleanup` kills whatever it started, however a test ends."""

    def __init__(self, spec: Path, root: Path) -> None:
        root.mkdir(parents=True, exist_ok=True)
        self.stderr_path = root / "stderr.txt"
        full = {k: v for k, v in os.environ.items() if k not in _DROP}
        full.update({"SPEX_DATA_DIR": str(root / "data"), "SPEX_LOCK_DIR": str(root / "locks"),
                     "PREFECT_HOME": str(root / "prefect"), "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1",
                     "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])})
        self.data = root / "data"
        self.seen: dict[int, psutil.Process] = {}
        with open(self.stderr_path, "wb") as err:
            self.proc = subprocess.Popen([sys.executable, str(DRIVER), "audit", str(spec), "--quiet"], env=full,
                                         cwd=root, stdout=subprocess.PIPE, stderr=err, start_new_session=True)

    def wait_for(self, needle: str, timeout: float = 300) -> None:
        """Until ``needle`` is on stderr (noting the audit's child processes meanwhile)."""
        deadline = time.monotonic() + timeout
        while needle not in self.stderr_path.read_text(errors="replace"):
            self.note_children()
            if self.proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"{needle!r} never came (rc={self.proc.poll()}):\n{self.stderr()[-4000:]}", pytrace=False)
            time.sleep(0.2)
        self.note_children()

    def note_children(self) -> None:
        try:
            for child in psutil.Process(self.proc.pid).children(recursive=True):
                self.seen.setdefault(child.pid, child)
        except psutil.NoSuchProcess:
            pass

    def end(self) -> int:
        try:
            self.proc.communicate(timeout=SIGNAL_EXIT_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            pytest.fail(f"the audit did not exit within {SIGNAL_EXIT_TIMEOUT_S}s of the signal:\n{self.stderr()[-4000:]}",
                        pytrace=False)
        return self.proc.returncode

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def lines(self) -> list[str]:
        """What the user sees on stderr (the driver's EVENT/ACTION lines left out)."""
        return [ln for ln in self.stderr().splitlines() if ln.strip() and not ln.startswith(("EVENT ", "ACTION "))]

    def left_behind(self) -> list[str]:
        """The processes it started that are still alive once it ended (zombies count as gone)."""
        alive = []
        _, running = psutil.wait_procs(list(self.seen.values()), timeout=CHILDREN_GONE_TIMEOUT_S)
        for p in running:
            try:
                if p.status() != psutil.STATUS_ZOMBIE:
                    alive.append(f"{p.pid} {' '.join(p.cmdline())[:200]}")
            except psutil.NoSuchProcess:
                pass
        return alive

    def cleanup(self) -> None:
        for p in self.seen.values():
            try:
                p.kill()
            except psutil.NoSuchProcess:
                pass
        stop_group(self.proc, grace=1)


@pytest.fixture
def audit_process(rel_model: Path, tmp_path: Path) -> Iterator[Callable[[], AuditProcess]]:
    started: list[AuditProcess] = []

    def start() -> AuditProcess:
        run = AuditProcess(write_spec(tmp_path / "spec.yaml", rel_model), tmp_path / f"run{len(started)}")
        started.append(run)
        return run

    try:
        yield start
    finally:
        for run in started:
            run.cleanup()


def _status_of_the_audit(data: Path) -> list[str]:
    from spex.records.metadata import MetadataStore

    with MetadataStore(f"sqlite:///{data / 'spex.db'}") as store:
        return [a.status for a in store.list_audits(limit=10)]


def _children_started(run: AuditProcess) -> list[str]:
    return [" ".join(p.cmdline()) for p in run.seen.values() if _alive(p)]


def _alive(p: psutil.Process) -> bool:
    try:
        return p.is_running()
    except psutil.NoSuchProcess:
        return False


@pytest.mark.parametrize(("sig", "to_group", "words"), [
    (signal.SIGINT, True, "error: interrupted"),
    (signal.SIGTERM, False, "error: terminated (SIGTERM)"),
], ids=["ctrl-c", "sigterm"])
def test_a_signal_ends_the_audit_with_one_line_and_leaves_no_process(sig: int, to_group: bool, words: str,
                                                                      audit_process: Callable[[], AuditProcess]) -> None:
    """Cases 8 and 9: while masks are measured, Ctrl-C (SIGINT to the terminal's process group) or
    SIGTERM (to the process alone): it exits in seconds with one line, the audit marked failed, and
    every process it started (Prefect's API server among them) gone."""
    run = audit_process()
    run.wait_for('"event": "masks"')
    assert any("flows.api_server" in c for c in _children_started(run)), _children_started(run)
    (os.killpg if to_group else os.kill)(run.proc.pid, sig)
    code = run.end()
    assert code == 2, (code, run.stderr()[-3000:])
    lines = run.lines()
    assert len(lines) == 1 and lines[0].startswith(words), lines
    assert run.left_behind() == []
    assert _status_of_the_audit(run.data) == ["failed"]


def test_kill_9_of_the_audit_leaves_no_process(audit_process: Callable[[], AuditProcess]) -> None:
    """Case 9: ``kill -9`` of the audit (no cleanup at all): its Prefect API server stops by itself."""
    run = audit_process()
    run.wait_for('"event": "masks"')
    assert any("flows.api_server" in c for c in _children_started(run)), _children_started(run)
    run.proc.kill()
    assert run.end() == -signal.SIGKILL
    assert run.left_behind() == []


def test_two_audits_at_once_on_a_fresh_data_dir(spex_start, spex_run, rel_model: Path, tmp_path: Path) -> None:
    """Case 10: the first-use set-up (metadata DB and MLflow store migrations) runs once, under a lock."""
    spec = write_spec(tmp_path / "spec.yaml", rel_model)
    data = tmp_path / "data"
    runs = [spex_start(["audit", str(spec), "--json"], data_dir=data) for _ in range(2)]
    results = [r.wait() for r in runs]
    for result in results:
        assert result.returncode == 0, str(result)
    assert sorted(_status_of_the_audit(data)) == ["succeeded", "succeeded"]
    again = spex_run(["audit", str(spec), "--json"], data_dir=data)  # and the stores stay usable
    assert again.returncode == 0, str(again)


def test_a_relative_data_dir_works_end_to_end(spex_run, rel_model: Path, tmp_path: Path) -> None:
    """Case 16: ``SPEX_DATA_DIR=./spex-data`` is the folder of that name in the working directory."""
    spec = write_spec(tmp_path / "spec.yaml", rel_model)
    run = spex_run(["audit", str(spec), "--json"], data_dir=tmp_path / "unused", env={"SPEX_DATA_DIR": "./spex-data"})
    assert run.returncode == 0, str(run)
    here = tmp_path / "spex-data"  # the run's working directory is tmp_path
    assert Path(run.json()["report"]["html"]).resolve().is_relative_to(here.resolve())
    assert (here / "mlflow.db").is_file() and (here / "spex.db").is_file()
    assert _status_of_the_audit(here) == ["succeeded"]
