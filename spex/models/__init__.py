"""Load the model an audit looks at: ``spex.models.load(uri)`` -> :class:`LoadedModel`.

One entry point for every place a model can come from, so the lenses never care where it came from:

* a local Hugging Face folder (``save_pretrained`` output, a sentence-transformers folder, an
  unpacked MLflow artifact),
* a GGUF file (transformers' gguf loading de-quantizes it),
* a hub name already in the local Hugging Face cache (resolved offline: nothing is downloaded),
* ``builtin:smollm2-135m-instruct`` / ``builtin:minilm-sentiment`` (real models that ship inside
  registry packages and run offline; see :mod:`spex.models.builtins`),
* an MLflow registry URI ``models:/name/3``, ``models:/name@alias`` or a run artifact ``runs:/id/path``.

Every loaded model carries an ``identity``: a string that changes whenever the weights (or the
tokenizer) could change, and only then. Lens fingerprints include it, so the ablation store never
serves values computed with other weights. For folders it is a content digest (cached by file
size + mtime, so a second load does not re-hash gigabytes); for hub snapshots the commit.
"""

from __future__ import annotations

import hashlib
import json
import numbers
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch

from spex.content import content_hash
from spex.errors import SpexInputError
from spex.settings import (
    data_dir,  # importing spex.settings sets HF_HUB_OFFLINE and telemetry defaults
)

Kind = Literal["causal-lm", "classifier", "encoder"]
KINDS: tuple[str, ...] = ("causal-lm", "classifier", "encoder")

__all__ = ["LoadedModel", "load", "resolve_device", "resolve_dtype", "folder_digest", "file_digest", "KINDS"]


@dataclass(eq=False)
class LoadedModel:
    """A model ready for ablations: eval mode, no grads, on its device.

    ``kind`` decides what a lens measures: a causal LM is scored by log-probs of a response, a
    classifier by a class logit/margin, an encoder only embeds (the data lens).
    """

    model: torch.nn.Module
    tokenizer: Any
    kind: Kind
    identity: str
    uri: str
    path: Path | None = None
    source: dict[str, Any] = field(default_factory=dict)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    @property
    def config(self) -> Any:
        return self.model.config

    @property
    def labels(self) -> list[str]:
        """Class names of a classifier in logit order (``id2label``), else empty."""
        if self.kind != "classifier":
            return []
        id2label = getattr(self.model.config, "id2label", None) or {}
        n = int(getattr(self.model.config, "num_labels", len(id2label)))
        return [str(id2label.get(i, id2label.get(str(i), f"LABEL_{i}"))) for i in range(n)]

    def class_index(self, label: int | str) -> int:
        """Index of a class given by index or by name; a clear error if it is not a class."""
        names = self.labels
        if isinstance(label, numbers.Integral) and not isinstance(label, bool) and 0 <= int(label) < len(names):
            return int(label)
        if isinstance(label, str):
            lowered = [n.lower() for n in names]
            if label.lower() in lowered:
                return lowered.index(label.lower())
        raise SpexInputError(f"class {label!r} is not a class of {self.uri}; its classes are {names}")

    def describe(self) -> dict[str, Any]:
        """JSON-able summary for tracking."""
        cfg = self.model.config
        return {
            "uri": self.uri,
            "kind": self.kind,
            "identity": self.identity,
            "architecture": (getattr(cfg, "architectures", None) or [type(self.model).__name__])[0],
            "model_type": getattr(cfg, "model_type", None),
            "n_parameters": int(sum(p.numel() for p in self.model.parameters())),
            "device": str(self.device),
            "dtype": str(self.dtype).replace("torch.", ""),
            **({"labels": self.labels} if self.kind == "classifier" else {}),
            **({"source": self.source} if self.source else {}),
        }

    def __repr__(self) -> str:
        return f"LoadedModel(uri={self.uri!r}, kind={self.kind!r}, device={self.device}, dtype={self.dtype})"


