"""ProxySPEX at thousands of features (issue 14): the feature screen, the widened proxy, the fast refit.

Large-n correctness on planted games: the screen is calibrated (z-scores of features the function
ignores are standard normal) and keeps the planted features; the proxy trained on the screened
columns, widened back to n features, is exactly what its spectrum says; recovery at n = 4,096.
"""

from __future__ import annotations

import lightgbm as lgb
import numpy as np
import pytest
from scipy.linalg import lstsq

import spex
from spex.engine import sampling as mask_sampling
from spex.engine import sets
from spex.engine.linalg import independent_columns, least_squares, least_squares_tall, prefix_factor
from spex.engine.methods.proxyspex import SCREEN_AUTO_N, ProxySPEX
from spex.engine.methods.screening import FourierScreen
from spex.engine.methods.trees import tree_spectrum, widen_model
from spex.engine.synthetic import planted
from spex.errors import SpexInputError


def relevant(game) -> np.ndarray:
    return np.unique(game.members[game.members >= 0])


# -- the screen -----------------------------------------------------------------------------------

@pytest.mark.parametrize("paired", [True, False], ids=["pairs", "iid"])
def test_screen_z_scores_are_standard_normal_for_ignored_features(paired):
    """The null calibration needs no model of the function: for a feature f ignores, Σ s_i g has
    variance Σ g² exactly. 4,095 ignored features: mean ≈ 0.80 (E|Z|), none far in the tail."""
    n, budget = 4096, 4000
    rng = np.random.default_rng(3)
    x = mask_sampling.uniform(n, budget, rng, pair_complements=paired)
    y = 3.0 * x[:, 0] - 2.0 * (x[:, 0] & x[:, 1]) + rng.normal(size=budget)  # features 0 and 1 only
    screen = FourierScreen(x, paired=paired)
    z1 = screen.first_order(y)
    z2 = screen.second_order(y, np.array([0]))
    ignored = np.arange(2, n)
    for z in (z1[ignored], z2[ignored]):
        assert abs(z.mean() - np.sqrt(2 / np.pi)) < 0.05  # E|N(0,1)| = 0.798; s.e. of the mean 0.01
        assert 0.9 < np.sqrt(np.mean(z**2)) < 1.1
        assert z.max() < 5.0  # the thresholds here are 4.4 (first order) and 5.2 (second)
    assert z1[0] > 10 and z2[1] > 10  # the two effects are seen: F({0}) = 1, F({0, 1}) = -1/2


@pytest.mark.parametrize("kind", ["hierarchical", "peak"])
def test_screen_with_a_residual_pass_keeps_every_planted_feature(kind):
    n, budget = 4096, 20000
    game = planted(n, kind, seed=n)
    ex = spex.explain(game, n, budget=budget, seed=0, max_trees=100)
    kept = ex.diagnostics["screened_features"]
    assert len(kept) >= 2 and kept[-1] <= len(relevant(game)) + 3  # it took residual passes; few false positives
    tables = ex.spectrum.members[ex.spectrum.orders > 0]
    assert set(relevant(game)) <= set(np.unique(tables[tables >= 0]).tolist())


def test_screen_finds_a_feature_whose_only_effect_is_an_interaction():
    """x7 has no first-order effect (its main term is cancelled); the second-order z with x3 finds it."""
    n, budget = 1024, 6000
    x = mask_sampling.uniform(n, budget, np.random.default_rng(5), pair_complements=True)
    s = 1.0 - 2.0 * x
    y = 2.0 * s[:, 3] + 1.5 * s[:, 3] * s[:, 7]
    kept = FourierScreen(x, paired=True).keep(y, false_positives=0.1, max_partners=64)
    assert kept.tolist() == [3, 7]


# -- the widened proxy: exact extraction --------------------------------------------------------

def test_widened_model_predicts_like_the_booster_on_its_columns():
    rng = np.random.default_rng(0)
    n = 300
    x = rng.random((3000, n)) < 0.5
    columns = np.array([3, 17, 50, 51, 299])
    y = 2.0 * (x[:, 3] & x[:, 17]) - x[:, 50] * x[:, 51] * x[:, 299] + x[:, 17] + 0.1 * rng.normal(size=3000)
    params = {"objective": "regression", "verbose": -1, "max_depth": 5, "num_leaves": 32, "force_row_wise": True}
    booster = lgb.train(params, lgb.Dataset(x[:, columns].astype(np.float32), label=y), num_boost_round=80)
    wide = lgb.Booster(model_str=widen_model(booster.model_to_string(), columns, n))
    z = rng.random((2000, n)) < 0.5
    narrow = booster.predict(z[:, columns].astype(np.float32))
    assert wide.num_feature() == n
    np.testing.assert_array_equal(wide.predict(z.astype(np.float32)), narrow)
    np.testing.assert_allclose(tree_spectrum(wide.model_to_string(), n).predict(z), narrow, atol=1e-9)
    importance = dict(zip(range(n), wide.feature_importance("split"), strict=True))
    assert {i for i, c in importance.items() if c > 0} <= set(columns.tolist())


def test_widen_model_refuses_out_of_range_columns():
    booster = lgb.train({"objective": "regression", "verbose": -1},
                        lgb.Dataset(np.eye(50, 3, dtype=np.float32), label=np.arange(50.0)), num_boost_round=2)
    with pytest.raises(ValueError, match="features must be indices"):
        widen_model(booster.model_to_string(), np.array([0, 1, 9]), 5)


