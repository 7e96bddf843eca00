"""Tree extraction is exact: the spectrum read from a LightGBM model predicts what the model does."""

from __future__ import annotations

import lightgbm as lgb
import numpy as np
import pytest

from spex.engine.methods.trees import tree_spectrum


def train(x, y, **params):
    base = {"objective": "regression", "verbose": -1, "max_depth": 5, "num_leaves": 32, "seed": 0, "min_data_in_leaf": 5}
    base.update(params)
    rounds = base.pop("rounds", 100)
    return lgb.train(base, lgb.Dataset(x.astype(np.float32), label=y, params={"verbose": -1}), num_boost_round=rounds)


@pytest.mark.parametrize("params", [
    {}, {"learning_rate": 0.3, "rounds": 300}, {"max_depth": -1, "num_leaves": 64, "rounds": 40},
    {"boosting": "rf", "bagging_fraction": 0.7, "bagging_freq": 1, "rounds": 20},
], ids=["gbdt", "lr0.3", "unlimited-depth", "random-forest"])
def test_spectrum_predicts_like_the_booster(params):
    rng = np.random.default_rng(0)
    n = 40
    x = rng.random((3000, n)) < 0.5
    y = 2.0 * (x[:, 0] & x[:, 1]) - x[:, 2] * x[:, 3] * x[:, 4] + x[:, 5] + 0.1 * rng.normal(size=3000)
    booster = train(x, y, **params)
    spectrum = tree_spectrum(booster.model_to_string(), n)
    z = rng.random((2000, n)) < 0.5
    np.testing.assert_allclose(spectrum.predict(z), booster.predict(z.astype(np.float32)), atol=1e-9)


def test_constant_target_gives_single_leaf_trees_and_a_constant_spectrum():
    x = np.random.default_rng(1).random((200, 8)) < 0.5
    booster = train(x, np.full(200, 3.5), rounds=5)
    spectrum = tree_spectrum(booster.model_to_string(), 8)
    assert spectrum.to_dict() == pytest.approx({(): 3.5})


def test_zero_as_missing_splits_are_read_correctly():
    rng = np.random.default_rng(2)
    x = rng.random((2000, 6)) < 0.5
    y = 1.0 * x[:, 0] + 2.0 * (x[:, 1] & ~x[:, 2])
    booster = train(x, y, zero_as_missing=True, rounds=30)
    spectrum = tree_spectrum(booster.model_to_string(), 6)
    z = rng.random((500, 6)) < 0.5
    np.testing.assert_allclose(spectrum.predict(z), booster.predict(z.astype(np.float32)), atol=1e-9)
