"""Security (issue 7): secrets never leak, custom model code runs only when the spec says so, and
``privacy.redact_text`` keeps prompt text out of everything an audit records or publishes.

One real audit (tiny causal LM, Prefect test harness, Postgres metadata over a URL that carries a
password — the local server has trust auth, so any password connects —, local MLflow store) runs with
secrets planted in the environment and the prompt marked for redaction. Then every output is read back
and grepped: the CLI's stdout/stderr, captured Python logs, Prefect's flow-run parameters and run logs,
every file under the data dir (MLflow's SQLite store and artifacts, the report and its export, Prefect's
task results), every row of every table of the metadata DB, and MLflow's params and tags.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from tests.flows.flow_models import tiny_bert
from tests.reliability.test_bad_input import tiny_causal_lm

SECRETS = {
    "HF_TOKEN": "hf_SeCrEt0HfToken9f3a71",
    "HUGGING_FACE_HUB_TOKEN": "hf_SeCrEt1HubToken42c0",
    "MLFLOW_TRACKING_PASSWORD": "SeCrEt2MlflowPw77e1",
    "MLFLOW_TRACKING_TOKEN": "SeCrEt3MlflowTok0b9d",
    "AWS_SECRET_ACCESS_KEY": "SeCrEt4AwsKey/x+Q9Lk2",
    "OPENAI_API_KEY": "sk-SeCrEt5OpenAi55aa",
}
DB_PASSWORD = "SeCrEt6DbPass-8d2f"
# Words of the prompt and target that must not leave the process when redact_text is on. The tiny
# models' vocabulary does not know them (they read as [UNK]): what matters is where the text goes.
PROMPT = "Zorblax quintessentially hijacked Marmaladeshire payroll"
TARGET = "Vexillologist Quokkaburg"
PRIVATE_WORDS = (PROMPT + " " + TARGET).split()


def spex_cli(*args: str) -> Any:
    from flows.cli import QUIET_ENV, app

    return CliRunner().invoke(app, list(args), env={k: os.environ.get(k) for k in QUIET_ENV})


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """A data dir of its own and the planted environment secrets (restored afterwards)."""
    root = tmp_path_factory.mktemp("security")
    from spex.settings import scoped_environ

    with scoped_environ({"SPEX_DATA_DIR": str(root / "data"), "MLFLOW_TRACKING_URI": None, "SPEX_DATABASE_URL": None,
                         **SECRETS}):
        yield {"root": root, "data": root / "data"}


def _everything_in(folder: Path, skip: tuple[str, ...] = ()) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*")
            if p.is_file() and not str(p.relative_to(folder)).startswith(skip)}


def _db_rows(url: str) -> str:
    """Every row of every table of the metadata DB, as text."""
    import sqlalchemy as sa

    from spex.records.metadata.db import normalize_url

    engine = sa.create_engine(normalize_url(url))
    try:
        with engine.connect() as connection:
            tables = sa.inspect(connection).get_table_names()
            assert "audits" in tables
            return "\n".join(f"{table}: {row}" for table in tables
                             for row in connection.execute(sa.text(f'SELECT * FROM "{table}"')))
    finally:
        engine.dispose()


def _prefect_text() -> tuple[str, str]:
    """Prefect's flow-run parameters and its run logs (the harness's API)."""
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs()
        logs = client.read_logs()
    assert runs, "the audit ran as a Prefect flow run"
    return "\n".join(json.dumps(r.parameters, default=str) for r in runs), "\n".join(log.message for log in logs)


def _mlflow_text() -> str:
    from mlflow import MlflowClient

    from spex import settings

    client = MlflowClient(settings.mlflow_tracking_uri())
    experiments = [e.experiment_id for e in client.search_experiments()]
    runs = client.search_runs(experiments)
    assert runs
    return "\n".join(json.dumps({"params": r.data.params, "tags": r.data.tags, "name": r.info.run_name}) for r in runs)


@pytest.fixture(scope="module")
def audited(env: dict[str, Any], postgres_database: str, caplog_module: list[str]) -> Iterator[dict[str, Any]]:
    """ONE audit with everything planted: secrets in the environment and the DB URL, redact_text on."""
    from prefect.testing.utilities import prefect_test_harness
    from sqlalchemy.engine import make_url

    from tests import postgres_testing as pg

    lm = tiny_causal_lm(env["root"] / "lm")
    spec = {"model": str(lm), "lens": "features", "privacy": {"redact_text": True},
            "subjects": [{"id": "s1", "prompt": PROMPT, "target": TARGET}],
            "budget": "auto", "holdout": 8, "removal_r": 1, "method_options": {"depths": [3]},
            "ranking": {"index": "fbii", "order": 2, "top_k": 3, "record_top": 20}}
    path = env["root"] / "spec.yaml"
    path.write_text(yaml.safe_dump(spec), encoding="utf-8")
    with pg.fresh_schema(postgres_database, prefix="security") as url:
        db = make_url(url).set(password=DB_PASSWORD).render_as_string(hide_password=False)
        assert DB_PASSWORD in db
        with prefect_test_harness(server_startup_timeout=120):
            result = spex_cli("audit", str(path), "--db", db, "--json")
            assert result.exit_code == 0, (result.output, result.exception)
            outcome = json.loads(result.stdout)
            parameters, logs = _prefect_text()
        yield {"outcome": outcome, "stdout": result.stdout, "stderr": result.stderr, "db": db,
               "db_rows": _db_rows(db), "files": _everything_in(env["data"]), "mlflow": _mlflow_text(),
               "prefect parameters": parameters, "prefect logs": logs, "logs": caplog_module}


@pytest.fixture(scope="module")
def caplog_module() -> Iterator[list[str]]:
    """Every Python log record emitted while the module's audit runs (Prefect, MLflow, spex, ...)."""
    import logging

    lines: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            try:
                lines.append(self.format(record))
            except Exception:  # noqa: BLE001
                lines.append(str(record.msg))

    handler = Keep(level=logging.DEBUG)
    root = logging.getLogger()
    root.addHandler(handler)
    loggers = [logging.getLogger(n) for n in ("prefect", "mlflow", "spex", "tasks", "flows", "sqlalchemy")]
    for logger in loggers:
        logger.addHandler(handler)
    try:
        yield lines
    finally:
        root.removeHandler(handler)
        for logger in loggers:
            logger.removeHandler(handler)


