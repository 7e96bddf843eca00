"""Files a spec points at (JSON lines of subjects or of training examples), read with one-line errors.

Both the audit spec (``subjects: {file: x.jsonl}``) and the data lens (``lens_options.train: x.jsonl``)
read them; a problem names the spec field and the line, and says what to write instead.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from spex.errors import SpecError


def read_jsonl(path: Path, *, field: str, default_id: bool = False) -> list[dict[str, Any]]:
    """Rows of a JSONL file; a clear SpecError naming ``field`` and the line on any problem.
    ``default_id``: a row without ``id`` gets ``s<k>`` (k counts rows from 1); ids become strings."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise SpecError(f"spec field `{field}`: cannot read {path}: {exc.strerror or exc}; fix: give an existing "
                        f"JSONL file (one JSON object per line), relative to the spec's folder", field=field) from None
    rows = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise SpecError(f"spec field `{field}`: {path} line {number} is not JSON ({exc.msg}); fix: write one JSON "
                            f"object per line", field=field) from None
        if not isinstance(row, dict):
            raise SpecError(f"spec field `{field}`: {path} line {number} is not a JSON object; fix: write one "
                            f"object per line, e.g. {{\"id\": \"s1\", \"prompt\": \"...\"}}", field=field)
        if default_id:
            row.setdefault("id", f"s{len(rows) + 1}")
            row["id"] = str(row["id"])
        rows.append(row)
    if not rows:
        raise SpecError(f"spec field `{field}`: {path} holds no rows; fix: write one JSON object per line", field=field)
    return rows
