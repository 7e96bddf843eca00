"""The data lens at n = 1,000 training examples end to end through the audit flow (issue 14): budget
auto, the batched trainer at the lens's preferred batch, seconds and peak memory per stage in the
outcome, and stored values that are the lens's own (recomputed outside the audit, and checked against
scikit-learn's fit of the same objective on a few masks)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from tests.flows.flow_models import WORDS
from tests.tolerances import assert_close

N_TRAIN = 1000
POSITIVE = {"good", "great", "loved", "not"}
STAGES = {"sample", "ablate", "fit", "search", "validate", "record"}


def training_set(path: Path) -> list[dict[str, str]]:
    """1,000 seeded sentences over the tiny model's vocabulary (each made unique by a trailing
    number the vocabulary lacks), labelled by whether they hold a positive word."""
    words = sorted(set(WORDS.split()))
    rng = np.random.default_rng(14)
    rows = []
    for i in range(N_TRAIN):
        chosen = list(rng.choice(words, size=int(rng.integers(3, 8))))
        rows.append({"text": " ".join(chosen) + f" {i}",
                     "label": "positive" if POSITIVE & set(chosen) else "negative"})
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return rows


def test_data_lens_at_a_thousand_examples_through_the_flow(flow_env, bert_v1, tmp_path):
    from flows.audit import audit
    from spex.ablation import AblationStore
    from spex.audit.spec import validate_spec
    from spex.lenses import data
    from spex.lenses.registrations.data import preferred_batch
    from spex.lenses.training_data import SklearnTrainer
    from spex.records.metadata import MetadataStore

    rows = training_set(tmp_path / "train.jsonl")
    spec = {
        "model": str(bert_v1), "lens": "data",
        "lens_options": {"train": str(tmp_path / "train.jsonl")},
        "subjects": [{"id": "target", "text": "the movie was not bad", "label": "positive"}],
        "budget": "auto", "alpha": 0.25,  # ⌈0.25 · n · log2 n⌉ = 2,492 masks: the suite's time, not a toy n
        "holdout": 64, "removal_r": 1, "ranking": {"top_k": 5},
    }
    audit_spec = validate_spec(spec)
    # the data lens's spec defaults: batches up to 1,024 masks, chunks that hold a whole batch
    assert audit_spec.batch.max_batch == 1024 and audit_spec.batch.chunk_size >= 1024
    db = f"sqlite:///{tmp_path / 'meta.db'}"
    result = audit(spec, db_url=db)

    outcome = result.subjects["target"]
    budget = math.ceil(0.25 * N_TRAIN * math.log2(N_TRAIN))
    assert outcome.n == N_TRAIN and outcome.budget == budget == audit_spec.budget_for(N_TRAIN)
    with MetadataStore(db) as store:
        record = store.get_audit(result.audit_id)
        (subject,) = record.subjects
        assert record.status == "succeeded" and subject.subject.lens == "data"
        assert subject.subject.n_features == N_TRAIN and subject.validation.n_heldout == 64
    assert outcome.heldout_r2 is not None and math.isfinite(outcome.heldout_r2)

    # every stage's seconds and peak memory are in the outcome (and in `spex audit --json`)
    stats = outcome.stats
    assert set(stats["seconds"]) == STAGES and all(s >= 0 for s in stats["seconds"].values())
    memory = stats["peak_rss_mib"]
    assert set(memory["stages"]) == STAGES and memory["mode"] in ("per-stage", "since-start")
    assert all(m > 50 for m in memory["stages"].values())  # a Python process with torch holds far more
    assert memory["max"] == max(memory["stages"].values())
    assert result.to_dict()["subjects"]["target"]["stats"]["peak_rss_mib"] == memory
    # each distinct mask computed once: the training design, the held-out masks, the removal test's few
    assert 0.9 * budget < stats["computed"] <= budget + 64 + 8

    # the stored values are the lens's: rebuilt outside the audit (same encoder, same training set),
    # its fingerprint is the audit's and it recomputes the stored values in another batch
    vf = data([r["text"] for r in rows], [r["label"] for r in rows], "the movie was not bad", "positive",
              encoder=str(bert_v1))
    assert vf.n_features == N_TRAIN and vf.preferred_batch == preferred_batch(N_TRAIN) == 64
    store = AblationStore(Path(flow_env["data"]) / "ablations")
    assert vf.fingerprint in store.fingerprints()
    masks, values = store.load(vf.fingerprint)
    assert len(masks) == stats["computed"]
    pick = np.random.default_rng(0).choice(len(masks), size=24, replace=False)
    assert_close(vf(masks[pick]), values[pick], dtype=np.float64)
    assert np.ptp(values) > 0  # retraining on different subsets moves the target's margin
    # and they are the retrained models' margins: scikit-learn's fit of the same objective agrees
    reference = data([r["text"] for r in rows], [r["label"] for r in rows], "the movie was not bad", "positive",
                     encoder=str(bert_v1), trainer=SklearnTrainer(l2=1.0, tol=1e-10))
    np.testing.assert_allclose(reference(masks[pick[:4]]), values[pick[:4]], atol=2e-3 * max(1.0, np.ptp(values)))