# --------------------------------------------------------------------------------------------- device
def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``auto`` picks cuda > mps > cpu; anything else is passed to ``torch.device``."""
    if isinstance(device, torch.device):
        return device
    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        return torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise SpexInputError(f"device {device!r} is not a torch device; use 'auto', 'cpu', 'cuda', 'cuda:1' or 'mps'") from exc


_DTYPES = {"float32": torch.float32, "fp32": torch.float32, "float16": torch.float16, "fp16": torch.float16,
           "half": torch.float16, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16}


def resolve_dtype(dtype: str | torch.dtype | None, device: torch.device) -> torch.dtype:
    """Default: bf16 on CUDA (fp16 where bf16 is unsupported), fp32 elsewhere (CPU half is slow)."""
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype is None or dtype == "auto":
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.float32
    if dtype not in _DTYPES:
        raise SpexInputError(f"dtype {dtype!r} is not supported; use one of {sorted(_DTYPES)} or None for the default")
    return _DTYPES[dtype]


# --------------------------------------------------------------------------------------------- digests
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
    if path.is_file():
        return [path]
    return sorted(p for p in path.rglob("*")
                  if p.is_file() and not any(part.startswith(".") for part in p.relative_to(path).parts))


def folder_digest(path: str | Path) -> str:
    """Content digest of a model folder (or file): every file's relative name and bytes.

    Hashing is I/O bound (~1 GB/s), so the result is cached under the data dir keyed by each file's
    (name, size, mtime): a later load of an unchanged folder costs one ``stat`` per file.
    """
    path = Path(path).resolve()
    files = _files_of(path)
    stats = [(str(f.relative_to(path)) if path.is_dir() else f.name, f.stat().st_size, f.stat().st_mtime_ns)
             for f in files]
    key = content_hash(stats)
    cache = _read_digest_cache()
    hit = cache.get(str(path))
    if isinstance(hit, dict) and hit.get("key") == key:
        return str(hit["digest"])
    h = hashlib.blake2b(digest_size=16)
    for f, (rel, _, _) in zip(files, stats):
        h.update(rel.encode() + b"\0")
        with open(f, "rb") as fh:
            while chunk := fh.read(1 << 22):
                h.update(chunk)
    digest = h.hexdigest()
    cache = _read_digest_cache()
    cache[str(path)] = {"key": key, "digest": digest}
    _write_digest_cache(cache)
    return digest


def file_digest(path: str | Path) -> str:
    """Content digest of one file (cached like :func:`folder_digest`)."""
    return folder_digest(path)


# --------------------------------------------------------------------------------------------- loading
def _kind_of(cfg: Any) -> Kind:
    """What a config's architecture is for: generation, classification, or plain encoding."""
    from transformers.models.auto.modeling_auto import (
        MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
        MODEL_FOR_MASKED_LM_MAPPING_NAMES,
    )

    archs = list(getattr(cfg, "architectures", None) or [])
    for arch in archs:
        if arch.endswith("ForSequenceClassification"):
            return "classifier"
        if arch.endswith(("ForCausalLM", "LMHeadModel", "ForConditionalGeneration")):
            return "causal-lm"
    if archs:
        return "encoder"
    # No architecture recorded (e.g. a GGUF config): decoder families have a causal-LM head and no
    # masked-LM head; encoders such as BERT have both.
    model_type = getattr(cfg, "model_type", "")
    if getattr(cfg, "is_decoder", False) or (
        model_type in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES and model_type not in MODEL_FOR_MASKED_LM_MAPPING_NAMES
    ):
        return "causal-lm"
    return "encoder"


def _auto_class(kind: Kind) -> Any:
    import transformers

    return {"causal-lm": transformers.AutoModelForCausalLM,
            "classifier": transformers.AutoModelForSequenceClassification,
            "encoder": transformers.AutoModel}[kind]


def _finish(model: torch.nn.Module, device: torch.device, dtype: torch.dtype) -> torch.nn.Module:
    model = model.to(device=device, dtype=dtype)
    model.eval()
    model.requires_grad_(False)
    return model


def _check_remote_code(cfg_dict: dict[str, Any], where: str, trust_remote_code: bool) -> None:
    if cfg_dict.get("auto_map") and not trust_remote_code:
        raise SpexInputError(
            f"{where} needs custom Python code shipped with the model (config 'auto_map'); spex does not run it "
            f"unless you pass trust_remote_code=True; fix: set trust_remote_code: true in the spec's model "
            f"(trust_remote_code=True in Python) only for a model whose code you trust", field="trust_remote_code"
        )


