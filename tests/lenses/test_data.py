"""Data lens: the batched trainer solves the same problem as scikit-learn, a value does not depend on
its batch, and on a toy set with a real encoder (MiniLM) the planted mislabelled example and the
planted duplicate pair come out exactly where they should (exact, by enumerating every subset)."""

from __future__ import annotations

import numpy as np
import pytest

from spex.errors import SpexInputError
from spex.lenses import data
from spex.lenses.training_data import LogisticTrainer, SklearnTrainer
from spex.models.scoring import embed
from tests.tolerances import assert_close


def blob_encoder(n_classes: int, dim: int = 24, seed: int = 0):
    """Texts 'c<k> <i>' -> a point of the k-th Gaussian blob (deterministic per text)."""
    centres = np.random.default_rng(seed).normal(size=(n_classes, dim))

    def encode(texts):
        out = []
        for t in texts:
            k, i = t.split()
            rng = np.random.default_rng([seed, int(k[1:]), int(i)])
            out.append(centres[int(k[1:])] * 0.6 + rng.normal(size=dim))
        return np.array(out)

    return encode


def blob_problem(n_classes: int, per_class: int = 10):
    texts = [f"c{k} {i}" for k in range(n_classes) for i in range(per_class)]
    labels = [f"class{k}" for k in range(n_classes) for _ in range(per_class)]
    return texts, labels, f"c0 {per_class + 5}", "class0"


@pytest.mark.parametrize("n_classes", [2, 3])
def test_batched_trainer_matches_sklearn(n_classes):
    texts, labels, target, target_label = blob_problem(n_classes)
    enc = blob_encoder(n_classes)
    fast = data(texts, labels, target, target_label, encoder=enc, trainer=LogisticTrainer(l2=1.0, steps=60))
    slow = data(texts, labels, target, target_label, encoder=enc, trainer=SklearnTrainer(l2=1.0, tol=1e-10))
    masks = np.random.default_rng(0).random((25, fast.n_features)) < 0.6
    masks[0] = True
    reference = slow(masks)
    np.testing.assert_allclose(fast(masks), reference, atol=2e-3 * max(1.0, np.ptp(reference)))
    assert np.ptp(reference) > 0.1
    assert fast.fingerprint != slow.fingerprint


def test_value_does_not_depend_on_the_batch():
    texts, labels, target, target_label = blob_problem(2)
    vf = data(texts, labels, target, target_label, encoder=blob_encoder(2))
    masks = np.random.default_rng(1).random((64, vf.n_features)) < 0.5
    masks[3] = False  # the empty training set: W = 0, margin 0
    batch = vf(masks)
    single = np.array([vf(m[None])[0] for m in masks])
    assert_close(batch, single, dtype=np.float64)  # the trainer computes in float64
    assert batch[3] == 0.0


def test_groups_expand_to_examples():
    texts, labels, target, target_label = blob_problem(2, per_class=6)
    groups = [i // 3 for i in range(len(texts))]  # four groups of three
    enc = blob_encoder(2)
    grouped = data(texts, labels, target, target_label, encoder=enc, groups=groups)
    plain = data(texts, labels, target, target_label, encoder=enc)
    assert grouped.n_features == 4 and grouped.feature_labels == ["0", "1", "2", "3"]
    masks = np.random.default_rng(2).random((10, 4)) < 0.5
    assert_close(grouped(masks), plain(np.repeat(masks, 3, axis=1)), dtype=np.float64)
    assert grouped.fingerprint != plain.fingerprint


TOY_TEXTS = [
    "The pasta was delicious.", "I loved the friendly staff.", "A wonderful evening.", "Fresh and tasty dishes.",
    "Best pizza in town.", "The soup was cold and bland.", "Rude waiters and a dirty table.", "The steak was burnt.",
    "Terrible service, never again.", "The fries were soggy.",
]
TOY_LABELS = ["pos"] * 5 + ["neg"] * 5


def exact_banzhaf(vf):
    """Exact Banzhaf values and pairwise interactions by enumerating all 2^n subsets."""
    n = vf.n_features
    masks = ((np.arange(2**n)[:, None] >> np.arange(n)) & 1).astype(bool)
    values = vf(masks)
    signs = 2.0 * masks - 1.0
    first = 2 * signs.T @ values / len(values)            # E[f | i kept] - E[f | i removed]
    pairs = 4 * np.einsum("b,bi,bj->ij", values, signs, signs) / len(values)
    np.fill_diagonal(pairs, 0.0)
    return first, pairs


@pytest.fixture(scope="module")
def minilm():
    from spex.models import load

    return load("builtin:minilm-l6", device="cpu")


def test_planted_mislabelled_example_is_the_most_harmful(minilm):
    texts = TOY_TEXTS + ["The tiramisu was heavenly.", "The tiramisu was really delicious!"]
    labels = TOY_LABELS + ["pos", "neg"]  # the last one is a mislabelled near-copy of the target
    vf = data(texts, labels, "The tiramisu was really delicious.", "pos", encoder=minilm)
    first, _ = exact_banzhaf(vf)
    assert int(np.argmin(first)) == len(texts) - 1
    assert first[-1] < 0 and first[-1] < 2 * np.sort(first)[1]  # by far, not by noise
    assert first[-2] > 0  # a correctly labelled near neighbour helps


def test_planted_duplicates_are_substitutes(minilm):
    texts = TOY_TEXTS + ["The tiramisu was heavenly.", "The tiramisu was heavenly.", "The tiramisu was dry and stale."]
    labels = TOY_LABELS + ["pos", "pos", "neg"]
    vf = data(texts, labels, "The tiramisu was heavenly, truly.", "pos", encoder=minilm)
    first, pairs = exact_banzhaf(vf)
    dup = (10, 11)
    assert set(np.argsort(first)[-2:]) == set(dup) and first[10] == pytest.approx(first[11])
    i, j = np.unravel_index(np.argmin(pairs), pairs.shape)
    assert {int(i), int(j)} == set(dup)  # the most negative interaction: either copy does the job
    assert pairs[dup] < 0 and pairs[dup] < 2 * np.sort(pairs[np.triu_indices(len(texts), 1)])[1]


def test_encoders_and_errors(bert, minilm):
    texts, labels = TOY_TEXTS, TOY_LABELS
    vf = data(texts, labels, "Nice food.", "pos", encoder=bert)  # a classifier's body embeds too
    assert vf.n_features == 10 and np.isfinite(vf.full_value)
    assert vf.fingerprint != data(texts, labels, "Nice food.", "pos", encoder=minilm).fingerprint
    emb = embed(minilm, ["Nice food.", "Nice food.", "Bad food."])
    assert emb.shape == (3, 384) and not np.allclose(emb[0], emb[2])
    assert_close(emb[0], emb[1])  # the same text, embedded in float32
    with pytest.raises(SpexInputError, match="equal length"):
        data(texts, labels[:-1], "x", "pos", encoder=minilm)
    with pytest.raises(SpexInputError, match="not among classes"):
        data(texts, labels, "x", "neutral", encoder=minilm, classes=["neg", "pos"])
    with pytest.raises(SpexInputError, match="groups"):
        data(texts, labels, "x", "pos", encoder=minilm, groups=[0, 1])
    with pytest.raises(SpexInputError, match="l2"):
        LogisticTrainer(l2=0)
    d = vf.describe()
    assert d["lens"] == "data" and d["trainer"] == "logistic" and d["target_label"] == "pos"
