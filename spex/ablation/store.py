"""The ablation store: (fingerprint, mask bits) -> value, on disk, append-only, crash-safe.

Model calls are the expensive part of an audit (hours of GPU for a large model), so every value ever
measured is kept and never measured twice. The store is a directory per value-function fingerprint::

    <root>/<fingerprint>/meta.json                          written once: n, labels, describe()
    <root>/<fingerprint>/<time_ns>-<pid>-<uuid>.chunk       append-only chunk files
    <root>/<fingerprint>/.tmp-*.part                        a chunk being written (readers ignore)

Why this layout:

* **Atomic chunks.** Each chunk is written to a temp file in the same directory, fsynced, then
  ``os.replace``-d to its final name (and the directory fsynced). A reader sees a chunk whole or not at
  all, so a ``kill -9`` loses at most the chunk in flight and never leaves a half chunk behind.
* **No shared mutable file.** Writers never modify an existing file; names carry the pid and a uuid, so
  two processes writing the same fingerprint at once never collide. Duplicate masks across chunks are
  harmless (same fingerprint, same value); if two values for one mask disagree, the first one (chunk
  name order ~ write time) is kept and the disagreement is counted, never silently mixed.
* **Self-checking chunks.** A chunk carries its shape and a blake2b digest; a damaged file (disk fault,
  someone copying half a directory) is skipped with a warning instead of poisoning the cache.
* **Fast load.** Masks are stored as packed bits; in memory a fingerprint's values are a sorted array of
  fixed-width ``np.void`` keys and a float64 array, so loading, de-duplicating and looking up are
  ``np.unique`` / ``np.searchsorted`` over whole arrays (1M masks at n=128 load in well under 2 s) and no
  Python loop ever runs per mask.
* **Compaction.** Many small chunks slow a load down (one ``open`` each), so small chunks can be merged
  into one: the merged chunk is written atomically *before* its sources are deleted, so a concurrent
  reader that finds a source gone re-lists and finds the merged chunk; nothing is lost in any order.

Chunk format (little endian): ``b"SPEXABL1"``, uint32 n, uint32 bytes per mask, uint64 count, the packed
masks (``np.packbits(masks, axis=1)``: feature 0 is the high bit of byte 0), the float64 values, and a
16-byte blake2b digest of everything before it.

This module imports neither torch nor SQLAlchemy nor MLflow (pyarrow only inside the Parquet export).
"""

from __future__ import annotations

import errno
import json
import logging
import os
import re
import struct
import threading
import time
import uuid
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from spex.content import bytes_digest
from spex.engine.inputs import check_masks, check_values
from spex.engine.maskbits import BIT_ORDER, keys_to_masks, mask_keys
from spex.errors import SpexInputError
from spex.settings import data_dir

log = logging.getLogger("spex.ablation")

MAGIC = b"SPEXABL1"
_HEADER = struct.Struct("<8sIIQ")  # magic, n, bytes per mask, count
_DIGEST_SIZE = 16
CHUNK_SUFFIX = ".chunk"
TMP_PREFIX = ".tmp-"
META_NAME = "meta.json"
FORMAT_VERSION = 1
_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_STALE_TMP_SECONDS = 6 * 3600  # a temp file this old belongs to a dead writer


class AblationStoreError(RuntimeError):
    """The ablation store cannot be read or written; the message names the path and the fix."""


class AblationStoreUnwritable(AblationStoreError, SpexInputError):
    """The store's directory cannot be written (permissions, read-only or full disk).

    Also a ``SpexInputError``: it is a problem of the user's environment that must be reported clearly
    *before* any model call is spent, like bad input.
    """


class _CorruptChunk(Exception):
    pass


def _encode_chunk(n: int, packed: np.ndarray, values: np.ndarray) -> bytes:
    count, width = packed.shape
    body = b"".join((
        _HEADER.pack(MAGIC, n, width, count),
        np.ascontiguousarray(packed, dtype=np.uint8).tobytes(),
        np.ascontiguousarray(values, dtype="<f8").tobytes(),
    ))
    return body + bytes.fromhex(bytes_digest(body, size=_DIGEST_SIZE))


