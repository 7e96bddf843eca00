"""The ablation store on its own: round trips, restarts, conflicts, damage, compaction, export, 1M load."""

from __future__ import annotations

import shutil
import time
import warnings

import numpy as np
import pytest
from ablation_vfs import reference, unique_masks

from spex.ablation import (
    AblationStore,
    AblationStoreError,
    AblationStoreUnwritable,
    read_parquet,
)
from spex.ablation.store import CHUNK_SUFFIX, TMP_PREFIX
from spex.errors import SpexInputError

FP = "fp-test"


def chunk_files(store: AblationStore, fp: str = FP) -> list[str]:
    return sorted(p.name for p in store.path(fp).iterdir() if p.name.endswith(CHUNK_SUFFIX))


def test_round_trip_and_restart(tmp_path):
    masks = unique_masks(37, 500, seed=1)
    values = reference(masks)
    store = AblationStore(tmp_path)
    store.register(FP, 37, [f"w{i}" for i in range(37)], {"lens": "test"})
    assert store.append(FP, masks[:300], values[:300]) == 300
    assert store.append(FP, masks[200:], values[200:]) == 200  # overlap is skipped, not rewritten
    assert len(chunk_files(store)) == 2

    reopened = AblationStore(tmp_path)  # a new process would see exactly this
    got, found = reopened.lookup(FP, masks[::-1])
    assert found.all()
    np.testing.assert_array_equal(got, values[::-1])
    assert reopened.count(FP) == 500
    loaded_masks, loaded_values = reopened.load(FP)
    assert loaded_masks.dtype == bool and loaded_masks.shape == (500, 37)
    np.testing.assert_array_equal(loaded_values, reference(loaded_masks))
    assert reopened.meta(FP)["feature_labels"][3] == "w3"
    assert reopened.fingerprints() == [FP]
    assert reopened.stats(FP).conflicts == 0
    assert reopened.size_bytes(FP) > 500 * (5 + 8)


def test_lookup_reports_missing_and_sees_other_writers(tmp_path):
    masks = unique_masks(12, 64, seed=2)
    reader, writer = AblationStore(tmp_path), AblationStore(tmp_path)
    writer.append(FP, masks[:10], reference(masks[:10]))
    values, found = reader.lookup(FP, masks)
    assert found[:10].all() and not found[10:].any() and np.isnan(values[10:]).all()
    writer.append(FP, masks[10:20], reference(masks[10:20]))  # appears in the reader on its next lookup
    values, found = reader.lookup(FP, masks)
    assert found[:20].all() and not found[20:].any()
    np.testing.assert_array_equal(values[:20], reference(masks[:20]))


def test_unknown_fingerprint_is_empty(tmp_path):
    store = AblationStore(tmp_path)
    values, found = store.lookup("nothing-here", np.ones((3, 5), dtype=bool))
    assert not found.any() and np.isnan(values).all()
    assert store.count("nothing-here") == 0


def test_duplicates_within_append_and_conflicts_keep_first(tmp_path):
    masks = unique_masks(10, 8, seed=3)
    store = AblationStore(tmp_path)
    dup = np.concatenate([masks, masks[:2]])
    assert store.append(FP, dup, np.arange(10.0)) == 8  # duplicates within one append: first kept
    assert store.stats(FP).conflicts == 2  # rows 8, 9 disagreed with rows 0, 1
    np.testing.assert_array_equal(store.lookup(FP, masks[:2])[0], [0.0, 1.0])
    # another writer disagreeing later: the stored (first) value wins, the disagreement is counted
    other = AblationStore(tmp_path)
    assert other.append(FP, masks[:1], [0.0]) == 0  # agrees: nothing new, no conflict
    assert other.stats(FP).conflicts == 0
    assert other.append(FP, masks[:1], [5.0]) == 0  # disagrees: stored value kept, conflict counted
    assert other.stats(FP).conflicts == 1
    fresh = AblationStore(tmp_path)
    assert fresh.stats(FP).conflicts == 0 and fresh.count(FP) == 8  # nothing conflicting was written
    np.testing.assert_array_equal(fresh.lookup(FP, masks)[0], np.arange(8.0))


def test_conflict_between_chunks_keeps_first_written(tmp_path):
    masks = unique_masks(10, 4, seed=4)
    AblationStore(tmp_path / "a").append(FP, masks, np.array([1.0, 2.0, 3.0, 4.0]))
    time.sleep(0.001)
    # a store filled elsewhere (another machine), then copied in, e.g. by rsync: it disagrees on one mask
    other = AblationStore(tmp_path / "b")
    other.append(FP, masks[:2], np.array([9.0, 2.0]))
    for name in chunk_files(other):
        shutil.copy(other.path(FP) / name, AblationStore(tmp_path / "a").path(FP) / name)
    tmp_path = tmp_path / "a"
    fresh = AblationStore(tmp_path)
    np.testing.assert_array_equal(fresh.lookup(FP, masks)[0], [1.0, 2.0, 3.0, 4.0])
    assert fresh.stats(FP).conflicts == 1 and fresh.stats(FP).max_conflict == 8.0
    assert fresh.compact(FP) == 2  # compaction keeps the first value too
    again = AblationStore(tmp_path)
    np.testing.assert_array_equal(again.lookup(FP, masks)[0], [1.0, 2.0, 3.0, 4.0])
    assert len(chunk_files(again)) == 1


