"""Deployments defined in code: the one definition that ``prefect serve``, ``prefect deploy``
(the repo's ``prefect.yaml``, rendered from here) and the production stack (``infra/``) all use.

* ``spex-audit/audit``: an on-demand audit. Submit a run with the spec (and optionally ``model``)
  as parameters, e.g. ``prefect deployment run spex-audit/audit --params '{"spec": {...}}'`` or
  ``prefect.deployments.run_deployment("spex-audit/audit", parameters={"spec": spec})``.
* ``spex-release-audit/release``: an on-demand release audit (``spec``, ``candidate``, ``baseline``).
* ``spex-audit/nightly-champion-audit``: every night (02:00 UTC by default) an audit of whatever
  version the registry alias ``champion`` points at (``models:/<name>@champion``). The alias is
  resolved when the run starts, and the audit records the concrete version it resolved to, so the
  history shows which version was audited each night and the registry version carries the outcome as tags.

Entrypoints are module paths (``flows.audit.audit``), not file paths: a worker imports the flows
from the installed ``spex`` package, so it needs neither a checkout at a known path nor a pull step.
Database URLs and the tracking URI are never deployment parameters (Prefect stores parameters, and a
URL may carry a password): the worker's environment (``SPEX_DATABASE_URL``, ``MLFLOW_TRACKING_URI``)
decides where records go.

Configuration of the nightly audit (environment, read when the deployments are built):
``SPEX_NIGHTLY_MODEL`` (registered model name; default ``spex-demo-sentiment``), ``SPEX_NIGHTLY_ALIAS``
(default ``champion``), ``SPEX_NIGHTLY_SPEC`` (a spec YAML; default: the bundled heads-lens spec),
``SPEX_NIGHTLY_CRON`` (default ``0 2 * * *``), ``SPEX_NIGHTLY_TIMEZONE`` (default ``UTC``).

    python -m flows.deployments serve          # serve every deployment from this process
    python -m flows.deployments yaml           # print prefect.yaml (what `prefect deploy --all` reads)
"""

from __future__ import annotations

import argparse
from importlib import resources
from pathlib import Path
from typing import Any

from flows.audit import audit
from flows.release import release_audit
from spex import settings
from spex.audit.spec import load_spec

NIGHTLY_CRON = "0 2 * * *"
DEFAULT_MODEL = "spex-demo-sentiment"
DEFAULT_WORK_POOL = "spex"


def _module_path() -> Any:
    """Entrypoints as module paths: the worker imports the installed package (see the module doc)."""
    from prefect.deployments.runner import EntrypointType

    return EntrypointType.MODULE_PATH


def default_spec_path() -> Path:
    """The bundled spec the nightly audit runs when ``SPEX_NIGHTLY_SPEC`` is not set."""
    return Path(str(resources.files("spex.data").joinpath("demo", "nightly.yaml")))


def audit_deployment(name: str = "audit") -> Any:
    """The on-demand audit (``spex-audit/audit``): the caller passes ``spec`` (and ``model``)."""
    return audit.to_deployment(
        name=name,
        tags=["spex", "audit"],
        description="On-demand spex audit of one model version: pass `spec` (an audit spec as a mapping) and "
                    "optionally `model` (a URI overriding the spec's). Records go to the worker's "
                    "SPEX_DATABASE_URL and MLFLOW_TRACKING_URI.",
        entrypoint_type=_module_path(),
    )


def release_deployment(name: str = "release") -> Any:
    """The on-demand release audit (``spex-release-audit/release``): candidate vs baseline, gates."""
    return release_audit.to_deployment(
        name=name,
        tags=["spex", "release"],
        description="On-demand spex release audit: audits `baseline` and `candidate` (model URIs; default the "
                    "spec's baseline and model) on `spec`, diffs their interactions and applies the gates; the "
                    "run fails when the audit errors, its result's `passed` says whether the gates passed.",
        entrypoint_type=_module_path(),
    )


