"""What a lens receives: :class:`LoadedModel`, a model ready for ablations, wherever it came from."""

from __future__ import annotations

import numbers
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from spex.errors import SpexInputError
from spex.models.kinds import (  # noqa: F401  (re-exported: spex.models.Kind / KINDS)
    KINDS,
    Kind,
)


@dataclass(eq=False)
class LoadedModel:
    """A model ready for ablations: eval mode, no grads, on its device.

    ``kind`` decides what a lens measures: a causal LM is scored by log-probs of a response, a
    classifier by a class logit/margin, an encoder only embeds (the data lens). ``identity`` changes
    whenever the weights (or the tokenizer) could change, and only then (:mod:`spex.models.identity`).
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
