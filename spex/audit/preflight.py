"""Checks before an audit spends model time: the spec, the model's resolution, the data dir, the DB.

Order matters for "nothing partial": everything that can reject the input runs BEFORE the audit is
opened in the DB and MLflow, and a database that is down or a full disk costs no GPU time. The CLI
calls :func:`preflight` first, so a typo fails in a second with exit 2, before Prefect starts.

First-use set-up (the metadata DB's and the local MLflow store's migrations) happens here, one process
at a time (:func:`first_use_lock`): two audits started at once on a fresh data dir both ran MLflow's
migrations ("table _alembic_tmp_tags already exists") and left its store broken.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from spex import settings
from spex.audit import runtime
from spex.audit.spec import AuditSpec, ModelSpec, SpecError, validate_spec
from spex.errors import SpexInputError


def with_model(spec: AuditSpec, model: str | dict[str, Any] | None) -> AuditSpec:
    """The spec with its model replaced (a URI keeps the spec's device / dtype options)."""
    if model is None:
        return spec
    if isinstance(model, str):
        return spec.model_copy(update={"model": spec.model.model_copy(update={"uri": model})})
    return spec.model_copy(update={"model": ModelSpec.model_validate(model)})


def release_models(spec: dict[str, Any], candidate: str | None, baseline: str | None) -> list[dict[str, Any]]:
    """(candidate, baseline) model specs of a release audit; a SpecError when there is no baseline or
    both are the same model (here, not in the release flow: the CLI checks it before Prefect starts)."""
    audit_spec = validate_spec(spec)
    candidate_spec = with_model(audit_spec, candidate)
    if baseline is not None:
        baseline_spec = with_model(audit_spec, baseline)
    elif audit_spec.baseline is not None:
        baseline_spec = audit_spec.model_copy(update={"model": audit_spec.baseline})
    else:
        raise SpecError("spec field `baseline` is missing: a release audit compares a candidate with a baseline; "
                        "fix: add baseline: <model URI> to the spec or pass --baseline URI", field="baseline")
    if baseline_spec.model == candidate_spec.model:
        raise SpecError(f"the candidate and the baseline are the same model ({candidate_spec.model.uri}); fix: pass "
                        "--candidate and --baseline URIs of two different versions", field="baseline")
    return [candidate_spec.model.model_dump(mode="json"), baseline_spec.model.model_dump(mode="json")]


def check_data_dir() -> None:
    """The data dir exists, takes data, and has room (ablations, the SQLite DB, MLflow's local store,
    reports and caches all go there): a probe of real bytes is written and synced (an empty file is
    created even on a full disk), and ``SPEX_MIN_FREE_MB`` (default 64) must be free."""
    where = os.environ.get("SPEX_DATA_DIR") or "~/.spex"  # as the user wrote it
    fix = "fix: point SPEX_DATA_DIR at a writable folder with free space"
    try:
        root = settings.data_dir()
        with tempfile.NamedTemporaryFile(dir=root, prefix=".probe-") as probe:
            probe.write(b"\0" * (256 << 10))
            probe.flush()
            os.fsync(probe.fileno())
        free = shutil.disk_usage(root).free
    except OSError as exc:
        raise SpexInputError(
            f"the data dir {where} is not writable ({exc.strerror or type(exc).__name__}); {fix}") from None
    need = settings.current().min_free_mb
    if free < need * (1 << 20):
        raise SpexInputError(f"the data dir {where} has {free / (1 << 20):.1f} MB free, less than the {need:g} MB an "
                             f"audit needs at least (SPEX_MIN_FREE_MB); {fix}")


@contextmanager
def first_use_lock(path: Path) -> Iterator[None]:
    """An exclusive kernel lock (``flock``) on ``path`` for the block: what creates or migrates a shared
    store on first use runs one process at a time (released by the kernel if the holder dies)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def setup_lock() -> Any:
    """The data dir's first-use lock (its SQLite metadata DB and MLflow store are set up under it)."""
    return first_use_lock(settings.data_dir() / ".setup.lock")


def check_tracking() -> None:
    """Before any model call: the MLflow tracking store answers, as the metadata DB does (a server at a
    closed port was found only after the model loaded, and the audit row stayed running). A local store
    is created and migrated here, under the set-up lock."""
    from spex.records.tracking import check_store

    with setup_lock():
        check_store(settings.mlflow_tracking_uri())


def check_device(model: ModelSpec, key: str = "model") -> None:
    """The spec's ``device`` exists on this machine (``cuda`` where torch sees no CUDA is refused here,
    not as an AssertionError when the model loads). ``auto`` and ``cpu`` always exist; torch is
    imported only for the others."""
    if model.device in ("auto", "cpu"):
        return
    from spex.models.devices import resolve_device

    try:
        resolve_device(model.device)
    except SpexInputError as exc:
        raise SpecError(f"spec field `{key}.device`: {exc}", field=f"{key}.device") from None


def check_environment(db_url: str | None) -> None:
    """Before any model call: the data dir is writable and the metadata DB answers (connected,
    migrated). Raises a one-line error naming what is wrong and how to fix it."""
    check_data_dir()
    try:
        with setup_lock():
            runtime.metadata_store(db_url)
    except ConnectionError as exc:
        raise SpexInputError(f"{exc}; fix: start the database or point SPEX_DATABASE_URL / --db at one that is up") from None


def preflight(spec: dict[str, Any], model: str | dict[str, Any] | None = None, db_url: str | None = None) -> str:
    """Check, without loading weights, that the spec is valid, its model resolves (the path exists, the
    registry version or alias exists), MLflow and the metadata DB answer and the data dir is writable; returns
    the model's cheap key."""
    audit_spec = with_model(validate_spec(spec), model)
    audit_spec.check_offline()  # n vs budget from the text alone, custom model code not trusted: no model load
    for key, model_spec in (("model", audit_spec.model), ("baseline", audit_spec.baseline)):
        if model_spec is not None:
            check_device(model_spec, key)
    # The order creates nothing before an input error: a bad model path, then a metadata DB that is
    # down, leave no store behind; only a registry URI needs the MLflow store to resolve its model.
    check_data_dir()
    registry_model = audit_spec.model.uri.startswith(("models:/", "runs:/"))
    if registry_model:
        check_tracking()
    try:
        model_key = runtime.cheap_model_key(audit_spec.model)
    except SpecError:
        raise
    except SpexInputError as exc:  # e.g. a registry version that does not exist: name the field
        message = " ".join(str(exc).split())
        raise SpecError(message if message.startswith("spec field") else f"spec field `model`: {message}",
                        field="model") from None
    check_environment(db_url)
    if not registry_model:
        check_tracking()
    return model_key
