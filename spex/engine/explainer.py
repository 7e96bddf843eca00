"""``spex.explain``: one entry point for every method."""

from __future__ import annotations

import importlib
import time
from typing import Any

import numpy as np
from threadpoolctl import threadpool_info, threadpool_limits

from spex.engine.batching import MaskEvaluator, Progress, ValueFn
from spex.engine.exact import EXACT_MAX_N, all_masks, spectrum_from_table
from spex.engine.explanation import Explanation
from spex.engine.inputs import check_budget, check_n
from spex.engine.methods.base import Method, StageTimer
from spex.engine.bootstrap import DEFAULT_REPLICATES, affordable, selection_bootstrap
from spex.engine.spectrum import Spectrum
from spex.engine.uncertainty import (
    DEFAULT_ESTIMATOR,
    DEFAULT_LEAST_SQUARES,
    ESTIMATORS,
    Uncertainty,
    least_squares_uncertainty,
)
from spex.errors import SpexInputError

METHODS: dict[str, str] = {
    "proxyspex": "spex.engine.methods.proxyspex:ProxySPEX",
    "spex": "spex.engine.methods.spex_coded:SPEX",
    "linear": "spex.engine.methods.regression:Linear",
    "faith_banzhaf": "spex.engine.methods.regression:FaithBanzhaf",
}


def get_method(name: str, **options: Any) -> Method:
    """Instantiate a method by name with validated options."""
    if not isinstance(name, str) or name.lower() not in METHODS:
        raise SpexInputError(f"unknown method {name!r}; choose one of {', '.join(METHODS)}")
    module, _, cls = METHODS[name.lower()].partition(":")
    return getattr(importlib.import_module(module), cls)(**options)


class _LimitedEvaluator:
    """Lifts the thread limit while the value function runs: a model on CPU wants all its threads."""

    def __init__(self, evaluator: MaskEvaluator, threads: int | None):
        self.evaluator, self.threads = evaluator, threads
        # the thread counts in force before explain limited them (restored around value calls)
        self.original = {lib["prefix"]: lib["num_threads"] for lib in threadpool_info()}

    def __getattr__(self, name: str) -> Any:
        return getattr(self.evaluator, name)

    def __call__(self, masks: Any) -> Any:
        if self.threads is None or not self.original:
            return self.evaluator(masks)
        with threadpool_limits(limits=self.original):
            return self.evaluator(masks)


def estimate_uncertainty(algorithm: Method, estimator: str, masks: np.ndarray, values: np.ndarray,
                         spectrum: Spectrum, *, seed: int, replicates: int = DEFAULT_REPLICATES,
                         diagnostics: dict[str, Any] | None = None) -> Uncertainty:
    """The covariance ``estimator`` asks for ("auto" resolved here: see :func:`explain`)."""
    if estimator == "auto":
        bootstrap = algorithm.resamplable and affordable(len(masks), spectrum.n)
        estimator = "bootstrap" if bootstrap else DEFAULT_LEAST_SQUARES
    if estimator == "bootstrap":
        return selection_bootstrap(algorithm, masks, values, spectrum, seed=seed, replicates=replicates,
                                   diagnostics=diagnostics)
    return least_squares_uncertainty(masks, values, spectrum.members, spectrum.coefficients, spectrum.n,
                                     estimator=estimator)


