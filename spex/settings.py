"""Where spex keeps things, and the embedded defaults.

Everything a run writes lives under one data dir (``SPEX_DATA_DIR``, default ``~/.spex``): the SQLite
metadata DB, the local MLflow store, the ablation store, converted models, reports. Production points
``SPEX_DATABASE_URL`` at Postgres and ``MLFLOW_TRACKING_URI`` at a tracking server.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

# Telemetry off unless the user turned it on explicitly.
for _key, _value in (
    ("DO_NOT_TRACK", "1"),
    ("MLFLOW_DISABLE_TELEMETRY", "true"),
    ("PREFECT_SERVER_ANALYTICS_ENABLED", "false"),
    ("HF_HUB_OFFLINE", "1"),
    ("TRANSFORMERS_OFFLINE", "1"),
):
    os.environ.setdefault(_key, _value)


def data_dir() -> Path:
    """The data dir (created on first use)."""
    path = Path(os.environ.get("SPEX_DATA_DIR") or Path.home() / ".spex").expanduser()
    path.mkdir(parents=True, exist_ok=True)
    return path


def database_url() -> str:
    """SQLAlchemy URL of the metadata DB: ``SPEX_DATABASE_URL`` or a SQLite file in the data dir."""
    return os.environ.get("SPEX_DATABASE_URL") or f"sqlite:///{data_dir() / 'spex.db'}"


def mlflow_tracking_uri() -> str:
    """MLflow tracking URI: ``MLFLOW_TRACKING_URI`` or a SQLite store in the data dir."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{data_dir() / 'mlflow.db'}"


def mlflow_artifact_root() -> str:
    """Artifact location for experiments created against the embedded store."""
    return (data_dir() / "mlartifacts").as_uri()


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
