"""SPEX (coded sparse WHT): the BCH algebra against galois, recovery of planted spectra, the
budget mapping against the reference formula, determinism, and shapiq 1.4.1's SPEX as an oracle."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from spex.engine import sets
from spex.engine.batching import MaskEvaluator
from spex.engine.methods.base import StageTimer
from spex.engine.methods.bch import (
    PRIMITIVE_POLYNOMIALS,
    galois_field,
    parameter_search,
    parity_length,
    shortened_bch,
)
from spex.engine.methods.spex_coded import (
    SPEX,
    aliased_bins,
    build_design,
    minimum_budget,
    plan_design,
    refit_on_design,
)
from spex.engine.spectrum import Spectrum
from spex.errors import SpexInputError

# --------------------------------------------------------------------------- helpers


def planted_fourier(n: int, k: int, max_order: int, seed: int, constant: float = 0.7) -> Spectrum:
    """k random Fourier terms of order 1..max_order with |F| in [1, 2] (distinct supports)."""
    rng = np.random.default_rng(seed)
    terms: dict[tuple[int, ...], float] = {(): constant}
    while len(terms) < k + 1:
        order = int(rng.integers(1, max_order + 1))
        key = tuple(sorted(rng.choice(n, order, replace=False).tolist()))
        terms[key] = float(rng.choice([-1.0, 1.0]) * (1.0 + rng.random()))
    return Spectrum.from_dict(n, terms)


def mobius_game(n: int, n_sets: int, order: int, seed: int) -> tuple[dict[tuple[int, ...], float], object]:
    """A "peak" game: f(x) = Σ_S a_S · Π_{i∈S} x_i over a few random sets (Möbius support = the sets)."""
    rng = np.random.default_rng(seed)
    chosen: dict[tuple[int, ...], float] = {}
    while len(chosen) < n_sets:
        chosen[tuple(sorted(rng.choice(n, order, replace=False).tolist()))] = float(rng.normal() * 2.0)
    idx = np.array(list(chosen))
    coef = np.array(list(chosen.values()))

    def game(masks: np.ndarray) -> np.ndarray:
        x = np.asarray(masks, dtype=bool)
        return x[:, idx].all(axis=2).astype(np.float64) @ coef

    return chosen, game


def run(fn, n: int, budget: int, seed: int = 0, **options) -> tuple[Spectrum, dict]:
    return SPEX(**options).fit(MaskEvaluator(fn, n), n, budget, seed, StageTimer())


def r2(y: np.ndarray, pred: np.ndarray) -> float:
    return 1.0 - float(np.sum((y - pred) ** 2) / np.sum((y - y.mean()) ** 2))


# --------------------------------------------------------------------------- BCH algebra


def test_fields_are_primitive() -> None:
    for m in PRIMITIVE_POLYNOMIALS:
        f = galois_field(m)  # raises if the tabled polynomial is not primitive
        a = np.arange(1, 1 << m)
        assert np.all(f.mul(a, f.inv(a)) == 1)


def test_code_parameters_match_the_reference_rule() -> None:
    # n = 128, t = 5: the (255, 215) code, p = 40 — 3·41·2^8 = 31,488 masks at b = 8 (DESIGN.md)
    assert parameter_search(128, 5) == (8, 255, 215)
    assert parity_length(128, 5) == 40
    # smallest m whose dimension carries n bits; t = 1 is the Hamming code (p = m)
    assert parameter_search(20, 3) == (6, 63, 45) and parameter_search(16, 3) == (5, 31, 16)
    assert parameter_search(1000, 1) == (10, 1023, 1013)
    assert parameter_search(4096, 5)[:2] == (13, 8191) and parity_length(4096, 5) == 65


def test_code_and_decoder_equal_galois() -> None:
    """Our code is galois's BCH(63, d=7) shortened to 20 bits, and both decoders agree word for word
    (one galois code only: galois needs seconds to build a code and milliseconds per decoded word)."""
    galois = pytest.importorskip("galois")
    n, t = 20, 3
    code = shortened_bch(n, t)
    reference = galois.BCH(code.length, d=2 * t + 1)
    assert int(reference.extension_field.irreducible_poly) == PRIMITIVE_POLYNOMIALS[code.m]  # x^6 + x + 1
    assert reference.k == code.dimension
    # the delays are the parity part of the systematic generator restricted to the last n rows
    assert np.array_equal(np.asarray(reference.G[-n:, reference.k :], dtype=np.uint8), code.parity)
    rng = np.random.default_rng(0)
    words = code.encode(rng.integers(0, 2, (96, n)))
    n_err = rng.integers(0, t + 3, len(words))
    for w, e in enumerate(n_err):  # test set-up only
        words[w, rng.choice(code.word_length, e, replace=False)] ^= 1
    ours, our_counts = code.decode(words)
    theirs, their_counts = reference.decode(galois.GF2(words), errors=True)
    assert np.array_equal(ours, np.asarray(theirs))
    assert np.array_equal(our_counts, np.asarray(their_counts))
    assert np.all(our_counts[n_err <= t] == n_err[n_err <= t])


def test_generator_rows_are_codewords() -> None:
    """Every row [e_i | P_i] of the shortened generator has zero syndromes, at several sizes."""
    for n, t in [(5, 2), (128, 5), (700, 4), (4096, 5)]:
        code = shortened_bch(n, t)
        rows = code.encode(np.eye(n, dtype=np.uint8))
        assert not np.any(code.syndromes(rows))
        assert code.parity.shape == (n, code.p) and code.word_length == n + code.p


def test_joint_decoding_of_sparse_frequencies() -> None:
    """Parity bits of a k of order ≤ t decode to k, with t − |k| parity flips corrected too."""
    n, t = 96, 5
    code = shortened_bch(n, t)
    rng = np.random.default_rng(1)
    members = np.full((400, t), -1)
    flips = np.zeros((400, code.p), dtype=bool)
    for w in range(400):
        order = int(rng.integers(0, t + 1))
        members[w, :order] = np.sort(rng.choice(n, order, replace=False))
        flips[w, rng.choice(code.p, t - order, replace=False)] = True
    parity = code.parity_of_members(members) ^ flips
    decoded, n_flips, counts = code.decode_parity(parity)
    assert np.array_equal(decoded, members)
    assert np.array_equal(n_flips, t - (members >= 0).sum(axis=1))
    assert np.all(counts == t)


# --------------------------------------------------------------------------- recovery


@pytest.mark.parametrize("n,k,b", [(32, 8, 6), (128, 20, 8), (256, 25, 7)])
@pytest.mark.parametrize("decoder", ["soft", "hard"])
def test_noiseless_planted_fourier_is_recovered_exactly(n: int, k: int, b: int, decoder: str) -> None:
    true = planted_fourier(n, k, max_order=5, seed=n)
    plan_budget = minimum_budget(n, b=b)
    spectrum, diag = run(true.predict, n, plan_budget, seed=3, decoder=decoder)
    assert diag["b"] == b and diag["t"] == 5 and diag["n_masks"] == plan_budget
    expected, got = true.to_dict(), spectrum.to_dict()
    assert set(got) == set(expected)
    assert max(abs(expected[key] - got[key]) for key in expected) < 1e-8
    holdout = np.random.default_rng(99).random((1000, n)) < 0.5
    assert r2(true.predict(holdout), spectrum.predict(holdout)) >= 0.99


def test_noiseless_peak_game_mobius_coefficients() -> None:
    n = 64
    chosen, game = mobius_game(n, n_sets=6, order=4, seed=2)
    spectrum, diag = run(game, n, 3 * 38 * 256)
    mobius = {key: v for key, v in spectrum.to_dict("mobius").items() if abs(v) > 1e-9}
    assert set(mobius) == set(chosen)
    assert all(abs(mobius[s] - a) < 1e-8 for s, a in chosen.items())
    assert diag["iterations"] >= 2  # the 16 Fourier terms per set collide: peeling is needed


def test_soft_decoding_recovers_at_least_as_much_as_hard_under_noise() -> None:
    n, sigma = 128, 6.0
    found = {"hard": 0, "soft": 0}
    false_positives = 0
    for seed in range(3):
        true = planted_fourier(n, 20, max_order=5, seed=seed, constant=0.0)
        for decoder in found:
            noise = np.random.default_rng(100 + seed)

            def noisy(masks: np.ndarray, true: Spectrum = true, noise: np.random.Generator = noise) -> np.ndarray:
                return true.predict(masks) + sigma * noise.normal(size=len(masks))

            spectrum, _ = run(noisy, n, 3 * 41 * 64, seed=seed, decoder=decoder)
            got = set(spectrum.to_dict()) - {()}
            planted = set(true.to_dict()) - {()}
            found[decoder] += len(got & planted)
            false_positives += len(got - planted)
    assert found["soft"] >= found["hard"]
    assert found["soft"] >= 0.9 * 60
    assert false_positives <= 3


def test_constant_and_zero_functions() -> None:
    n = 40
    spectrum, diag = run(lambda x: np.full(len(x), 3.25), n, 5000)
    assert spectrum.to_dict() == pytest.approx({(): 3.25})
    spectrum, _ = run(lambda x: np.zeros(len(x)), n, 5000)
    assert set(spectrum.to_dict()) <= {()} and abs(spectrum.constant) < 1e-12
    assert diag["support_size"] == 0


def test_refit_equals_least_squares_on_every_sample() -> None:
    """The closed-form refit (normal equations from the aliased bins) is lstsq on the design."""
    n = 48
    true = planted_fourier(n, 12, max_order=4, seed=5)
    plan = plan_design(n, minimum_budget(n, b=5))
    design = build_design(plan, seed=1)
    masks = design.masks.reshape(-1, n)
    y = true.predict(masks) + np.random.default_rng(0).normal(size=len(masks))
    decoys = sets.from_tuples([(0, 1), (5,), (7, 9, 11)])
    width = max(true.members.shape[1], decoys.shape[1])
    support = np.vstack([sets.pad_to(true.members, width), sets.pad_to(decoys, width)])
    fast = refit_on_design(design, aliased_bins(y.reshape(plan.C, plan.p + 1, -1)), support)
    slow = np.linalg.lstsq(sets.parity_design(masks, support, n), y, rcond=None)[0]
    assert np.allclose(fast, slow, atol=1e-9)


def test_refit_off_returns_peeled_estimates() -> None:
    n = 64
    true = planted_fourier(n, 10, max_order=3, seed=4)
    spectrum, diag = run(true.predict, n, 20000, refit=False)
    assert diag["refit"] is False
    expected = true.to_dict()
    assert set(spectrum.to_dict()) == set(expected)
    assert max(abs(expected[k] - v) for k, v in spectrum.to_dict().items()) < 1e-8


# --------------------------------------------------------------------------- budget and options


def test_budget_mapping_is_the_reference_formula() -> None:
    n, C = 128, 3
    for budget in [500, 1000, 4000, 9999, 31488, 31487, 100_000]:
        plan = plan_design(n, budget, t=5, C=C)
        per_bin = C * (parity_length(n, plan.t) + 1)
        assert plan.n_masks == per_bin * 2**plan.b <= budget < per_bin * 2 ** (plan.b + 1)
        assert plan.b >= 3
        if plan.t < 5:  # t is lowered only when b would fall below 3 at the larger t
            assert C * (parity_length(n, plan.t + 1) + 1) * 8 > budget
    assert (plan_design(n, 31488).b, plan_design(n, 31488).t) == (8, 5)
    assert plan_design(n, 31487).b == 7


def test_budget_below_minimum_states_the_minimum() -> None:
    n = 128
    method = SPEX()
    minimum = method.minimum_budget(n)
    assert minimum == 3 * (parity_length(n, 2) + 1) * 8
    assert plan_design(n, minimum).t == 2
    with pytest.raises(SpexInputError, match=str(minimum)):
        method.fit(MaskEvaluator(lambda x: np.zeros(len(x)), n), n, minimum - 1, 0, StageTimer())
    assert SPEX(b=8).minimum_budget(n) == 31488
    with pytest.raises(SpexInputError, match="31488"):
        plan_design(n, 31000, b=8)


def test_t_is_capped_at_n() -> None:
    plan = plan_design(3, 10_000, t=5)
    assert plan.t == 3 and plan.t_requested == 5 and plan.b == 3


@pytest.mark.parametrize(
    "options,name",
    [({"decoder": "fuzzy"}, "decoder"), ({"t": 0}, "t"), ({"C": 1.5}, "C"), ({"chase_depth": 99}, "chase_depth"),
     ({"refit": "yes"}, "refit"), ({"colour": 1}, "colour")],
)
def test_bad_options_are_named(options: dict, name: str) -> None:
    with pytest.raises(SpexInputError, match=name):
        SPEX(**options)


# --------------------------------------------------------------------------- determinism


def test_same_seed_same_masks_and_result_different_seed_different_masks() -> None:
    n = 64
    true = planted_fourier(n, 10, max_order=4, seed=8)
    plan = plan_design(n, 8000)
    a, b, c = build_design(plan, 7), build_design(plan, 7), build_design(plan, 8)
    assert np.array_equal(a.masks, b.masks)
    assert not np.array_equal(a.masks, c.masks)
    noise = 0.3

    def noisy(masks: np.ndarray) -> np.ndarray:  # deterministic in the mask: same masks, same values
        h = (masks.astype(np.int64) * np.arange(1, n + 1)).sum(axis=1)
        return true.predict(masks) + noise * np.sin(h * 12.9898)

    s1, d1 = run(noisy, n, 8000, seed=7)
    s2, d2 = run(noisy, n, 8000, seed=7)
    assert np.array_equal(s1.members, s2.members) and np.array_equal(s1.coefficients, s2.coefficients)
    assert {k: v for k, v in d1.items() if k != "decode_seconds"} == {k: v for k, v in d2.items() if k != "decode_seconds"}


def test_explain_entry_point() -> None:
    import spex

    n = 50
    true = planted_fourier(n, 6, max_order=3, seed=11)
    ex = spex.explain(true.predict, n, budget=6000, method="spex", seed=2)
    assert set(ex.spectrum.to_dict()) == set(true.to_dict())
    assert ex.n_calls <= 6000
    assert ex.diagnostics["t"] == 5 and ex.diagnostics["C"] == 3


# --------------------------------------------------------------------------- shapiq oracle


def test_agrees_with_shapiq_spex_on_a_planted_game() -> None:
    shapiq = pytest.importorskip("shapiq")
    n, t = 16, 3
    chosen = {(1, 12): 2.0, (2, 3, 12): -1.5, (0, 5, 9): 1.0}
    idx = [np.array(s) for s in chosen]
    coef = list(chosen.values())

    def game(masks: np.ndarray) -> np.ndarray:
        x = np.asarray(masks, dtype=bool)
        return np.sum([c * x[:, i].all(axis=1) for c, i in zip(coef, idx, strict=True)], axis=0).astype(np.float64)

    budget = 1500
    np.random.seed(0)  # shapiq's random_state does not reach its subsampling matrices
    approximator = shapiq.SPEX(n=n, index="FBII", max_order=None, random_state=0, degree_parameter=t)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        values = approximator.approximate(budget, game)
    theirs = {key: float(values.values[i]) for key, i in values.interaction_lookup.items()}
    spectrum, diag = run(game, n, budget, t=t)
    ours = spectrum.to_dict("mobius")
    # the same design size from the same budget: (b, t) and the count of masks used
    assert (diag["b"], diag["t"]) == (approximator.query_args["b"], approximator.degree_parameter)
    assert diag["n_masks"] == values.estimation_budget
    for s, a in chosen.items():
        assert ours[s] == pytest.approx(a, abs=1e-8)
        assert theirs[s] == pytest.approx(a, abs=1e-6)
    assert all(abs(v) < 1e-8 for key, v in ours.items() if key not in chosen and key != ())
