"""Every ``SPEX_*`` setting, read and validated in one place, and the embedded defaults.

Everything a run writes lives under one data dir (``SPEX_DATA_DIR``, default ``~/.spex``): the SQLite
metadata DB, the local MLflow store, the ablation store, converted models, reports. Production points
``SPEX_DATABASE_URL`` at Postgres and ``MLFLOW_TRACKING_URI`` at a tracking server.

Why one module: a setting read in several places with its own fallback in each drifts (one place
reads ``two`` as the default, another crashes on it after an audit was opened). :func:`current`
reads the environment *now* (tests and the CLI change it between runs) and turns a bad value into a
one-line :class:`SettingsError` that names the variable and the fix; the entry points call it before
anything starts.

Importing spex changes no environment variable: :func:`apply_offline_defaults` (offline model loading,
telemetry off) is called by the entry points — the CLI, the flows, the demo, the test suite.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

from pydantic import Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from spex.errors import SpexInputError

PREFIX = "SPEX_"

# Set by the entry points unless the user set them: offline model loading, no telemetry, and no MLflow
# "View run" line on stdout (it would corrupt ``spex audit --json``).
OFFLINE_DEFAULTS: dict[str, str] = {
    "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true",
    "DO_NOT_TRACK": "1",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
}


class SettingsError(SpexInputError):
    """An environment variable of spex holds a value it cannot use (the message names it and the fix)."""


class Settings(BaseSettings):
    """The ``SPEX_*`` environment, validated (field ``x`` is variable ``SPEX_X``)."""

    model_config = SettingsConfigDict(env_prefix=PREFIX, env_ignore_empty=True, extra="ignore", frozen=True)

    data_dir: Path = Field(default_factory=lambda: Path.home() / ".spex",
                           description="where everything a run writes lives")
    database_url: str | None = Field(None, description="SQLAlchemy URL of the metadata DB (default: SQLite in the data dir)")
    db_retry_seconds: float = Field(60.0, ge=0, description="how long a lost DB connection is retried")
    min_free_mb: float = Field(64.0, ge=0, description="free space the data dir needs before an audit starts")
    model_concurrency: int = Field(1, ge=1, le=1024, description="model slots of this machine (one per accelerator)")
    lock_dir: Path | None = Field(None, description="folder of the model-slot lock files")
    ray_threads: int = Field(1, ge=1, le=1024, description="CPUs (and torch threads) per Ray chunk task")
    debug: bool = Field(False, description="print tracebacks")
    nightly_spec: str | None = None
    nightly_model: str | None = None
    nightly_alias: str | None = None
    nightly_cron: str | None = None
    nightly_timezone: str | None = None
    fault_kill_at: str | None = Field(None, description="test hook of the reliability suite: STAGE:N kills the process")

    @field_validator("data_dir", "lock_dir", mode="after")
    @classmethod
    def _absolute(cls, value: Path | None) -> Path | None:
        # A relative data dir would follow the working directory and cannot be a file URI (MLflow's store).
        return None if value is None else value.expanduser().absolute()

    @property
    def model_lock_dir(self) -> Path:
        return self.lock_dir or Path(tempfile.gettempdir()) / f"spex-locks-{os.getuid()}"


_HINTS = {
    "int_parsing": "a whole number", "int_from_float": "a whole number", "float_parsing": "a number",
    "bool_parsing": "true or false", "greater_than_equal": "a larger number", "less_than_equal": "a smaller number",
}


def current() -> Settings:
    """The settings as the environment holds them now; a :class:`SettingsError` for a bad value."""
    try:
        return Settings()
    except ValidationError as exc:
        err = exc.errors(include_url=False)[0]
        name = PREFIX + str(err["loc"][0]).upper() if err.get("loc") else PREFIX + "?"
        raw = os.environ.get(name, "")
        want = _HINTS.get(err["type"], "a valid value")
        raise SettingsError(f"environment variable {name}={raw!r} is not usable ({err['msg'].lower()}); fix: set it "
                            f"to {want} or unset it") from None


def data_dir() -> Path:
    """The data dir (created on first use); a :class:`SettingsError` naming ``SPEX_DATA_DIR`` when it
    cannot be a folder (a file is there, HOME is read-only): every command reads it, so the one-line
    error is made here once instead of a traceback in each of them."""
    path = current().data_dir
    try:
        path.mkdir(parents=True, exist_ok=True)
        if not path.is_dir():
            raise NotADirectoryError(20, "Not a directory", str(path))
    except OSError as exc:
        where = os.environ.get(PREFIX + "DATA_DIR") or "~/.spex"  # as the user wrote it
        raise SettingsError(f"the data dir {where} (SPEX_DATA_DIR) cannot be used ({exc.strerror or exc}: "
                            f"{path}); fix: point SPEX_DATA_DIR at a writable folder") from None
    return path


def database_url() -> str:
    """SQLAlchemy URL of the metadata DB: ``SPEX_DATABASE_URL`` or a SQLite file in the data dir."""
    return current().database_url or f"sqlite:///{data_dir() / 'spex.db'}"


def mlflow_tracking_uri() -> str:
    """MLflow tracking URI: ``MLFLOW_TRACKING_URI`` or a SQLite store in the data dir."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{data_dir() / 'mlflow.db'}"


def mlflow_artifact_root() -> str:
    """Artifact location for experiments created against the embedded store."""
    return (data_dir() / "mlartifacts").as_uri()


def apply_offline_defaults() -> None:
    """Offline model loading and telemetry off, unless the user set those variables (entry points call
    this; a library import never does)."""
    for key, value in OFFLINE_DEFAULTS.items():
        os.environ.setdefault(key, value)


def _apply(values: Mapping[str, str | None]) -> None:
    for key, value in values.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@contextmanager
def scoped_environ(updates: Mapping[str, str | None]) -> Iterator[None]:
    """Set (a string) or unset (None) environment variables for the block, then put back exactly what
    was there. Settings reach runs through the environment (never as flow parameters, which Prefect
    stores: a database URL may carry a password)."""
    saved = {key: os.environ.get(key) for key in updates}
    try:
        _apply(updates)
        yield
    finally:
        _apply(saved)
