"""Model files on this machine -> :class:`LoadedModel`: a Hugging Face folder, a GGUF file, or a hub
snapshot already in the local Hugging Face cache.

Never the network: every transformers call gets ``local_files_only=True``, so loading does not depend
on ``HF_HUB_OFFLINE`` being set (the entry points set it; a library caller may not). Without it,
transformers may ask the hub about a local folder (e.g. to list a tokenizer's files), which
stalls or fails on a machine without network. transformers is imported inside the functions: importing
spex.models stays cheap for callers that only need identities.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from spex.errors import SpexInputError
from spex.models.devices import resolve_device, resolve_dtype
from spex.models.identity import file_digest, folder_digest, read_json_file
from spex.models.kinds import check_kind, kind_of_architectures
from spex.models.loaded import KINDS, Kind, LoadedModel


def _kind_of(cfg: Any) -> Kind:
    """What a config's architecture is for: generation, classification, or plain encoding."""
    from transformers.models.auto.modeling_auto import (
        MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
        MODEL_FOR_MASKED_LM_MAPPING_NAMES,
    )

    archs = list(getattr(cfg, "architectures", None) or [])
    recorded = kind_of_architectures(archs)
    if recorded is not None:
        return recorded
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
    cfg_dict = read_json_file(folder / "config.json")
    _check_remote_code(cfg_dict, str(folder), trust_remote_code)
    local = {"trust_remote_code": trust_remote_code, "local_files_only": True}
    cfg = transformers.AutoConfig.from_pretrained(folder, **local)
    if kind is not None:
        if kind not in KINDS:
            raise SpexInputError(f"kind must be one of {KINDS}; got {kind!r}")
        check_kind(kind, list(getattr(cfg, "architectures", None) or []), str(folder))
    kind = kind or _kind_of(cfg)
    dev = resolve_device(device)
    dt = resolve_dtype(dtype, dev)
    model = _auto_class(kind).from_pretrained(folder, dtype=dt, **local)
    tokenizer = transformers.AutoTokenizer.from_pretrained(folder, **local)
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
    local = {"gguf_file": file.name, "local_files_only": True}
    tokenizer = transformers.AutoTokenizer.from_pretrained(file.parent, **local)
    cfg = transformers.AutoConfig.from_pretrained(file.parent, **local)
    kind = kind or (_kind_of(cfg) if getattr(cfg, "architectures", None) else "causal-lm")  # GGUF holds LMs
    model = _auto_class(kind).from_pretrained(file.parent, dtype=torch.float32, **local)
    return LoadedModel(model=_finish(model, dev, dt), tokenizer=tokenizer, kind=kind,
                       identity=f"gguf:{file_digest(file)}", uri=uri or str(file), path=file)


def load_hub_cached(name: str, **kw: Any) -> LoadedModel:
    """A hub repo id that is already in the local Hugging Face cache (looked up offline)."""
    from huggingface_hub import snapshot_download

    try:
        folder = Path(snapshot_download(name, local_files_only=True))
    except Exception as exc:  # the hub raises several types for "not cached"
        raise SpexInputError(
            f"{name!r} is neither an existing path nor a model in the local Hugging Face cache (spex runs offline); "
            f"give a local folder, a .gguf file, 'builtin:<name>' or an MLflow URI 'models:/<name>/<version>'"
        ) from exc
    return load_folder(folder, uri=name, identity=f"hf:{name}@{folder.name}", **kw)
