"""A realistic audit, recorded through the store API exactly as the pipeline does it.

Shared by the repository tests and the concurrent-writer processes (``store_writer.py``), so both
exercise the same calls. The interaction tables come from spex's own ``Spectrum.interactions``.
"""

from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd

from spex.engine.spectrum import Spectrum
from spex.records.metadata import Gate, MetadataStore, ModelRef

LABELS = ("the", "movie", "was", "not", "good", "at", "all")


def subject_digest(name: str) -> str:
    return hashlib.sha256(name.encode()).hexdigest()


def interaction_table(seed: int, *, index: str = "fbii", labels=LABELS) -> pd.DataFrame:
    """A real ranked table from a small random spectrum."""
    rng = np.random.default_rng(seed)
    n = len(labels)
    mapping = {(): 0.3, (3, 4): -1.5 - rng.random(), (4,): 1.0 + rng.random(), (0, 1, 2): 0.2 * rng.random() + 0.01}
    mapping[(int(rng.integers(0, 3)), 5)] = 0.5
    order = None if index == "shapley" else 3
    return Spectrum.from_dict(n, mapping).interactions(index=index, order=order, labels=list(labels))


def record_audit(
    store: MetadataStore,
    audit_id: str,
    *,
    model: ModelRef,
    subjects: tuple[str, ...] = ("s0", "s1"),
    seed: int = 0,
    indices: tuple[str, ...] = ("fbii",),
    finish: bool = True,
) -> dict[str, int]:
    """Record one whole audit; returns {subject key: subject id}."""
    store.start_audit(
        model,
        {"method": "proxyspex", "budget": {"alpha": 4}, "lens": "features", "seed": seed},
        audit_id=audit_id,
        seeds={"masks": seed, "holdout": seed + 1},
    )
    ids = {}
    rng = np.random.default_rng(seed)
    for key in subjects:
        sid = store.record_subject(
            audit_id,
            lens="features",
            content_digest=subject_digest(key),
            key=key,
            labels=LABELS,
            description=" ".join(LABELS),
            mlflow_run_id=f"run-{audit_id}-{key}",
        )
        ids[key] = sid
        store.record_ablation_set(
            audit_id, sid, fingerprint="fp-" + subject_digest(key)[:20], n_features=len(LABELS), count=64,
            location=f"/data/ablation/{key}", size_bytes=4096, sha256="ab" * 32, mlflow_dataset_digest="d" * 32,
        )
        store.record_ablation_set(
            audit_id, sid, fingerprint="fp-" + subject_digest(key)[:20], n_features=len(LABELS), count=100, role="holdout",
        )
        store.record_proxy(
            audit_id, sid, hyperparameters={"max_depth": 3, "n_estimators": 500, "learning_rate": 0.1},
            cv_r2=0.9 + 0.01 * rng.random(), mlflow_model_uri=f"models:/m-{audit_id}-{key}",
        )
        for index in indices:
            store.record_interactions(audit_id, sid, interaction_table(seed + len(key), index=index))
        store.record_validation(
            audit_id, sid, heldout_r2=0.8 + 0.1 * rng.random(), n_heldout=100,
            removal=[{"k": 1, "predicted": -0.5, "measured": -0.45}], metrics={"faithfulness_mse": 0.01},
        )
        store.record_subject_metrics(audit_id, sid, {"calls": 164, "seconds": {"ablate": 1.5, "fit": 0.3}})
    store.record_gates(audit_id, [Gate("min_heldout_r2", 0.5, 0.8, True), Gate("top5_overlap", 0.4, 0.6, True)])
    if finish:
        store.finish_audit(audit_id)
    return ids
