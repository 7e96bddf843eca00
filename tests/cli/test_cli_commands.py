"""The CLI's contract without running an audit: every bad spec exits 2 with ONE line that names the
field and the fix (and records nothing); ``estimate`` measures a real model; ``report``, ``ui`` and
``interactions`` answer from a recorded audit."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from tests.report.report_fixtures import recorded_release

GOOD = {
    "model": "builtin:minilm-sentiment",
    "lens": "features",
    "subjects": [{"id": "a", "prompt": "The food was not bad at all."}],
}


def spex_cli(*args: str):
    import os

    from flows.cli import QUIET_ENV, app

    # the CLI quiets libraries through the environment: restore it after each call
    return CliRunner().invoke(app, list(args), env={k: os.environ.get(k) for k in QUIET_ENV})


@pytest.fixture
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("SPEX_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv("SPEX_DATABASE_URL", raising=False)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return tmp_path / "data"


def with_(**changes):
    spec = dict(GOOD)
    for key, value in changes.items():
        if value is None:
            spec.pop(key, None)
        else:
            spec[key] = value
    return spec


BAD_SPECS = [
    ("malformed yaml", "model: x\n  lens: [features\n", "spec"),
    ("empty file", "", "spec"),
    ("not a mapping", "- model: x\n", "spec"),
    ("unknown lens", with_(lens="feature"), "lens"),
    ("unknown method", with_(method="proxy-spex"), "method"),
    ("missing model", with_(model=None), "model"),
    ("model not a string", with_(model=42), "model"),
    ("budget zero", with_(budget=0), "budget"),
    ("budget negative", with_(budget=-5), "budget"),
    ("budget words", with_(budget="lots"), "budget"),
    ("holdout too small", with_(holdout=3), "holdout"),
    ("alpha negative", with_(alpha=-1), "alpha"),
    ("seed negative", with_(seed=-1), "seed"),
    ("misspelt field", with_(gatez={}), "gatez"),
    ("faithfulness above 1", with_(gates={"faithfulness_min": 1.5}), "gates.faithfulness_min"),
    ("jaccard above 1", with_(gates={"top_k_jaccard_min": 2}), "gates.top_k_jaccard_min"),
    ("negative rank shift", with_(gates={"max_rank_shift": -2}), "gates.max_rank_shift"),
    ("empty forbidden entry", with_(gates={"forbidden": [""]}), "gates.forbidden"),
    ("no subjects", with_(subjects=[]), "subjects"),
    ("duplicate ids", with_(subjects=[{"id": "a", "prompt": "x y"}, {"id": "a", "prompt": "y z"}]), "subjects"),
    ("empty prompt", with_(subjects=[{"id": "a", "prompt": "   "}]), "subjects[0].prompt"),
    ("misspelt subject field", with_(subjects=[{"id": "a", "promt": "x"}]), "subjects[0].promt"),
    ("heads answers mismatch", with_(lens="heads", subjects=[{"id": "t", "prompts": ["a", "b"], "answers": ["x"]}]),
     "subjects[0]"),
    ("data subject without label", with_(lens="data", subjects=[{"id": "t", "text": "good"}]), "subjects[0].label"),
    ("unknown lens option", with_(lens_options={"unti": "word"}), "lens_options.unti"),
    ("bad lens option value", with_(lens_options={"unit": "paragraph"}), "lens_options.unit"),
    ("unknown method option", with_(method_options={"depth": 3}), "method_options"),
    ("unknown ranking index", with_(ranking={"index": "shap"}), "ranking.index"),
    ("shapley of order 2", with_(ranking={"index": "shapley", "order": 2}), "ranking"),
    ("subjects file missing", with_(subjects={"file": "nope.jsonl"}), "subjects.file"),
    ("subjects mapping", with_(subjects={"path": "x.jsonl"}), "subjects"),
    ("model path missing", with_(model="/no/such/model"), "model"),
    ("registry model missing", with_(model="models:/no-such-model/3"), None),
]


@pytest.mark.parametrize("name, spec, field", BAD_SPECS, ids=[c[0] for c in BAD_SPECS])
def test_a_bad_spec_exits_2_with_one_line(name, spec, field, data_dir, tmp_path):
    path = tmp_path / "spec.yaml"
    path.write_text(spec if isinstance(spec, str) else yaml.safe_dump(spec))
    result = spex_cli("audit", str(path))
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    line = lines[0]
    assert line.startswith("error: ")
    if field is not None:
        assert f"`{field}`" in line or (field == "spec" and "spec" in line), line
        assert "fix:" in line, line
    else:
        assert "no-such-model" in line
    assert not (data_dir / "spex.db").exists()  # nothing recorded
    assert not (data_dir / "ablations").exists()


def test_a_jsonl_subjects_file_with_a_bad_line(data_dir, tmp_path):
    (tmp_path / "subjects.jsonl").write_text('{"id": "a", "prompt": "fine"}\nnot json\n')
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(with_(subjects={"file": "subjects.jsonl"})))
    result = spex_cli("estimate", str(path))
    assert result.exit_code == 2 and "line 2" in result.stderr and "`subjects.file`" in result.stderr


def test_estimate_measures_the_model(data_dir, tmp_path):
    from tests.flows.flow_models import tiny_bert

    folder = tiny_bert(tmp_path / "bert", seed=5)
    (tmp_path / "subjects.jsonl").write_text(
        '{"id": "food", "prompt": "the food was not bad at all"}\n'
        '{"id": "movie", "prompt": "i expected to hate the movie yet loved every minute of it"}\n')
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump({"model": str(folder), "lens": "features", "subjects": {"file": "subjects.jsonl"},
                                    "holdout": 40, "alpha": 4}))
    result = spex_cli("estimate", str(path), "--json")
    assert result.exit_code == 0, result.output
    import json

    out = json.loads(result.stdout)
    rows = {r["subject"]: r for r in out["subjects"]}
    assert rows["food"]["n"] == 7 and rows["movie"]["n"] == 12
    assert rows["food"]["budget"] == 128  # 2^7 masks: cheaper exact than sampled
    assert rows["movie"]["holdout"] == 40 and rows["movie"]["design"] <= rows["movie"]["budget"]
    assert out["throughput"]["masks_per_s"] > 0 and out["eta_seconds"] > 0
    text = spex_cli("estimate", str(path))
    assert text.exit_code == 0 and "ETA" in text.stdout and "masks/s" in text.stdout


def test_report_ui_and_interactions_answer_from_the_db(data_dir, tmp_path):
    from spex.records.metadata import MetadataStore

    db = f"sqlite:///{tmp_path / 'meta.db'}"
    with MetadataStore(db) as store:
        base, release = recorded_release(store)
    result = spex_cli("report", release[:8], "--db", db)
    assert result.exit_code == 0, result.output
    html = Path(result.stdout.splitlines()[0].removeprefix("report: ").strip())
    assert html == data_dir / "reports" / release / "report.html" and html.is_file()
    assert "diff against the baseline" in html.read_text()

    out = tmp_path / "elsewhere"
    assert spex_cli("report", base, "--db", db, "--out", str(out)).exit_code == 0
    assert (out / "report.html").is_file() and (out / "interactions.json").is_file()

    missing = spex_cli("report", "zzzz", "--db", db)
    assert missing.exit_code == 2 and len(missing.stderr.strip().splitlines()) == 1

    ui = spex_cli("ui", release[:8], "--db", db)
    assert ui.exit_code == 0, ui.output
    assert "mlflow ui --backend-store-uri" in ui.stdout and "prefect server start" in ui.stdout
    assert f"audit {release}" in ui.stdout and "runs/flow-run/bbbbbbbb-bbbb-bbbb-bbbb-bbbbbbbbbbbb" in ui.stdout

    inter = spex_cli("interactions", "--model", "tiny-sentiment", "--subject", "dddddddd", "--db", db, "--json")
    assert inter.exit_code == 0, inter.output
    import json

    assert json.loads(inter.stdout)["index"] == "fbii"


def test_an_unreachable_database_exits_2_before_any_model_call(data_dir, tmp_path):
    from tests.flows.flow_models import tiny_bert

    folder = tiny_bert(tmp_path / "bert", seed=5)
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump({**GOOD, "model": str(folder)}))
    result = spex_cli("audit", str(path), "--db", "postgresql+psycopg://spex:s3cret@127.0.0.1:9/nowhere")
    assert result.exit_code == 2
    (line,) = result.stderr.strip().splitlines()
    assert "metadata DB" in line and "fix:" in line and "s3cret" not in line
    assert not (data_dir / "ablations").exists() or not any((data_dir / "ablations").iterdir())


def test_an_unwritable_data_dir_exits_2(tmp_path, monkeypatch):
    import os

    from tests.flows.flow_models import tiny_bert

    if os.geteuid() == 0:
        blocked = tmp_path / "file-not-dir"
        blocked.write_text("x")  # root ignores permissions: a data dir *under a file* is unwritable for anyone
        monkeypatch.setenv("SPEX_DATA_DIR", str(blocked / "data"))
    else:
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        monkeypatch.setenv("SPEX_DATA_DIR", str(locked / "data"))
    folder = tiny_bert(tmp_path / "bert", seed=5)
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump({**GOOD, "model": str(folder)}))
    result = spex_cli("audit", str(path), "--db", f"sqlite:///{tmp_path / 'meta.db'}")
    assert result.exit_code == 2
    (line,) = result.stderr.strip().splitlines()
    assert "data dir" in line and "SPEX_DATA_DIR" in line