def test_content_hash_ignores_chunking_and_compaction(tmp_path):
    masks = unique_masks(20, 300, seed=5)
    values = reference(masks)
    one, many = AblationStore(tmp_path / "a"), AblationStore(tmp_path / "b")
    one.append(FP, masks, values)
    for part in np.array_split(np.arange(300)[::-1], 7):
        many.append(FP, masks[part], values[part])
    assert len(chunk_files(many)) == 7
    assert one.content_hash(FP) == many.content_hash(FP)
    assert many.compact(FP) == 7
    assert len(chunk_files(many)) == 1
    assert AblationStore(tmp_path / "b").content_hash(FP) == one.content_hash(FP)
    one.append(FP, unique_masks(20, 301, seed=6)[-1:], [0.5])
    assert one.content_hash(FP) != many.content_hash(FP)


def test_temp_files_and_damaged_chunks_are_ignored(tmp_path):
    masks = unique_masks(16, 40, seed=7)
    store = AblationStore(tmp_path)
    store.append(FP, masks[:20], reference(masks[:20]))
    directory = store.path(FP)
    good = chunk_files(store)[0]
    data = (directory / good).read_bytes()
    # what a writer killed mid-write leaves: a partial temp file (never a partial .chunk)
    (directory / f"{TMP_PREFIX}dead-writer-{good}.part").write_bytes(data[: len(data) // 2])
    # what a disk fault or a half copy could leave: a truncated and a bit-flipped chunk
    (directory / f"99999999999999999998-1-trunc{CHUNK_SUFFIX}").write_bytes(data[:-7])
    flipped = bytearray(data)
    flipped[40] ^= 0xFF
    (directory / f"99999999999999999999-1-flip{CHUNK_SUFFIX}").write_bytes(bytes(flipped))
    fresh = AblationStore(tmp_path)
    with pytest.warns(RuntimeWarning, match="damaged chunk"):
        values, found = fresh.lookup(FP, masks)
    assert found[:20].all() and not found[20:].any()
    np.testing.assert_array_equal(values[:20], reference(masks[:20]))
    assert len(fresh.stats(FP).corrupt_chunks) == 2
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # damaged chunks are reported once, not on every lookup
        fresh.lookup(FP, masks)
    fresh.append(FP, masks[20:], reference(masks[20:]))
    with pytest.warns(RuntimeWarning, match="damaged chunk"):
        assert AblationStore(tmp_path).count(FP) == 40


def test_width_mismatch_is_refused(tmp_path):
    store = AblationStore(tmp_path)
    store.register(FP, 10)
    with pytest.raises(AblationStoreError, match="n_features=10"):
        store.register(FP, 11)
    with pytest.raises(SpexInputError, match="width 11"):
        store.append(FP, np.ones((2, 11), dtype=bool), [1.0, 2.0])
    with pytest.raises(SpexInputError, match="non-finite"):
        store.append(FP, np.ones((1, 10), dtype=bool), [np.nan])


def test_unsafe_fingerprint_gets_a_safe_directory(tmp_path):
    store = AblationStore(tmp_path)
    fp = "../../etc/passwd model=gpt2 revision=main"
    store.append(fp, np.eye(4, dtype=bool), [1.0, 2.0, 3.0, 4.0])
    assert store.path(fp).parent == tmp_path
    assert store.fingerprints() == [fp]
    assert AblationStore(tmp_path).count(fp) == 4


def test_root_under_a_file_is_a_clear_error(tmp_path):
    (tmp_path / "file").write_text("not a directory")
    with pytest.raises(AblationStoreUnwritable, match="not a directory.*SPEX_DATA_DIR"):
        AblationStore(tmp_path / "file" / "ablations").register(FP, 4)


def test_export_parquet_round_trip(tmp_path):
    masks = unique_masks(13, 50, seed=8)
    store = AblationStore(tmp_path / "store")
    store.register(FP, 13, [f"tok{i}" for i in range(13)])
    store.append(FP, masks, reference(masks))
    path = store.export_parquet(FP, tmp_path / "out" / "ablations.parquet")
    back, values, meta = read_parquet(path)
    np.testing.assert_array_equal(values, reference(back))
    assert meta["spex.fingerprint"] == FP and meta["spex.content_hash"] == store.content_hash(FP)
    import pyarrow.parquet as pq

    table = pq.read_table(path)
    assert table.num_rows == 50 and "x12" in table.column_names
    np.testing.assert_array_equal(table.column("x3").to_numpy(), back[:, 3])
    assert not [p for p in (tmp_path / "out").iterdir() if p.name.startswith(TMP_PREFIX)]


def test_one_million_masks_load(tmp_path):
    n, count = 96, 1_000_000
    masks = unique_masks(n, count, seed=9)
    values = reference(masks)
    store = AblationStore(tmp_path)
    for part in np.array_split(np.arange(count), 100):
        store.append(FP, masks[part], values[part])
    del store
    t0 = time.perf_counter()
    fresh = AblationStore(tmp_path)
    assert fresh.count(FP) == count
    load_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    got, found = fresh.lookup(FP, masks)
    lookup_s = time.perf_counter() - t0
    assert found.all()
    np.testing.assert_array_equal(got, values)
    print(f"\n1M masks (n={n}, 100 chunks, {fresh.size_bytes(FP) / 1e6:.0f} MB): "
          f"load {load_s:.2f}s, lookup of all 1M {lookup_s:.2f}s")
