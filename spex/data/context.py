"""The bundled multi-passage questions of the context lens (``context.jsonl``), written for this project.

Fifteen subjects, each a question, its passages and what its author expects (``expect``: the reference
answer, the passages it needs, and ``kind``): ``bridge`` questions need two passages together (the
city of the architect of a bridge: one passage names the architect, another where the architect was
born), ``redundant`` ones can be answered from either of two passages. Distractors name the same people
and places. The entities are invented, so a model cannot answer from memory. Fourteen subjects have 4-8
passages; ``esk-long`` has 40 (a town's history; the answer needs passages 7 and 31).

Every row is a valid subject of a ``lens: context`` spec (``subjects: {file: .../context.jsonl}``).
"""

from __future__ import annotations

import json
from importlib import resources
from typing import Any

FILE = "context.jsonl"


def load_context_questions() -> list[dict[str, Any]]:
    """Rows ``{"id", "question", "documents": [...], "expect": {"answer", "needs", "kind"}}``, in file order."""
    text = resources.files("spex.data").joinpath(FILE).read_text(encoding="utf-8")
    return [json.loads(line) for line in text.splitlines() if line.strip()]
