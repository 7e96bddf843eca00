"""Files a spec points at (JSON lines of subjects or of training examples), read with one-line errors.

Both the audit spec (``subjects: {file: x.jsonl}``) and the data lens (``lens_options.train: x.jsonl``)
read them; a problem names the spec field and the line, and says what to write instead. The spec file
itself is read by :mod:`spex.audit.spec.loading`, which shares :func:`not_a_regular_file` with this.
"""

from __future__ import annotations

import json
import stat
from pathlib import Path
from typing import Any

from spex.errors import SpecError

_KINDS = ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a named pipe (FIFO)"), (stat.S_ISSOCK, "a socket"),
          (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"))


def not_a_regular_file(path: Path) -> str | None:
    """What ``path`` is when it exists but is not a regular file (``"a named pipe (FIFO)"``), else None.

    Checked before reading: opening a FIFO with no writer blocks for ever, and a device never ends."""
    try:
        mode = path.stat().st_mode
    except OSError:
        return None  # reading it reports what is wrong
    if stat.S_ISREG(mode):
        return None
    return next((kind for test, kind in _KINDS if test(mode)), "not a regular file")


class _DuplicateKey(ValueError):
    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A JSON object whose key is given twice is an error (``json`` would keep the last one silently),
    as a duplicate key of the YAML spec is."""
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise _DuplicateKey(key)
        out[key] = value
    return out


def _nul_in(value: Any, where: str = "") -> str | None:
    """The key path (``.prompt``) of the first string holding a NUL character, else None."""
    if isinstance(value, str):
        return where if "\x00" in value else None
    if isinstance(value, dict):
        return next((p for k, v in value.items() if (p := _nul_in(k, where) or _nul_in(v, f"{where}.{k}")) is not None),
                    None)
    if isinstance(value, list):
        return next((p for i, v in enumerate(value) if (p := _nul_in(v, f"{where}[{i}]")) is not None), None)
    return None


def read_jsonl_lines(path: Path, *, field: str, default_id: bool = False) -> list[tuple[int, dict[str, Any]]]:
    """(line number, row) of each row of a JSONL file; a clear SpecError naming ``field``, the file and
    the line on any problem. ``default_id``: a row without ``id`` gets ``s<k>`` (k counts rows from 1);
    ids become strings."""
    path = Path(path)
    kind = not_a_regular_file(path)
    if kind is not None:
        raise SpecError(f"spec field `{field}`: {path} is {kind}, not a regular file; fix: give a JSONL file (one "
                        f"JSON object per line)", field=field)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise SpecError(f"spec field `{field}`: cannot read {path}: {exc.strerror or exc}; fix: give an existing "
                        f"JSONL file (one JSON object per line), relative to the spec's folder", field=field) from None
    except UnicodeDecodeError as exc:
        line = path.read_bytes()[: exc.start].count(b"\n") + 1
        raise SpecError(f"spec field `{field}`: {path} line {line} is not UTF-8 text; fix: save the file as UTF-8",
                        field=field) from None
    rows: list[tuple[int, dict[str, Any]]] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        at = f"spec field `{field}`: {path} line {number}"
        try:
            row = json.loads(line, object_pairs_hook=_unique_keys)
        except _DuplicateKey as exc:
            raise SpecError(f"{at}: key {exc.key!r} is given twice (JSON would keep only the last one silently); "
                            f"fix: keep one {exc.key!r}", field=field) from None
        except json.JSONDecodeError as exc:
            raise SpecError(f"{at} is not JSON ({exc.msg}); fix: write one JSON object per line", field=field) from None
        except RecursionError:
            raise SpecError(f"{at}: its values are nested too deeply to read; fix: write one flat JSON object per line",
                            field=field) from None
        if not isinstance(row, dict):
            raise SpecError(f"{at} is not a JSON object; fix: write one object per line, e.g. "
                            f"{{\"id\": \"s1\", \"prompt\": \"...\"}}", field=field)
        nul = _nul_in(row)
        if nul is not None:
            raise SpecError(f"{at}: {nul.lstrip('.') or 'a key'} contains a NUL character (\\x00), which the metadata "
                            f"DB cannot store; fix: remove it", field=field)
        if default_id:
            row.setdefault("id", f"s{len(rows) + 1}")
            row["id"] = str(row["id"])
        rows.append((number, row))
    if not rows:
        raise SpecError(f"spec field `{field}`: {path} holds no rows; fix: write one JSON object per line", field=field)
    return rows


def read_jsonl(path: Path, *, field: str, default_id: bool = False) -> list[dict[str, Any]]:
    """The rows of a JSONL file (:func:`read_jsonl_lines` without the line numbers)."""
    return [row for _, row in read_jsonl_lines(path, field=field, default_id=default_id)]