def _outputs(audited: dict[str, Any]) -> dict[str, bytes]:
    out = {f"file {k}": v for k, v in audited["files"].items()}
    for key in ("stdout", "stderr", "db_rows", "mlflow", "prefect parameters", "prefect logs"):
        out[key] = audited[key].encode()
    out["python logs"] = "\n".join(audited["logs"]).encode()
    return out


# ---------------------------------------------------------------------------------------------- secrets
def test_the_audit_ran_and_recorded(audited: dict[str, Any]) -> None:
    outcome = audited["outcome"]
    assert outcome["passed"] is True and outcome["subjects"]["s1"]["n"] == len(PROMPT.split())
    assert "audits:" in audited["db_rows"] and "s1" in audited["db_rows"]
    assert any(k.startswith("mlflow.db") for k in audited["files"]) and any("report.html" in k for k in audited["files"])


def test_no_secret_appears_in_any_output(audited: dict[str, Any]) -> None:
    secrets = [*SECRETS.values(), DB_PASSWORD]
    leaks = [(where, s) for where, blob in _outputs(audited).items() for s in secrets if s.encode() in blob]
    assert leaks == []
    assert len(audited["files"]) > 20  # the grep saw the MLflow store, artifacts, report, caches


def test_connection_errors_and_ui_never_print_a_password(env: dict[str, Any], tmp_path: Path) -> None:
    bert = tiny_bert(tmp_path / "bert", seed=4)
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump({"model": str(bert), "lens": "features", "budget": 64,
                                    "subjects": [{"id": "a", "prompt": "the food was good"}]}))
    down = spex_cli("audit", str(path), "--db", f"postgresql+psycopg://spex:{DB_PASSWORD}@127.0.0.1:9/nowhere")
    assert down.exit_code == 2 and len(down.stderr.strip().splitlines()) == 1
    assert DB_PASSWORD not in down.output and "metadata DB" in down.stderr
    ui = spex_cli("ui", "--tracking-uri", f"http://admin:{DB_PASSWORD}@127.0.0.1:5999")
    assert ui.exit_code == 0 and DB_PASSWORD not in ui.output and "127.0.0.1:5999" in ui.output
    for value in SECRETS.values():
        assert value not in down.output + ui.output


# ---------------------------------------------------------------------------------------------- redaction
def test_redacted_text_appears_in_no_record(audited: dict[str, Any]) -> None:
    # What holds the text by design (documented on PrivacySpec): the machine-local ablation store's meta.json
    # and Prefect's flow-run parameters (the spec: a rerun needs it). They are the positive control: the
    # words did reach the process, and the grep finds them where they are.
    outputs = _outputs(audited)
    kept = {k: v for k, v in outputs.items() if k.startswith("file ablations/") or k == "prefect parameters"}
    assert any(PRIVATE_WORDS[0].encode() in v for k, v in kept.items() if k.startswith("file ablations/"))
    assert PRIVATE_WORDS[0].encode() in kept["prefect parameters"]
    leaks = sorted({(where, word) for where, blob in outputs.items() if where not in kept
                    for word in PRIVATE_WORDS if word.encode() in blob or word.lower().encode() in blob})
    assert leaks == []


