"""Batched scoring primitives the lenses share: padding, teacher-forced log-probs, class logits.

Why left padding for causal LMs: every row of a features-lens batch ends with the same reference
response, and every row of a heads-lens batch ends with its answer. With the sequences right-aligned,
the scored tokens sit in the last ``T`` positions of every row, so the model only has to project those
positions onto the vocabulary (``logits_to_keep``): on SmolLM2 the vocabulary projection of all
positions would cost more memory than the rest of the forward. Position ids are passed explicitly
(counting only real tokens), so a padded row computes exactly what the unpadded row computes.

An optional shared-prefix KV cache (a template prefix common to every row) is supported by
:func:`causal_logprobs`: rows are then laid out ``[prefix | pads | rest]`` and the prefix's keys and
values are computed once per lens instead of once per row.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from functools import lru_cache
from typing import Any

import numpy as np
import torch


def pad_id_of(tokenizer: Any) -> int:
    """Any id works under an attention mask; prefer the tokenizer's own pad token."""
    for attr in ("pad_token_id", "eos_token_id", "unk_token_id"):
        value = getattr(tokenizer, attr, None)
        if isinstance(value, int):
            return value
    return 0


def pad_left(seqs: Sequence[Sequence[int]], pad_id: int, device: torch.device | str = "cpu",
             offset: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Right-align sequences: (input_ids, attention_mask, position_ids), positions start at ``offset``."""
    lengths = np.fromiter((len(s) for s in seqs), dtype=np.int64, count=len(seqs))
    width = int(lengths.max()) if len(seqs) else 0
    ids = np.full((len(seqs), width), pad_id, dtype=np.int64)
    att = np.zeros((len(seqs), width), dtype=np.int64)
    for i, s in enumerate(seqs):
        if len(s):
            ids[i, width - len(s):] = s
            att[i, width - len(s):] = 1
    pos = np.clip(np.cumsum(att, axis=1) - 1, 0, None) + offset
    as_t = lambda a: torch.from_numpy(a).to(device)  # noqa: E731
    return as_t(ids), as_t(att), as_t(pos)


def pad_right(seqs: Sequence[Sequence[int]], pad_id: int, device: torch.device | str = "cpu"
              ) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-align sequences: (input_ids, attention_mask)."""
    width = max((len(s) for s in seqs), default=0)
    ids = np.full((len(seqs), width), pad_id, dtype=np.int64)
    att = np.zeros((len(seqs), width), dtype=np.int64)
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = s
        att[i, : len(s)] = 1
    return torch.from_numpy(ids).to(device), torch.from_numpy(att).to(device)


@lru_cache(maxsize=64)
def _forward_params(cls: type) -> frozenset[str]:
    return frozenset(inspect.signature(cls.forward).parameters)


def accepts(model: torch.nn.Module, name: str) -> bool:
    """Whether ``model.forward`` takes keyword ``name`` (e.g. ``logits_to_keep``, ``position_ids``)."""
    params = _forward_params(type(model))
    return name in params


def causal_logprobs(model: torch.nn.Module, seqs: Sequence[Sequence[int]], n_scored: Sequence[int], *,
                    pad_id: int, prefix: "PrefixCache | None" = None) -> torch.Tensor:
    """Summed teacher-forced log-prob of the last ``n_scored[i]`` tokens of each sequence (float32, (B,)).

    ``seqs[i]`` is the whole sequence (prompt + scored tokens); with ``prefix`` it is the part after
    the shared prefix. One forward for the whole batch; log-softmax only over the kept positions.
    """
    device = next(model.parameters()).device
    keep = int(max(n_scored)) + 1
    offset = prefix.length if prefix is not None else 0
    ids, att, pos = pad_left(seqs, pad_id, device, offset=offset)
    kwargs: dict[str, Any] = {"input_ids": ids, "attention_mask": att, "use_cache": False}
    if accepts(model, "position_ids"):
        kwargs["position_ids"] = pos
    if prefix is not None:
        kwargs["attention_mask"] = torch.cat([torch.ones(len(seqs), offset, dtype=att.dtype, device=device), att], 1)
        kwargs["cache" if accepts(model, "cache") else "past_key_values"] = prefix.expand(len(seqs))
        kwargs["use_cache"] = True
    if accepts(model, "logits_to_keep"):
        kwargs["logits_to_keep"] = keep
    logits = model(**kwargs).logits[:, -keep:-1, :]
    targets = ids[:, -keep + 1:]
    logits = logits.float()
    picked = logits.gather(-1, targets.unsqueeze(-1)).squeeze(-1) - torch.logsumexp(logits, dim=-1)
    scored = torch.arange(keep - 1, device=device)[None, :] >= (keep - 1 - torch.as_tensor(list(n_scored), device=device))[:, None]
    return (picked * scored).sum(dim=1)


def classifier_logits(model: torch.nn.Module, seqs: Sequence[Sequence[int]], *, pad_id: int) -> torch.Tensor:
    """Class logits (float32, (B, C)) of token sequences that already hold their special tokens."""
    device = next(model.parameters()).device
    ids, att = pad_right(seqs, pad_id, device)
    return model(input_ids=ids, attention_mask=att).logits.float()


def margins(logits: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
    """logit of the given class minus the largest other logit (> 0 iff that class is predicted)."""
    own = logits.gather(-1, classes.view(-1, 1)).squeeze(-1)
    others = logits.scatter(-1, classes.view(-1, 1), float("-inf"))
    return own - others.max(dim=-1).values


class PrefixCache:
    """Keys/values of a token prefix shared by every row, computed once and expanded per batch."""

    def __init__(self, model: torch.nn.Module, prefix_ids: Sequence[int]) -> None:
        device = next(model.parameters()).device
        ids = torch.tensor([list(prefix_ids)], device=device)
        with torch.inference_mode():
            out = model(input_ids=ids, attention_mask=torch.ones_like(ids), use_cache=True)
        cache = getattr(out, "cache", None) or getattr(out, "past_key_values", None)
        layers = getattr(cache, "layers", None)
        if cache is None or layers is None:
            raise TypeError(f"{type(model).__name__} returned no layered KV cache")
        self.kv = [(layer.keys, layer.values) for layer in layers]
        self.length = len(prefix_ids)
        self.ids = tuple(int(i) for i in prefix_ids)
        self.config = model.config

    def expand(self, batch: int) -> Any:
        from transformers import DynamicCache

        return DynamicCache([(k.expand(batch, -1, -1, -1).contiguous(), v.expand(batch, -1, -1, -1).contiguous())
                             for k, v in self.kv], config=self.config)


def greedy_continuation(model: torch.nn.Module, tokenizer: Any, prompt_ids: Sequence[int], *,
                        max_new_tokens: int) -> list[int]:
    """The model's own greedy answer (token ids, end-of-sequence token stripped).

    A fresh generation config: whatever sampling settings ship with the model, the reference answer
    is the argmax path, so it is reproducible.
    """
    from transformers import GenerationConfig

    device = next(model.parameters()).device
    eos: list[int] = []
    for source in (getattr(model, "generation_config", None), tokenizer):
        value = getattr(source, "eos_token_id", None)
        eos.extend([value] if isinstance(value, int) else list(value or []))
    eos = sorted(set(eos))
    config = GenerationConfig(do_sample=False, max_new_tokens=max_new_tokens, num_beams=1,
                              eos_token_id=eos or None, pad_token_id=pad_id_of(tokenizer))
    ids = torch.tensor([list(prompt_ids)], device=device)
    with torch.inference_mode():
        out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), generation_config=config)
    new = out[0, len(prompt_ids):].tolist()
    while new and new[-1] in eos:
        new.pop()
    if eos:
        for i, t in enumerate(new):
            if t in eos:
                return new[:i]
    return new


def embed(loaded: Any, texts: Sequence[str], *, batch_size: int = 64) -> np.ndarray:
    """Mean-pooled last hidden states (float64, (N, d)) of any loaded model's encoder/decoder body.

    Mean pooling over real tokens is what sentence encoders such as all-MiniLM-L6-v2 were trained for;
    for a classifier or a causal LM the body under the head is used the same way.
    """
    model, tok = loaded.model, loaded.tokenizer
    body = getattr(model, "base_model", model)
    device = next(model.parameters()).device
    pad = pad_id_of(tok)
    out: list[np.ndarray] = []
    with torch.inference_mode():
        for start in range(0, len(texts), batch_size):
            chunk = [list(tok(t, truncation=True)["input_ids"]) for t in texts[start : start + batch_size]]
            ids, att = pad_right(chunk, pad, device)
            hidden = body(input_ids=ids, attention_mask=att).last_hidden_state.double()
            weights = att.unsqueeze(-1).double()
            out.append(((hidden * weights).sum(1) / weights.sum(1).clamp(min=1)).cpu().numpy())
    width = int(getattr(model.config, "hidden_size", 0)) or 0
    return np.concatenate(out) if out else np.zeros((0, width))
