"""The value-function contract every lens implements (torch-free: lenses subclass it).

A value function turns "keep these features" into one number per mask:
``vf(masks: bool (B, n)) -> float (B,)``. It also carries what the rest of the system needs to
cache, label and track its outputs:

* ``n_features`` and ``feature_labels`` (what feature i is, for people),
* ``fingerprint``: a stable hash of everything that determines the output (model identity, subject,
  target, masking, lens options). The ablation store keys values by (fingerprint, mask bits), so two
  value functions with the same fingerprint MUST return the same values.
* ``compute(masks)``: one batch, as large as the engine chooses; ``cost(masks)`` lets the engine pack
  batches by a token budget (default: every mask costs 1).

It follows shapiq's callable-game convention (a callable on a bool coalition matrix), so peers run on
it unchanged.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any

import numpy as np

from spex.content import content_hash
from spex.engine.inputs import check_masks, check_values


def fingerprint_of(**parts: Any) -> str:
    """A stable hex digest of JSON-serialisable parts (sorted keys; numpy arrays by content)."""

    return content_hash(parts)


class ValueFunction(ABC):
    """Base class of lens value functions. Subclasses set the three attributes and ``compute``."""

    n_features: int
    feature_labels: Sequence[str]
    fingerprint: str

    def __call__(self, masks: np.ndarray) -> np.ndarray:
        x = check_masks(masks, self.n_features)
        return check_values(self.compute(x), len(x), source=type(self).__name__)

    @abstractmethod
    def compute(self, masks: np.ndarray) -> np.ndarray:
        """Values for one batch of validated bool masks (B, n_features)."""

    def cost(self, masks: np.ndarray) -> np.ndarray:
        """Relative cost of each mask (e.g. its token count) for batch packing; default 1 each."""
        return np.ones(len(masks))

    def describe(self) -> dict[str, Any]:
        """JSON-able description for tracking (lens name, options); subclasses extend it."""
        return {"lens": type(self).__name__, "n_features": self.n_features, "fingerprint": self.fingerprint}
