"""The audit in the Prefect UI, read back through the Prefect API of a real (test-harness) server:
run names that say model / spec / subject / chunk, the gate table and each subject's top
interactions as artifacts of the flow run, and a progress artifact for a multi-chunk ablation."""

from __future__ import annotations

import asyncio
import json

from tests.flows.flow_models import features_spec


async def _read(flow_run_id: str):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId, FlowRunFilter, FlowRunFilterId

    async with get_client() as client:
        run = await client.read_flow_run(flow_run_id)
        tasks = await client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))
        artifacts = await client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id])))
    return run, tasks, artifacts


def test_run_names_and_artifacts_through_the_prefect_api(flow_env, bert_v1):
    from flows.audit import audit

    spec = features_spec(bert_v1, name="artifact-check", gates={"forbidden": ["zebra"]},
                         batch={"max_batch": 64, "chunk_size": 48})
    spec["subjects"] = spec["subjects"][:1]
    outcome = audit(spec, db_url=f"sqlite:///{flow_env['data'] / 'artifacts.db'}")
    run, tasks, artifacts = asyncio.run(_read(outcome.audit_id))

    assert run.name.startswith("audit ") and run.name.endswith("· artifact-check")
    names = {t.name for t in tasks}
    assert "ablate food · train · masks 0–47" in names and "ablate food · train · masks 48–95" in names

    by_type = {}
    for a in artifacts:
        by_type.setdefault(a.type, []).append(a)
    (gates,) = by_type["table"]
    rows = json.loads(gates.data) if isinstance(gates.data, str) else gates.data
    assert gates.key == "spex-gates-artifact-check-audit"
    assert rows == [{"gate": "forbidden_in_top_k", "subject": "(all)", "state": "passed", "value": "0",
                     "comparator": "<=", "threshold": "0"}]
    (top,) = by_type["markdown"]
    assert top.key == "spex-top-artifact-check-food-audit"
    first = outcome.subjects["food"].ranking[0]
    assert "| rank | interaction | value | ± se | interval |" in top.data and " × ".join(first["labels"]) in top.data
    progress = [a for a in by_type["progress"] if "train" in a.key]
    assert progress and progress[0].data == 100.0
