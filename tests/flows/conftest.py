"""Fixtures of the flow suite: a Prefect test harness (once per session: it is slow to start), a data dir
for everything spex writes, tiny real models built from configs (saved with ``save_pretrained`` and
loaded by spex's real loading code), registry versions of them, and a Postgres schema.

No mocks: the flows run for real under Prefect, record into SQLite / Postgres and a local MLflow store,
and the models are real transformers models (just tiny and randomly initialised).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import postgres_testing as pg
from tests.flows.flow_models import tiny_bert


@pytest.fixture(scope="package")
def flow_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Path]]:
    """This package's data dir (SQLite metadata DB, MLflow store, ablation store, Prefect results) and a
    running Prefect test harness (started once: it is slow to start; stopped, and the environment
    restored, when the flow tests are done so no other suite runs inside it)."""
    from prefect.testing.utilities import prefect_test_harness

    data = tmp_path_factory.mktemp("spex-flows")
    from spex.settings import scoped_environ
    from tasks.caching import results_in_data_dir

    with scoped_environ({"SPEX_DATA_DIR": str(data), "MLFLOW_TRACKING_URI": None, "SPEX_DATABASE_URL": None}):
        with prefect_test_harness(server_startup_timeout=120), results_in_data_dir():
            yield {"data": data}


@pytest.fixture(scope="session")
def bert_v1(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_bert(tmp_path_factory.mktemp("bert-v1"), seed=2)


@pytest.fixture(scope="session")
def bert_v2(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_bert(tmp_path_factory.mktemp("bert-v2"), seed=3)


@pytest.fixture(scope="package")
def registered(flow_env: dict[str, Path], bert_v1: Path, bert_v2: Path) -> str:
    """``tiny-sentiment`` versions 1 and 2 in the session's MLflow registry (aliases champion / candidate)."""
    from mlflow import MlflowClient

    from spex import settings

    client = MlflowClient(settings.mlflow_tracking_uri())
    experiment = client.create_experiment("training", artifact_location=(flow_env["data"] / "training").as_uri())
    client.create_registered_model("tiny-sentiment")
    for folder, alias in ((bert_v1, "champion"), (bert_v2, "candidate")):
        run = client.create_run(experiment).info.run_id
        client.log_artifacts(run, str(folder), "model")
        client.set_terminated(run)
        mv = client.create_model_version("tiny-sentiment", f"runs:/{run}/model", run_id=run)
        client.set_registered_model_alias("tiny-sentiment", alias, mv.version)
    return "tiny-sentiment"


@pytest.fixture
def postgres_url(postgres_database: str) -> Iterator[str]:
    with pg.fresh_schema(postgres_database, prefix="flows") as url:
        yield url
