"""The methods through spex.explain: recovery of planted games, reproducibility, bad input."""

from __future__ import annotations

import math

import numpy as np
import pytest

import spex
from spex.engine import sampling as mask_sampling
from spex.engine.synthetic import planted


class Counting:
    """A value function that records every mask it is asked for."""

    def __init__(self, fn, n):
        self.fn, self.n_features, self.seen, self.batches = fn, n, [], 0
        self.feature_labels = [f"f{i}" for i in range(n)]

    def __call__(self, masks):
        self.batches += 1
        self.seen.append(np.asarray(masks).copy())
        return self.fn(masks)


@pytest.mark.parametrize("kind", ["peak", "hierarchical"])
def test_proxyspex_recovers_planted_games(kind):
    n = 48
    game = planted(n, kind, k=4, order=4, seed=7)
    ex = spex.explain(game, n, budget=int(8 * n * math.log2(n)), seed=0)
    holdout = mask_sampling.holdout(n, 1000, seed=99)
    assert spex.faithfulness(game, ex.spectrum, holdout) >= 0.99
    top = ex.interactions("mobius", top=len(game.mobius))
    planted_top = max(game.mobius, key=lambda k: abs(game.mobius[k]))
    assert planted_top in set(top["members"])


def test_value_fn_sees_each_mask_once_in_large_batches():
    n = 30
    game = planted(n, "peak", k=3, order=3, seed=1)
    counting = Counting(game, n)
    ex = spex.explain(counting, n, budget=600, seed=0)
    seen = np.concatenate(counting.seen)
    assert counting.batches == 1
    assert len(np.unique(np.packbits(seen, axis=1), axis=0)) == len(seen) == ex.n_calls
    assert ex.labels == counting.feature_labels
    assert set(ex.seconds) >= {"sampling", "value_calls", "fit", "extraction", "refit", "total"}
    assert ex.diagnostics["support_size"] >= 1 and "proxy_r2" in ex.diagnostics
    assert ex.proxy is not None and ex.proxy.num_trees() == ex.diagnostics["proxy_trees"]


def test_batch_size_caps_calls():
    n = 30
    counting = Counting(planted(n, "peak", k=2, order=2, seed=1), n)
    spex.explain(counting, n, budget=300, seed=0, batch_size=64)
    assert max(len(b) for b in counting.seen) <= 64 and counting.batches >= 4


@pytest.mark.parametrize("method", ["proxyspex", "linear", "faith_banzhaf"])
def test_same_seed_same_result_different_seed_different_masks(method):
    n = 24
    game = planted(n, "hierarchical", k=3, order=3, seed=2)
    a = Counting(game, n)
    b = Counting(game, n)
    c = Counting(game, n)
    ra = spex.explain(a, n, budget=400, method=method, seed=5)
    rb = spex.explain(b, n, budget=400, method=method, seed=5)
    spex.explain(c, n, budget=400, method=method, seed=6)
    assert np.array_equal(np.concatenate(a.seen), np.concatenate(b.seen))
    assert ra.spectrum.to_dict() == rb.spectrum.to_dict()
    assert not np.array_equal(np.concatenate(a.seen), np.concatenate(c.seen))


def test_linear_and_faith_banzhaf_are_exact_on_functions_of_their_order():
    n = 12
    rng = np.random.default_rng(0)
    w1, w2 = rng.normal(size=n), np.triu(rng.normal(size=(n, n)), 1)

    def f(x):
        x = x.astype(float)
        return 0.3 + x @ w1 + np.einsum("bi,ij,bj->b", x, w2, x)

    holdout = mask_sampling.holdout(n, 500, seed=3)
    fb = spex.explain(f, n, budget=1000, method="faith_banzhaf", seed=0)
    assert spex.faithfulness(f, fb.spectrum, holdout) == pytest.approx(1.0, abs=1e-9)
    lin = spex.explain(lambda x: x.astype(float) @ w1, n, budget=200, method="linear", seed=0)
    assert lin.spectrum.max_order == 1
    assert spex.faithfulness(lambda x: x.astype(float) @ w1, lin.spectrum, holdout) == pytest.approx(1.0, abs=1e-9)


def test_budget_covering_all_masks_gives_the_exact_spectrum():
    n = 6
    table = np.random.default_rng(0).normal(size=64)
    f = lambda x: table[spex.engine.sets.masks_to_ints(x)]  # noqa: E731
    exact = spex.exact_spectrum(f, n)
    ex = spex.explain(f, n, budget=64, method="proxyspex")
    assert ex.diagnostics["exact"] and ex.n_calls == 64
    assert ex.spectrum.to_dict() == pytest.approx(exact.to_dict())
    assert spex.explain(f, n, budget=100, method="linear").spectrum.max_order == 1


@pytest.mark.parametrize("n", [1, 2])
def test_tiny_n(n):
    f = lambda x: x.sum(axis=1).astype(float) * 2.0  # noqa: E731
    ex = spex.explain(f, n, budget=64, seed=0)
    assert spex.faithfulness(f, ex.spectrum, spex.engine.exact.all_masks(n)) == pytest.approx(1.0)


def test_constant_function():
    n = 40
    ex = spex.explain(lambda x: np.full(len(x), 2.5), n, budget=500, seed=0)
    holdout = mask_sampling.holdout(n, 100, seed=1)
    np.testing.assert_allclose(ex.spectrum.predict(holdout), 2.5, atol=1e-9)
    assert len(ex.interactions()) == 0 or np.allclose(ex.interactions()["value"], 0.0, atol=1e-9)


