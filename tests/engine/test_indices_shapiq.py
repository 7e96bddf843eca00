"""Our index conversions agree with shapiq 1.4.1's MoebiusConverter on the same spectrum
(shapiq is a test-only oracle; spex never imports it)."""

from __future__ import annotations

import numpy as np
import pytest

from spex.engine import sets
from spex.engine.spectrum import Spectrum

shapiq = pytest.importorskip("shapiq")


def sparse_spectrum(n: int, seed: int) -> Spectrum:
    rng = np.random.default_rng(seed)
    members = [tuple(sorted(rng.choice(n, size=rng.integers(1, 5), replace=False).tolist())) for _ in range(15)]
    return Spectrum(n, sets.from_tuples(members + [()]), rng.normal(size=16))


def shapiq_values(spectrum: Spectrum, index: str, order: int) -> dict:
    members, a = spectrum.mobius()
    keys = sets.to_tuples(members)
    iv = shapiq.InteractionValues(
        values=np.asarray(a), index="Moebius", min_order=0, max_order=spectrum.n, n_players=spectrum.n,
        interaction_lookup={k: i for i, k in enumerate(keys)}, estimated=False,
        baseline_value=float(dict(zip(keys, a)).get((), 0.0)),
    )
    out = shapiq.game_theory.moebius_converter.MoebiusConverter(iv)(index=index, order=order)
    return {tuple(k): float(out.values[i]) for k, i in out.interaction_lookup.items()}


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize(
    ("ours", "theirs", "order"),
    [("sii", "SII", 3), ("stii", "STII", 2), ("stii", "STII", 3), ("fsii", "FSII", 2), ("fbii", "FBII", 2), ("fbii", "FBII", 3)],
)
def test_indices_agree_with_shapiq(seed, ours, theirs, order):
    spectrum = sparse_spectrum(9, seed)
    table = spectrum.interactions(ours, order=order)
    mine = dict(zip(table["members"], table["value"]))
    reference = shapiq_values(spectrum, theirs, order)
    for key, value in reference.items():
        if key and len(key) <= order:
            assert mine.get(key, 0.0) == pytest.approx(value, abs=1e-8), (key, ours)


def test_shapley_agrees_with_shapiq():
    spectrum = sparse_spectrum(9, 3)
    table = spectrum.interactions("shapley")
    reference = shapiq_values(spectrum, "SV", 1)
    for (i,), value in ((k, v) for k, v in reference.items() if len(k) == 1):
        assert table.set_index(table["members"].map(lambda m: m[0]))["value"][i] == pytest.approx(value, abs=1e-8)
