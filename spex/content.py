"""Content identity and JSON-ready values: the one place spex hashes content or turns values into JSON.

Vocabulary (``docs/architecture.md`` has the glossary):

* a **digest** is :func:`content_hash` of some data (a subject, a spec, a mask matrix, a file);
* a value function's **fingerprint** is the digest of everything that determines its outputs;
* a model's **identity** (stored as its *revision*) is the digest of its weights' content;
* a **mask key** is a row's packed bits (:mod:`spex.engine.maskbits`), not a hash: exact, collision-free.

Why one canonical form: identities are compared across processes, machines and releases (the ablation
store, Prefect's task cache, the metadata DB's subject keys). Two helpers that serialised the same
value differently would give one thing two identities — and a cache that silently misses.

Pure Python + numpy: every layer may import this module, the engine included.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

DIGEST_SIZE = 16  # bytes: 32 hex characters


def bytes_digest(data: bytes | str, size: int = DIGEST_SIZE) -> str:
    """Hex blake2b digest of raw bytes (a ``str`` is UTF-8 encoded)."""
    if isinstance(data, str):
        data = data.encode()
    return hashlib.blake2b(data, digest_size=size).hexdigest()


def hasher(size: int = DIGEST_SIZE) -> hashlib.blake2b:
    """An incremental hasher of the same digest as :func:`bytes_digest`, for content too large to hold
    in memory at once (model files): ``update`` it chunk by chunk, then ``hexdigest()``."""
    return hashlib.blake2b(digest_size=size)


def array_digest(array: np.ndarray, size: int = DIGEST_SIZE) -> str:
    """Hex digest of an array's shape, dtype and bytes (bool masks are packed first, so a mask matrix
    and its packed form give the same digest as :func:`spex.engine.sampling.digest`)."""
    a = np.ascontiguousarray(array)
    h = hashlib.blake2b(digest_size=size)
    h.update(np.asarray(a.shape, dtype=np.int64).tobytes())
    if a.dtype == bool:
        h.update((np.packbits(a, axis=1) if a.ndim == 2 else np.packbits(a.reshape(-1))).tobytes())
    else:
        h.update(str(a.dtype).encode())
        h.update(a.tobytes())
    return h.hexdigest()


def _canonical_default(obj: Any) -> Any:
    if isinstance(obj, np.ndarray):
        return {"__ndarray__": array_digest(obj), "shape": list(obj.shape), "dtype": str(obj.dtype)}
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, (set, frozenset)):
        return sorted(obj, key=repr)
    if hasattr(obj, "model_dump"):  # a pydantic model: its JSON form
        return obj.model_dump(mode="json")
    return repr(obj)


def canonical_json(obj: Any) -> str:
    """``obj`` as canonical JSON text: sorted keys, no spaces, numpy arrays by content digest, numpy
    scalars unwrapped, sets sorted, pydantic models by their JSON dump, anything else by ``repr``."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=_canonical_default)


def content_hash(obj: Any, size: int = DIGEST_SIZE) -> str:
    """The digest of ``obj``'s canonical JSON (see :func:`canonical_json`)."""
    return bytes_digest(canonical_json(obj), size)


def to_jsonable(obj: Any, *, text: Callable[[str], str] | None = None) -> Any:
    """``obj`` as plain JSON values: numpy scalars and arrays unwrapped, tuples and sets to lists (sets
    sorted), mapping keys to strings, non-finite floats to ``None`` (JSON and Postgres JSONB have no
    NaN). ``text`` maps every string value (e.g. to hide secrets before storing)."""
    if obj is None or isinstance(obj, (bool, np.bool_)):
        return None if obj is None else bool(obj)
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        value = float(obj)
        return value if math.isfinite(value) else None
    if isinstance(obj, str):
        return text(obj) if text is not None else obj
    if isinstance(obj, Mapping):
        return {str(k): to_jsonable(v, text=text) for k, v in obj.items()}
    if isinstance(obj, np.ndarray):
        return to_jsonable(obj.tolist(), text=text)
    if isinstance(obj, (set, frozenset)):
        return [to_jsonable(v, text=text) for v in sorted(obj, key=repr)]
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v, text=text) for v in obj]
    if isinstance(obj, np.generic):
        return to_jsonable(obj.item(), text=text)
    if hasattr(obj, "model_dump"):  # a pydantic model
        return to_jsonable(obj.model_dump(mode="json"), text=text)
    if hasattr(obj, "isoformat"):  # datetime, date
        return obj.isoformat()
    if hasattr(obj, "__fspath__"):  # a path
        return to_jsonable(str(obj), text=text)
    return to_jsonable(repr(obj), text=text)