def explain(
    value_fn: ValueFn,
    n: int,
    *,
    budget: int,
    method: str = "proxyspex",
    seed: int = 0,
    batch_size: int | None = None,
    progress: Progress | None = None,
    threads: int | None = 1,
    uncertainty: str | None = DEFAULT_ESTIMATOR,
    replicates: int = DEFAULT_REPLICATES,
    **options: Any,
) -> Explanation:
    """Find the interactions that drive ``value_fn`` with at most ``budget`` value calls.

    Args:
        value_fn: ``f(masks: bool (B, n)) -> float (B,)``; True keeps feature i. It is called with
            large batches (``batch_size`` caps them), never twice for the same mask.
        n: number of features.
        budget: most masks the method may evaluate. When it covers all 2^n masks (n <= 20), every
            method evaluates them all and reports the exact spectrum (``diagnostics["exact"]``),
            truncated to its order for ``linear`` / ``faith_banzhaf``.
        method: ``proxyspex`` (default), ``spex``, ``linear`` or ``faith_banzhaf``.
        seed: every random choice derives from it: same seed, same masks, same result.
        progress: optional ``callback(done, total)`` over value calls.
        threads: BLAS/OpenMP threads for the math outside value calls (``None``: the libraries'
            default). One by default: audits explain many subjects at once (Prefect/Ray workers),
            and on an oversubscribed machine multi-threaded BLAS and LightGBM spin-wait, an order
            of magnitude slower (docs/engine.md). The value function runs outside this limit.
        uncertainty: how the coefficients' covariance is estimated; it feeds the standard errors and
            intervals of ``interactions()``. ``auto`` (default): for a method that chooses its support
            from the masks (ProxySPEX), ``replicates`` bootstrap refits of the whole fit
            (:mod:`spex.engine.bootstrap`; no model call) while budget x n is small enough
            (:func:`spex.engine.bootstrap.affordable`), otherwise — and for every other method — the
            fixed-support least-squares sandwich ``cluster`` (:mod:`spex.engine.uncertainty`).
            ``bootstrap``, ``cluster`` or ``ols`` force one; None skips it. Which one ran is in
            ``diagnostics["uncertainty"]``.
        replicates: bootstrap refits (at least 2).
        **options: method options (see each method's ``defaults``); unknown ones are an error.
    """
    n = check_n(n)
    algorithm = get_method(method, **options)
    budget = check_budget(budget, algorithm.minimum_budget(n), method=algorithm.name, n=n,
                          per_mask=algorithm.bytes_per_mask(n))
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise SpexInputError(f"seed must be an integer; got {seed!r}")
    if uncertainty is not None and uncertainty not in ESTIMATORS:
        raise SpexInputError(f"uncertainty must be one of {', '.join(ESTIMATORS)} or None; got {uncertainty!r}",
                             field="uncertainty")
    if uncertainty in ("auto", "bootstrap") and (isinstance(replicates, bool) or not isinstance(replicates, int)
                                                 or replicates < 2):
        raise SpexInputError(f"replicates must be an integer >= 2; got {replicates!r}", field="replicates")
    if uncertainty == "bootstrap" and not algorithm.resamplable:
        raise SpexInputError(f"uncertainty 'bootstrap' needs a method that chooses its support from the masks "
                             f"(proxyspex); {algorithm.name!r} keeps a fixed one: use 'cluster'", field="uncertainty")
    evaluator = MaskEvaluator(value_fn, n, batch_size=batch_size, progress=progress)
    timer = StageTimer()
    start = time.perf_counter()
    if n <= EXACT_MAX_N and (1 << n) <= budget:
        with timer.stage("sampling"):
            x = all_masks(n)
        table = evaluator(x)
        with timer.stage("fit"), threadpool_limits(threads):
            spectrum = algorithm.from_exact(spectrum_from_table(table))
        diagnostics: dict[str, Any] = {"exact": True}
        covariance = Uncertainty.exact(len(spectrum)) if uncertainty is not None else None
        if covariance is not None:
            diagnostics["uncertainty"] = covariance.estimator
    else:
        limited = _LimitedEvaluator(evaluator, threads)  # captures the limits before we set ours
        with threadpool_limits(threads):
            spectrum, diagnostics = algorithm.fit(limited, n, budget, seed, timer)
        diagnostics.setdefault("exact", False)
        covariance = None
        if uncertainty is not None:
            with timer.stage("uncertainty"), threadpool_limits(threads):
                masks, values = evaluator.measured()
                covariance = estimate_uncertainty(algorithm, uncertainty, masks, values, spectrum, seed=seed,
                                                  replicates=replicates, diagnostics=diagnostics)
            diagnostics["uncertainty"] = covariance.estimator
    seconds = dict(timer.seconds)
    seconds["value_calls"] = evaluator.seconds
    seconds["total"] = time.perf_counter() - start
    seconds["outside_value_calls"] = max(0.0, seconds["total"] - evaluator.seconds)
    return Explanation(
        spectrum=spectrum,
        method=algorithm.name,
        budget=budget,
        seed=seed,
        n_calls=evaluator.n_calls,
        seconds=seconds,
        diagnostics=diagnostics,
        labels=list(getattr(value_fn, "feature_labels", None) or []) or None,
        options=dict(algorithm.options),
        proxy=getattr(algorithm, "booster_", None),
        uncertainty=covariance,
    )
