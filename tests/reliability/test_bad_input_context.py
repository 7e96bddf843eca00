"""Bad input of the context lens (issue 15), through the real CLI as a user meets it: a subject without
documents or without a question, an empty list of documents, a blank question, a template without its
placeholders. Each is exit code 2, exactly one line on stderr that names the field and says ``fix:``,
and nothing partial (no audit row, no MLflow run, no ablation); the checks are ``test_bad_input.py``'s."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from tests.reliability.test_bad_input import (  # noqa: F401  (the fixtures: found by pytest under these names)
    _ablations,
    _records,
    env,
    spex_cli,
)

QUESTION = "Which river flows through the capital?"
DOCS = ["The capital is Marrow.", "The river Tessin flows through Marrow."]


def context_spec(model: str, subject: dict[str, Any], **changes: Any) -> dict[str, Any]:
    return {"model": model, "lens": "context", "subjects": [{"id": "rag", **subject}], "budget": 16, "holdout": 8,
            **changes}


CASES = [
    ("no documents", {"question": QUESTION}, {}, "subjects[0].documents"),
    ("no question", {"documents": DOCS}, {}, "subjects[0].question"),
    ("empty documents", {"question": QUESTION, "documents": []}, {}, "subjects[0].documents"),
    ("blank passage", {"question": QUESTION, "documents": [DOCS[0], " \u200b "]}, {}, "subjects[0].documents"),
    ("blank question", {"question": "   ", "documents": DOCS}, {}, "subjects[0].question"),
    ("a features prompt instead", {"question": QUESTION, "prompt": "x"}, {}, "subjects[0].prompt"),
    ("template without context", {"question": QUESTION, "documents": DOCS},
     {"lens_options": {"template": "Query: {question}"}}, "lens_options.template"),
    ("unknown unit", {"question": QUESTION, "documents": DOCS}, {"lens_options": {"unit": "word"}}, "lens_options.unit"),
]


@pytest.mark.parametrize("subject, changes, names", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_context_spec_exits_2_with_one_line_naming_the_field(env: dict[str, Any], subject, changes, names) -> None:  # noqa: F811
    path = env["root"] / "context-spec.yaml"
    path.write_text(yaml.safe_dump(context_spec(str(env["lm"]), subject, **changes), allow_unicode=True), encoding="utf-8")
    before_audits, before_runs, _ = _records(env["data"])
    before_ablations = _ablations(env["data"])

    result = spex_cli("audit", str(path), "--quiet")

    assert result.exit_code == 2, (result.exit_code, result.output, result.exception)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    line = lines[0]
    assert line.startswith("error: ") and "Traceback" not in result.output
    assert f"`{names}`" in line and "fix:" in line, line
    assert result.stdout.strip() == ""
    after_audits, after_runs, running = _records(env["data"])
    assert after_audits == before_audits and after_runs == before_runs and running == []
    assert _ablations(env["data"]) == before_ablations
