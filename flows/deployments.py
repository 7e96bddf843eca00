"""Deployments defined in code (served by a worker or ``prefect serve``; issue 6 runs them).

* ``nightly-champion-audit``: every night (02:00 UTC by default) an audit of whatever version the
  registry alias ``champion`` points at (``models:/<name>@champion``). The alias is resolved when the
  run starts, and the audit records the concrete version it resolved to, so the history shows which
  version was audited each night and the registry version carries the outcome as tags.

Configuration (environment, read when the deployments are built):
``SPEX_NIGHTLY_MODEL`` (registered model name; default ``spex-demo-sentiment``), ``SPEX_NIGHTLY_ALIAS``
(default ``champion``), ``SPEX_NIGHTLY_SPEC`` (a spec YAML; default: the bundled heads-lens spec),
``SPEX_NIGHTLY_CRON`` (default ``0 2 * * *``), ``SPEX_NIGHTLY_TIMEZONE`` (default ``UTC``).

    python -m flows.deployments          # serve the deployments from this process (prefect serve)
"""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path
from typing import Any

from flows.audit import audit
from spex.spec import load_spec

NIGHTLY_CRON = "0 2 * * *"
DEFAULT_MODEL = "spex-demo-sentiment"


def default_spec_path() -> Path:
    """The bundled spec the nightly audit runs when ``SPEX_NIGHTLY_SPEC`` is not set."""
    return Path(str(resources.files("spex.data").joinpath("demo", "nightly.yaml")))


def nightly_champion(*, spec: str | Path | None = None, model_name: str | None = None, alias: str | None = None,
                     cron: str | None = None, timezone: str | None = None,
                     name: str = "nightly-champion-audit") -> Any:
    """The nightly audit of ``models:/<model_name>@<alias>`` as a Prefect ``RunnerDeployment``."""
    from prefect.schedules import Cron

    spec_path = spec or os.environ.get("SPEX_NIGHTLY_SPEC") or default_spec_path()
    spec_data = load_spec(spec_path).public_dict()
    model_name = model_name or os.environ.get("SPEX_NIGHTLY_MODEL") or DEFAULT_MODEL
    alias = alias or os.environ.get("SPEX_NIGHTLY_ALIAS") or "champion"
    model = f"models:/{model_name}@{alias}"
    schedule = Cron(cron or os.environ.get("SPEX_NIGHTLY_CRON") or NIGHTLY_CRON,
                    timezone=timezone or os.environ.get("SPEX_NIGHTLY_TIMEZONE") or "UTC")
    return audit.to_deployment(
        name=name,
        schedules=[schedule],
        parameters={"spec": spec_data, "model": model},
        tags=["spex", "nightly", f"model:{model_name}"],
        description=f"Nightly spex audit of {model} ({spec_data['lens']} lens, {len(spec_data['subjects'])} subjects): "
                    "interactions, held-out faithfulness, gates; the registry version is tagged with the outcome.",
        concurrency_limit=1,  # never two nightly audits of the same alias at once
    )


def deployments() -> list[Any]:
    """Every deployment spex defines."""
    return [nightly_champion()]


def serve() -> None:  # pragma: no cover  (long-running)
    """Serve the deployments from this process until interrupted."""
    from prefect import serve as prefect_serve

    prefect_serve(*deployments())


if __name__ == "__main__":  # pragma: no cover
    serve()
