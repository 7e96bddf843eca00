"""Data that ships with spex: the sentiment sentences and the prompt sets of the demo and benchmarks.

* ``sentiment.jsonl`` — 300 short sentences written for this project (150 positive, 150 negative), rich
  in negation and contrast ("not bad", "good but too long", "I expected to hate it"); each row has a
  fixed ``split`` (240 train / 60 test, stratified, seeded) so every trained version is scored on the
  same held-out sentences.
* ``reviews.jsonl`` — 60 movie and product reviews written for this project for the SPEX paper's
  Sentiment table (``benchmarks/sentiment_table.py``): 20 per length bucket of 8–15, 16–31 and 32–63
  words (the features lens's word segmentation), 10 positive and 10 negative in each, with negation and
  contrast ("not bad at all", "loud, heavy and expensive, and I would still buy it again").
* ``prompts.json`` — prompts for the features lens on SmolLM2 (20-60 words each) and for the MiniLM
  classifier, and prompt/answer tasks for the heads lens.
"""

from __future__ import annotations

import json
from functools import lru_cache
from importlib import resources
from typing import Any

from spex.content import bytes_digest


def _read(name: str) -> str:
    return resources.files(__name__).joinpath(name).read_text(encoding="utf-8")


@lru_cache(maxsize=1)
def _sentiment_rows() -> tuple[dict[str, str], ...]:
    return tuple(json.loads(line) for line in _read("sentiment.jsonl").splitlines() if line.strip())


def load_sentiment() -> list[dict[str, str]]:
    """Rows ``{"text", "label": "positive"|"negative", "split": "train"|"test"}``."""
    return [dict(r) for r in _sentiment_rows()]


def sentiment_digest() -> str:
    """Content hash of the sentiment file: a trained model is cached per data version."""
    return bytes_digest(_read("sentiment.jsonl"))


REVIEW_BUCKETS: dict[str, tuple[int, int]] = {"8-15": (8, 15), "16-31": (16, 31), "32-63": (32, 63)}
"""The length buckets of the reviews (inclusive word counts), as in the SPEX paper's Sentiment table."""


@lru_cache(maxsize=1)
def _review_rows() -> tuple[dict[str, str], ...]:
    rows = tuple(json.loads(line) for line in _read("reviews.jsonl").splitlines() if line.strip())
    for i, row in enumerate(rows):
        if set(row) != {"id", "text", "label", "bucket"} or row["bucket"] not in REVIEW_BUCKETS \
                or row["label"] not in ("positive", "negative"):
            raise ValueError(f"reviews.jsonl row {i + 1} is malformed: {row}")
    return rows


def load_reviews(bucket: str | None = None) -> list[dict[str, str]]:
    """Rows ``{"id", "text", "label": "positive"|"negative", "bucket": "8-15"|"16-31"|"32-63"}`` of
    ``reviews.jsonl`` (one ``bucket`` or all, in file order)."""
    if bucket is not None and bucket not in REVIEW_BUCKETS:
        raise ValueError(f"bucket {bucket!r} is not one of {sorted(REVIEW_BUCKETS)}")
    return [dict(r) for r in _review_rows() if bucket is None or r["bucket"] == bucket]


@lru_cache(maxsize=1)
def _prompts() -> dict[str, Any]:
    return json.loads(_read("prompts.json"))


def load_prompts(name: str = "smollm2") -> list[str]:
    """Prompts for the features lens: ``"smollm2"`` (chat prompts) or ``"sentiment"`` (classifier inputs)."""
    return list(_prompts()["features"][name])


def load_head_task(name: str = "capitals") -> tuple[list[str], list[str]]:
    """A heads-lens task: (prompts, answers)."""
    task = _prompts()["heads"][name]
    return [t["prompt"] for t in task], [t["answer"] for t in task]


def head_tasks() -> list[str]:
    """The names of the bundled heads-lens tasks (for :func:`load_head_task`)."""
    return sorted(_prompts()["heads"])