def _decode_chunk(data: bytes) -> tuple[int, np.ndarray, np.ndarray]:
    """(n, void keys, values) of one chunk file's bytes, or ``_CorruptChunk``."""
    if len(data) < _HEADER.size + _DIGEST_SIZE:
        raise _CorruptChunk(f"{len(data)} bytes is shorter than a chunk header")
    magic, n, width, count = _HEADER.unpack_from(data)
    if magic != MAGIC:
        raise _CorruptChunk("not a spex ablation chunk (bad magic)")
    if n < 1 or width != (n + 7) // 8:
        raise _CorruptChunk(f"header says n={n} but {width} bytes per mask")
    expected = _HEADER.size + count * width + count * 8 + _DIGEST_SIZE
    if len(data) != expected:
        raise _CorruptChunk(f"{len(data)} bytes, expected {expected} for {count} masks (truncated?)")
    if bytes_digest(data[:-_DIGEST_SIZE], size=_DIGEST_SIZE) != data[-_DIGEST_SIZE:].hex():
        raise _CorruptChunk("checksum mismatch")
    keys = np.frombuffer(data, dtype=np.dtype((np.void, width)), count=count, offset=_HEADER.size)
    values = np.frombuffer(data, dtype="<f8", count=count, offset=_HEADER.size + count * width)
    return int(n), keys, values.astype(np.float64)


def _fsync_dir(path: Path) -> None:
    """Make a rename durable: fsync the directory entry (a no-op where the OS refuses it)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _atomic_write(directory: Path, name: str, data: bytes, *, exclusive: bool = False) -> bool:
    """Write ``directory/name`` whole or not at all (temp file + fsync + rename).

    With ``exclusive`` the final name is created only if absent (hard link; rename where links are not
    supported), and False is returned when it already existed: that is how ``meta.json`` is written once.
    """
    tmp = directory / f"{TMP_PREFIX}{uuid.uuid4().hex}-{name}.part"
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        created = True
        if exclusive:
            try:
                os.link(tmp, directory / name)
            except FileExistsError:
                created = False
            except OSError:  # filesystems without hard links: last writer wins, content is identical
                os.replace(tmp, directory / name)
        else:
            os.replace(tmp, directory / name)
    except OSError as exc:
        _unlink_quietly(tmp)
        raise _store_error(directory, exc) from exc
    _unlink_quietly(tmp)
    _fsync_dir(directory)
    return created


def _unlink_quietly(path: Path) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def _store_error(path: Path, exc: OSError) -> AblationStoreError:
    reasons = {errno.ENOSPC: "the disk is full", errno.EDQUOT: "the disk quota is exceeded",
               errno.EACCES: "permission denied", errno.EPERM: "permission denied",
               errno.EROFS: "the filesystem is read-only",
               errno.ENOTDIR: "a component of the path is a file, not a directory",
               errno.EEXIST: "a file is in the way of a directory"}
    reason = reasons.get(exc.errno or -1, str(exc))
    cls = AblationStoreUnwritable if exc.errno in reasons else AblationStoreError
    return cls(f"cannot write the ablation store at {path}: {reason}; "
               f"set SPEX_DATA_DIR (or the store root) to a writable directory with free space")


@dataclass
class _Index:
    """In-memory view of one fingerprint: sorted unique keys, their values, which chunks were read."""

    n: int | None = None
    keys: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.dtype((np.void, 1))))
    values: np.ndarray = field(default_factory=lambda: np.zeros(0))
    loaded: set[str] = field(default_factory=set)
    conflicts: int = 0
    max_conflict: float = 0.0
    corrupt: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class StoreStats:
    """What a fingerprint's store holds, for reports and tracking."""

    fingerprint: str
    n_features: int | None
    count: int
    chunks: int
    size_bytes: int
    conflicts: int
    max_conflict: float
    corrupt_chunks: tuple[str, ...]


