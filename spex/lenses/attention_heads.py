"""The heads lens: which attention heads (and which combinations of them) a task depends on.

A feature is one attention head of one layer. Removing it means cutting its contribution where the
heads are mixed: the input of the attention output projection (``o_proj`` in Llama, ``c_proj`` in
GPT-2, ``attention.output.dense`` in BERT) is the concatenation of the per-head outputs, so head h is
the slice ``[h*d, (h+1)*d)``. A forward pre-hook on that projection multiplies each slice by a gate:

* ``mode="zero"``: gate 0 removes the head (``rescale=True`` multiplies the kept heads of that layer
  by H / kept, so the layer's output keeps its scale — the "dropout" view of ablation);
* ``mode="mean"``: a removed head's slice is replaced by its mean over a reference set (the task's
  own sequences by default), which keeps the downstream activations in distribution.

Why hooks: transformers 5 silently ignores ``head_mask``. Why the projection *input*: with grouped-
query attention (SmolLM2: 9 query heads share 3 key/value heads) the projection still sees one slice
per *query* head, so every query head is its own feature and GQA needs no special case.

One forward for B masks: the P task sequences are repeated B times (row b*P + p) and each row
carries its own gates, so a batch of masks costs one padded forward of B*P rows.

Value of a mask: mean over the task of the answer's summed log-prob (causal LM; teacher forced) or of
the correct class's margin (classifier: its logit minus the best other logit).
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Iterator, Literal

import numpy as np
import torch

from spex.errors import SpexInputError
from spex.lenses.base import ValueFunction, fingerprint_of
from spex.lenses.registrations.heads import LENS_VERSION, HeadsOptions, HeadsSubject
from spex.models import LoadedModel, as_loaded
from spex.models.scoring import (
    causal_logprobs,
    classifier_logits,
    margins,
    pad_id_of,
    pad_left,
    pad_right,
)

__all__ = ["LENS_VERSION", "OUTPUT_PROJECTIONS", "HeadLens", "HeadSite", "from_spec", "head_sites", "heads"]

Mode = Literal["zero", "mean"]

# Attention output projections, relative to one transformer block, by architecture family.
OUTPUT_PROJECTIONS: tuple[str, ...] = (
    "self_attn.o_proj",          # Llama, Mistral, Qwen, Gemma, SmolLM2
    "attn.c_proj",               # GPT-2
    "attention.output.dense",    # BERT, RoBERTa, MiniLM
    "attention.out_lin",         # DistilBERT
    "self_attn.out_proj",        # OPT, BART-style decoders
    "attn.out_proj",             # GPT-J / GPT-NeoX style
    "attention.dense",           # GPT-NeoX
    "self_attention.dense",      # Falcon / BLOOM
)


@dataclass(frozen=True)
class HeadSite:
    """Where the heads of one layer are mixed: the projection module and the per-head slice width."""

    layer: int
    module: torch.nn.Module
    name: str
    n_heads: int
    head_dim: int


def _in_features(module: torch.nn.Module) -> int | None:
    if isinstance(module, torch.nn.Linear):
        return module.in_features
    nx = getattr(module, "nx", None)  # transformers' Conv1D (GPT-2) stores weight as (in, out)
    if isinstance(nx, int):
        return nx
    weight = getattr(module, "weight", None)
    return int(weight.shape[0]) if isinstance(weight, torch.Tensor) and weight.dim() == 2 else None


def head_sites(model: torch.nn.Module) -> list[HeadSite]:
    """One :class:`HeadSite` per layer: the attention output projection of each transformer block."""
    cfg = model.config
    text_cfg = cfg.get_text_config() if hasattr(cfg, "get_text_config") else cfg
    n_layers = int(getattr(text_cfg, "num_hidden_layers"))
    n_heads = int(getattr(text_cfg, "num_attention_heads"))
    for list_name, blocks in model.named_modules():
        if not isinstance(blocks, torch.nn.ModuleList) or len(blocks) != n_layers:
            continue
        for suffix in OUTPUT_PROJECTIONS:
            try:
                first = blocks[0].get_submodule(suffix)
            except AttributeError:
                continue
            width = _in_features(first)
            if width is None or width % n_heads:
                raise SpexInputError(
                    f"{type(model).__name__}: the attention output projection {suffix} takes {width} inputs, "
                    f"not a multiple of its {n_heads} heads; the heads lens cannot slice it"
                )
            return [HeadSite(layer=i, module=block.get_submodule(suffix), name=f"{list_name}.{i}.{suffix}",
                             n_heads=n_heads, head_dim=width // n_heads) for i, block in enumerate(blocks)]
    raise SpexInputError(
        f"the heads lens does not know where {type(model).__name__} mixes its attention heads; it looks for one of "
        f"{', '.join(OUTPUT_PROJECTIONS)} inside the {n_layers} transformer blocks"
    )


class HeadLens(ValueFunction):
    """Value function of the heads lens (build it with :func:`heads`)."""

    def __init__(self, model: LoadedModel, prompts: Sequence[str], answers: Sequence[Any], *,
                 layers: Sequence[int] | None, mode: Mode, rescale: bool, reference: Sequence[str] | None,
                 chat: bool) -> None:
        if model.kind not in ("causal-lm", "classifier"):
            raise SpexInputError(f"the heads lens scores a causal LM or a classifier; {model.uri} is a {model.kind}")
        prompts, answers = list(prompts), list(answers)
        if not prompts or len(prompts) != len(answers):
            raise SpexInputError(f"prompts and answers must be non-empty and of equal length; got {len(prompts)} "
                                 f"prompts and {len(answers)} answers")
        if mode not in ("zero", "mean"):
            raise SpexInputError(f"mode must be 'zero' or 'mean'; got {mode!r}")
        if rescale and mode != "zero":
            raise SpexInputError("rescale applies to mode='zero' (a mean-ablated head is replaced, not removed)")
        self.model, self.prompts, self.answers = model, prompts, answers
        self.mode, self.rescale, self.chat = mode, bool(rescale), bool(chat)
        all_sites = head_sites(model.model)
        if layers is None:
            chosen = list(range(len(all_sites)))
        else:
            chosen = sorted({int(l) if int(l) >= 0 else len(all_sites) + int(l) for l in layers})
            bad = [l for l in chosen if not 0 <= l < len(all_sites)]
            if bad or not chosen:
                raise SpexInputError(f"layers must be indices in [0, {len(all_sites)}) (negative counts from the end); "
                                     f"got {list(layers)}", field="layers")
        self.sites = [all_sites[l] for l in chosen]
        self.layers = chosen
        self.n_features = sum(s.n_heads for s in self.sites)
        self.feature_labels = [f"L{s.layer}H{h}" for s in self.sites for h in range(s.n_heads)]
        self._offsets = np.cumsum([0] + [s.n_heads for s in self.sites])
        tok = model.tokenizer
        self._pad = pad_id_of(tok)
        if model.kind == "causal-lm":
            if chat and not getattr(tok, "chat_template", None):
                raise SpexInputError(f"chat=True but the tokenizer of {model.uri} has no chat template")
            if not all(isinstance(a, str) and a for a in answers):
                raise SpexInputError("for a causal LM every answer must be a non-empty string (its continuation)")
            prompt_ids = [self._prompt_ids(p) for p in prompts]
            answer_ids = [list(tok(a, add_special_tokens=False)["input_ids"]) for a in answers]
            self.seqs = [p + a for p, a in zip(prompt_ids, answer_ids)]
            self.n_scored = [len(a) for a in answer_ids]
            self.classes: list[int] = []
        else:
            self.seqs = [list(tok(p, truncation=True)["input_ids"]) for p in prompts]
            self.classes = [model.class_index(a) for a in answers]
            self.n_scored = []
        self._tokens = float(sum(len(s) for s in self.seqs))
        self._means: list[torch.Tensor] | None = None
        self.reference = list(reference) if reference is not None else None
        if mode == "mean":
            self._means = self._reference_means()
        self._gates: list[torch.Tensor] | None = None
        self.fingerprint = fingerprint_of(
            lens="heads", version=LENS_VERSION, model=model.identity, dtype=str(model.dtype), prompts=prompts,
            answers=[str(a) for a in answers], layers=chosen, mode=mode, rescale=self.rescale, chat=self.chat,
            reference=self.reference,
        )
        self.full_value = float(self.compute(np.ones((1, self.n_features), dtype=bool))[0])

    def _prompt_ids(self, prompt: str) -> list[int]:
        tok = self.model.tokenizer
        if self.chat:
            text = tok.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True)
            return list(tok(text, add_special_tokens=False)["input_ids"])
        return list(tok(prompt)["input_ids"])

    # -- hooks
    def _hook(self, index: int) -> Any:
        site = self.sites[index]
        H, d = site.n_heads, site.head_dim

        def pre_hook(module: torch.nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...] | None:
            if self._gates is None:
                return None
            x = args[0]
            gate = self._gates[index].to(x.dtype)
            shaped = x.reshape(*x.shape[:-1], H, d)
            view = (gate.shape[0],) + (1,) * (x.dim() - 2) + (H, 1)
            out = shaped * gate.view(view)
            if self._means is not None:
                out = out + (1 - gate).view(view) * self._means[index].to(x.dtype).view(H, d)
            return (out.reshape(x.shape),) + tuple(args[1:])

        return pre_hook

    @contextmanager
    def _hooked(self) -> Iterator[None]:
        handles = [site.module.register_forward_pre_hook(self._hook(i)) for i, site in enumerate(self.sites)]
        try:
            yield
        finally:
            for h in handles:
                h.remove()
            self._gates = None

    def _reference_means(self) -> list[torch.Tensor]:
        """Mean of each layer's per-head outputs over the real tokens of the reference sequences."""
        tok = self.model.tokenizer
        seqs = self.seqs if self.reference is None else [list(tok(t)["input_ids"]) for t in self.reference]
        sums = [torch.zeros(s.n_heads * s.head_dim, dtype=torch.float64) for s in self.sites]
        device = self.model.device
        state: dict[str, torch.Tensor] = {}

        def recorder(i: int) -> Any:
            def hook(module: torch.nn.Module, args: tuple[Any, ...]) -> None:
                x = args[0]
                sums[i] += x[state["mask"]].double().sum(0).cpu()
            return hook

        handles = [site.module.register_forward_pre_hook(recorder(i)) for i, site in enumerate(self.sites)]
        count = 0
        try:
            with torch.inference_mode():
                for start in range(0, len(seqs), 32):
                    chunk = seqs[start : start + 32]
                    if self.model.kind == "causal-lm":
                        ids, att, pos = pad_left(chunk, self._pad, device)
                        state["mask"] = att.bool()
                        self.model.model(input_ids=ids, attention_mask=att, position_ids=pos, use_cache=False)
                    else:
                        ids, att = pad_right(chunk, self._pad, device)
                        state["mask"] = att.bool()
                        self.model.model(input_ids=ids, attention_mask=att)
                    count += int(att.sum())
        finally:
            for h in handles:
                h.remove()
        return [(s / max(count, 1)).to(torch.float32).to(device) for s in sums]

    # -- the value function
    def gates(self, masks: np.ndarray) -> list[torch.Tensor]:
        """Per-layer gates (B, H) for masks: 0/1, or H/kept-rescaled in zero mode with ``rescale``."""
        device = self.model.device
        keep = torch.as_tensor(np.asarray(masks, dtype=bool), device=device)
        out = []
        for i, site in enumerate(self.sites):
            g = keep[:, self._offsets[i] : self._offsets[i + 1]].float()
            if self.rescale:
                kept = g.sum(1, keepdim=True)
                g = torch.where(kept > 0, g * site.n_heads / kept.clamp(min=1), g)
            out.append(g)
        return out

    def cost(self, masks: np.ndarray) -> np.ndarray:
        return np.full(len(masks), self._tokens)

    def compute(self, masks: np.ndarray) -> np.ndarray:
        B, P = len(masks), len(self.seqs)
        gates = self.gates(masks)
        with torch.inference_mode(), self._hooked():
            self._gates = [g.repeat_interleave(P, dim=0) for g in gates]
            rows = self.seqs * B
            if self.model.kind == "causal-lm":
                per_row = causal_logprobs(self.model.model, rows, self.n_scored * B, pad_id=self._pad)
            else:
                logits = classifier_logits(self.model.model, rows, pad_id=self._pad)
                classes = torch.tensor(self.classes * B, device=logits.device)
                per_row = margins(logits, classes)
        return per_row.view(B, P).mean(dim=1).double().cpu().numpy()

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "lens": "heads", "model": self.model.uri, "model_identity": self.model.identity,
                "kind": self.model.kind, "n_prompts": len(self.prompts), "layers": self.layers, "mode": self.mode,
                "rescale": self.rescale, "chat": self.chat, "sites": [s.name for s in self.sites],
                "heads_per_layer": self.sites[0].n_heads, "full_value": self.full_value}


