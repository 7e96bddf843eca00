"""Bad input, round two (issue 16): one row per case, through the real CLI where a user meets it.

The rows are checked as ``test_bad_input.py`` checks its own (whose fixtures and helpers this module
imports): exit code 2, exactly one line on stderr that starts with ``error:``, names the field (or the
file) and says ``fix:``, nothing on stdout, and nothing partial — no audit row in the metadata DB, no
MLflow run, no ablation written. A row's ``input`` is a spec (a dict, YAML text or bytes) or a function
that builds the spec file in the module's folder (a FIFO, a JSONL file, a broken model folder).
``case`` is the number of the case in issue 16.

docs/reliability.md ("Bad input, round two (issue 16)") lists the same table.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.reliability.test_bad_input import (  # noqa: F401  (the fixtures: found by pytest under these names)
    MODEL,
    _ablations,
    _records,
    _resolve,
    env,
    prefect,
    spec,
    spex_cli,
    subject,
)

Env = dict[str, Any]


@pytest.fixture(scope="module")
def ctx(env: Env) -> Env:  # noqa: F811
    """The bad-input module's data dir and tiny models (``test_bad_input.env``), for this module."""
    return env


@dataclass(frozen=True)
class Row:
    case: int  # the number of the case in issue 16
    name: str
    input: Any  # a spec dict, YAML text / bytes, or build(ctx) -> the spec path
    names: str  # what the one line must name
    flow: bool = False  # needs the tiny model's tokenizer or classes: runs the flow (Prefect harness)


def _words(n: int) -> str:
    return " ".join(f"w{i}" for i in range(n))


# ---------------------------------------------------------------------------------------------- builders
def _spec_file(ctx: Env, body: Any, name: str = "spec.yaml") -> Path:
    path = ctx["root"] / name
    path.write_text(yaml.safe_dump(_resolve(body, ctx), allow_unicode=True), encoding="utf-8")
    return path


def _subjects_file(content: bytes) -> Callable[[Env], Path]:
    """A spec whose subjects are the JSONL ``content`` (written beside it as ``subjects.jsonl``)."""

    def build(ctx: Env) -> Path:
        (ctx["root"] / "subjects.jsonl").write_bytes(content)
        return _spec_file(ctx, spec(subjects={"file": "subjects.jsonl"}))

    return build