class AblationStore:
    """Content-addressed, append-only store of measured values, shared safely between processes.

    ``root`` defaults to ``<data dir>/ablations``. Thread-safe within a process; any number of
    processes may read and append to the same fingerprint at once.
    """

    def __init__(self, root: str | os.PathLike[str] | None = None) -> None:
        self.root = Path(root) if root is not None else data_dir() / "ablations"
        self._indexes: dict[str, _Index] = {}
        self._lock = threading.RLock()

    def __repr__(self) -> str:
        return f"AblationStore({str(self.root)!r})"

    # ------------------------------------------------------------------ paths and metadata
    def path(self, fingerprint: str) -> Path:
        """The directory of one fingerprint (a hash of it when the fingerprint is not a safe file name)."""
        if not isinstance(fingerprint, str) or not fingerprint:
            raise SpexInputError(f"fingerprint must be a non-empty string; got {fingerprint!r}")
        name = fingerprint if _SAFE_NAME.match(fingerprint) else \
            "h-" + bytes_digest(fingerprint)
        return self.root / name

    def meta(self, fingerprint: str) -> dict[str, Any] | None:
        """The metadata written by :meth:`register`, or None if this fingerprint has none yet."""
        try:
            return json.loads((self.path(fingerprint) / META_NAME).read_text())
        except (FileNotFoundError, NotADirectoryError):  # nothing stored (writing will say why it cannot)
            return None
        except (OSError, ValueError) as exc:
            raise AblationStoreError(f"cannot read {self.path(fingerprint) / META_NAME}: {exc}") from exc

    def register(self, fingerprint: str, n_features: int, feature_labels: Sequence[str] | None = None,
                 describe: dict[str, Any] | None = None) -> dict[str, Any]:
        """Create the fingerprint's directory and write its metadata once (atomically).

        Doubles as the writability check an audit makes before its first model call: an unwritable or
        full store raises :class:`AblationStoreUnwritable` here, not after hours of computing. If the
        metadata exists with a different ``n_features`` the fingerprint is not what it claims to be and
        an error is raised rather than mixing two functions' values.
        """
        directory = self.path(fingerprint)
        try:
            directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise _store_error(directory, exc) from exc
        existing = self.meta(fingerprint)
        if existing is None:
            meta = {
                "format": FORMAT_VERSION,
                "fingerprint": fingerprint,
                "n_features": int(n_features),
                "feature_labels": [str(x) for x in feature_labels] if feature_labels is not None else None,
                "describe": describe,
                "bit_order": BIT_ORDER,
                "created_unix": time.time(),
            }
            text = json.dumps(meta, indent=1, sort_keys=True, default=repr)
            if _atomic_write(directory, META_NAME, text.encode(), exclusive=True):
                existing = meta
            else:  # another process registered first
                existing = self.meta(fingerprint)
        else:  # prove the directory is still writable before a model call is spent
            probe = directory / f"{TMP_PREFIX}{uuid.uuid4().hex}.probe"
            try:
                probe.write_bytes(b"")
            except OSError as exc:
                raise _store_error(directory, exc) from exc
            _unlink_quietly(probe)
        assert existing is not None
        if int(existing["n_features"]) != int(n_features):
            raise AblationStoreError(
                f"fingerprint {fingerprint!r} is stored with n_features={existing['n_features']} but the value "
                f"function has n_features={n_features}; its fingerprint must include everything that determines "
                f"its output (fix the lens), or remove {directory}")
        return existing

    def fingerprints(self) -> list[str]:
        """Every fingerprint that has metadata under the root."""
        if not self.root.is_dir():
            return []
        out = []
        for entry in sorted(os.scandir(self.root), key=lambda e: e.name):
            meta = Path(entry.path) / META_NAME
            if entry.is_dir() and meta.is_file():
                try:
                    out.append(json.loads(meta.read_text())["fingerprint"])
                except (OSError, ValueError, KeyError):
                    continue
        return out

    # ------------------------------------------------------------------ reading
    def _chunk_names(self, directory: Path) -> list[str]:
        try:
            return sorted(e.name for e in os.scandir(directory)
                          if e.name.endswith(CHUNK_SUFFIX) and not e.name.startswith("."))
        except (FileNotFoundError, NotADirectoryError):
            return []

    def _read_chunk(self, path: Path) -> tuple[int, np.ndarray, np.ndarray]:
        with open(path, "rb") as fh:
            return _decode_chunk(fh.read())

    def _refresh(self, fingerprint: str) -> _Index:
        """Bring the in-memory index up to date with chunks other processes (or runs) wrote."""
        index = self._indexes.setdefault(fingerprint, _Index())
        directory = self.path(fingerprint)
        if index.n is None:
            meta = self.meta(fingerprint)
            if meta is not None:
                index.n = int(meta["n_features"])
        for _ in range(100):  # re-list when a concurrent compaction removed a chunk under us
            names = self._chunk_names(directory)
            index.loaded &= set(names)  # names are unique forever; forget deleted ones
            new = [name for name in names if name not in index.loaded]
            if not new:
                return index
            parts_k, parts_v, vanished = [], [], False
            for name in new:
                try:
                    n, keys, values = self._read_chunk(directory / name)
                except FileNotFoundError:
                    vanished = True  # merged into a compacted chunk that the next listing shows
                    continue
                except (_CorruptChunk, OSError) as exc:
                    index.loaded.add(name)
                    index.corrupt.append(name)
                    warnings.warn(f"ablation store: skipping damaged chunk {directory / name}: {exc}",
                                  RuntimeWarning, stacklevel=3)
                    continue
                if index.n is None:
                    index.n = n
                if n != index.n:
                    index.loaded.add(name)
                    index.corrupt.append(name)
                    warnings.warn(f"ablation store: skipping chunk {directory / name} with n={n} "
                                  f"(fingerprint has n={index.n})", RuntimeWarning, stacklevel=3)
                    continue
                index.loaded.add(name)
                parts_k.append(keys)
                parts_v.append(values)
            if parts_k:
                self._merge(index, np.concatenate(parts_k), np.concatenate(parts_v))
            if not vanished:
                return index
        raise AblationStoreError(f"the chunks of {directory} kept vanishing while being read; retry")

    @staticmethod
    def _merge(index: _Index, keys: np.ndarray, values: np.ndarray) -> np.ndarray:
        """Add (keys, values) to the index, keeping the first value of any key; returns the mask of rows
        (of the de-duplicated input, in sorted order) that were new. Conflicts are counted."""
        uniq, first, inverse = np.unique(keys, return_index=True, return_inverse=True)
        kept = values[first]
        differs = values != kept[inverse.reshape(-1)]
        if differs.any():
            index.conflicts += int(differs.sum())
            index.max_conflict = max(index.max_conflict,
                                     float(np.abs(values - kept[inverse.reshape(-1)]).max()))
        if len(index.keys) == 0:
            index.keys, index.values = uniq, kept
            return np.ones(len(uniq), dtype=bool)
        if index.keys.dtype != uniq.dtype:
            raise AblationStoreError(f"mask width {uniq.dtype.itemsize} bytes does not match the store's "
                                     f"{index.keys.dtype.itemsize}")
        pos = np.searchsorted(index.keys, uniq)
        hit = pos < len(index.keys)
        hit[hit] = index.keys[pos[hit]] == uniq[hit]
        if hit.any():
            old = index.values[pos[hit]]
            differs = old != kept[hit]
            if differs.any():
                index.conflicts += int(differs.sum())
                index.max_conflict = max(index.max_conflict, float(np.abs(old - kept[hit]).max()))
        new = ~hit
        if new.any():
            index.keys = np.insert(index.keys, pos[new], uniq[new])
            index.values = np.insert(index.values, pos[new], kept[new])
        return new

    def lookup(self, fingerprint: str, masks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(values, found) for each mask row: values are NaN where ``found`` is False."""
        x = np.asarray(masks)
        with self._lock:
            index = self._refresh(fingerprint)
            n = index.n if index.n is not None else (x.shape[1] if x.ndim == 2 else x.shape[-1])
            x = check_masks(x, n)
            out = np.full(len(x), np.nan)
            found = np.zeros(len(x), dtype=bool)
            if len(index.keys) == 0 or len(x) == 0:
                return out, found
            keys = mask_keys(x)
            pos = np.searchsorted(index.keys, keys)
            inside = pos < len(index.keys)
            found[inside] = index.keys[pos[inside]] == keys[inside]
            out[found] = index.values[pos[found]]
            return out, found

    def load(self, fingerprint: str) -> tuple[np.ndarray, np.ndarray]:
        """Every stored (mask, value) of a fingerprint, masks as bool (N, n), in a fixed (sorted) order."""
        with self._lock:
            index = self._refresh(fingerprint)
            if index.n is None:
                return np.zeros((0, 0), dtype=bool), np.zeros(0)
            return keys_to_masks(index.keys, index.n), index.values.copy()

    def count(self, fingerprint: str) -> int:
        """Number of distinct masks stored for the fingerprint."""
        with self._lock:
            return len(self._refresh(fingerprint).keys)

    def size_bytes(self, fingerprint: str) -> int:
        """Bytes on disk of the fingerprint's chunks and metadata."""
        total = 0
        directory = self.path(fingerprint)
        for name in [*self._chunk_names(directory), META_NAME]:
            try:
                total += (directory / name).stat().st_size
            except FileNotFoundError:
                pass
        return total

    def content_hash(self, fingerprint: str) -> str:
        """A hash of the stored (mask, value) set, independent of how it is split into chunks: the
        provenance of an ablation set (same hash, same data), for MLflow tags and Postgres rows."""
        with self._lock:
            index = self._refresh(fingerprint)
            return bytes_digest(b"".join((str(index.n).encode(), np.ascontiguousarray(index.keys).tobytes(),
                                          np.ascontiguousarray(index.values, dtype="<f8").tobytes())))

    def stats(self, fingerprint: str) -> StoreStats:
        """Counts, size, conflicts and damaged chunks of one fingerprint."""
        with self._lock:
            index = self._refresh(fingerprint)
            return StoreStats(fingerprint=fingerprint, n_features=index.n, count=len(index.keys),
                              chunks=len(self._chunk_names(self.path(fingerprint))),
                              size_bytes=self.size_bytes(fingerprint), conflicts=index.conflicts,
                              max_conflict=index.max_conflict, corrupt_chunks=tuple(index.corrupt))

    # ------------------------------------------------------------------ writing
    def append(self, fingerprint: str, masks: np.ndarray, values: np.ndarray) -> int:
        """Store values for masks as one new chunk; returns how many new masks were written.

        Masks already stored (by this or any other process) are not written again; if a given value disagrees with the stored one the stored value wins and the
        conflict is counted. The fingerprint is registered on first use if :meth:`register` was not
        called.
        """
        x = np.asarray(masks)
        if x.ndim != 2:
            raise SpexInputError(f"masks must be a 2-D array (B, n); got shape {x.shape}")
        x = check_masks(x, x.shape[1])
        v = check_values(values, len(x), source="AblationStore.append values")
        if len(x) == 0:
            return 0
        with self._lock:
            index = self._refresh(fingerprint)  # what other processes stored meanwhile is not rewritten
            if index.n is None:
                meta = self.meta(fingerprint) or self.register(fingerprint, x.shape[1])
                index.n = int(meta["n_features"])
            if x.shape[1] != index.n:
                raise SpexInputError(f"masks have width {x.shape[1]} but fingerprint {fingerprint!r} "
                                     f"is stored with n={index.n}")
            keys = mask_keys(x)
            # Chunks are written in key order: a load then sorts concatenated sorted runs, which numpy's
            # stable sort merges in near-linear time (1M masks: ~0.1 s instead of ~0.6 s).
            keys, first, inverse = np.unique(keys, return_index=True, return_inverse=True)
            inverse = inverse.reshape(-1)
            differs = v != v[first][inverse]
            if differs.any():  # the same mask twice in one call with two values: keep the first
                index.conflicts += int(differs.sum())
                index.max_conflict = max(index.max_conflict, float(np.abs(v - v[first][inverse]).max()))
            v = v[first]
            if len(index.keys):
                pos = np.searchsorted(index.keys, keys)
                inside = pos < len(index.keys)
                hit = np.zeros(len(keys), dtype=bool)
                hit[inside] = index.keys[pos[inside]] == keys[inside]
                if hit.any():
                    differs = index.values[pos[hit]] != v[hit]
                    if differs.any():
                        index.conflicts += int(differs.sum())
                        index.max_conflict = max(index.max_conflict,
                                                 float(np.abs(index.values[pos[hit]] - v[hit]).max()))
                keys, v = keys[~hit], v[~hit]
            if len(keys) == 0:
                return 0
            directory = self.path(fingerprint)
            name = f"{time.time_ns():020d}-{os.getpid()}-{uuid.uuid4().hex[:12]}{CHUNK_SUFFIX}"
            packed = np.ascontiguousarray(keys).view(np.uint8).reshape(len(keys), -1)
            _atomic_write(directory, name, _encode_chunk(index.n, packed, v))
            index.loaded.add(name)
            self._merge(index, keys, v)
            return len(keys)

    def compact(self, fingerprint: str, *, max_chunk_bytes: int = 64 << 20) -> int:
        """Merge the fingerprint's chunks smaller than ``max_chunk_bytes`` into one; returns how many
        chunk files were merged away (0 when there was nothing to merge).

        Safe against concurrent readers, writers and compactors: a source chunk is deleted only after
        its content is durable in the merged chunk, and only chunks read whole here are deleted.
        Also removes temp files left by writers that died long ago.
        """
        directory = self.path(fingerprint)
        now = time.time()
        try:
            entries = list(os.scandir(directory))
        except (FileNotFoundError, NotADirectoryError):
            return 0
        for entry in entries:  # temp files of writers killed hours ago
            if entry.name.startswith(TMP_PREFIX):
                try:
                    if now - entry.stat().st_mtime > _STALE_TMP_SECONDS:
                        _unlink_quietly(Path(entry.path))
                except FileNotFoundError:
                    pass
        small = []
        for entry in entries:
            if entry.name.endswith(CHUNK_SUFFIX) and not entry.name.startswith("."):
                try:
                    if entry.stat().st_size < max_chunk_bytes:
                        small.append(entry.name)
                except FileNotFoundError:
                    pass
        small.sort()
        if len(small) < 2:
            return 0
        read, parts_k, parts_v, n_seen = [], [], [], None
        for name in small:
            try:
                n, keys, values = self._read_chunk(directory / name)
            except (FileNotFoundError, _CorruptChunk, OSError):
                continue  # gone (another compactor) or damaged (left for a person to inspect)
            if n_seen is not None and n != n_seen:
                continue
            n_seen = n
            read.append(name)
            parts_k.append(keys)
            parts_v.append(values)
        if len(read) < 2 or n_seen is None:
            return 0
        merged = _Index(n=n_seen)
        self._merge(merged, np.concatenate(parts_k), np.concatenate(parts_v))
        packed = np.ascontiguousarray(merged.keys).view(np.uint8).reshape(len(merged.keys), -1)
        # Named after the oldest source so "first value wins" keeps its meaning after compaction.
        stamp = read[0].split("-", 1)[0]
        name = f"{stamp}-{os.getpid()}-{uuid.uuid4().hex[:12]}-c{CHUNK_SUFFIX}"
        with self._lock:
            _atomic_write(directory, name, _encode_chunk(n_seen, packed, merged.values))
            index = self._indexes.get(fingerprint)
            if index is not None and set(read) <= index.loaded:
                index.loaded.add(name)  # already in memory: no need to read it back
        for source in read:
            _unlink_quietly(directory / source)
        _fsync_dir(directory)
        log.debug("compacted %d chunks of %s into %s", len(read), fingerprint, name)
        return len(read)

    def maybe_compact(self, fingerprint: str, *, max_chunks: int = 256) -> int:
        """Compact when the fingerprint has more than ``max_chunks`` chunk files (best effort: a store
        that cannot be compacted right now is still correct, only slower to load)."""
        if len(self._chunk_names(self.path(fingerprint))) <= max_chunks:
            return 0
        try:
            return self.compact(fingerprint)
        except AblationStoreError as exc:
            log.warning("ablation store compaction skipped: %s", exc)
            return 0

    # ------------------------------------------------------------------ export
    def export_parquet(self, fingerprint: str, path: str | os.PathLike[str], *,
                       per_feature: bool | None = None) -> Path:
        """Write the fingerprint's ablation set as one Parquet file (for MLflow artifacts, pandas).

        Columns: ``mask`` (fixed-size binary, packed bits in the store's bit order), ``value`` (float64)
        and, when ``per_feature`` (default: n <= 256), one bool column ``x{i}`` per feature. Schema
        metadata carries the fingerprint, n, labels, bit order and :meth:`content_hash`. Written
        atomically, like everything else here.
        """
        import pyarrow as pa
        import pyarrow.parquet as pq

        with self._lock:
            index = self._refresh(fingerprint)
            keys, values, n = index.keys.copy(), index.values.copy(), index.n
        if n is None:
            raise AblationStoreError(f"nothing stored for fingerprint {fingerprint!r} under {self.root}")
        width = (n + 7) // 8
        meta = self.meta(fingerprint) or {}
        columns: dict[str, Any] = {
            "mask": pa.FixedSizeBinaryArray.from_buffers(
                pa.binary(width), len(keys), [None, pa.py_buffer(np.ascontiguousarray(keys).tobytes())]),
            "value": pa.array(values, type=pa.float64()),
        }
        if per_feature if per_feature is not None else n <= 256:
            masks = keys_to_masks(keys, n)
            for i in range(n):
                columns[f"x{i}"] = pa.array(masks[:, i])
        table = pa.table(columns)
        table = table.replace_schema_metadata({
            "spex.fingerprint": fingerprint,
            "spex.n_features": str(n),
            "spex.feature_labels": json.dumps(meta.get("feature_labels")),
            "spex.bit_order": BIT_ORDER,
            "spex.content_hash": self.content_hash(fingerprint),
        })
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.parent / f"{TMP_PREFIX}{uuid.uuid4().hex}-{target.name}.part"
        try:
            pq.write_table(table, tmp)
            os.replace(tmp, target)
        except OSError as exc:
            _unlink_quietly(tmp)
            raise _store_error(target.parent, exc) from exc
        return target


def read_parquet(path: str | os.PathLike[str]) -> tuple[np.ndarray, np.ndarray, dict[str, str]]:
    """Read an exported ablation set back: (masks bool (N, n), values, schema metadata)."""
    import pyarrow.parquet as pq

    table = pq.read_table(path, columns=["mask", "value"])
    meta = {k.decode(): v.decode() for k, v in (table.schema.metadata or {}).items()}
    n = int(meta["spex.n_features"])
    width = (n + 7) // 8
    column = table.column("mask").combine_chunks()
    raw = np.frombuffer(column.buffers()[1], dtype=np.uint8, count=len(column) * width,
                        offset=column.offset * width)
    return keys_to_masks(raw.view(np.dtype((np.void, width))), n), table.column("value").to_numpy(), meta