@pytest.mark.parametrize("method", ["proxyspex", "spex", "linear", "faith_banzhaf"])
@pytest.mark.parametrize("n", [6, 3])
def test_every_index_of_a_constant_function(method, n):
    """Issue 16 #4: a constant function (a prompt whose every mask scores the same) exactly explained
    has a spectrum of the constant alone, with no member of order 1; the Shapley conversion indexed
    that empty member column and raised IndexError. Every index now gives zeros."""
    budget = max(1 << n, spex.get_method(method).minimum_budget(n))  # all masks: the exact spectrum
    ex = spex.explain(lambda x: np.full(len(x), 0.5), n, budget=budget, method=method, seed=0)
    assert ex.spectrum.constant == pytest.approx(0.5)
    for index in spex.engine.INDICES:
        table = ex.interactions(index, order=1 if index == "shapley" else None)
        np.testing.assert_allclose(table["value"].to_numpy(dtype=float), 0.0, atol=1e-12)
    shapley = ex.interactions("shapley", order=1)
    assert sorted(shapley["members"]) == [(i,) for i in range(n)]


def test_nan_values_name_the_rows():
    def f(x):
        out = x.sum(axis=1).astype(float)
        out[[3, 17]] = np.nan
        return out

    with pytest.raises(spex.SpexInputError, match=r"2 non-finite values .* rows \[3, 17\]"):
        spex.explain(f, 20, budget=200)


def test_wrong_shape_is_reported():
    with pytest.raises(spex.SpexInputError, match="returned shape"):
        spex.explain(lambda x: np.zeros((len(x), 2)), 20, budget=200)


@pytest.mark.parametrize("method", ["proxyspex", "linear", "faith_banzhaf"])
def test_budget_below_minimum_states_the_minimum(method):
    algorithm = spex.get_method(method)
    minimum = algorithm.minimum_budget(50)
    with pytest.raises(spex.SpexInputError, match=f"minimum of {minimum} masks"):
        spex.explain(lambda x: x.sum(axis=1), 50, budget=minimum - 1, method=method)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"budget": 0}, "minimum"), ({"budget": -5}, "minimum"), ({"budget": 10.5}, "integer"),
    ({"budget": 100, "method": "lime"}, "unknown method"), ({"budget": 100, "depth": 3}, "unknown option"),
    ({"budget": 100, "seed": "x"}, "seed must be an integer"),
])
def test_bad_arguments(kwargs, message):
    with pytest.raises(spex.SpexInputError, match=message):
        spex.explain(lambda x: x.sum(axis=1), 20, **kwargs)


def test_bad_n():
    with pytest.raises(spex.SpexInputError, match="positive integer"):
        spex.explain(lambda x: x.sum(axis=1), 0, budget=100)


def test_large_n_with_small_budget():
    n = 4096
    game = planted(n, "peak", k=2, order=2, seed=3)
    ex = spex.explain(game, n, budget=1000, seed=0, depths=(3,), max_trees=100)
    assert ex.n_calls == 1000 and ex.spectrum.n == n
    assert np.isfinite(ex.spectrum.predict(mask_sampling.holdout(n, 50, seed=2))).all()


def test_faith_banzhaf_refuses_large_n():
    with pytest.raises(spex.SpexInputError, match="n <= 128"):
        spex.explain(lambda x: x.sum(axis=1), 200, budget=1000, method="faith_banzhaf")


def test_energy_selection_handles_the_last_coefficient():
    from spex.engine.methods.proxyspex import select_by_energy

    assert select_by_energy(np.array([1.0]), 0.95) == 1
    assert select_by_energy(np.array([3.0, 1.0, 0.1]), 0.95) == 2
    assert select_by_energy(np.array([1.0, 1.0]), 1.0) == 2
    assert select_by_energy(np.zeros(3), 0.95) == 0


def test_energy_selection_mode_runs():
    n = 32
    game = planted(n, "peak", k=3, order=3, seed=4)
    ex = spex.explain(game, n, budget=1500, seed=0, selection="energy")
    assert ex.diagnostics["selection"] == "energy"
    assert spex.faithfulness(game, ex.spectrum, mask_sampling.holdout(n, 500, seed=1)) > 0.9


@pytest.mark.parametrize("solver", ["ridge", "lasso"])
def test_refit_solvers(solver):
    n = 32
    game = planted(n, "peak", k=3, order=3, seed=4)
    ex = spex.explain(game, n, budget=1500, seed=0, refit_solver=solver)
    assert spex.faithfulness(game, ex.spectrum, mask_sampling.holdout(n, 500, seed=1)) > 0.95
    with pytest.raises(spex.SpexInputError, match="refit_solver"):
        spex.explain(game, n, budget=1500, refit_solver="qr")


@pytest.mark.parametrize("seed", [11, 14])
def test_rank_deficient_tiny_budget_stays_bounded(seed):
    """At 38 masks over 12 features some parity columns coincide on the sample; LAPACK's default
    cutoff used to return coefficients of ~1e14 (R² over all masks of -3e28 for these seeds)."""
    from spex.engine.exact import all_masks

    n = 12
    game = planted(n, "hierarchical", k=4, order=3, seed=1)
    everything = all_masks(n)
    y = game(everything)
    ex = spex.explain(game, n, budget=38, seed=seed, pair_complements=False)
    assert np.abs(ex.spectrum.coefficients).max() < 10 * np.abs(y).max()
    assert spex.engine.heldout.r2(y, ex.spectrum.predict(everything)) > -1.0
