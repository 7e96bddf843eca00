"""A value function's preferred batch (issue 14): the engine sends it batches of that size under its
``max_batch`` cap; without a preference it uses ``max_batch`` or the default of 64. The data lens
prefers batches whose (B, n) working tensors stay in cache, and its spec default lets it have them."""

from __future__ import annotations

import numpy as np
import pytest

from spex.ablation import AblationEngine, AblationStore
from spex.ablation.engine import DEFAULT_MAX_BATCH, batch_size
from spex.lenses.base import ValueFunction, fingerprint_of
from spex.lenses.registrations.data import MAX_BATCH, preferred_batch


class Recording(ValueFunction):
    """Sum of the kept features; records the size of every batch it is called with."""

    def __init__(self, n: int, preferred: int | None) -> None:
        self.n_features, self.feature_labels = n, [str(i) for i in range(n)]
        self.fingerprint = fingerprint_of(test="preferred-batch", n=n, preferred=preferred)
        if preferred is not None:
            self.preferred_batch = preferred
        self.sizes: list[int] = []

    def compute(self, masks: np.ndarray) -> np.ndarray:
        self.sizes.append(len(masks))
        return masks.sum(axis=1).astype(np.float64)


def masks(count: int, n: int = 24) -> np.ndarray:
    return np.random.default_rng(3).random((count, n)) < 0.5


@pytest.mark.parametrize(("preferred", "cap", "expected"), [
    (200, None, 200),                     # the lens's preference when the engine sets no cap
    (200, 50, 50),                        # the engine's max_batch caps it
    (200, 1024, 200),                     # a cap above the preference does not raise it
    (None, None, DEFAULT_MAX_BATCH),      # no preference, no cap: 64
    (None, 30, 30),                       # no preference: max_batch as before
])
def test_engine_batches_at_the_preferred_size(tmp_path, preferred, cap, expected):
    vf = Recording(24, preferred)
    x = masks(700)
    values = AblationEngine(AblationStore(tmp_path), max_batch=cap, progress=False).values(vf, x)
    np.testing.assert_array_equal(values, x.sum(axis=1))
    distinct = len(np.unique(x, axis=0))
    assert vf.sizes[:-1] == [expected] * (len(vf.sizes) - 1) and sum(vf.sizes) == distinct
    assert batch_size(vf, cap) == expected


@pytest.mark.parametrize("bad", [0, -3, True, 2.5, "256"])
def test_a_meaningless_preference_is_ignored(bad):
    vf = Recording(4, None)
    vf.preferred_batch = bad
    assert batch_size(vf, None) == DEFAULT_MAX_BATCH and batch_size(vf, 10) == 10


def test_data_lens_preference_follows_the_training_set_size():
    assert [preferred_batch(n) for n in (2, 100, 256, 257, 1000, 2000, 4096, 10**6)] == \
        [MAX_BATCH, 512, 256, 128, 64, 64, 64, 64]
    assert all(64 <= preferred_batch(n) <= MAX_BATCH for n in range(1, 5000, 37))
    sizes = [preferred_batch(n) for n in range(1, 5000, 37)]
    assert sizes == sorted(sizes, reverse=True)  # never larger for a larger training set


def test_data_lens_spec_defaults_let_it_batch():
    from spex.audit.spec import validate_spec

    base = {"model": "x", "lens": "data", "subjects": [{"id": "a", "text": "t", "label": "positive"}]}
    assert validate_spec(base).batch.max_batch == MAX_BATCH
    assert validate_spec(base).batch.chunk_size == MAX_BATCH  # a chunk holds a whole batch
    assert validate_spec({**base, "batch": {"max_batch": 2048}}).batch.chunk_size == 2048
    assert validate_spec({**base, "batch": {"max_batch": 2048, "chunk_size": 64}}).batch.chunk_size == 64
    features = {"model": "x", "lens": "features", "subjects": [{"id": "a", "prompt": "t"}]}
    assert (validate_spec(features).batch.max_batch, validate_spec(features).batch.chunk_size) == (64, 512)
