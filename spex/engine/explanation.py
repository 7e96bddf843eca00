"""The result of ``spex.explain``: a spectrum plus the account of how it was obtained."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from spex.engine.spectrum import Spectrum
from spex.engine.uncertainty import DEFAULT_LEVEL, Uncertainty

if TYPE_CHECKING:
    import pandas as pd


@dataclass
class Explanation:
    """What ``spex.explain`` returns.

    Attributes:
        spectrum: the recovered sparse Fourier spectrum (the surrogate of the value function).
        method: the method's name.
        budget: the masks the caller allowed; ``n_calls`` is how many the value function evaluated
            (unique masks; SPEX may use fewer than the budget).
        seconds: wall seconds per stage: sampling, value_calls, fit, extraction, refit (as the method
            has them) and ``total``; ``outside_value_calls`` is total minus value_calls.
        diagnostics: method specifics (proxy R², chosen hyper-parameters, support size, SPEX b/t/C…).
        labels: the feature labels, when the value function has them.
        proxy: the fitted proxy model (ProxySPEX's LightGBM booster), for tracking; None otherwise.
        uncertainty: the covariance of the spectrum's coefficients (:mod:`spex.engine.uncertainty`);
            every interaction's ``se`` and interval come from it. None when not estimated.
    """

    spectrum: Spectrum
    method: str
    budget: int
    seed: int
    n_calls: int
    seconds: dict[str, float]
    diagnostics: dict[str, Any] = field(default_factory=dict)
    labels: Sequence[str] | None = None
    options: dict[str, Any] = field(default_factory=dict)
    proxy: Any = None  # the fitted proxy model when the method has one (ProxySPEX: a lightgbm.Booster)
    uncertainty: Uncertainty | None = None

    @property
    def n(self) -> int:
        return self.spectrum.n

    def interactions(self, index: str = "mobius", order: int | None = None, top: int | None = None,
                     level: float = DEFAULT_LEVEL) -> pd.DataFrame:
        """Ranked interaction table (see :meth:`Spectrum.interactions`), labelled when labels are known,
        with each value's standard error ``se`` and ``level`` interval ``ci_low``/``ci_high`` (NaN when
        the uncertainty was not estimated or the masks cannot identify the value)."""
        covariance = self.uncertainty if self.uncertainty is not None else Uncertainty.unknown(len(self.spectrum))
        return self.spectrum.interactions(index=index, order=order, top=top, labels=self.labels,
                                          uncertainty=covariance, level=level)

    def __repr__(self) -> str:
        return (
            f"Explanation(method={self.method!r}, n={self.n}, n_calls={self.n_calls}, "
            f"coefficients={len(self.spectrum)}, seconds={self.seconds.get('total', 0.0):.2f})"
        )
