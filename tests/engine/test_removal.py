"""The removal optimisation equals brute force over every r-subset."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

import spex
from spex.engine import sets
from spex.engine.spectrum import Spectrum


def brute(spectrum: Spectrum, r: int, direction: str):
    n = spectrum.n
    best = None
    for removed in itertools.combinations(range(n), r):
        m = np.ones((1, n), dtype=bool)
        m[0, list(removed)] = False
        v = spectrum.predict(m)[0]
        if best is None or (v < best[1] if direction == "down" else v > best[1]):
            best = (removed, v)
    return best


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("direction", ["down", "up"])
@pytest.mark.parametrize("r", [1, 2, 4])
def test_milp_is_optimal(seed, direction, r):
    rng = np.random.default_rng(seed)
    n = 10
    members = [tuple(sorted(rng.choice(n, size=rng.integers(1, 4), replace=False).tolist())) for _ in range(12)]
    spectrum = Spectrum(n, sets.from_tuples(members + [()]), rng.normal(size=13))
    result = spex.removal(spectrum, r, direction)
    _, best_value = brute(spectrum, r, direction)
    assert result.method == "milp" and result.optimal
    assert len(result.features) == r
    assert result.predicted_value == pytest.approx(best_value, abs=1e-9)
    m = result.mask(n)
    assert result.predicted_change == pytest.approx(spectrum.predict(m[None])[0] - result.baseline)


def test_greedy_fallback_when_support_is_large():
    rng = np.random.default_rng(0)
    n = 12
    members = [tuple(sorted(rng.choice(n, size=2, replace=False).tolist())) for _ in range(30)]
    spectrum = Spectrum(n, sets.from_tuples(members), rng.normal(size=30))
    result = spex.removal(spectrum, 3, "down", exact_terms=0)
    assert result.method == "greedy" and not result.optimal and len(result.features) == 3
    assert result.predicted_value >= brute(spectrum, 3, "down")[1] - 1e-12


def test_bad_r():
    spectrum = Spectrum.from_dict(4, {(0,): 1.0})
    with pytest.raises(spex.SpexInputError):
        spex.removal(spectrum, 5)
    with pytest.raises(spex.SpexInputError):
        spex.removal(spectrum, 1, direction="sideways")
    assert spex.removal(spectrum, 0).features == ()


def test_a_constant_surrogate_has_an_optimal_removal() -> None:
    """A surrogate with no non-constant term (a small-budget Lasso that kept nothing): any r features
    are an optimal choice, with no predicted change; no solver is asked about an empty problem."""
    from spex.engine.removal_choice import removal
    from spex.engine.spectrum import Spectrum

    flat = Spectrum.from_dict(5, {(): -2.5})
    result = removal(flat, 2, "down")
    assert len(result.features) == 2 and result.optimal
    assert result.predicted_value == result.baseline == -2.5 and result.predicted_change == 0.0
