"""Model identity: the content digest of a model folder or file, cached so a reload costs one ``stat``
per file.

A model's identity is part of every lens fingerprint, so the ablation store never serves values that
other weights computed: it must change whenever a file's bytes (or its name) change, and only then —
a copy of a folder elsewhere has the same identity. Hashing is I/O bound (~1 GB/s), so the digest is
cached under the data dir keyed by each file's (relative name, size, mtime).

The file bytes are hashed as a stream (:func:`spex.content.hasher`, the same blake2b as every spex
digest): :func:`spex.content.bytes_digest` would need a multi-gigabyte checkpoint in memory at
once. The cache key is :func:`spex.content.content_hash` of the stat list.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from spex.content import content_hash, hasher
from spex.errors import SpexInputError
from spex.settings import data_dir

_READ_BYTES = 1 << 22  # 4 MiB reads: large enough for the disk, small enough for memory


def missing_local_path(uri: str) -> bool:
    """Whether a model URI is meant as a local path (``/x``, ``./x``, ``~/x``, ``a/b/c``) that does not
    exist. ``builtin:``, ``models:/``, ``runs:/`` and hub ids (``org/name``) are not local paths."""
    if uri.startswith(("builtin:", "models:/", "runs:/")) or Path(uri).expanduser().exists():
        return False
    return uri.startswith((".", "/", "~")) or uri.count("/") > 1


def read_json_file(path: Path) -> Any:
    """A model folder's JSON file (``config.json``, the tokenizer's files), or a one-line
    SpexInputError naming the file: a truncated copy is a bare JSONDecodeError otherwise."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        problem = "is not UTF-8 text"
    except json.JSONDecodeError as exc:
        problem = f"is not valid JSON (line {exc.lineno} column {exc.colno}: {exc.msg}; a truncated or partial copy?)"
    except OSError as exc:
        problem = f"cannot be read ({exc.strerror or exc})"
    raise SpexInputError(f"{path} {problem}; fix: copy the model folder again, or point the model at a complete one",
                         field="model")


def check_folder_json(folder: Path) -> None:
    """Every JSON file at the top of a model folder parses (checked before a model loads)."""
    for path in sorted(Path(folder).glob("*.json")):
        if path.is_file():
            read_json_file(path)


def _digest_cache_path() -> Path:
    return data_dir() / "cache" / "digests.json"


def _read_digest_cache() -> dict[str, Any]:
    try:
        return json.loads(_digest_cache_path().read_text())
    except (OSError, ValueError):
        return {}


def _write_digest_cache(entries: dict[str, Any]) -> None:
    """Atomic replace (temp + rename): a concurrent writer loses an entry at worst, never corrupts."""
    path = _digest_cache_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".digests-", suffix=".json")
    try:
        with os.fdopen(fd, "w") as fh:
            json.dump(entries, fh)
        os.replace(tmp, path)
    except OSError:
        Path(tmp).unlink(missing_ok=True)


def _files_of(path: Path) -> list[Path]:
    """The file itself, or a folder's files in name order (hidden files and folders left out)."""
    if path.is_file():
        return [path]
    return sorted(p for p in path.rglob("*")
                  if p.is_file() and not any(part.startswith(".") for part in p.relative_to(path).parts))


def folder_digest(path: str | Path) -> str:
    """Content digest of a model folder (or one file): every file's relative name and bytes.

    Cached under the data dir keyed by each file's (name, size, mtime): a later call on an unchanged
    folder costs one ``stat`` per file.
    """
    path = Path(path).resolve()
    files = _files_of(path)
    stats = [(str(f.relative_to(path)) if path.is_dir() else f.name, f.stat().st_size, f.stat().st_mtime_ns)
             for f in files]
    key = content_hash(stats)
    hit = _read_digest_cache().get(str(path))
    if isinstance(hit, dict) and hit.get("key") == key:
        return str(hit["digest"])
    h = hasher()
    for f, (rel, _, _) in zip(files, stats):
        h.update(rel.encode() + b"\0")
        with open(f, "rb") as fh:
            while chunk := fh.read(_READ_BYTES):
                h.update(chunk)
    digest = h.hexdigest()
    cache = _read_digest_cache()  # re-read: another process may have added entries meanwhile
    cache[str(path)] = {"key": key, "digest": digest}
    _write_digest_cache(cache)
    return digest


def file_digest(path: str | Path) -> str:
    """Content digest of one file (cached like :func:`folder_digest`)."""
    return folder_digest(path)
