"""The ablation engine in one process: dedupe, order, restart, batching, OOM back-off, failures."""

from __future__ import annotations

import numpy as np
import pytest
from ablation_vfs import CountingVF, reference, unique_masks

from spex.ablation import (
    AblationEngine,
    AblationStore,
    AblationStoreUnwritable,
    BoundValueFunction,
    measure_throughput,
)
from spex.ablation.store import CHUNK_SUFFIX
from spex.errors import SpexInputError
from spex.lenses.base import ValueFunction


def engine_at(root, **kw) -> AblationEngine:
    kw.setdefault("progress", False)
    return AblationEngine(AblationStore(root), **kw)


def test_values_in_request_order_with_duplicates_computed_once(tmp_path):
    masks = unique_masks(24, 200, seed=0)
    request = np.concatenate([masks, masks[::3], masks[:5]])
    np.random.default_rng(1).shuffle(request)
    vf = CountingVF(24)
    engine = engine_at(tmp_path, max_batch=16)
    got = engine.values(vf, request)
    np.testing.assert_array_equal(got, reference(request))
    assert vf.masks_computed == 200  # each distinct mask once
    computed = np.concatenate(vf.batches)
    assert len(np.unique(np.packbits(computed, axis=1), axis=0)) == 200
    s = engine.last
    assert (s.requested, s.unique, s.from_store, s.computed) == (len(request), 200, 0, 200)
    assert s.batches == vf.calls and max(len(b) for b in vf.batches) <= 16


def test_restart_recomputes_nothing(tmp_path):
    masks = unique_masks(30, 300, seed=2)
    first = CountingVF(30)
    expected = engine_at(tmp_path, chunk_size=50).values(first, masks)
    assert first.masks_computed == 300

    again = CountingVF(30)  # new function object, store and engine: a new process
    engine = engine_at(tmp_path)
    np.testing.assert_array_equal(engine.values(again, masks[::-1]), expected[::-1])
    assert again.calls == 0 and again.masks_computed == 0
    assert engine.last.from_store == 300 and engine.last.computed == 0

    more = np.concatenate([masks[:100], unique_masks(30, 400, seed=3)[300:]])  # 100 old, 100 new
    np.testing.assert_array_equal(engine.values(again, more), reference(more))
    assert again.masks_computed == 100


def test_fingerprint_separates_functions(tmp_path):
    masks = unique_masks(10, 20, seed=4)
    engine = engine_at(tmp_path)
    a, b = CountingVF(10, tag="a"), CountingVF(10, tag="b")
    engine.values(a, masks)
    engine.values(b, masks)
    assert a.masks_computed == b.masks_computed == 20


def test_batches_are_cost_sorted_and_under_the_token_budget(tmp_path):
    n = 40
    masks = unique_masks(n, 500, seed=5)
    vf = CountingVF(n)
    budget = 400.0
    engine = engine_at(tmp_path, token_budget=budget, max_batch=32)
    np.testing.assert_array_equal(engine.values(vf, masks), reference(masks))
    costs = [vf.cost(b) for b in vf.batches]
    assert all(c.max() * len(c) <= budget for c in costs)
    flat = np.concatenate(costs)
    assert np.all(np.diff(flat) <= 0)  # longest first, overall
    assert max(len(c) for c in costs) <= 32
    assert engine.last.padded_tokens >= engine.last.tokens == pytest.approx(flat.sum())
    assert 0 <= engine.last.padding_fraction < 0.2


@pytest.mark.parametrize("oom", ["memory", "torch", "runtime"])
def test_out_of_memory_halves_the_batch_and_completes(tmp_path, oom):
    masks = unique_masks(16, 300, seed=6)
    vf = CountingVF(16, oom_above=13, oom=oom, uniform_cost=True)
    engine = engine_at(tmp_path, max_batch=64)
    np.testing.assert_array_equal(engine.values(vf, masks), reference(masks))
    assert [size for size, _ in vf.attempts[:4]] == [64, 32, 16, 8]
    assert engine.last.oom_halvings == 3
    assert {len(b) for b in vf.batches} <= {8, 300 % 8}
    assert vf.masks_computed == 300
    assert engine.limits(vf)[1] == 7.0 * 8  # padded-token cap remembered
    # the working size is remembered: the next call does not run out of memory again
    more = unique_masks(16, 600, seed=6)[300:]
    np.testing.assert_array_equal(engine.values(vf, more), reference(more))
    assert engine.last.oom_halvings == 0 and engine.total.oom_halvings == 3


