"""The Prefect API of one ``spex audit`` / ``spex release`` run: a server that cannot outlive the run.

Why spex starts it instead of Prefect's ephemeral mode (issue 16, cases 8-10): Prefect starts its
temporary server as a plain child in the CLI's process group, so

* Ctrl-C in a terminal (SIGINT to the whole foreground group) killed the server with the CLI, and the
  CLI then spent ~146 s retrying to report the crash to it, ending with a ``ConnectError``;
* SIGTERM or ``kill -9`` of the CLI skipped Prefect's ``atexit`` stop, leaving a ~200 MB server behind;
* two runs on a fresh ``PREFECT_HOME`` migrated Prefect's database at the same time.

This server runs in a session of its own (the terminal's Ctrl-C reaches the CLI only, which reports to a
live API and stops the server on its way out), watches its parent (when the CLI dies, even of SIGKILL,
the server is re-parented and stops itself within a second), and starts under a lock in
``PREFECT_HOME`` (first-use migrations one at a time). A configured ``PREFECT_API_URL`` is used as is.

This module imports no Prefect at import time: :func:`check_home` must run before Prefect is imported
(Prefect creates its home on import and warns twice when it cannot).

    python -m flows.api_server PORT PARENT_PID     # the server process (started by :func:`prefect_api`)
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from spex.audit.preflight import first_use_lock
from spex.errors import SpexInputError

PARENT_POLL_S = 0.5
STOP_GRACE_S = 5.0


def prefect_home() -> Path:
    """Prefect's home as Prefect will compute it (``PREFECT_HOME``, default ``~/.prefect``)."""
    return Path(os.environ.get("PREFECT_HOME") or "~/.prefect").expanduser()


def check_home() -> None:
    """Before Prefect is imported: without a configured API the run needs a writable Prefect home (its
    database lives there); refuse one it cannot write as one line. With ``PREFECT_API_URL`` set the home
    is optional, so Prefect's warning about it is silenced instead."""
    if os.environ.get("PREFECT_API_URL"):
        warnings.filterwarnings("ignore", message="Failed to create the Prefect home directory")
        return
    home = prefect_home()
    try:
        home.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=home, prefix=".probe-"):
            pass
    except OSError as exc:
        raise SpexInputError(f"Prefect's home {home} is not writable ({exc.strerror or type(exc).__name__}); fix: "
                             f"set PREFECT_HOME to a writable folder, or PREFECT_API_URL to a Prefect server") from None


@contextmanager
def prefect_api() -> Iterator[None]:
    """Flow runs of this block report to the configured Prefect API, or to a server of this run's own
    (started here, stopped when the block ends however it ends)."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    if PREFECT_API_URL.value():
        yield
        return
    server, url = _start()
    try:
        with temporary_settings(updates={PREFECT_API_URL: url}):
            try:
                yield
            finally:
                _drain_reports()
    finally:
        _stop(server)


def _start() -> tuple[subprocess.Popen, str]:
    """Start the server (one start at a time per Prefect home: its first start migrates the database)."""
    from prefect.settings import (
        PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS,
        get_current_settings,
    )

    port = _free_port()
    url = f"http://127.0.0.1:{port}/api"
    env = {**os.environ, **get_current_settings().to_environment_variables(exclude_unset=True)}
    env.pop("PREFECT_API_URL", None)
    log = tempfile.TemporaryFile()
    with first_use_lock(prefect_home() / ".spex-api-start.lock"):
        server = subprocess.Popen([sys.executable, "-m", "flows.api_server", str(port), str(os.getpid())], env=env,
                                  stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True)
        try:
            _wait_healthy(server, url, PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS.value(), log)
        except BaseException:
            _stop(server)
            raise
    return server, url


def _wait_healthy(server: subprocess.Popen, url: str, timeout: float, log: object) -> None:
    deadline = time.monotonic() + max(float(timeout), 60.0)
    while time.monotonic() < deadline:
        if server.poll() is not None:
            break
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.2)
    log.seek(0)  # type: ignore[attr-defined]
    tail = log.read().decode(errors="replace").strip().splitlines()  # type: ignore[attr-defined]
    raise SpexInputError(f"Prefect's API server for this run did not start ({tail[-1] if tail else 'no answer'}); fix: "
                         f"check that PREFECT_HOME ({prefect_home()}) is writable, or set PREFECT_API_URL to a server")


def _drain_reports() -> None:
    """Let Prefect's background workers send what they hold (logs, events) while the server is up:
    otherwise they print 'Error logging to API' at exit."""
    try:
        from prefect.events.worker import EventsWorker
        from prefect.logging.handlers import APILogWorker

        APILogWorker.drain_all(timeout=STOP_GRACE_S)
        EventsWorker.drain_all(timeout=STOP_GRACE_S)
    except Exception:  # noqa: BLE001  (best effort: the run's outcome is already decided)
        pass


def _stop(server: subprocess.Popen) -> None:
    """SIGTERM the server's session (uvicorn shuts down cleanly), SIGKILL what is left after a grace."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(server.pid, sig)
        except ProcessLookupError:
            break
        try:
            server.wait(timeout=STOP_GRACE_S)
            break
        except subprocess.TimeoutExpired:
            continue


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---------------------------------------------------------------------------------------------- the server process
def _watch_parent(parent: int) -> None:
    """Stop this server once its parent is gone (re-parented: the CLI ended, even by SIGKILL)."""
    while os.getppid() == parent:
        time.sleep(PARENT_POLL_S)
    os.kill(os.getpid(), signal.SIGTERM)  # uvicorn's clean shutdown
    time.sleep(STOP_GRACE_S * 2)
    os._exit(0)


def serve(port: int, parent: int) -> None:
    """Prefect's API (ephemeral mode: no UI, no background services) on 127.0.0.1:``port``."""
    threading.Thread(target=_watch_parent, args=(parent,), daemon=True).start()
    import uvicorn
    from prefect.server.api.server import create_app

    uvicorn.run(create_app(ephemeral=True, final=True), host="127.0.0.1", port=port, log_level="error", lifespan="on")


if __name__ == "__main__":
    serve(int(sys.argv[1]), int(sys.argv[2]))
