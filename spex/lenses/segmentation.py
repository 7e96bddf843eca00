"""Segmentation of a prompt into features (words, sentences, spans) and rendering of a masked prompt.

Pure text processing, torch-free: the spec's preflight counts a subject's features with
:func:`segment` before any model loads (a budget too small for n fails in a second), and the features
lens (:mod:`spex.lenses.prompt_features`) renders each mask with :func:`render`.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from typing import Literal

import numpy as np

from spex.errors import SpexInputError

Unit = Literal["word", "sentence"]

_WORD = re.compile(r"\S+")
_SENTENCE = re.compile(r"\S.*?(?:[.!?]+[\"'\u201d\u2019)\]]*(?=\s|\Z)|(?=\s*\n)|\Z)", re.S)
_REMOVED = "\x00"
_RUN = re.compile(r"\s*\x00(?:\s*\x00)*\s*")
_CLOSING_PUNCT = tuple(".,;:!?)]}\u201d\u2019'\"")


# --------------------------------------------------------------------------------------------- segmentation
def has_visible_text(text: str) -> bool:
    """Whether any character of ``text`` shows: not a space or separator (Z*), nor a control, format
    or unassigned character (C*: zero-width spaces and joiners, BOM, bidi marks). A prompt of
    zero-width spaces has "words" to mask, but every mask reads the same to the model."""
    return any(not unicodedata.category(c).startswith(("Z", "C")) for c in text)


def segment(text: str, unit: Unit | Sequence[tuple[int, int]] | Sequence[str] = "word") -> list[tuple[int, int]]:
    """Character spans of the features of ``text``.

    ``"word"``: whitespace-delimited words (punctuation stays with its word, so labels read naturally);
    ``"sentence"``: runs ending in ``.``/``!``/``?`` (plus closing quotes) or at a line break; a list of
    ``(start, end)`` pairs: those spans; a list of strings: those substrings, found left to right.
    Text outside the spans is context that is always kept.
    """
    if isinstance(unit, str):
        if unit == "word":
            spans = [m.span() for m in _WORD.finditer(text)]
        elif unit == "sentence":
            spans = [m.span() for m in _SENTENCE.finditer(text)]
        else:
            raise SpexInputError(f"unit must be 'word', 'sentence' or a list of spans; got {unit!r}")
    else:
        items = list(unit)
        if not items:
            raise SpexInputError("unit is an empty list of spans; give at least one span")
        if all(isinstance(s, str) for s in items):
            spans, cursor = [], 0
            for s in items:
                if not s:
                    raise SpexInputError("unit holds an empty string span")
                start = text.find(s, cursor)
                if start < 0:
                    raise SpexInputError(
                        f"span {s!r} was not found in the prompt after character {cursor}; spans must be "
                        f"substrings of the prompt, in order and not overlapping"
                    )
                spans.append((start, start + len(s)))
                cursor = start + len(s)
        else:
            try:
                spans = [(int(a), int(b)) for a, b in items]  # type: ignore[misc]
            except (TypeError, ValueError):
                raise SpexInputError("unit must be 'word', 'sentence', a list of (start, end) pairs or a list of strings") from None
            for (a, b), prev in zip(spans, [(0, 0)] + spans[:-1]):
                if not (0 <= a < b <= len(text)) or a < prev[1]:
                    raise SpexInputError(
                        f"span ({a}, {b}) is invalid: spans must be sorted, non-overlapping, non-empty and within "
                        f"the prompt's {len(text)} characters"
                    )
    if not spans:
        raise SpexInputError(f"the prompt has no {unit if isinstance(unit, str) else 'span'}s to use as features",
                             field="prompt")
    return spans


def render(text: str, spans: Sequence[tuple[int, int]], keep: np.ndarray, replacement: str | None) -> str:
    """The user's content with the unkept spans removed (``replacement=None``) or replaced.

    Removal also fixes the whitespace it leaves: a run of removed spans and the whitespace around them
    becomes nothing at the start or end of the text or before closing punctuation, and otherwise the
    longest whitespace in the run (so removing a sentence between paragraphs keeps one paragraph
    break, and removing a word leaves one space).
    """
    parts: list[str] = []
    cursor = 0
    for (a, b), k in zip(spans, keep):
        parts.append(text[cursor:a])
        parts.append(text[a:b] if k else (_REMOVED if replacement is None else replacement))
        cursor = b
    parts.append(text[cursor:])
    out = "".join(parts)
    if replacement is not None or keep.all():
        return out

    def fix(m: re.Match[str]) -> str:
        if m.start() == 0 or m.end() == len(out) or out.startswith(_CLOSING_PUNCT, m.end()):
            return ""
        return max(re.findall(r"\s+", m.group()), key=len, default="")

    return _RUN.sub(fix, out)