def test_out_of_memory_with_ragged_costs(tmp_path):
    """Memory is capped in padded tokens, so shorter masks may batch wider after an OOM; when the model
    is in fact bound by the mask count, each further OOM halves again. Every retry is half the failed
    batch, every value is right, and the number of OOMs stays logarithmic."""
    masks = unique_masks(16, 300, seed=6)
    vf = CountingVF(16, oom_above=13)
    engine = engine_at(tmp_path, max_batch=64)
    np.testing.assert_array_equal(engine.values(vf, masks), reference(masks))
    for (size, failed), (retry, _) in zip(vf.attempts, vf.attempts[1:]):
        if failed:
            assert retry == size // 2
    assert 3 <= engine.last.oom_halvings <= 8
    assert max(len(b) for b in vf.batches) <= 13 and vf.masks_computed == 300


def test_out_of_memory_on_one_mask_is_raised(tmp_path):
    vf = CountingVF(8, oom_above=0)
    with pytest.raises(MemoryError) as info:
        engine_at(tmp_path, max_batch=4).values(vf, unique_masks(8, 10, seed=7))
    assert any("single mask" in note for note in getattr(info.value, "__notes__", []))


def test_a_failure_keeps_what_was_computed(tmp_path):
    masks = unique_masks(20, 100, seed=8)
    vf = CountingVF(20, fail_on_call=4)
    with pytest.raises(ValueError, match="simulated model failure"):
        engine_at(tmp_path, max_batch=10, chunk_size=1000).values(vf, masks)
    assert AblationStore(tmp_path).count(vf.fingerprint) == 30  # three batches, flushed on the way out
    rerun = CountingVF(20)
    np.testing.assert_array_equal(engine_at(tmp_path).values(rerun, masks), reference(masks))
    assert rerun.masks_computed == 70


def test_non_finite_values_are_refused_and_not_stored(tmp_path):
    masks = unique_masks(20, 40, seed=9)
    vf = CountingVF(20, nan_on_call=2)
    with pytest.raises(SpexInputError, match="non-finite"):
        engine_at(tmp_path, max_batch=10).values(vf, masks)
    values, found = AblationStore(tmp_path).lookup(vf.fingerprint, masks)
    assert found.sum() == 10 and np.isfinite(values[found]).all()


def test_chunks_are_written_as_computation_goes(tmp_path):
    masks = unique_masks(12, 100, seed=10)
    vf = CountingVF(12)
    engine = engine_at(tmp_path, max_batch=10, chunk_size=20)
    engine.values(vf, masks)
    chunks = [p for p in AblationStore(tmp_path).path(vf.fingerprint).iterdir() if p.name.endswith(CHUNK_SUFFIX)]
    assert len(chunks) == engine.last.chunks_written == 5


def test_many_small_chunks_are_compacted(tmp_path):
    masks = unique_masks(12, 200, seed=11)
    vf = CountingVF(12)
    engine = engine_at(tmp_path, max_batch=5, chunk_size=5, compact_above=8)
    engine.values(vf, masks)
    store = AblationStore(tmp_path)
    assert store.stats(vf.fingerprint).chunks <= 8
    np.testing.assert_array_equal(store.lookup(vf.fingerprint, masks)[0], reference(masks))


