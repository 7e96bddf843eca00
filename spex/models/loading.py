"""``load(uri)``: one entry point for every place a model can come from, so the lenses never care where.

The URI decides the loader: ``builtin:<name>`` (:mod:`spex.models.builtins`), ``models:/…`` /
``runs:/…`` (:mod:`spex.models.registry`, then the downloaded folder), a ``.gguf`` file, a folder, or
a hub id already in the local cache (:mod:`spex.models.folders`). This module sits above all of them
and nothing in spex.models imports it, so the package has no import cycle.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from spex.errors import SpexInputError
from spex.models.builtins import load_builtin
from spex.models.folders import load_folder, load_gguf, load_hub_cached
from spex.models.loaded import Kind, LoadedModel
from spex.models.registry import resolve as resolve_registry_uri


def load(uri: str | os.PathLike[str], *, device: str | torch.device = "auto", dtype: str | torch.dtype | None = None,
         trust_remote_code: bool = False, kind: Kind | None = None, tracking_uri: str | None = None,
         registry_uri: str | None = None) -> LoadedModel:
    """Load a model from a folder, a .gguf file, ``builtin:<name>``, ``models:/...``/``runs:/...`` or a cached hub id.

    ``device="auto"`` picks cuda > mps > cpu; ``dtype=None`` is bf16 (fp16) on CUDA and fp32 elsewhere.
    ``kind`` overrides what the config's architecture says ("causal-lm" | "classifier" | "encoder").
    ``trust_remote_code`` stays off unless asked for: a model that needs custom code is refused with the
    reason. ``tracking_uri``/``registry_uri`` default to spex's MLflow settings for registry URIs.
    """
    text = os.fspath(uri)
    common: dict[str, Any] = {"device": device, "dtype": dtype}
    if text.startswith("builtin:"):
        return load_builtin(text[len("builtin:"):], kind=kind, **common)
    if text.startswith(("models:/", "runs:/")):
        folder, identity, source = resolve_registry_uri(text, tracking_uri=tracking_uri, registry_uri=registry_uri)
        return load_folder(folder, trust_remote_code=trust_remote_code, kind=kind, uri=text, identity=identity,
                           source=source, **common)
    path = Path(text).expanduser()
    if path.is_file() and path.suffix.lower() == ".gguf":
        return load_gguf(path, kind=kind, uri=text, **common)
    if path.is_dir():
        return load_folder(path, trust_remote_code=trust_remote_code, kind=kind, uri=text, **common)
    if path.exists():
        raise SpexInputError(f"{text} is a file but not a .gguf file; give a model folder or a .gguf file")
    if text.startswith((".", "/", "~")) or text.count("/") > 1 or os.sep != "/" and os.sep in text:
        raise SpexInputError(
            f"model path {text} does not exist; give an existing model folder, a .gguf file, "
            f"'builtin:smollm2-135m-instruct', 'builtin:minilm-sentiment' or an MLflow URI 'models:/<name>/<version>'"
        )
    return load_hub_cached(text, trust_remote_code=trust_remote_code, kind=kind, **common)


def as_loaded(model: LoadedModel | str | os.PathLike[str], **kw: Any) -> LoadedModel:
    """Lenses accept a loaded model or anything :func:`load` takes."""
    if isinstance(model, LoadedModel):
        return model
    if isinstance(model, (str, os.PathLike)):
        return load(model, **kw)
    raise SpexInputError(
        f"model must be a spex.models.LoadedModel or a URI for spex.models.load; got {type(model).__name__}"
    )
