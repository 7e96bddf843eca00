"""ProxySPEX's small-budget Lasso blend (spex.engine.methods.low_order), checked against exact ground
truth on all 2^n masks."""

from __future__ import annotations

import numpy as np
import pytest

import spex
from spex.engine import sampling
from spex.engine.exact import all_masks
from spex.engine.heldout import r2
from spex.engine.methods import low_order
from spex.engine.methods.base import StageTimer
from spex.engine.methods.proxyspex import ProxySPEX
from spex.engine.spectrum import Spectrum
from spex.engine.synthetic import PlantedGame, planted
from spex.engine.uncertainty import complement_clusters
from spex.errors import SpexInputError


def _pairwise_game() -> PlantedGame:
    """n = 9, three main effects and three pairs (Möbius): degree 2 exactly, what the Lasso can fit."""
    members = np.array([[0, -1], [3, -1], [5, -1], [0, 1], [2, 6], [4, 8]], dtype=np.int32)
    return PlantedGame(9, members, np.array([2.0, -1.5, 1.0, 3.0, -2.5, 1.5]))


def test_small_budget_blend_recovers_a_pairwise_game_the_proxy_alone_misses() -> None:
    """At 32 masks (7 validation rows would be 8) the blend is chosen by cross-validation and is
    exact on all 512 masks to R² >= 0.99; ProxySPEX without it stays well below."""
    game = _pairwise_game()
    truth = game(all_masks(9))
    blended = spex.explain(game, 9, budget=32, seed=0, uncertainty=None)
    alone = spex.explain(game, 9, budget=32, seed=0, uncertainty=None, low_order="off")
    info = blended.diagnostics["low_order"]
    assert info["order"] == 2 and info["proxy_weight"] < 1.0
    assert set(info["cv_r2"]) == {low_order.label(c) for c in low_order.candidates(2)}
    assert info["chosen"] == low_order.label((2, info["proxy_weight"]))
    assert r2(truth, blended.spectrum.predict(all_masks(9))) >= 0.99
    assert r2(truth, alone.spectrum.predict(all_masks(9))) < 0.9
    assert "low_order" not in alone.diagnostics


def test_an_additive_game_over_many_features_gets_the_degree_one_lasso() -> None:
    """48 masks (24 antithetic pairs) over 30 features of a sparse additive game: no pair is supported by
    the data, and the one-standard-error rule keeps the simplest surrogate; it predicts the game to R² >=
    0.95 on fresh masks (the game itself is the truth)."""
    members = np.array([[1], [4], [9], [17], [25]], dtype=np.int32)
    game = PlantedGame(30, members, np.array([3.0, -2.0, 1.5, 1.0, -0.5]))
    ex = spex.explain(game, 30, budget=48, seed=0, uncertainty=None)
    assert ex.diagnostics["low_order"]["chosen"] == "lasso1"
    check = sampling.uniform(30, 2000, sampling.rng(1, "check"))
    assert r2(game(check), ex.spectrum.predict(check)) >= 0.95


def test_large_validation_split_leaves_the_fit_unchanged() -> None:
    """From SMALL_SPLIT_ROWS validation rows on, "auto" is the proxy alone, coefficient for coefficient."""
    game = planted(12, "hierarchical", k=4, order=3, seed=1)
    budget = 5 * low_order.SMALL_SPLIT_ROWS  # a validation fifth of 64 rows
    auto = spex.explain(game, 12, budget=budget, seed=0, uncertainty=None)
    off = spex.explain(game, 12, budget=budget, seed=0, uncertainty=None, low_order="off")
    assert "low_order" not in auto.diagnostics
    np.testing.assert_array_equal(auto.spectrum.members, off.spectrum.members)
    np.testing.assert_array_equal(auto.spectrum.coefficients, off.spectrum.coefficients)


def test_same_seed_same_blend() -> None:
    game = _pairwise_game()
    a = spex.explain(game, 9, budget=48, seed=3, uncertainty=None)
    b = spex.explain(game, 9, budget=48, seed=3, uncertainty=None)
    assert a.diagnostics["low_order"] == b.diagnostics["low_order"]
    np.testing.assert_array_equal(a.spectrum.coefficients, b.spectrum.coefficients)


