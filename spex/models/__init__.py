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

* :mod:`~spex.models.loaded` — :class:`LoadedModel`, the model kinds;
* :mod:`~spex.models.devices` — ``"auto"`` devices and dtype names;
* :mod:`~spex.models.identity` — :func:`folder_digest` (content digest of a folder or file, cached);
* :mod:`~spex.models.folders` — Hugging Face folders, GGUF files, hub-cache snapshots;
* :mod:`~spex.models.builtins` — the built-in models (converted / fine-tuned once, cached);
* :mod:`~spex.models.registry` — MLflow ``models:/`` and ``runs:/`` URIs -> a local folder;
* :mod:`~spex.models.loading` — :func:`load` / :func:`as_loaded`, the dispatch over all of the above;
* :mod:`~spex.models.scoring` — what the lenses compute with a loaded model (log-probs, embeddings).
"""

from spex.models.devices import resolve_device, resolve_dtype
from spex.models.identity import file_digest, folder_digest
from spex.models.loaded import KINDS, Kind, LoadedModel
from spex.models.loading import as_loaded, load

__all__ = ["KINDS", "Kind", "LoadedModel", "as_loaded", "file_digest", "folder_digest", "load", "resolve_device",
           "resolve_dtype"]