def load_folder(path: str | Path, *, device: str | torch.device = "auto", dtype: str | torch.dtype | None = None,
                trust_remote_code: bool = False, kind: Kind | None = None, uri: str | None = None,
                identity: str | None = None, source: dict[str, Any] | None = None) -> LoadedModel:
    """Load a Hugging Face model folder (weights + config + tokenizer)."""
    import transformers

    folder = Path(path).expanduser()
    if not (folder / "config.json").is_file():
        raise SpexInputError(
            f"{folder} holds no config.json, so it is not a Hugging Face model folder; point at the folder written "
            f"by save_pretrained (or a .gguf file)"
        )
    cfg_dict = json.loads((folder / "config.json").read_text())
    _check_remote_code(cfg_dict, str(folder), trust_remote_code)
    cfg = transformers.AutoConfig.from_pretrained(folder, trust_remote_code=trust_remote_code)
    kind = kind or _kind_of(cfg)
    if kind not in KINDS:
        raise SpexInputError(f"kind must be one of {KINDS}; got {kind!r}")
    dev = resolve_device(device)
    dt = resolve_dtype(dtype, dev)
    model = _auto_class(kind).from_pretrained(folder, dtype=dt, trust_remote_code=trust_remote_code)
    tokenizer = transformers.AutoTokenizer.from_pretrained(folder, trust_remote_code=trust_remote_code)
    return LoadedModel(
        model=_finish(model, dev, dt), tokenizer=tokenizer, kind=kind,
        identity=identity or f"folder:{folder_digest(folder)}", uri=uri or str(folder), path=folder,
        source=source or {},
    )


def load_gguf(path: str | Path, *, device: str | torch.device = "auto", dtype: str | torch.dtype | None = None,
              kind: Kind | None = None, uri: str | None = None) -> LoadedModel:
    """Load a GGUF file (de-quantized by transformers; slow: the builtin converts it once instead)."""
    import transformers

    file = Path(path).expanduser()
    dev = resolve_device(device)
    dt = resolve_dtype(dtype, dev)
    tokenizer = transformers.AutoTokenizer.from_pretrained(file.parent, gguf_file=file.name)
    cfg = transformers.AutoConfig.from_pretrained(file.parent, gguf_file=file.name)
    kind = kind or (_kind_of(cfg) if getattr(cfg, "architectures", None) else "causal-lm")  # GGUF holds LMs
    model = _auto_class(kind).from_pretrained(file.parent, gguf_file=file.name, dtype=torch.float32)
    return LoadedModel(model=_finish(model, dev, dt), tokenizer=tokenizer, kind=kind,
                       identity=f"gguf:{file_digest(file)}", uri=uri or str(file), path=file)


def _load_hub_cached(name: str, **kw: Any) -> LoadedModel:
    """A hub repo id that is already in the local HF cache (no network: HF_HUB_OFFLINE)."""
    from huggingface_hub import snapshot_download

    try:
        folder = Path(snapshot_download(name, local_files_only=True))
    except Exception as exc:  # the hub raises several types for "not cached"
        raise SpexInputError(
            f"{name!r} is neither an existing path nor a model in the local Hugging Face cache (spex runs offline); "
            f"give a local folder, a .gguf file, 'builtin:<name>' or an MLflow URI 'models:/<name>/<version>'"
        ) from exc
    return load_folder(folder, uri=name, identity=f"hf:{name}@{folder.name}", **kw)


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
        from spex.models import builtins

        return builtins.load_builtin(text[len("builtin:"):], kind=kind, **common)
    if text.startswith(("models:/", "runs:/")):
        from spex.models import registry

        folder, identity, source = registry.resolve(text, tracking_uri=tracking_uri, registry_uri=registry_uri)
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
    return _load_hub_cached(text, trust_remote_code=trust_remote_code, kind=kind, **common)


def as_loaded(model: LoadedModel | str | os.PathLike[str], **kw: Any) -> LoadedModel:
    """Lenses accept a loaded model or anything :func:`load` takes."""
    if isinstance(model, LoadedModel):
        return model
    if isinstance(model, (str, os.PathLike)):
        return load(model, **kw)
    raise SpexInputError(
        f"model must be a spex.models.LoadedModel or a URI for spex.models.load; got {type(model).__name__}"
    )