def test_pinned_weights_are_the_two_surrogates_and_their_mix() -> None:
    """Weight 0 is the Lasso alone, 1 the proxy alone; the replicates of the bootstrap get the main fit's."""
    game = _pairwise_game()
    x = sampling.uniform(9, 40, sampling.rng(0, "train"), pair_complements=True)
    y = game(x)
    valid = low_order.validation_split(40, 0.2, 0, "split")
    fit = lambda **o: ProxySPEX(**o).fit_measured(x, y, valid, 0, StageTimer())  # noqa: E731
    lasso = low_order.lasso_spectrum(x, y, 2, 0)
    only_lasso, diag0, _ = fit(low_order_weight=0.0)
    np.testing.assert_allclose(only_lasso.predict(all_masks(9)), lasso.predict(all_masks(9)), rtol=0, atol=1e-12)
    assert diag0["low_order"]["cv_r2"] is None  # pinned: no cross-validation ran
    proxy, diag1, _ = fit(low_order="off")
    half, _, _ = fit(low_order_weight=0.5)
    masks = all_masks(9)
    np.testing.assert_allclose(half.predict(masks), 0.5 * proxy.predict(masks) + 0.5 * lasso.predict(masks),
                               rtol=0, atol=1e-9 * max(1.0, float(np.abs(y).max())))
    main, diag, _ = fit()
    replica = ProxySPEX().for_replicates(diag)
    assert replica.options["low_order_weight"] == diag["low_order"]["proxy_weight"]
    assert replica.options["low_order_degree"] == diag["low_order"]["order"]
    assert ProxySPEX().for_replicates(diag1).options["low_order"] == "off"


def test_bootstrap_sees_the_blend() -> None:
    """The selection bootstrap refits the blend on each resample: finite, positive standard errors."""
    ex = spex.explain(_pairwise_game(), 9, budget=48, seed=0, uncertainty="bootstrap", replicates=8)
    assert ex.diagnostics["uncertainty"] == "bootstrap" and "low_order" in ex.diagnostics
    table = ex.interactions(index="fbii", order=2)
    top = table.head(6)
    assert np.all(np.isfinite(top["se"])) and np.all(top["se"] > 0)


def test_folds_keep_a_mask_with_its_complement() -> None:
    x = sampling.uniform(7, 41, sampling.rng(0, "train"), pair_complements=True)
    labels = low_order.fold_labels(x, low_order.FOLDS, seed=0)
    clusters, _ = complement_clusters(x)
    for c in np.unique(clusters):
        assert len(set(labels[clusters == c])) == 1
    assert set(labels) == set(range(low_order.FOLDS))


def test_blend_is_the_weighted_sum() -> None:
    a = Spectrum.from_dict(4, {(): 1.0, (0,): 2.0, (1, 2): -1.0})
    b = Spectrum.from_dict(4, {(): 0.5, (0,): 1.0, (3,): 4.0, (0, 1, 2): 0.25})
    masks = all_masks(4)
    np.testing.assert_allclose(low_order.blend(a, b, 0.25).predict(masks),
                               0.25 * a.predict(masks) + 0.75 * b.predict(masks), rtol=0, atol=1e-12)
    assert low_order.blend(a, b, 1.0) is a and low_order.blend(a, b, 0.0) is b


def test_challenger_degree_follows_the_design_size() -> None:
    assert low_order.challenger_order(40, 256) == 2
    assert low_order.challenger_order(400, 64) == 1  # 80k pairs x 64 rows is past the cap
    assert low_order.challenger_order(10**6, 64) == 0


@pytest.mark.parametrize("options, field", [({"low_order": "always"}, "low_order"),
                                            ({"low_order_weight": 1.5}, "low_order_weight"),
                                            ({"low_order_degree": 3}, "low_order_degree")])
def test_bad_options_are_refused_in_one_line(options: dict, field: str) -> None:
    with pytest.raises(SpexInputError) as err:
        ProxySPEX(**options)
    assert field in str(err.value) and "\n" not in str(err.value)
