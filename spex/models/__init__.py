"""Load the model an audit looks at: ``spex.models.load(uri)`` -> :class:`LoadedModel`.

Where a model can come from (one entry point, so the lenses never care where):

* a local Hugging Face folder (``save_pretrained`` output, a sentence-transformers folder, an
  unpacked MLflow artifact),
* a GGUF file (transformers' gguf loading de-quantizes it),
* a hub name already in the local Hugging Face cache (resolved offline: nothing is downloaded),
* ``builtin:smollm2-135m-instruct`` / ``builtin:minilm-sentiment`` / ``builtin:minilm-l6`` (real
  models that ship inside registry packages and run offline),
* an MLflow registry URI ``models:/name/3``, ``models:/name@alias`` or a run artifact ``runs:/id/path``.

Every loaded model carries an ``identity`` that changes whenever the weights (or the tokenizer) could
change, and only then; lens fingerprints include it, so the ablation store never serves values
computed with other weights. Loading never uses the network.

One job per module, imported bottom-up (no module imports one above it, so there is no cycle):

* :mod:`~spex.models.kinds` — the model kinds, and the check that a checkpoint has the asked-for head;
* :mod:`~spex.models.loaded` — :class:`LoadedModel`;
* :mod:`~spex.models.devices` — ``"auto"`` devices and dtype names;
* :mod:`~spex.models.identity` — :func:`folder_digest` (content digest of a folder or file, cached);
* :mod:`~spex.models.folders` — Hugging Face folders, GGUF files, hub-cache snapshots;
* :mod:`~spex.models.builtins` — the built-in models (converted / fine-tuned once, cached);
* :mod:`~spex.models.registry` — MLflow ``models:/`` and ``runs:/`` URIs -> a local folder;
* :mod:`~spex.models.loading` — :func:`load` / :func:`as_loaded`, the dispatch over all of the above;
* :mod:`~spex.models.scoring` — what the lenses compute with a loaded model (log-probs, embeddings).
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {"resolve_device": "devices", "resolve_dtype": "devices", "file_digest": "identity",
            "folder_digest": "identity", "KINDS": "kinds", "Kind": "kinds", "LoadedModel": "loaded",
            "as_loaded": "loading", "load": "loading"}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    """The public names load with their module on first use: the torch-free modules (``kinds``,
    ``identity``) can be imported by the spec's preflight without the package pulling in torch."""
    if name in _EXPORTS:
        value = getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
