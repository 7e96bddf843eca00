"""Stage 0 as tasks: resolve the model, prepare a subject (:mod:`spex.audit.plan`).

Both are cached on the model's *cheap key* (:func:`spex.audit.runtime.cheap_model_key`), so a rerun
knows every subject's fingerprint, features and budget without loading the model.
"""

from __future__ import annotations

from prefect import task

from spex.audit import plan
from spex.audit.spec import AuditSpec
from tasks.caching import RETRIES, key_on


@task(name="resolve-model", cache_key_fn=key_on("model_key"), persist_result=True, **RETRIES)
def resolve_model(spec: AuditSpec, model_key: str) -> plan.ModelInfo:
    """:func:`spex.audit.plan.resolve_model`, cached on the model's cheap key."""
    return plan.resolve_model(spec, model_key)


@task(name="prepare-subject", cache_key_fn=key_on("model_key", "subject_digest", "lens_versions"),
      persist_result=True, **RETRIES)
def prepare_subject(spec: AuditSpec, subject_id: str, model_key: str, subject_digest: str,
                    lens_versions: str) -> plan.PreparedSubject:
    """:func:`spex.audit.plan.prepare_subject`; ``model_key`` and ``lens_versions`` are cache-key inputs
    only (the spec's budget, method and gates are not: they do not change a prepared subject)."""
    return plan.prepare_subject(spec, subject_id, subject_digest)
