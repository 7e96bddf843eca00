"""``spex estimate`` for context subjects: each subject is costed in tokens (a 30-passage prompt costs far
more per mask than a 4-passage one), the throughput is measured on the heaviest subject in batches packed
to the lens's ``batch_tokens``, and each ETA follows the subject's tokens."""

from __future__ import annotations

import json

import yaml

from tests.cli.test_cli_commands import spex_cli
from tests.flows.test_flow_context import tiny_chat_llama  # noqa: F401  (the fixture)

SHORT = ["The capital of Veldoria is Marrow.", "The river Tessin flows through Marrow.", "Gallet is a port.",
         "The Tessin rises in the Kell mountains."]
LONG = [f"Passage {i} tells that the town of Esk had {i} bakers in the year {1800 + i}." for i in range(30)]


def test_estimate_costs_context_subjects_in_tokens(tmp_path, monkeypatch, tiny_chat_llama):  # noqa: F811
    monkeypatch.setenv("SPEX_DATA_DIR", str(tmp_path / "data"))
    spec = {"model": str(tiny_chat_llama), "lens": "context", "holdout": 20,
            "lens_options": {"max_new_tokens": 3, "batch_tokens": 2000},
            "subjects": [{"id": "short", "question": "Which river?", "documents": SHORT},
                         {"id": "long", "question": "How many bakers?", "documents": LONG}]}
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    result = spex_cli("estimate", str(path), "--json")
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    rows = {r["subject"]: r for r in out["subjects"]}
    assert rows["short"]["n"] == 4 and rows["long"]["n"] == 30
    assert rows["long"]["tokens_per_mask"] > 4 * rows["short"]["tokens_per_mask"]
    for r in rows.values():
        assert r["tokens"] == r["to_compute"] * r["tokens_per_mask"]
        assert r["seconds"] == r["tokens"] / out["throughput"]["tokens_per_s"]
    probe = out["throughput"]
    assert probe["subject"] == "long" and probe["token_budget"] == 2000
    assert probe["batch_size"] == max(1, min(32, int(2000 // probe["cost_per_mask"])))  # packed as the engine packs
    assert out["tokens"] == sum(r["tokens"] for r in rows.values())
    text = spex_cli("estimate", str(path))
    assert text.exit_code == 0 and "tokens/mask" in text.stdout and "ETA" in text.stdout


def test_progress_without_a_terminal_prints_an_eta_per_subject(monkeypatch):
    """CI logs get a line per subject every PLAIN_EVERY_S seconds, with an ETA from the computed masks' rate."""
    import io
    import time

    from rich.console import Console

    from flows.cli import _ProgressView

    clock = [1000.0]
    monkeypatch.setattr(time, "monotonic", lambda: clock[0])
    out = io.StringIO()
    view = _ProgressView(Console(file=out, width=200), enabled=True)
    assert not view.live
    view({"event": "subject_start", "subject": "esk-long", "total": 403})
    view({"event": "masks", "subject": "esk-long", "role": "train", "count": 3, "computed": False})  # stored: free
    clock[0] += 5
    view({"event": "masks", "subject": "esk-long", "role": "train", "count": 20, "computed": True})
    assert out.getvalue() == ""  # not yet PLAIN_EVERY_S seconds
    clock[0] += 35  # 40 s after the start, 60 masks computed: 1.5 masks/s; 403 - 83 = 320 left
    view({"event": "masks", "subject": "esk-long", "role": "train", "count": 60 - 20, "computed": True})
    view({"event": "masks", "subject": "esk-long", "role": "train", "count": 20, "computed": False})
    clock[0] += 25
    view({"event": "masks", "subject": "esk-long", "role": "holdout", "count": 0, "computed": True})
    lines = out.getvalue().strip().splitlines()
    assert lines[0] == "subject esk-long: ablate train 63/403 masks, 1.50 masks/s, ETA 3:47"
    assert lines[1].startswith("subject esk-long: ablate holdout 83/403 masks")
