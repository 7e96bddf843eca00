"""The contract every explanation method follows (one estimator shape, like scikit-learn's).

A method is configured with options (validated in ``__init__``), states the smallest budget it can
run with, and ``fit``s a value function: it draws its masks, hands them ALL to one evaluator call
(so the model sees each mask once, in large batches), and returns a Fourier ``Spectrum`` plus
JSON-able diagnostics.
"""

from __future__ import annotations

import math
import time
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, ClassVar

import numpy as np

from spex.engine.batching import MaskEvaluator
from spex.engine.spectrum import Spectrum
from spex.errors import SpexInputError


# -- option checks: every method validates each option's type and range in ``__init__``, so a spec's
# ``method_options: {max_trees: many}`` is refused before anything starts, not when the fit reads it.
def _refuse(name: str, wanted: str, value: Any) -> SpexInputError:
    return SpexInputError(f"option {name!r} must be {wanted}; got {value!r}", field=name)


def int_option(value: Any, name: str, low: int, high: int) -> int:
    """A whole number in [low, high] (an integral float is that number; a boolean is not a number)."""
    if isinstance(value, (float, np.floating)) and float(value).is_integer():
        value = int(value)
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) or not low <= int(value) <= high:
        raise _refuse(name, f"an integer in [{low}, {high}]", value)
    return int(value)


def float_option(value: Any, name: str, low: float, high: float, *, low_open: bool = False,
                 high_open: bool = False) -> float:
    """A finite number between low and high (``*_open``: that end excluded)."""
    ok = not isinstance(value, (bool, np.bool_)) and isinstance(value, (int, float, np.integer, np.floating))
    if ok:
        x = float(value)
        ok = math.isfinite(x) and (low < x if low_open else low <= x) and (x < high if high_open else x <= high)
    if not ok:
        interval = f"{'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
        raise _refuse(name, f"a number in {interval}", value)
    return float(value)


def bool_option(value: Any, name: str) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise _refuse(name, "true or false", value)
    return bool(value)


def choice_option(value: Any, name: str, choices: Sequence[Any]) -> Any:
    if not isinstance(value, str) or value not in choices:
        raise _refuse(name, f"one of {', '.join(map(repr, choices))}", value)
    return value


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
    # True when the method chooses its support from the masks and can be fit again on any given
    # (masks, values, validation rows) through ``fit_measured``: its standard errors then come from a
    # bootstrap of the whole fit (:mod:`spex.engine.bootstrap`), which sees the support move.
    resamplable: ClassVar[bool] = False

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

    def bytes_per_mask(self, n: int) -> int:
        """Memory one mask of the budget costs while the method runs: its float64 design row, the mask
        and its value. A method that builds wider matrices per mask says so (ProxySPEX's refit)."""
        return 8 * n + n + 64

    @abstractmethod
    def fit(
        self, evaluate: MaskEvaluator, n: int, budget: int, seed: int, timer: StageTimer
    ) -> tuple[Spectrum, dict[str, Any]]:
        """Sample, evaluate (one call), and recover the spectrum. Returns (spectrum, diagnostics)."""

    def fit_measured(self, x: np.ndarray, y: np.ndarray, valid: np.ndarray, seed: int,
                     timer: StageTimer) -> tuple[Spectrum, dict[str, Any], Any]:
        """Fit on given masks ``x``, values ``y`` and validation rows (no value call); returns (spectrum,
        diagnostics, the proxy or None). Only ``resamplable`` methods implement it."""
        raise NotImplementedError(f"method {self.name!r} cannot be refit on given masks")

    def for_replicates(self, diagnostics: dict[str, Any]) -> Method:
        """The method the bootstrap refits on each resample, given the main fit's ``diagnostics``
        (default: this one, unchanged)."""
        return self

    def validation_fraction(self) -> float:
        """The share of masks a resamplable method holds out to choose its support."""
        return float(self.options.get("validation_fraction", 0.2))

    def from_exact(self, spectrum: Spectrum) -> Spectrum:
        """What this method reports when the budget covers all 2^n masks (default: the exact spectrum)."""
        return spectrum
