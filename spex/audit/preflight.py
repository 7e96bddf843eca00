"""Checks before an audit spends model time: the spec, the model's resolution, the data dir, the DB.

Order matters for "nothing partial": everything that can reject the input runs BEFORE the audit is
opened in the DB and MLflow, and a database that is down or a full disk costs no GPU time. The CLI
calls :func:`preflight` first, so a typo fails in a second with exit 2, before Prefect starts.
"""

from __future__ import annotations

import os
import shutil
import tempfile
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
        runtime.metadata_store(db_url)
    except ConnectionError as exc:
        raise SpexInputError(f"{exc}; fix: start the database or point SPEX_DATABASE_URL / --db at one that is up") from None


def preflight(spec: dict[str, Any], model: str | dict[str, Any] | None = None, db_url: str | None = None) -> str:
    """Check, without loading weights, that the spec is valid, its model resolves (the path exists, the
    registry version or alias exists), the metadata DB answers and the data dir is writable; returns
    the model's cheap key."""
    audit_spec = with_model(validate_spec(spec), model)
    audit_spec.check_offline()  # n vs budget from the text alone, custom model code not trusted: no model load
    for key, model_spec in (("model", audit_spec.model), ("baseline", audit_spec.baseline)):
        if model_spec is not None:
            check_device(model_spec, key)
    check_data_dir()
    try:
        key = runtime.cheap_model_key(audit_spec.model)
    except SpecError:
        raise
    except SpexInputError as exc:  # e.g. a registry version that does not exist: name the field
        message = " ".join(str(exc).split())
        raise SpecError(message if message.startswith("spec field") else f"spec field `model`: {message}",
                        field="model") from None
    check_environment(db_url)
    return key