def _broken_model(ctx: Env) -> Path:
    """A copy of the tiny classifier whose config.json is cut short (as an interrupted copy leaves it)."""
    import shutil

    folder = ctx["root"] / "broken-model"
    if not folder.exists():
        shutil.copytree(ctx["bert"], folder)
        config = (folder / "config.json").read_bytes()
        (folder / "config.json").write_bytes(config[: len(config) // 2])
    return _spec_file(ctx, spec(model=str(folder)))


def _fifo(ctx: Env) -> Path:
    path = ctx["root"] / "spec.fifo"
    if not path.exists():
        os.mkfifo(path)  # no writer: reading it would block for ever
    return path


TRAIN = [{"text": "good food", "label": "positive"}, {"text": "bad food", "label": "negative"},
         {"text": "great service", "label": "positive"}]
BILLION_LAUGHS = "model: <bert>\nlens: features\nsubjects: [{id: a, prompt: the food was good}]\nmethod_options:\n" + \
    "  a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n" + "".join(
        f"  {b}: &{b} [{', '.join([f'*{a}'] * 9)}]\n" for a, b in zip("abcdefgh", "bcdefghi"))


ROWS: list[Row] = [
    # -------------------------------------------------------------- serious
    Row(1, "a data subject's field on a features subject", spec(**subject(text="the food was good")),
        "`subjects[0].text`"),
    Row(1, "a features subject's field on a data subject",
        spec(lens="data", subjects=[{"id": "a", "prompt": "the food was good", "label": "positive"}]),
        "`subjects[0].prompt`"),
    Row(1, "a heads option on the features lens", spec(lens_options={"layers": [0]}), "`lens_options.layers`"),
    Row(2, "YAML alias bomb in method_options", BILLION_LAUGHS, "alias"),
    Row(3, "method option of the wrong type", spec(method_options={"max_trees": "many"}),
        "`method_options.max_trees`"),
    Row(3, "method option depths not a list", spec(method_options={"depths": 3}), "`method_options.depths`"),
    Row(4, "prompt of zero-width spaces only", spec(**subject(prompt="\u200b\u200b \u200b\u2060")),
        "`subjects[0].prompt`"),
    Row(6, "NUL character in a prompt", spec(**subject(prompt="the food\x00 was good")), "`subjects[0].prompt`"),
    Row(12, "data-lens target label no training example has",
        spec(lens="data", lens_options={"train": TRAIN},
             subjects=[{"id": "a", "text": "the food was good", "label": "neutral"}]), "`subjects[0].label`"),
    Row(17, "absurd budget", spec(budget=10**12, **subject(prompt=_words(30))), "the largest budget that fits is"),
    Row(18, "model folder with a truncated config.json", _broken_model, "config.json"),
    # -------------------------------------------------------------- message quality
    Row(19, "20,000 nested brackets", "model: " + "[" * 20_000 + "]" * 20_000 + "\n", "spec file"),
    Row(22, "spec path is a FIFO", _fifo, "spec file"),
    Row(23, "bad field in a subjects JSONL row",
        _subjects_file(b'{"id": "a", "prompt": "x y"}\n\n{"id": "b", "prompt": 5}\n'), "subjects.jsonl line 3"),
    Row(24, "duplicate key in a subjects JSONL row",
        _subjects_file(b'{"id": "a", "prompt": "x y", "prompt": "z"}\n'), "`subjects.file`"),
    Row(25, "seed: true", spec(seed=True), "`seed`"),
    Row(25, "top_k: on (YAML 1.1 boolean)", "model: <bert>\nlens: features\nsubjects: [{id: a, prompt: x y}]\n"
        "ranking: {top_k: on}\n", "`ranking.top_k`"),
    Row(25, "max_batch: yes", "model: <bert>\nlens: features\nsubjects: [{id: a, prompt: x y}]\nbatch: {max_batch: yes}\n",
        "`batch.max_batch`"),
    Row(25, "max_rank_shift: true", spec(gates={"max_rank_shift": True}), "`gates.max_rank_shift`"),
    Row(26, "models:/<name>/latest", spec(model="models:/tiny-sentiment/latest"), "models:/tiny-sentiment/1"),
    Row(28, "subjects JSONL not UTF-8", _subjects_file(b'{"id": "a", "prompt": "caf\xe9"}\n'), "`subjects.file`"),
    Row(29, "heads layer the model does not have", spec(lens="heads", lens_options={"layers": [99]},
        subjects=[{"id": "t", "prompts": ["the food was good"], "answers": ["positive"]}]), "`lens_options.layers`"),
    Row(29, "data encoder path that does not exist",
        spec(lens="data", lens_options={"train": TRAIN, "encoder": "/no/such/encoder"},
             subjects=[{"id": "a", "text": "the food was good", "label": "positive"}]), "`lens_options.encoder`"),
    Row(13, "causal-lm kind on a classifier checkpoint", spec(model={"uri": MODEL, "kind": "causal-lm"}),
        "`model.kind`"),
    Row(30, "a CUDA device this machine does not have", spec(model={"uri": MODEL, "device": "cuda:99"}),
        "`model.device`"),
]


def test_every_row_has_an_issue_case() -> None:
    assert len({r.name for r in ROWS}) == len(ROWS)
    assert all(1 <= r.case <= 31 for r in ROWS)


# ---------------------------------------------------------------------------------------------- the check
def _write(row: Row, ctx: Env) -> Path:
    if callable(row.input):
        return row.input(ctx)
    path = ctx["root"] / "spec.yaml"
    if isinstance(row.input, bytes):
        path.write_bytes(row.input)
    elif isinstance(row.input, str):
        path.write_text(row.input.replace(MODEL, str(ctx["bert"])), encoding="utf-8")
    else:
        return _spec_file(ctx, row.input)
    return path


def refused_with_one_line(ctx: Env, args: list[str], names: str) -> str:
    """Run ``spex <args>``; assert exit 2, one ``error: ... fix: ...`` line naming ``names``, nothing on
    stdout, nothing written; return the line."""
    before_audits, before_runs, _ = _records(ctx["data"])
    before_ablations = _ablations(ctx["data"])
    result = spex_cli(*args)
    assert result.exit_code == 2, (result.exit_code, result.output, result.exception)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    line = lines[0]
    assert line.startswith("error: ") and "Traceback" not in result.output, line
    assert names in line and "fix:" in line, line
    assert result.stdout.strip() == "", result.stdout
    after_audits, after_runs, running = _records(ctx["data"])
    assert after_audits == before_audits == 0  # no half audit in the metadata DB
    assert after_runs == before_runs and running == []  # no MLflow run, none left RUNNING
    assert _ablations(ctx["data"]) == before_ablations  # no ablation written
    return line


@pytest.mark.parametrize("row", ROWS, ids=[f"{r.case}-{r.name}" for r in ROWS])
def test_bad_input_round2_exits_2_with_one_line(row: Row, ctx: Env, request: pytest.FixtureRequest) -> None:
    if row.flow:
        request.getfixturevalue("prefect")
    refused_with_one_line(ctx, ["audit", str(_write(row, ctx)), "--quiet"], row.names)


# ---------------------------------------------------------------------------------------------- the wording
def test_a_field_of_another_lens_says_whose_it_is(ctx: Env) -> None:
    """#1: not "did you mean" a look-alike field of this lens, but the lens the field belongs to."""
    line = refused_with_one_line(ctx, ["audit", str(_spec_file(ctx, spec(**subject(text="x y")))), "--quiet"],
                                 "`subjects[0].text`")
    assert "`text` belongs to the data lens; the features lens takes `prompt`" in line, line
    assert "did you mean" not in line, line


# ---------------------------------------------------------------------------------------------- one real audit
ANSI = "\x1b[2J\x1b[31m"  # clear the screen, then red
AUDIT_SUBJECTS = [{"id": "x/y", "prompt": "good food"}, {"id": "x_y", "prompt": "bad food"},
                  {"id": f"ansi{ANSI}id", "prompt": f"great {ANSI}red food"}]


@pytest.fixture(scope="module")
def hostile_ids_audit(ctx: Env, prefect: None) -> dict[str, Any]:  # noqa: F811
    """ONE audit (#14, #15) whose subject ids share an export file name (``x/y``, ``x_y``) or hold
    ANSI escapes, as do a prompt's words; its own data dir (the rows above expect no audit)."""
    from spex.settings import scoped_environ

    body = {"model": str(ctx["bert"]), "lens": "features", "subjects": AUDIT_SUBJECTS, "budget": "auto",
            "holdout": 8, "removal_r": 1, "ranking": {"index": "fbii", "order": 2, "top_k": 3, "record_top": 20}}
    path = _spec_file(ctx, body, "hostile-ids.yaml")
    with scoped_environ({"SPEX_DATA_DIR": str(ctx["root"] / "hostile-ids-data")}):
        result = spex_cli("audit", str(path))
        assert result.exit_code == 0, (result.output, result.exception)
        audit_id = result.stdout.strip().splitlines()[-1].split()[1].rstrip(":")
        shown = spex_cli("audits", "show", audit_id)
        assert shown.exit_code == 0, shown.output
    export = Path(next(line.split(None, 1)[1] for line in result.stdout.splitlines() if line.startswith("export:")))
    return {"stdout": result.stdout, "show": shown.stdout, "export": export}


def test_subject_ids_get_distinct_export_files(hostile_ids_audit: dict[str, Any]) -> None:
    """#14: ``x/y`` and ``x_y`` both map to ``x_y``; each keeps a file of its own, and
    ``interactions.json`` lists, per subject, the files that hold that subject."""
    export = hostile_ids_audit["export"]
    document = json.loads(export.read_text(encoding="utf-8"))
    listed = {key: s["shapiq_files"] for key, s in document["subjects"].items()}
    assert set(listed) == {s["id"] for s in AUDIT_SUBJECTS}
    names = [name for files in listed.values() for name in files]
    assert len(names) == len(set(names)) == 2 * len(AUDIT_SUBJECTS)  # ranking + shapley, per subject
    assert listed["x_y"] == ["x_y.fbii.json", "x_y.shapley.json"]  # an id that is its own file name keeps it
    for key, files in listed.items():
        for name in files:
            shapiq = json.loads((export.parent / "shapiq" / name).read_text(encoding="utf-8"))
            assert shapiq["parameters"]["subject"] == key, (key, name)


def test_ansi_escapes_in_ids_and_words_are_shown_escaped(hostile_ids_audit: dict[str, Any]) -> None:
    """#15: the CLI never sends the user's escape sequences raw to the terminal: ``spex audit``'s
    progress, ranking and summary and ``spex audits show`` print them as ``\\x1b``."""
    for output in (hostile_ids_audit["stdout"], hostile_ids_audit["show"]):
        assert "\x1b" not in output
        assert "ansi\\x1b[2J\\x1b[31mid" in output, output
    assert "\\x1b[2J\\x1b[31mred" in hostile_ids_audit["stdout"]  # a feature label in the ranking