def test_redacted_audit_keeps_its_numbers_with_index_labels(audited: dict[str, Any]) -> None:
    outcome = audited["outcome"]
    ranking = outcome["subjects"]["s1"]["top"]
    assert ranking and all(label.startswith("f") and label[1:].isdigit() for r in ranking for label in r["labels"])
    html = Path(outcome["report"]["html"]).read_text(encoding="utf-8")
    assert "text redacted (privacy.redact_text)" in html
    export = json.loads(Path(outcome["report"]["json"]).read_text(encoding="utf-8"))
    subject = export["subjects"]["s1"]
    assert subject["labels"] == [f"f{i}" for i in range(len(PROMPT.split()))]
    assert subject["heldout_r2"] is not None and subject["interactions"]
    assert export["audit"]["spec"]["subjects"] == [{"id": "s1", "prompt": "[redacted]", "target": "[redacted]"}]
    assert subject["metrics"]["target"] == "[redacted]"


def test_redaction_is_designed_in_the_spec() -> None:
    from spex.audit.spec import SpecError, redact_spec, validate_spec

    base = {"model": "builtin:minilm-sentiment", "lens": "features", "subjects": [{"id": "a", "prompt": "x y"}]}
    assert validate_spec(base).privacy.redact_text is False
    on = validate_spec({**base, "privacy": {"redact_text": True}})
    assert redact_spec(on.public_dict())["subjects"] == [{"id": "a", "prompt": "[redacted]", "target": None}]
    assert on.public_dict()["subjects"][0]["prompt"] == "x y"  # the run itself still has the text
    with pytest.raises(SpecError, match=r"`privacy.redact_txt`.*did you mean `redact_text`"):
        validate_spec({**base, "privacy": {"redact_txt": True}})


# ---------------------------------------------------------------------------------------------- remote code
CONFIG_CODE = '''import os
from pathlib import Path

from transformers import BertConfig

Path(os.environ["SPEX_TEST_REMOTE_CODE_MARKER"]).write_text("custom code ran")


class TinyXConfig(BertConfig):
    model_type = "tinyx"
'''
MODEL_CODE = '''from transformers import BertForSequenceClassification

from .configuration_tinyx import TinyXConfig


class TinyXForSequenceClassification(BertForSequenceClassification):
    config_class = TinyXConfig
'''


def custom_code_model(folder: Path) -> Path:
    """A tiny classifier whose config asks for code shipped in the folder (``auto_map``); importing
    that code writes a marker file, so the test sees whether it ran."""
    tiny_bert(folder, seed=6)
    (folder / "configuration_tinyx.py").write_text(CONFIG_CODE)
    (folder / "modeling_tinyx.py").write_text(MODEL_CODE)
    config = json.loads((folder / "config.json").read_text())
    config.update(model_type="tinyx", architectures=["TinyXForSequenceClassification"],
                  auto_map={"AutoConfig": "configuration_tinyx.TinyXConfig",
                            "AutoModelForSequenceClassification": "modeling_tinyx.TinyXForSequenceClassification"})
    (folder / "config.json").write_text(json.dumps(config))
    return folder


def test_remote_code_runs_only_when_the_spec_enables_it(env: dict[str, Any], tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    marker = tmp_path / "marker"
    monkeypatch.setenv("SPEX_TEST_REMOTE_CODE_MARKER", str(marker))
    folder = custom_code_model(tmp_path / "tinyx")
    subjects = [{"id": "a", "prompt": "the food was not bad"}]
    refused = tmp_path / "refused.yaml"
    refused.write_text(yaml.safe_dump({"model": str(folder), "lens": "features", "subjects": subjects, "budget": 64}))
    trusted = tmp_path / "trusted.yaml"
    trusted.write_text(yaml.safe_dump({"model": {"uri": str(folder), "trust_remote_code": True}, "lens": "features",
                                       "subjects": subjects, "budget": 64, "holdout": 8}))

    # Not enabled: refused before the model loads (audit and estimate), and by the loader itself.
    for command in ("audit", "estimate"):
        result = spex_cli(command, str(refused))
        assert result.exit_code == 2, (command, result.output)
        (line,) = result.stderr.strip().splitlines()
        assert "`model.trust_remote_code`" in line and "fix:" in line, line
        assert not marker.exists()
    assert not (env["data"] / "spex.db").exists()  # refused before anything was recorded

    import spex.models
    from spex.errors import SpexInputError

    with pytest.raises(SpexInputError, match="trust_remote_code"):
        spex.models.load(str(folder))
    assert not marker.exists()

    # Enabled explicitly: the model's own classes are loaded and measured.
    result = spex_cli("estimate", str(trusted), "--json")
    assert result.exit_code == 0, result.output
    assert marker.read_text() == "custom code ran"
    assert json.loads(result.stdout)["subjects"][0]["n"] == 5
    loaded = spex.models.load(str(folder), trust_remote_code=True)
    assert type(loaded.model).__name__ == "TinyXForSequenceClassification" and loaded.kind == "classifier"
