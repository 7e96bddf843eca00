"""The contract every explanation method follows (one estimator shape, like scikit-learn's).

A method is configured with options (validated in ``__init__``), states the smallest budget it can
run with, and ``fit``s a value function: it draws its masks, hands them ALL to one evaluator call
(so the model sees each mask once, in large batches), and returns a Fourier ``Spectrum`` plus
JSON-able diagnostics.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, ClassVar

from spex.engine.batching import MaskEvaluator
from spex.engine.spectrum import Spectrum
from spex.errors import SpexInputError


class StageTimer:
    """Accumulates wall seconds per named stage: ``with timer.stage("fit"): ...``."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - start


class Method(ABC):
    """Base class: subclasses set ``name`` and ``defaults`` and implement ``minimum_budget`` and ``fit``."""

    name: ClassVar[str]
    defaults: ClassVar[dict[str, Any]] = {}

    def __init__(self, **options: Any) -> None:
        unknown = sorted(set(options) - set(self.defaults))
        if unknown:
            raise SpexInputError(
                f"unknown option(s) {unknown} for method {self.name!r}; valid options: {sorted(self.defaults)}"
            )
        self.options: dict[str, Any] = {**self.defaults, **options}

    @abstractmethod
    def minimum_budget(self, n: int) -> int:
        """The smallest number of masks this method can work with at n features."""

    @abstractmethod
    def fit(
        self, evaluate: MaskEvaluator, n: int, budget: int, seed: int, timer: StageTimer
    ) -> tuple[Spectrum, dict[str, Any]]:
        """Sample, evaluate (one call), and recover the spectrum. Returns (spectrum, diagnostics)."""

    def from_exact(self, spectrum: Spectrum) -> Spectrum:
        """What this method reports when the budget covers all 2^n masks (default: the exact spectrum)."""
        return spectrum
