"""The shipped reviews of the sentiment-table benchmark (issue 14): they load from the installed
package, 20 per length bucket, balanced, distinct, and each falls in its bucket by the features lens's
own word segmentation (what n is when the benchmark masks them)."""

from __future__ import annotations

import re
import tomllib
from collections import Counter
from fnmatch import fnmatch
from pathlib import Path

from spex.data import REVIEW_BUCKETS, load_reviews
from spex.lenses.segmentation import segment

ROOT = Path(__file__).resolve().parents[2]


def test_reviews_load_and_fall_in_their_buckets():
    rows = load_reviews()
    assert len(rows) == 60 and len({r["text"] for r in rows}) == 60 and len({r["id"] for r in rows}) == 60
    assert Counter(r["bucket"] for r in rows) == {"8-15": 20, "16-31": 20, "32-63": 20}
    for bucket, (lo, hi) in REVIEW_BUCKETS.items():
        mine = load_reviews(bucket)
        assert [r["bucket"] for r in mine] == [bucket] * 20
        assert Counter(r["label"] for r in mine) == {"positive": 10, "negative": 10}
        for r in mine:
            n = len(segment(r["text"], "word"))
            assert lo <= n <= hi, f"{r['id']}: {n} words, not in {bucket}"
            assert r["id"].startswith(bucket + "-")
    # the buckets are not filled at one length: short, middling and long reviews in each
    for bucket, (lo, hi) in REVIEW_BUCKETS.items():
        lengths = [len(segment(r["text"], "word")) for r in load_reviews(bucket)]
        assert max(lengths) - min(lengths) >= (hi - lo) // 3


def test_reviews_hold_negation_and_contrast():
    """Where interactions live: most reviews negate or contrast something."""
    negation = re.compile(r"\b(not|no|never|nothing|none|nobody|cannot)\b|n't\b", re.IGNORECASE)
    contrast = re.compile(r"\b(but|yet|though|despite|still|even)\b", re.IGNORECASE)
    rows = load_reviews()
    assert sum(bool(negation.search(r["text"])) for r in rows) >= 30
    assert sum(bool(contrast.search(r["text"])) for r in rows) >= 30


def test_reviews_ship_with_the_package():
    """pyproject's package data takes every file of spex/data, this one included."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    patterns = config["tool"]["setuptools"]["package-data"]["spex"]
    assert any(fnmatch("data/reviews.jsonl", p) for p in patterns)
    assert (ROOT / "spex" / "data" / "reviews.jsonl").is_file()
