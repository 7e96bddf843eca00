"""ProxySPEX: a LightGBM proxy of the value function, its exact spectrum, a sparse refit.

1. uniform masks (antithetic pairs by default), one evaluator call;
2. LightGBM tuned on a held-out split with early stopping, instead of the reference's 5-fold grid
   of 8 configurations (40 boosting runs): one run at depth 5 by default — on the planted games a
   {3, 5} depth search never beat depth 5 alone after the refit (``docs/engine.md``); pass
   ``depths=(3, 5)`` to search; optionally refit on all masks (``retrain_full``; off by default: the
   proxy only ranks candidate coefficients, and the final least-squares refit uses all masks);
   from n = 256 features on (``screen="auto"``), the proxy is fit on the features a Fourier screen
   keeps (:mod:`spex.engine.methods.screening`; residual passes with short proxies add what the first
   pass missed, up to ``screen_rounds``), with row-wise histograms, and widened back to n features:
   at n = 2,048-4,096 LightGBM otherwise spends nearly all its time on columns that never split
   (``docs/engine.md``, "ProxySPEX at scale"); ``screen="off"`` fits on every feature;
3. the proxy's spectrum read exactly from its trees (:mod:`spex.engine.methods.trees`);
4. support selection: candidates ranked by |F| from the proxy; the support size k is chosen by
   held-out R² of a least-squares refit, all k at once from one triangular factor (prefixes of
   the columns) — or the reference's 95 % cumulative-energy rule (``selection="energy"``);
5. the chosen support refit on all masks: least squares (default; Cholesky fast path on
   well-conditioned designs, :mod:`spex.engine.linalg`), or ridge / lasso with cross-validation
   (``refit_solver``);
6. at small budgets (fewer than ``SMALL_SPLIT_ROWS`` validation rows, ``low_order="auto"``): the
   surrogate K-fold cross-validation over all masks chooses among a sparse degree-1 Lasso, a degree-2
   Lasso and its blends with the proxy (:mod:`spex.engine.methods.low_order`: why, and what it measured).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import lightgbm as lgb
import numpy as np
from scipy.linalg import solve_triangular

from spex.engine import sampling as mask_sampling
from spex.engine import sets
from spex.engine.batching import MaskEvaluator
from spex.engine.heldout import r2
from spex.engine.linalg import least_squares_tall, prefix_factor
from spex.engine.methods.base import (
    Method,
    StageTimer,
    bool_option,
    choice_option,
    float_option,
    int_option,
)
from spex.engine.methods import low_order
from spex.engine.methods.screening import FourierScreen
from spex.engine.methods.trees import tree_spectrum, widen_model
from spex.engine.spectrum import Spectrum
from spex.errors import SpexInputError


def _lgb_params(depth: int, learning_rate: float, n_rows: int, seed: int, num_threads: int,
                row_wise: bool = False) -> dict[str, Any]:
    """LightGBM's settings. ``row_wise``: row-wise histograms (one pass over each row's features),
    twice as fast as column-wise on the few dozen features of a screened proxy (docs/engine.md); the
    unscreened proxy keeps column-wise, so its trees (and results) stay what they were."""
    return {
        "objective": "regression",
        "learning_rate": learning_rate,
        "max_depth": depth,
        "num_leaves": 2**depth,
        "min_data_in_leaf": int(max(2, min(20, n_rows // 40))),
        "min_sum_hessian_in_leaf": 0.0,
        "lambda_l2": 0.0,
        "verbose": -1,
        "seed": seed,
        "deterministic": True,
        "force_col_wise": not row_wise,
        "force_row_wise": row_wise,
        "num_threads": num_threads,
        "feature_pre_filter": False,
    }


def fit_proxy(
    x: np.ndarray,
    y: np.ndarray,
    valid: np.ndarray,
    *,
    depths: tuple[int, ...],
    learning_rate: float,
    max_trees: int,
    early_stopping: int,
    seed: int,
    num_threads: int,
    retrain_full: bool,
    row_wise: bool = False,
) -> tuple[lgb.Booster, dict[str, Any]]:
    """Early-stopped LightGBM per depth on the train split; the best depth refit on all rows."""
    xf = x.astype(np.float32)
    train = ~valid
    results = []
    for depth in depths:  # a handful of configurations
        params = _lgb_params(depth, learning_rate, int(train.sum()), seed, num_threads, row_wise)
        dtrain = lgb.Dataset(xf[train], label=y[train], params={"verbose": -1})
        dvalid = lgb.Dataset(xf[valid], label=y[valid], reference=dtrain)
        booster = lgb.train(
            params,
            dtrain,
            num_boost_round=max_trees,
            valid_sets=[dvalid],
            callbacks=[lgb.early_stopping(early_stopping, verbose=False)],
        )
        trees = max(1, booster.best_iteration or booster.current_iteration())
        score = r2(y[valid], booster.predict(xf[valid], num_iteration=trees))
        results.append((score, depth, trees, booster))
    score, depth, trees, booster = max(results, key=lambda r: (r[0], -r[1]))
    if retrain_full:
        params = _lgb_params(depth, learning_rate, len(y), seed, num_threads, row_wise)
        booster = lgb.train(params, lgb.Dataset(xf, label=y, params={"verbose": -1}), num_boost_round=trees)
    else:
        booster.free_dataset()
        booster = lgb.Booster(model_str=booster.model_to_string(num_iteration=trees))
    return booster, {
        "proxy_r2": score,
        "proxy_depth": depth,
        "proxy_trees": trees,
        "proxy_learning_rate": learning_rate,
        "proxy_candidates": [{"depth": d, "trees": t, "valid_r2": s} for s, d, t, _ in results],
    }


def _ranked_candidates(full: Spectrum, limit: int) -> tuple[np.ndarray, np.ndarray]:
    """Non-constant coefficients of the proxy by decreasing |F|, at most ``limit``."""
    nonconst = np.flatnonzero(full.orders > 0)
    order = nonconst[np.argsort(-np.abs(full.coefficients[nonconst]), kind="stable")][:limit]
    return full.members[order], full.coefficients[order]


def support_grid(count: int) -> np.ndarray:
    """Candidate support sizes 1..count, about a dozen, geometrically spaced."""
    return np.unique(np.clip(np.round(np.geomspace(1, count, num=14)).astype(int), 1, count))


def select_by_holdout(
    design: np.ndarray, y: np.ndarray, valid: np.ndarray
) -> tuple[int, list[dict[str, float]], np.ndarray]:
    """Support size k whose least-squares fit on the train rows predicts the validation rows best.

    Column 0 of ``design`` is the constant; k counts the others. One triangular factor of the train
    design serves every k: the fit on the first k+1 columns uses R[:k+1, :k+1]
    (:func:`spex.engine.linalg.prefix_factor`: Cholesky of the Gram matrix when it is well
    conditioned, QR otherwise). Candidates that are linear combinations of higher-ranked ones on the
    train rows are dropped first (a vanishing R[j, j]): their coefficients are not identified by the
    sample and would be huge (see :mod:`spex.engine.linalg`).
    Returns (k, the validation curve, the kept candidate columns as a bool mask over columns 1..)."""
    r, qty, kept = prefix_factor(design[~valid], y[~valid])
    kept[0] = True
    held = design[valid][:, kept]
    curve = []
    width = int(kept.sum())
    for k in support_grid(max(1, width - 1)) if width > 1 else []:  # ~a dozen sizes
        with np.errstate(all="ignore"):
            beta = solve_triangular(r[: k + 1, : k + 1], qty[: k + 1], check_finite=False)
            pred = held[:, : k + 1] @ beta
        score = r2(y[valid], pred) if np.all(np.isfinite(pred)) else -np.inf
        curve.append({"k": int(k), "valid_r2": float(score)})
    best = max(curve, key=lambda c: (c["valid_r2"], -c["k"])) if curve else {"k": 0}
    return best["k"], curve, kept[1:]


def select_by_energy(coefficients: np.ndarray, energy: float) -> int:
    """Smallest k whose top-k coefficients (sorted by |F|) hold ``energy`` of the total energy.

    Correct at the edges where the reference fails: the crossing coefficient is included, and the
    last coefficient is a valid answer (no IndexError)."""
    sq = coefficients**2
    total = sq.sum()
    if total <= 0:
        return 0
    cumulative = np.cumsum(sq) / total
    return int(min(len(sq), np.searchsorted(cumulative, energy - 1e-12) + 1))


REFIT_SOLVERS = ("lstsq", "ridge", "lasso")
LOW_ORDER_MODES = ("auto", "off")
SCREEN_MODES = ("auto", "on", "off")
SCREEN_AUTO_N = 256  # "auto" screens from this many features on (docs/engine.md, ProxySPEX at scale)
MAX_DEPTH = 17  # LightGBM's num_leaves (2**depth here) is at most 131072


def refit_coefficients(design: np.ndarray, y: np.ndarray, solver: str, seed: int) -> np.ndarray:
    """Coefficients of the chosen support on all masks.

    ``lstsq`` (default): plain least squares — the support size was already chosen on held-out
    masks, which is the regularisation; ``ridge`` / ``lasso``: cross-validated shrinkage for very
    noisy values (column 0 is the constant and is not shrunk differently: no intercept is added).
    """
    if solver == "lstsq":
        return least_squares_tall(design, y)
    if solver == "ridge":
        from sklearn.linear_model import RidgeCV

        return RidgeCV(alphas=np.logspace(-6, 3, 19), fit_intercept=False).fit(design, y).coef_
    from sklearn.linear_model import LassoCV

    return LassoCV(cv=5, alphas=20, fit_intercept=False, random_state=seed, max_iter=5000).fit(design, y).coef_


class ProxySPEX(Method):
    """ProxySPEX (Butler et al., 2025) with held-out tuning and held-out support selection."""

    name = "proxyspex"
    resamplable = True  # its support is chosen from the masks: the bootstrap repeats the whole fit
    defaults = {
        "pair_complements": True,
        "depths": (5,),
        "learning_rate": 0.2,
        "max_trees": 500,  # early stopping ended every benchmarked unscreened fit by 494 trees; see docs
        "early_stopping": 30,
        "validation_fraction": 0.2,
        "retrain_full": False,
        "selection": "holdout",
        "energy": 0.95,
        "max_support": 512,
        "max_selection_rows": 16384,
        "refit": True,
        "refit_solver": "lstsq",
        "num_threads": 1,  # see spex.explain(threads=): oversubscribed OpenMP spin-waits
        "screen": "auto",
        "screen_false_positives": 0.1,
        "screen_rounds": 10,
        "screen_trees": 100,
        "screen_partners": 64,
        "low_order": "auto",  # the small-budget Lasso blend (step 6); "off": the proxy alone
        "low_order_weight": None,  # None: chosen by cross-validation; a number in [0, 1] pins the proxy's share
        "low_order_degree": None,  # None: the highest affordable (at most 2); 1 or 2 caps it (pinned by replicates)
    }

    def __init__(self, **options: Any) -> None:
        """Check every option's type and range here (not when the fit reads it), so an audit with a
        bad option is refused before any mask is computed."""
        super().__init__(**options)
        o = self.options
        for name in ("pair_complements", "retrain_full", "refit"):
            bool_option(o[name], name)
        depths = o["depths"]
        if isinstance(depths, (str, bytes)) or not isinstance(depths, Sequence) or not depths:
            raise SpexInputError(f"option 'depths' must be a non-empty list of tree depths, e.g. [3, 5]; got {depths!r}",
                                 field="depths")
        for depth in depths:
            int_option(depth, "depths", 1, MAX_DEPTH)
        float_option(o["learning_rate"], "learning_rate", 0.0, 10.0, low_open=True)
        int_option(o["max_trees"], "max_trees", 1, 1_000_000)
        int_option(o["early_stopping"], "early_stopping", 1, 1_000_000)
        float_option(o["validation_fraction"], "validation_fraction", 0.0, 0.9, low_open=True, high_open=True)
        choice_option(o["selection"], "selection", ("holdout", "energy"))
        float_option(o["energy"], "energy", 0.0, 1.0, low_open=True)
        int_option(o["max_support"], "max_support", 1, 1_000_000)
        int_option(o["max_selection_rows"], "max_selection_rows", 8, 100_000_000)
        choice_option(o["refit_solver"], "refit_solver", REFIT_SOLVERS)
        int_option(o["num_threads"], "num_threads", 0, 4096)
        choice_option(o["screen"], "screen", SCREEN_MODES)
        float_option(o["screen_false_positives"], "screen_false_positives", 0.0, 1e6, low_open=True)
        int_option(o["screen_rounds"], "screen_rounds", 1, 100)
        int_option(o["screen_trees"], "screen_trees", 1, 1_000_000)
        int_option(o["screen_partners"], "screen_partners", 0, 1_000_000)
        choice_option(o["low_order"], "low_order", LOW_ORDER_MODES)
        if o["low_order_weight"] is not None:
            float_option(o["low_order_weight"], "low_order_weight", 0.0, 1.0)
        if o["low_order_degree"] is not None:
            int_option(o["low_order_degree"], "low_order_degree", 1, 2)

    def minimum_budget(self, n: int) -> int:
        return 32

    def bytes_per_mask(self, n: int) -> int:
        """Besides the masks: a float32 copy for LightGBM (of the screened columns only when screening,
        plus the screen's float32 signs of one mask per pair, 2n), and the parity design of every mask
        against every candidate and against the selected support (up to ``max_support`` + 1 float64
        columns each)."""
        return super().bytes_per_mask(n) + 4 * n + 16 * (int(self.options["max_support"]) + 1)

    def fit(
        self, evaluate: MaskEvaluator, n: int, budget: int, seed: int, timer: StageTimer
    ) -> tuple[Spectrum, dict[str, Any]]:
        o = self.options
        self.seed_ = seed
        with timer.stage("sampling"):
            x = mask_sampling.uniform(n, budget, mask_sampling.rng(seed, "train"), pair_complements=o["pair_complements"])
            valid = low_order.validation_split(budget, float(o["validation_fraction"]), seed, "split")
        y = evaluate(x)
        spectrum, diagnostics, booster = self.fit_measured(x, y, valid, seed, timer)
        self.booster_ = booster  # kept for tracking (logged as the proxy model)
        return spectrum, diagnostics

    def fit_measured(
        self, x: np.ndarray, y: np.ndarray, valid: np.ndarray, seed: int, timer: StageTimer
    ) -> tuple[Spectrum, dict[str, Any], lgb.Booster]:
        """Steps 2-6 on given masks and values (no value call): the proxy, its spectrum, the support
        chosen on the ``valid`` rows, the refit, and at small budgets the blend with the Lasso. The
        selection bootstrap (:mod:`spex.engine.bootstrap`) repeats exactly this on resampled masks."""
        self.seed_ = seed
        booster, diagnostics = self._fit_proxy(x, y, valid, seed, timer)
        with timer.stage("extraction"):
            full = tree_spectrum(booster.model_to_string(), x.shape[1])
        with timer.stage("refit"):
            spectrum, refit_diag = self._select_and_refit(full, x, y, valid)
        diagnostics.update(refit_diag)
        diagnostics["proxy_coefficients"] = len(full)
        order = self._low_order(x.shape[1], valid)
        if order:
            with timer.stage("low_order"):
                spectrum, diagnostics["low_order"] = self._blend(spectrum, order, x, y, seed)
        return spectrum, diagnostics, booster

    def _low_order(self, n: int, valid: np.ndarray) -> int:
        """The highest degree of Lasso to consider (0: none): with ``low_order="auto"``, when the
        validation split is smaller than ``low_order.SMALL_SPLIT_ROWS`` or the choice is pinned."""
        o = self.options
        if o["low_order"] == "off" or o["low_order_weight"] == 1.0:
            return 0
        if o["low_order_weight"] is None and int(valid.sum()) >= low_order.SMALL_SPLIT_ROWS:
            return 0
        affordable = low_order.challenger_order(n, len(valid))
        return min(affordable, int(o["low_order_degree"])) if o["low_order_degree"] and affordable else affordable

    def _blend(self, proxy: Spectrum, max_order: int, x: np.ndarray, y: np.ndarray,
               seed: int) -> tuple[Spectrum, dict[str, Any]]:
        """Step 6: the surrogate K-fold cross-validation chooses among the Lasso of degree 1, of degree 2 and
        its blends with the proxy — or the pinned one (the bootstrap's replicates)."""
        order, weight, scores = max_order, self.options["low_order_weight"], None
        if weight is None:
            alone = ProxySPEX(**{**self.options, "low_order": "off"})
            fraction = float(self.options["validation_fraction"])

            def fit_proxy(xs: np.ndarray, ys: np.ndarray) -> Spectrum:
                split = low_order.validation_split(len(ys), fraction, seed, "cv-split")
                return alone.fit_measured(xs, ys, split, seed, StageTimer())[0]

            def fit_lasso(degree: int) -> low_order.Fit:
                return lambda xs, ys: low_order.lasso_spectrum(xs, ys, degree, seed)

            order, weight, scores = low_order.choose(fit_proxy, fit_lasso, max_order, x, y, seed)
        if float(weight) >= 1.0:  # the proxy alone won: no final Lasso to fit
            return proxy, low_order.describe(order, 1.0, scores, None)
        lasso = low_order.lasso_spectrum(x, y, order, seed)
        return low_order.blend(proxy, lasso, float(weight)), low_order.describe(order, float(weight), scores, lasso)

    def for_replicates(self, diagnostics: dict[str, Any]) -> ProxySPEX:
        """The bootstrap's ProxySPEX: at most as many trees as the main fit's early stop chose. A resample
        repeats masks, and its proxy kept adding trees long after the main one stopped (170 against 77 in a
        profile of a planted game at n = 128), so the cap bounds the bootstrap's cost; the coverage the
        benchmark measures (benchmarks/intervals.py) is with the cap. Early stopping still runs below it.
        The blend's weight (step 6) is pinned at the main fit's the same way: a replicate refits both
        surrogates on its resample and blends them, but does not repeat the cross-validation that chose
        the weight (five more fits of each per replicate)."""
        trees = int(diagnostics.get("proxy_trees") or self.options["max_trees"])
        blended = diagnostics.get("low_order")
        pinned = ({"low_order_weight": float(blended["proxy_weight"]), "low_order_degree": int(blended["order"])}
                  if blended else {"low_order": "off"})
        return ProxySPEX(**{**self.options, "max_trees": max(1, min(trees, int(self.options["max_trees"]))), **pinned})

    def screens(self, n: int) -> bool:
        """Whether the proxy is fit on screened features (``screen``: "auto" from SCREEN_AUTO_N on)."""
        mode = self.options["screen"]
        return mode == "on" or (mode == "auto" and n >= SCREEN_AUTO_N)

    def _fit_proxy(
        self, x: np.ndarray, y: np.ndarray, valid: np.ndarray, seed: int, timer: StageTimer
    ) -> tuple[lgb.Booster, dict[str, Any]]:
        """The proxy over all features, or — when screening — over the screened ones, re-screened on
        its residual up to ``screen_rounds`` times; a screened booster is widened back to n features."""
        o = self.options
        n = x.shape[1]

        def fit(columns: np.ndarray | None, max_trees: int) -> tuple[lgb.Booster, dict[str, Any]]:
            with timer.stage("fit"):
                return fit_proxy(
                    x if columns is None else x[:, columns], y, valid,
                    depths=tuple(int(d) for d in o["depths"]),
                    learning_rate=float(o["learning_rate"]),
                    max_trees=max_trees,
                    early_stopping=int(o["early_stopping"]),
                    seed=seed,
                    num_threads=int(o["num_threads"]),
                    retrain_full=bool(o["retrain_full"]) and max_trees == int(o["max_trees"]),
                    row_wise=columns is not None,
                )

        if not self.screens(n):
            return fit(None, int(o["max_trees"]))
        fp, partners = float(o["screen_false_positives"]), int(o["screen_partners"])
        with timer.stage("screening"):
            screener = FourierScreen(x, paired=bool(o["pair_complements"]))
            features = screener.keep(y, false_positives=fp, max_partners=partners)
        if len(features) == 0:  # nothing detectable: no screening (the trees get every feature)
            features = np.arange(n)
        kept = [int(len(features))]
        while len(kept) < int(o["screen_rounds"]) and len(features) < n:
            # a short proxy, only for its residual: what it cannot fit is what the screen missed
            short, _ = fit(features, min(int(o["screen_trees"]), int(o["max_trees"])))
            with timer.stage("screening"):
                residual = y - short.predict(x[:, features].astype(np.float32))
                gain = short.feature_importance("gain")
                ranked = features[np.argsort(-gain, kind="stable")]
                wider = screener.keep(residual, false_positives=fp, max_partners=partners, ranked_base=ranked)
            if len(wider) == len(features):
                break
            features = wider
            kept.append(int(len(features)))
        booster, diagnostics = fit(features, int(o["max_trees"]))
        diagnostics["screened_features"] = kept
        if len(features) < n:
            booster = lgb.Booster(model_str=widen_model(booster.model_to_string(), features, n))
        return booster, diagnostics

    def _selection_rows(self, valid: np.ndarray) -> np.ndarray:
        """Rows used to choose k: all of them up to ``max_selection_rows`` (evenly thinned beyond),
        so that choosing the support never dominates the run at large budgets."""
        cap = int(self.options["max_selection_rows"])
        if len(valid) <= cap:
            return np.arange(len(valid))
        return np.linspace(0, len(valid) - 1, cap).astype(np.int64)

    def _select_and_refit(
        self, full: Spectrum, x: np.ndarray, y: np.ndarray, valid: np.ndarray
    ) -> tuple[Spectrum, dict[str, Any]]:
        o = self.options
        limit = int(min(o["max_support"], max(1, (~valid).sum() // 2)))
        members, coefficients = _ranked_candidates(full, limit)
        constant = np.zeros((1, members.shape[1]), dtype=np.int32) + sets.PAD
        if len(members) == 0:
            return Spectrum(full.n, constant, [float(np.mean(y))]), {"support_size": 0, "selection": o["selection"]}
        design = None  # (B, 1 + K): every mask against the constant and every candidate
        if o["selection"] == "energy":
            k, curve = select_by_energy(coefficients, float(o["energy"])), None
        else:
            rows = self._selection_rows(valid)
            design = sets.parity_design_used(x, np.vstack([constant, members]), full.n)
            k, curve, kept = select_by_holdout(design[rows], y[rows], valid[rows])
            members, coefficients = members[kept], coefficients[kept]
            columns = np.concatenate([[0], 1 + np.flatnonzero(kept)[:k]])
            design = design if len(columns) == design.shape[1] else design[:, columns]
        support = np.vstack([constant, members[:k]])
        if o["refit"]:
            if design is None:
                design = sets.parity_design_used(x, support, full.n)
            coef = refit_coefficients(design, y, o["refit_solver"], self.seed_)
        else:
            coef = np.concatenate([[full.constant], coefficients[:k]])
        diag: dict[str, Any] = {"support_size": int(k), "selection": o["selection"], "refit": bool(o["refit"])}
        if curve is not None:
            diag["selection_curve"] = curve
        return Spectrum(full.n, support, coef, merge=False), diag