def test_bind_gives_a_plain_callable_backed_by_the_store(tmp_path):
    masks = unique_masks(15, 64, seed=12)
    vf = CountingVF(15)
    f = engine_at(tmp_path).bind(vf)
    assert isinstance(f, BoundValueFunction) and isinstance(f, ValueFunction)
    assert (f.n_features, f.fingerprint, list(f.feature_labels)) == (15, vf.fingerprint, vf.feature_labels)
    assert f.describe() == vf.describe()
    assert f.oom == "memory"  # other attributes (e.g. a lens' target) are delegated
    np.testing.assert_array_equal(f(masks), reference(masks))
    np.testing.assert_array_equal(f(masks[0]), reference(masks[:1]))  # one mask as a 1-D row
    assert vf.masks_computed == 64
    g = engine_at(tmp_path).bind(f)  # binding a bound function does not stack engines
    g(masks)
    assert g.base is vf and vf.masks_computed == 64
    with pytest.raises(SpexInputError, match="width"):
        f(np.ones((2, 14), dtype=bool))


def test_plain_callable_without_fingerprint_is_deduplicated_not_stored(tmp_path):
    calls: list[int] = []

    def f(masks: np.ndarray) -> np.ndarray:
        calls.append(len(masks))
        return reference(masks)

    f.n_features = 10  # type: ignore[attr-defined]
    masks = unique_masks(10, 30, seed=13)
    engine = engine_at(tmp_path)
    got = engine.values(f, np.concatenate([masks, masks]))
    np.testing.assert_array_equal(got, reference(np.concatenate([masks, masks])))
    assert sum(calls) == 30
    assert not list(tmp_path.iterdir())


def test_empty_request(tmp_path):
    vf = CountingVF(5)
    assert engine_at(tmp_path).values(vf, np.zeros((0, 5), dtype=bool)).shape == (0,)
    assert vf.calls == 0


def test_unwritable_store_fails_before_any_model_call(tmp_path):
    (tmp_path / "file").write_text("in the way")
    vf = CountingVF(6)
    with pytest.raises(AblationStoreUnwritable):
        AblationEngine(AblationStore(tmp_path / "file" / "abl"), progress=False).values(vf, np.ones((3, 6), bool))
    assert vf.calls == 0


def test_torch_functions_run_in_inference_mode_unless_they_train(tmp_path):
    torch = pytest.importorskip("torch")

    class TorchVF(ValueFunction):
        def __init__(self, requires_grad: bool) -> None:
            self.n_features, self.feature_labels = 6, [str(i) for i in range(6)]
            self.fingerprint = f"torch-vf-{requires_grad}"
            self.requires_grad = requires_grad
            self.modes: list[bool] = []

        def compute(self, masks: np.ndarray) -> np.ndarray:
            self.modes.append(torch.is_inference_mode_enabled())
            return torch.as_tensor(masks, dtype=torch.float64).sum(dim=1).numpy()

    engine = engine_at(tmp_path)
    masks = unique_masks(6, 20, seed=14)
    for trains in (False, True):
        vf = TorchVF(trains)
        np.testing.assert_array_equal(engine.values(vf, masks), masks.sum(1).astype(float))
        assert vf.modes and all(m is (not trains) for m in vf.modes)


def test_progress_is_quiet_when_not_a_terminal(tmp_path, capsys):
    vf = CountingVF(10)
    AblationEngine(AblationStore(tmp_path), progress=True).values(vf, unique_masks(10, 50, seed=15))
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == ""


def test_measure_throughput(tmp_path):
    vf = CountingVF(20)
    results = measure_throughput(vf, batch_sizes=(1, 4), batches=2)
    assert [r.batch_size for r in results] == [1, 4]
    assert all(r.masks_per_s > 0 and r.tokens_per_s > r.masks_per_s for r in results)
    oom = measure_throughput(CountingVF(20, oom_above=2), batch_sizes=(1, 4, 8))
    assert [r.masks_per_s > 0 for r in oom] == [True, False]


def test_bad_engine_options_are_refused(tmp_path):
    with pytest.raises(SpexInputError, match="max_batch"):
        AblationEngine(AblationStore(tmp_path), max_batch=0)
    with pytest.raises(SpexInputError, match="token_budget"):
        AblationEngine(AblationStore(tmp_path), token_budget=-1)