def nightly_champion(*, spec: str | Path | None = None, model_name: str | None = None, alias: str | None = None,
                     cron: str | None = None, timezone: str | None = None,
                     name: str = "nightly-champion-audit") -> Any:
    """The nightly audit of ``models:/<model_name>@<alias>`` as a Prefect ``RunnerDeployment``."""
    from prefect.schedules import Cron

    env = settings.current()
    spec_path = spec or env.nightly_spec or default_spec_path()
    spec_data = load_spec(spec_path).public_dict()
    model_name = model_name or env.nightly_model or DEFAULT_MODEL
    alias = alias or env.nightly_alias or "champion"
    model = f"models:/{model_name}@{alias}"
    schedule = Cron(cron or env.nightly_cron or NIGHTLY_CRON, timezone=timezone or env.nightly_timezone or "UTC")
    return audit.to_deployment(
        name=name,
        schedules=[schedule],
        parameters={"spec": spec_data, "model": model},
        tags=["spex", "nightly", f"model:{model_name}"],
        description=f"Nightly spex audit of {model} ({spec_data['lens']} lens, {len(spec_data['subjects'])} subjects): "
                    "interactions, held-out faithfulness, gates; the registry version is tagged with the outcome.",
        concurrency_limit=1,  # never two nightly audits of the same alias at once
        entrypoint_type=_module_path(),
    )


def deployments() -> list[Any]:
    """Every deployment spex defines (on-demand audit, on-demand release audit, nightly audit)."""
    return [audit_deployment(), release_deployment(), nightly_champion()]


# ------------------------------------------------------------------------------------------ prefect.yaml
PREFECT_YAML_HEADER = """\
# Prefect deployments of spex, for `prefect deploy --all` run from the repository root (where
# `prefect deploy` looks for prefect.yaml) against a server with a process work pool named `spex`.
#
# GENERATED from flows/deployments.py by `python -m flows.deployments yaml > prefect.yaml`: edit the
# code, not this file (tests/infra/test_compose.py fails when they differ). Another nightly model or
# spec: set SPEX_NIGHTLY_MODEL / SPEX_NIGHTLY_SPEC / SPEX_NIGHTLY_CRON and render to another file
# (`python -m flows.deployments yaml > my-prefect.yaml; prefect deploy --all --prefect-file my-prefect.yaml`).
# Another work pool: `prefect deploy --all --pool NAME`. See docs/deploy.md.
"""


def _schedule_entry(schedule: Any) -> dict[str, Any]:
    """A prefect.yaml schedule item from a deployment's schedule (cron schedules only, which is all we define)."""
    inner = schedule.schedule
    cron = getattr(inner, "cron", None)
    if cron is None:
        raise ValueError(f"prefect.yaml rendering supports cron schedules only, got {type(inner).__name__}")
    entry: dict[str, Any] = {"cron": cron, "timezone": inner.timezone or "UTC"}
    if schedule.active is False:
        entry["active"] = False
    return entry


def _deployment_entry(deployment: Any, work_pool: str) -> dict[str, Any]:
    """One prefect.yaml deployment item; fields in the order `prefect init` writes them."""
    limit = deployment.concurrency_limit
    return {
        "name": deployment.name,
        "description": deployment.description,
        "entrypoint": deployment.entrypoint,
        "tags": list(deployment.tags),
        "parameters": dict(deployment.parameters),
        "schedules": [_schedule_entry(s) for s in deployment.schedules or []],
        "concurrency_limit": limit if limit is None or isinstance(limit, int) else limit.limit,
        "work_pool": {"name": work_pool, "work_queue_name": None, "job_variables": {}},
    }


def prefect_yaml(work_pool: str = DEFAULT_WORK_POOL) -> str:
    """The text of prefect.yaml for :func:`deployments` (module entrypoints, so no build/push/pull steps)."""
    import prefect
    import yaml

    document = {
        "name": "spex",
        "prefect-version": prefect.__version__,
        "build": None,
        "push": None,
        "pull": [],  # explicit: the worker imports the installed package (no working-directory step)
        "deployments": [_deployment_entry(d, work_pool) for d in deployments()],
    }
    return PREFECT_YAML_HEADER + yaml.safe_dump(document, sort_keys=False, width=100, allow_unicode=True)


def serve() -> None:  # pragma: no cover  (long-running)
    """Serve the deployments from this process until interrupted (no work pool, no worker needed)."""
    from prefect import serve as prefect_serve

    prefect_serve(*deployments())


def main(argv: list[str] | None = None) -> None:
    """``python -m flows.deployments [serve|yaml]`` (no argument: serve)."""
    parser = argparse.ArgumentParser(prog="python -m flows.deployments", description=__doc__.split("\n\n")[0])
    parser.add_argument("command", nargs="?", default="serve", choices=("serve", "yaml"))
    parser.add_argument("--pool", default=DEFAULT_WORK_POOL, help="work pool named in prefect.yaml (yaml only)")
    args = parser.parse_args(argv)
    if args.command == "yaml":
        print(prefect_yaml(args.pool), end="")
    else:  # pragma: no cover
        serve()


if __name__ == "__main__":  # pragma: no cover
    main()
