"""What the MLflow dashboard tests look at: two registry versions of a tiny real classifier, audited
under two specs (features lens, heads lens) — each a plain audit of version 1 and a release audit of
version 2 against it — recorded into a real MLflow server, through the pipeline's own stages
(``spex.audit.run``, no Prefect). Every audit enumerates all 2^n masks (5 words, 8 heads), so the
values are exact and the outcome deterministic."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from tests.flows.flow_models import tiny_bert

MODEL = "tiny-sentiment-ui"
FEATURES = {
    "name": "ui-features", "lens": "features",
    "subjects": [{"id": "food", "prompt": "The food was not bad"},
                 {"id": "service", "prompt": "never again, service was slow"}],
    "holdout": 16, "ranking": {"index": "fbii", "order": 2, "top_k": 5},
    "gates": {"faithfulness_min": 0.5},
}
HEADS = {
    "name": "ui-heads", "lens": "heads",
    "subjects": [{"id": "negation", "prompts": ["the food was not bad", "never again", "good but slow"],
                  "answers": ["positive", "negative", "negative"]}],
    "budget": 256, "holdout": 16, "ranking": {"index": "fbii", "order": 2, "top_k": 5},
    "gates": {"faithfulness_min": 0.5},
}


@dataclass(frozen=True)
class Dashboard:
    """The recorded audits: outcomes by (spec name, version), and where the server is."""

    server: str
    db_url: str
    outcomes: dict[tuple[str, str], object]

    def outcome(self, spec: str, version: str):
        return self.outcomes[(spec, version)]


def register_versions(server: str, root: Path) -> list[str]:
    """Versions 1 and 2 of ``MODEL`` on the server: two tiny BERT classifiers (seeds 2 and 3)."""
    from mlflow import MlflowClient

    client = MlflowClient(server)
    experiment = client.create_experiment("ui-training")
    client.create_registered_model(MODEL)
    versions = []
    for seed in (2, 3):
        folder = tiny_bert(root / f"bert-{seed}", seed=seed)
        run = client.create_run(experiment).info.run_id
        client.log_artifacts(run, str(folder), "model")
        client.set_terminated(run)
        versions.append(client.create_model_version(MODEL, f"runs:/{run}/model", run_id=run,
                                                    description=f"tiny BERT, seed {seed}").version)
    return [str(v) for v in versions]


def build_dashboard(server: str, root: Path, *, db_url: str) -> Dashboard:
    """Register the versions and run the four audits (the caller points ``MLFLOW_TRACKING_URI`` at
    ``server`` and ``SPEX_DATA_DIR`` somewhere of its own)."""
    import spex.audit

    assert os.environ.get("MLFLOW_TRACKING_URI") == server
    v1, v2 = register_versions(server, root)
    outcomes = {}
    for spec in (FEATURES, HEADS):
        spec = {**spec, "model": f"models:/{MODEL}/{v2}", "baseline": f"models:/{MODEL}/{v1}"}
        base = spex.audit.run(spec, model=spec["baseline"], db_url=db_url, tracking_uri=server)
        release = spex.audit.run(spec, kind="release", baseline_model=base.model,
                                 baseline_audit_id=base.audit_id, db_url=db_url, tracking_uri=server)
        outcomes[(spec["name"], v1)], outcomes[(spec["name"], v2)] = base, release
    return Dashboard(server, db_url, outcomes)
