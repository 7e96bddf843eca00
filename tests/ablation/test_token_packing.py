"""Packing by tokens for long rows (issue 15): a value function that names ``batch_tokens`` gets batches
filled up to that many padded tokens (longest first), a spec's own token budget wins over it, and a
bad ``batch_tokens`` is ignored rather than fatal."""

from __future__ import annotations

import numpy as np
import pytest
from ablation_vfs import CountingVF, reference, unique_masks

from spex.ablation import AblationEngine, AblationStore
from spex.ablation.engine import lens_token_budget


class LongRows(CountingVF):
    """A value function whose rows cost 40-80 "tokens" and that asks for ``batch_tokens`` per call."""

    def __init__(self, n: int, batch_tokens: object) -> None:
        super().__init__(n, tag=f"long-{batch_tokens}")
        self.batch_tokens = batch_tokens

    def cost(self, masks: np.ndarray) -> np.ndarray:
        return 40.0 + masks.sum(axis=1)


def engine(tmp_path, **kw) -> AblationEngine:
    return AblationEngine(AblationStore(tmp_path), progress=False, **kw)


def test_rows_are_packed_up_to_the_value_functions_batch_tokens(tmp_path):
    n = 40
    masks = unique_masks(n, 300, seed=3)
    vf = LongRows(n, batch_tokens=600)
    e = engine(tmp_path, max_batch=64)
    assert e.limits(vf) == (64, 600.0)
    np.testing.assert_array_equal(e.values(vf, masks), reference(masks))
    sizes = [len(b) for b in vf.batches]
    padded = [vf.cost(b).max() * len(b) for b in vf.batches]
    assert all(p <= 600 for p in padded)  # never over the budget
    assert all(p + vf.cost(b).max() > 600 for p, b in zip(padded[:-1], vf.batches[:-1]))  # filled: one more would not fit
    assert max(sizes) < 64 and sum(sizes) == 300
    flat = np.concatenate([vf.cost(b) for b in vf.batches])
    assert np.all(np.diff(flat) <= 0)  # longest first: little padding
    assert e.last.padding_fraction < 0.1


def test_the_engines_own_token_budget_wins(tmp_path):
    vf = LongRows(40, batch_tokens=600)
    e = engine(tmp_path, token_budget=200.0, max_batch=64)
    e.values(vf, unique_masks(40, 50, seed=4))
    assert e.limits(vf) == (64, 200.0)
    assert all(vf.cost(b).max() * len(b) <= 200 for b in vf.batches)


@pytest.mark.parametrize("bad", [0, -5, float("nan"), "lots", None])
def test_a_bad_or_missing_batch_tokens_is_ignored(tmp_path, bad):
    vf = LongRows(12, batch_tokens=bad)
    assert lens_token_budget(vf) is None
    e = engine(tmp_path, max_batch=16)
    np.testing.assert_array_equal(e.values(vf, unique_masks(12, 40, seed=5)), reference(unique_masks(12, 40, seed=5)))
    assert max(len(b) for b in vf.batches) == 16
