"""Tiny real models and small specs shared by the flow tests."""

from __future__ import annotations

import re
from pathlib import Path

WORDS = ("the food was not bad at all but the service was slow i expected to hate the movie yet loved "
         "every minute of it good great terrible boring never again")


def tiny_bert(folder: Path, seed: int) -> Path:
    """A 2-layer, 4-head BERT sentiment classifier (random weights, wide init so masks move the logits)."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizer

    words = sorted(set(re.findall(r"\w+|[^\w\s]", WORDS + " . , ! ?")))
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + words
    tokenizer = BertTokenizer(vocab={w: i for i, w in enumerate(vocab)})
    torch.manual_seed(seed)
    cfg = BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                     intermediate_size=64, max_position_embeddings=64, num_labels=2, initializer_range=0.25,
                     id2label={0: "negative", 1: "positive"}, label2id={"negative": 0, "positive": 1})
    BertForSequenceClassification(cfg).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def features_spec(model: str | Path, **overrides: object) -> dict:
    """A small features-lens spec on the tiny classifier: two prompts, ProxySPEX on a real budget."""
    spec = {
        "model": str(model),
        "lens": "features",
        "subjects": [
            {"id": "food", "prompt": "The food was not bad at all, but the service was slow."},
            {"id": "movie", "prompt": "I expected to hate the movie, yet I loved every minute of it."},
        ],
        "budget": 120,
        "holdout": 32,
        "removal_r": 2,
        "ranking": {"index": "fbii", "order": 2, "top_k": 5, "record_top": 50},
        "batch": {"max_batch": 64, "chunk_size": 64},
    }
    spec.update(overrides)
    return spec