def heads(model: LoadedModel | str, prompts: Sequence[str], answers: Sequence[Any], *,
          layers: Sequence[int] | None = None, mode: Mode = "zero", rescale: bool = False,
          reference: Sequence[str] | None = None, chat: bool = False) -> HeadLens:
    """A value function over the attention heads of ``layers`` (default: all): ``vf(masks (B, n)) -> (B,)``.

    * causal LM: ``answers`` are the continuations of ``prompts`` (e.g. ``"The capital of France is"`` ->
      ``" Paris"``, mind the leading space); value = mean summed log-prob of the answers.
      ``chat=True`` wraps each prompt in the chat template first.
    * classifier: ``answers`` are the correct classes (names or indices); value = mean margin.
    * ``mode``: ``"zero"`` (optionally ``rescale``) or ``"mean"`` over ``reference`` texts (default: the
      task's own sequences).
    """
    return HeadLens(as_loaded(model), prompts, answers, layers=layers, mode=mode, rescale=rescale,
                    reference=reference, chat=chat)



def from_spec(options: HeadsOptions, subject: HeadsSubject, model: LoadedModel) -> HeadLens:
    """The value function of one spec subject (``lens: heads``)."""
    return heads(model, subject.prompts, subject.answers, layers=options.layers, mode=options.mode,
                 rescale=options.rescale, reference=options.reference, chat=options.chat)
