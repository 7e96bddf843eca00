"""The audit spec: one YAML file that says what to audit, how, and what must hold for a release.

    model: models:/sentiment@champion        # or {uri: ..., device: cpu, dtype: float32}
    lens: features                           # features | heads | data | context (spex.lenses.registry)
    lens_options: {unit: word, max_new_tokens: 16}
    subjects:                                # inline, or {file: prompts.jsonl}
      - {id: hotel, prompt: "The room was small but the staff were kind."}
    method: proxyspex                        # proxyspex | spex | linear | faith_banzhaf
    budget: auto                             # masks per subject: a number, or auto = alpha * n * log2(n)
    alpha: 4
    seed: 0
    holdout: 200                             # held-out masks for faithfulness (real model calls)
    ranking: {index: fbii, order: 2, top_k: 10}
    gates: {faithfulness_min: 0.7, top_k_jaccard_min: 0.5, max_rank_shift: 5, forbidden: [[he, nurse]]}
    baseline: models:/sentiment/3
    privacy: {redact_text: false}            # true: no prompt text in MLflow, the metadata DB or reports

One module per job: :mod:`~spex.audit.spec.schema` (the models, a discriminated union on ``lens``),
:mod:`~spex.audit.spec.errors` (one-line errors), :mod:`~spex.audit.spec.loading` (YAML, JSONL subjects,
:func:`load_spec` for a file, :func:`validate_spec` for a mapping), :mod:`~spex.audit.spec.privacy`
(``redact_text``) and :mod:`~spex.audit.spec.subjects` (a subject's digest, value function and view,
so a notebook can run an audit's subject without Prefect). The lens-specific models come from the
lens registrations (:mod:`spex.lenses.registry`).

Imports pydantic, the engine and PyYAML only; torch is imported when a value function is built.
"""

from __future__ import annotations

from spex.audit.spec.errors import SpecError
from spex.audit.spec.loading import load_spec, validate_spec
from spex.audit.spec.privacy import REDACTED, redact_spec, redact_subject_info
from spex.audit.spec.schema import (
    AUDIT_SPEC,
    SPEC_TYPES,
    AuditSpec,
    BatchSpec,
    Gates,
    ModelSpec,
    PrivacySpec,
    RankingSpec,
    check_remote_code,
)
from spex.audit.spec.subjects import (
    build_value_function,
    load_training_set,
    offline_feature_count,
    subject_digest,
    subject_payload,
    subject_view,
)
from spex.lenses.registrations.context import ContextOptions, ContextSubject
from spex.lenses.registrations.data import DataOptions, DataSubject, TrainExample
from spex.lenses.registrations.features import FeaturesOptions, FeaturesSubject
from spex.lenses.registrations.heads import HeadsOptions, HeadsSubject
from spex.lenses.spec_files import read_jsonl

__all__ = [
    "AUDIT_SPEC",
    "REDACTED",
    "SPEC_TYPES",
    "AuditSpec",
    "BatchSpec",
    "ContextOptions",
    "ContextSubject",
    "DataOptions",
    "DataSubject",
    "FeaturesOptions",
    "FeaturesSubject",
    "Gates",
    "HeadsOptions",
    "HeadsSubject",
    "ModelSpec",
    "PrivacySpec",
    "RankingSpec",
    "SpecError",
    "TrainExample",
    "build_value_function",
    "check_remote_code",
    "load_spec",
    "load_training_set",
    "offline_feature_count",
    "read_jsonl",
    "redact_spec",
    "redact_subject_info",
    "subject_digest",
    "subject_payload",
    "subject_view",
    "validate_spec",
]
