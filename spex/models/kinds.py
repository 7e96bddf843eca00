"""What a checkpoint is for — generation, classification or plain encoding — read from its config's
``architectures`` without loading anything (torch-free: the spec's preflight uses it).

Why a check and not only a default: ``kind`` may be given in the spec, and transformers loads any
checkpoint under any head class, initialising a head the checkpoint does not have at random. A
classifier audited as a ``causal-lm`` would rank the interactions of noise and record them under the
real model's version (issue 16, case 13). A checkpoint serves its own head's kind and ``encoder``
(every checkpoint has a base model); asking for another head is refused.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from spex.errors import SpexInputError

Kind = Literal["causal-lm", "classifier", "encoder"]
KINDS: tuple[str, ...] = ("causal-lm", "classifier", "encoder")

_HEADS: dict[str, tuple[str, ...]] = {
    "classifier": ("ForSequenceClassification",),
    "causal-lm": ("ForCausalLM", "LMHeadModel", "ForConditionalGeneration"),
}


def kind_of_architectures(architectures: Sequence[str]) -> Kind | None:
    """The kind of the first architecture with a head spex knows; ``encoder`` for any other recorded
    architecture; None when none is recorded (the caller decides from the model type)."""
    for arch in architectures:
        for kind, suffixes in _HEADS.items():
            if arch.endswith(suffixes):
                return kind  # type: ignore[return-value]
    return "encoder" if architectures else None


def check_kind(kind: str, architectures: Sequence[str], where: str) -> None:
    """Refuse a ``kind`` whose head the checkpoint lacks (see the module docstring); a
    :class:`SpexInputError` with ``field="kind"``."""
    have = kind_of_architectures(architectures)
    if kind == "encoder" or have is None or have == kind:
        return
    raise SpexInputError(
        f"{where} is a {have} checkpoint ({', '.join(architectures)}) with no {kind} head: spex would audit a "
        f"randomly initialised head; fix: remove `kind` (spex reads it from the config) or set kind: {have}",
        field="kind")
