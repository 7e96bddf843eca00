"""The spectrum and every conversion against brute force on random dense functions (n <= 10)."""

from __future__ import annotations

import numpy as np
import pytest

import spex
from spex.engine import sets
from spex.engine.exact import all_masks, exact_spectrum
from spex.engine.spectrum import Spectrum

from . import bruteforce as bf


def random_table(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=1 << n)


def as_dict(table):
    return {tuple(m): v for m, v in zip(table["members"], table["value"])}


def table_fn(table):
    return lambda masks: table[sets.masks_to_ints(masks)]


@pytest.fixture(params=[(3, 0), (5, 1), (7, 2)], ids=lambda p: f"n{p[0]}")
def dense(request):
    n, seed = request.param
    table = random_table(n, seed)
    return n, table, exact_spectrum(table_fn(table), n)


def assert_close(ours: dict, truth: dict, skip_empty: bool = True):
    for key, value in truth.items():
        if skip_empty and key == ():
            continue
        assert ours.get(key, 0.0) == pytest.approx(value, abs=1e-9), key
    for key, value in ours.items():
        if key not in truth:
            assert value == pytest.approx(0.0, abs=1e-9), key


def test_exact_spectrum_matches_definition_and_predicts_every_mask(dense):
    n, table, spectrum = dense
    assert_close(spectrum.to_dict("fourier"), bf.fourier(table, n), skip_empty=False)
    np.testing.assert_allclose(spectrum.predict(all_masks(n)), table, atol=1e-9)
    # the sparse (design-matrix) path agrees with the dense path
    x = all_masks(n)[:3]
    np.testing.assert_allclose(sets.parity_design(x, spectrum.members, n) @ spectrum.coefficients, table[:3], atol=1e-9)


def test_mobius_dense_and_sparse_paths_equal_definition(dense):
    n, table, spectrum = dense
    truth = bf.mobius(table, n)
    assert_close(spectrum.to_dict("mobius"), truth, skip_empty=False)
    members, values = sets.superset_sums(spectrum.members, spectrum.coefficients, n, lambda s, t: (-2.0) ** t)
    assert_close(dict(zip(sets.to_tuples(members), values)), truth, skip_empty=False)


def test_banzhaf_interaction_index(dense):
    n, table, spectrum = dense
    assert_close(as_dict(spectrum.interactions("banzhaf")), bf.banzhaf(table, n))


def test_shapley_values(dense):
    n, table, spectrum = dense
    table_ = spectrum.interactions("shapley")
    ours = np.zeros(n)
    ours[[m[0] for m in table_["members"]]] = table_["value"]
    np.testing.assert_allclose(ours, bf.shapley(table, n), atol=1e-9)
    # efficiency: Σ φ_i = f(N) - f(∅)
    assert ours.sum() == pytest.approx(table[-1] - table[0], abs=1e-9)


@pytest.mark.parametrize("order", [2, 3])
def test_sii(dense, order):
    n, table, spectrum = dense
    assert_close(as_dict(spectrum.interactions("sii", order=order)), bf.sii(table, n, order))


@pytest.mark.parametrize("order", [1, 2, 3])
def test_stii(dense, order):
    n, table, spectrum = dense
    if order > n:
        pytest.skip("order above n")
    assert_close(as_dict(spectrum.interactions("stii", order=order)), bf.stii(table, n, order))


@pytest.mark.parametrize("order", [1, 2])
def test_faith_banzhaf(dense, order):
    n, table, spectrum = dense
    assert_close(as_dict(spectrum.interactions("fbii", order=order)), bf.fbii(table, n, order))


@pytest.mark.parametrize("order", [1, 2])
def test_faith_shapley(dense, order):
    n, table, spectrum = dense
    truth = bf.fsii(table, n, order)
    ours = as_dict(spectrum.interactions("fsii", order=order))
    for key, value in truth.items():
        if key:
            assert ours.get(key, 0.0) == pytest.approx(value, abs=1e-6), key


def test_table_columns_ranking_top_and_labels():
    s = Spectrum.from_dict(4, {(): 1.0, (0,): 0.5, (1, 2): -2.0, (3,): 0.1})
    table = s.interactions("fourier", labels=["a", "b", "c", "d"])
    assert list(table.columns) == ["members", "labels", "order", "value", "rank"]
    assert table["members"].tolist() == [(1, 2), (0,), (3,)]
    assert table["labels"].tolist() == [("b", "c"), ("a",), ("d",)]
    assert table["rank"].tolist() == [1, 2, 3]
    assert len(s.interactions("fourier", top=2)) == 2
    assert s.interactions("fourier", order=1)["members"].tolist() == [(0,), (3,)]
    with pytest.raises(ValueError, match="unknown index"):
        s.interactions("shap")


def test_to_dict_and_json_round_trip():
    s = Spectrum.from_dict(6, {(): 0.25, (5,): 1.0, (0, 3): -0.5, (1, 2, 4): 2.0})
    assert s.to_dict() == {(): 0.25, (5,): 1.0, (0, 3): -0.5, (1, 2, 4): 2.0}
    back = Spectrum.from_json(s.to_json())
    assert back.to_dict() == s.to_dict()
    assert s.constant == 0.25


def test_duplicate_members_are_merged():
    s = Spectrum(5, sets.from_tuples([(1, 2), (2, 1), ()]), np.array([1.0, 2.0, 3.0]))
    assert s.to_dict() == {(1, 2): 3.0, (): 3.0}


def test_predict_rejects_masks_of_wrong_width_or_values():
    s = Spectrum.from_dict(3, {(0,): 1.0})
    with pytest.raises(spex.SpexInputError, match="width 4"):
        s.predict(np.ones((2, 4), dtype=bool))
    with pytest.raises(spex.SpexInputError, match="0/1"):
        s.predict(np.full((2, 3), 0.5))


def test_large_n_predict_is_vectorised_and_correct():
    n = 4096
    rng = np.random.default_rng(0)
    members = sets.canonical(np.stack([rng.choice(n, 3, replace=False) for _ in range(50)]))
    coefs = rng.normal(size=50)
    s = Spectrum(n, members, coefs)
    x = rng.random((64, n)) < 0.5
    expected = np.array([[(-1) ** int(x[b, m].sum()) for m in members] for b in range(64)]) @ coefs
    np.testing.assert_allclose(s.predict(x), expected, atol=1e-9)
