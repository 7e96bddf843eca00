"""A separate process that runs the real ``spex`` CLI (``flows.cli``) and, for the outage tests, does
something to the outside world at a chosen point of the audit (test code, not a product hook).

    python fault_driver.py audit SPEC.yaml --json --top 50       # any spex CLI arguments

``FAULT_DRIVER_ACTIONS`` (JSON, optional): a list of ``{"event": "stage_done", "stage": "fit",
"nth": 1, "run": [argv...], "after": 3.0, "then": [argv...]}``. When the audit emits the ``nth``
progress event matching ``event`` (and ``stage``/``subject`` where given), ``run`` is executed
synchronously inside the listener (so it happens before the audit goes on: deterministic), and
``then`` is executed ``after`` seconds later in a background thread. Each progress event is also
printed to stderr as ``EVENT {json}`` for the test's log.

``python fault_driver.py --serve``: a fork server. It imports everything an audit needs once (torch,
transformers, Prefect, MLflow: ~10 s on a loaded 2-core machine), then for each request line on stdin
(``{"id", "args", "env", "cwd", "stdout", "stderr"}``) forks a child that applies ``env``, becomes its
own process group and runs the CLI as above; it answers ``{"id", "pid"}`` at once and
``{"id", "returncode"}`` when the child ends (negative: killed by that signal). Each audit is still its
own process — killed for real, sharing no state with the next one (the server never runs an audit
itself, and forks while it has a single thread) — it only skips the imports.

``FAULT_DRIVER_OOM_ABOVE=k``: the tiny BERT's ``forward`` raises ``torch.OutOfMemoryError`` for
batches of more than k rows (a simulated device; spex's code is not touched).

The kill -9 points need none of this: they are the package's test hook (``SPEX_FAULT_KILL_AT``, see
``spex.audit.test_hooks.kill_here_for_tests``). The process exits with the CLI's exit code.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

T0 = time.monotonic()
REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))


def _install_actions() -> list[threading.Thread]:
    actions = json.loads(os.environ.get("FAULT_DRIVER_ACTIONS") or "[]")
    threads: list[threading.Thread] = []
    from spex.audit import progress

    seen = [0] * len(actions)
    lock = threading.Lock()

    def later(delay: float, argv: list[str]) -> None:
        time.sleep(delay)
        print(f"ACTION then {argv}", file=sys.stderr, flush=True)
        subprocess.run(argv, check=True, stdout=sys.stderr, stderr=sys.stderr)

    def listener(event: dict) -> None:
        print("EVENT " + json.dumps({**event, "t": round(time.monotonic() - T0, 2)}, default=str), file=sys.stderr,
              flush=True)
        for i, action in enumerate(actions):
            if event.get("event") != action["event"]:
                continue
            if any(key in action and event.get(key) != action[key] for key in ("stage", "subject", "role")):
                continue
            with lock:
                seen[i] += 1
                fire = seen[i] == action.get("nth", 1)
            if not fire:
                continue
            print(f"ACTION run {action.get('run')}", file=sys.stderr, flush=True)
            if action.get("run"):
                done = subprocess.run(action["run"], stdout=sys.stderr, stderr=sys.stderr)
                print(f"ACTION done rc={done.returncode}", file=sys.stderr, flush=True)
            if action.get("then"):
                thread = threading.Thread(target=later, args=(float(action.get("after", 0)), action["then"]))
                thread.start()
                threads.append(thread)

    progress.subscribe(listener)
    return threads


def _simulate_out_of_memory() -> None:
    """``FAULT_DRIVER_OOM_ABOVE=k``: the (BERT) model's forward raises ``torch.OutOfMemoryError`` for
    batches above k rows, as a device with too little memory would; each one is reported on stderr."""
    limit = os.environ.get("FAULT_DRIVER_OOM_ABOVE")
    if not limit:
        return
    import torch
    from transformers import BertForSequenceClassification

    original = BertForSequenceClassification.forward

    def forward(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        batch = next(v.shape[0] for v in (*args, *kwargs.values()) if isinstance(v, torch.Tensor))
        if batch > int(limit):
            print(f"OOM batch={batch}", file=sys.stderr, flush=True)
            raise torch.OutOfMemoryError(f"CUDA out of memory (simulated: a batch of {batch} rows > {limit})")
        return original(self, *args, **kwargs)

    BertForSequenceClassification.forward = forward


def main() -> int:
    threads = _install_actions()
    _simulate_out_of_memory()
    from flows.cli import app

    code: int | str | None = 0
    try:
        app(sys.argv[1:], prog_name="spex")
    except SystemExit as exc:  # the CLI always ends with its exit code
        code = exc.code
    for thread in threads:  # a restart scheduled by an action must finish before the test looks
        thread.join()
    return code if isinstance(code, int) else (0 if code is None else 1)


def _child(request: dict) -> None:
    """In the forked child: become the requested process and run the CLI; never returns."""
    global T0
    code = 1
    try:
        T0 = time.monotonic()
        os.setsid()
        os.chdir(request.get("cwd") or os.getcwd())
        for key, value in (request.get("env") or {}).items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = str(value)
        for fd, name in ((1, "stdout"), (2, "stderr")):
            target = os.open(request[name], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            os.dup2(target, fd)
            os.close(target)
        devnull = os.open(os.devnull, os.O_RDONLY)
        os.dup2(devnull, 0)
        sys.argv = ["spex", *request["args"]]
        code = main()
    except BaseException:  # noqa: BLE001
        import traceback

        traceback.print_exc()
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:  # noqa: BLE001
                pass
        os._exit(code if isinstance(code, int) else 1)


def serve() -> int:
    """The fork server loop (see the module docstring)."""
    import select

    # everything heavy, imported once, before the first fork (no thread may run at a fork)
    import lightgbm  # noqa: F401
    import mlflow.lightgbm  # noqa: F401
    import mlflow.store.tracking.sqlalchemy_store  # noqa: F401
    import pyarrow.parquet  # noqa: F401
    import torch  # noqa: F401
    import transformers  # noqa: F401
    from transformers import BertForSequenceClassification, BertTokenizer  # noqa: F401

    import flows.audit  # noqa: F401
    import flows.cli  # noqa: F401
    import spex.records.tracking  # noqa: F401
    import tasks.record  # noqa: F401

    def reply(message: dict) -> None:
        sys.stdout.write(json.dumps(message) + "\n")
        sys.stdout.flush()

    children: dict[int, str] = {}
    reply({"ready": True, "threads": threading.active_count()})
    stdin_open = True
    while stdin_open or children:
        if stdin_open and select.select([sys.stdin], [], [], 0.05)[0]:
            line = sys.stdin.readline()
            if not line:
                stdin_open = False
            elif line.strip():
                request = json.loads(line)
                assert threading.active_count() == 1, threading.enumerate()
                pid = os.fork()
                if pid == 0:
                    _child(request)
                children[pid] = request["id"]
                reply({"id": request["id"], "pid": pid})
        elif not stdin_open:
            time.sleep(0.05)
        while children:
            pid, status = os.waitpid(-1, os.WNOHANG)
            if pid == 0:
                break
            reply({"id": children.pop(pid), "returncode": os.waitstatus_to_exitcode(status)})
    return 0


if __name__ == "__main__":
    if sys.argv[1:] == ["--serve"]:
        sys.exit(serve())
    sys.exit(main())
