"""The audit flow: one model version × the subjects of one lens → records in MLflow and the metadata
DB, an HTML report, gates — :func:`spex.audit.pipeline.execute` with every stage a Prefect task.

    from flows.audit import audit
    outcome = audit(spec_dict)                    # or spec_dict + model="models:/sentiment/4"
    outcome.passed, outcome.report["html"]

The flow composes: the chunk runner (local or Ray, :mod:`tasks.runners`), the audit's context (its id
is the flow run's), and the stages as tasks (:class:`tasks.stages.TaskStages`: cached on content
hashes, retried on transient errors). The order of the stages is the pipeline's, shared with
:func:`spex.audit.run` (the same audit without Prefect).
"""

from __future__ import annotations

import logging
from typing import Any

from prefect import flow
from prefect.context import get_run_context

from flows.artifacts import audit_run_name, publish_artifacts
from spex import settings
from spex.audit.pipeline import AuditContext, AuditOutcome, execute
from spex.audit.plan import ModelInfo
from spex.audit.preflight import with_model
from spex.audit.recording import Destinations
from spex.audit.spec import validate_spec
from tasks.runners import open_runner, parse_runner
from tasks.stages import TaskStages


def flow_run_id() -> str:
    """The running flow's id (the audit's id: the Prefect run and the records share it)."""
    return get_run_context().flow_run.id.hex  # type: ignore[union-attr]


@flow(name="spex-audit", flow_run_name=audit_run_name, log_prints=False)
def audit(spec: dict[str, Any], model: str | dict[str, Any] | None = None, kind: str = "audit",
          baseline_model: ModelInfo | None = None, baseline_audit_id: str | None = None,
          db_url: str | None = None, tracking_uri: str | None = None, refresh_cache: bool = False,
          runner: str = "local") -> AuditOutcome:
    """Audit one model version on the spec's subjects; returns the outcome (ids, gates, report paths).

    ``model`` overrides the spec's model (a URI, or a model mapping). With ``baseline_audit_id`` the
    audit is compared with that recorded audit (a release audit): the diff gates apply and the report
    shows the diff. ``refresh_cache`` ignores Prefect's task cache (the ablation store still serves
    stored masks: nothing measured is ever measured twice). ``runner``: where the ablation chunks run —
    ``local`` (this process, one chunk after the other) or ``ray`` / ``ray=ADDRESS`` (concurrent Ray tasks,
    one per GPU; see :mod:`tasks.runners` and docs/scale-out.md).
    """
    settings.apply_offline_defaults()  # a flow run (CLI, worker, notebook) is an entry point
    parse_runner(runner)  # a bad runner is an input error before anything starts
    context = AuditContext(with_model(validate_spec(spec), model), audit_id=flow_run_id(),
                           data_dir=settings.data_dir(), kind=kind, to=Destinations(db_url, tracking_uri),
                           baseline_model=baseline_model, baseline_audit_id=baseline_audit_id,
                           refresh=refresh_cache)
    with open_runner(runner) as chunks:
        outcome = execute(context, TaskStages(refresh_cache), chunks)
    try:
        publish_artifacts(outcome, context.spec_dict)
    except Exception as exc:  # noqa: BLE001  (the records are written; the UI's copy must not fail the audit)
        logging.getLogger("spex.flows").warning("the Prefect artifacts of audit %s were not published: %s",
                                                outcome.audit_id, exc)
    return outcome