@pytest.mark.parametrize("kind", ["hierarchical", "peak"])
def test_screened_proxy_spectrum_is_exactly_the_boosters_at_2048_features(kind):
    """With the new settings (screened columns, row-wise histograms), the tree spectrum still
    predicts exactly what the (widened) booster predicts, on masks it never saw."""
    n = 2048
    game = planted(n, kind, seed=n)
    ex = spex.explain(game, n, budget=6000, seed=0, max_trees=60)
    assert ex.proxy.num_feature() == n and ex.diagnostics["screened_features"][-1] < 100
    z = mask_sampling.holdout(n, 2000, seed=1)
    spectrum = tree_spectrum(ex.proxy.model_to_string(), n)
    np.testing.assert_allclose(spectrum.predict(z), ex.proxy.predict(z.astype(np.float32)), atol=1e-9)


# -- recovery at n = 4,096 -----------------------------------------------------------------------

def test_recovery_at_4096_features_on_a_sparse_planted_game():
    """Three 3-sets with all their subsets (21 Möbius terms) among 4,096 features, 10,000 masks:
    the screen keeps their 9 features, the refit recovers the planted function."""
    n = 4096
    game = planted(n, "hierarchical", k=3, order=3, seed=11)
    ex = spex.explain(game, n, budget=10000, seed=0)
    holdout = mask_sampling.holdout(n, 1000, seed=12)
    assert spex.faithfulness(game, ex.spectrum, holdout) > 0.9999
    assert ex.diagnostics["screened_features"][-1] <= len(relevant(game)) + 3
    mobius = ex.interactions("mobius", top=len(game.mobius))
    found = dict(zip(mobius["members"], mobius["value"], strict=True))
    for members, weight in game.mobius.items():
        assert found.get(members, 0.0) == pytest.approx(weight, abs=1e-6)


# -- defaults and options ------------------------------------------------------------------------

def test_auto_screens_only_at_large_n_and_off_restores_every_feature():
    method = ProxySPEX()
    assert not method.screens(SCREEN_AUTO_N - 1) and method.screens(SCREEN_AUTO_N)
    assert ProxySPEX(screen="on").screens(8) and not ProxySPEX(screen="off").screens(100_000)
    game = planted(SCREEN_AUTO_N, "peak", k=2, order=2, seed=2)
    ex = spex.explain(game, SCREEN_AUTO_N, budget=3000, seed=0, screen="off", max_trees=50)
    assert "screened_features" not in ex.diagnostics


@pytest.mark.parametrize("option, value", [
    ("screen", "maybe"), ("screen", True), ("screen_false_positives", 0), ("screen_false_positives", -1.0),
    ("screen_false_positives", "0.1"),
    ("screen_rounds", 0), ("screen_rounds", 1.5), ("screen_trees", 0), ("screen_partners", -1),
])
def test_bad_screen_options_are_refused_naming_the_option(option, value):
    with pytest.raises(SpexInputError, match=f"option '{option}'") as info:
        ProxySPEX(**{option: value})
    assert info.value.field == option


# -- the refit's linear algebra ------------------------------------------------------------------

def test_parity_design_used_is_the_parity_design():
    rng = np.random.default_rng(4)
    for n in (6, 500):
        x = rng.random((700, n)) < 0.5
        members = sets.canonical(np.where(rng.random((120, 4)) < 0.3, -1, rng.integers(0, n, (120, 4))))
        members = np.vstack([members, np.full((1, 4), -1)])  # the empty set: a column of ones
        np.testing.assert_array_equal(sets.parity_design_used(x, members, n), sets.parity_design(x, members, n))
    with pytest.raises(ValueError, match="expected n"):
        sets.parity_design_used(x, members, n + 1)


def test_fast_factor_and_solve_agree_with_householder_and_lapack():
    rng = np.random.default_rng(6)
    design = np.column_stack([np.ones(2000), rng.choice([-1.0, 1.0], size=(2000, 120))])
    y = design[:, :40] @ rng.normal(size=40) + 0.01 * rng.normal(size=2000)
    r, qty, kept = prefix_factor(design, y)
    assert kept.all()
    for k in (1, 17, 121):
        beta = np.linalg.solve(r[:k, :k], qty[:k])
        np.testing.assert_allclose(beta, lstsq(design[:, :k], y)[0], rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(least_squares_tall(design, y), least_squares(design, y), rtol=1e-9, atol=1e-12)


def test_fast_factor_falls_back_on_dependent_columns():
    rng = np.random.default_rng(7)
    a = rng.choice([-1.0, 1.0], size=(400, 5))
    design = np.column_stack([a[:, 0], a[:, 1], a[:, 0], a[:, 2], a[:, 1] - a[:, 2], a[:, 3], a[:, 4]])
    y = a @ np.array([1.0, -2.0, 0.5, 0.0, 3.0])
    r, qty, kept = prefix_factor(design, y)
    assert kept.tolist() == independent_columns(design).tolist() == [True, True, False, True, False, True, True]
    np.testing.assert_allclose(np.linalg.solve(r, qty), lstsq(design[:, kept], y)[0], atol=1e-9)
    np.testing.assert_allclose(least_squares_tall(design, y), least_squares(design, y), atol=1e-9)
