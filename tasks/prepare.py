"""Stage 0: resolve the model and prepare each subject (its value function's identity and shape).

Both are cached on the *cheap model key* (:func:`tasks.runtime.cheap_model_key`), so a rerun of an
audit knows every subject's fingerprint, features and budget without loading the model.
"""

from __future__ import annotations

import re
from typing import Any

from prefect import task

from tasks import runtime
from tasks.caching import RETRIES, key_on


def model_name(uri: str, source: dict[str, Any]) -> str:
    """A short, stable name for the audited model (the MLflow experiment and DB model name):
    the registry name for registry models, the builtin's name, the folder or file name otherwise."""
    if source.get("name"):
        return str(source["name"])
    if uri.startswith("builtin:"):
        return uri[len("builtin:"):].split("?")[0]
    if uri.startswith("runs:/"):
        return "run-" + uri[len("runs:/"):].split("/")[0][:12]
    name = re.split(r"[\\/]", uri.rstrip("/\\"))[-1] or uri
    return re.sub(r"\.gguf$", "", name, flags=re.I) or "model"


@task(name="resolve-model", cache_key_fn=key_on("model_key"), persist_result=True, **RETRIES)
def resolve_model(spec: dict[str, Any], model_key: str) -> dict[str, Any]:
    """Load the model once and describe it: name, revision (its content identity), registry version."""
    audit_spec = runtime.spec_from(spec)
    loaded = runtime.loaded_model(audit_spec.model)
    source = dict(loaded.source or {})
    registry_version = str(source["version"]) if source.get("version") and source.get("name") else None
    return {
        "uri": audit_spec.model.uri,
        "name": model_name(audit_spec.model.uri, source),
        "revision": loaded.identity,
        "registry_name": source.get("name") if registry_version else None,
        "registry_version": registry_version,
        "kind": loaded.kind,
        "describe": loaded.describe(),
        "key": model_key,
    }


@task(name="prepare-subject", cache_key_fn=key_on("model_key", "subject_digest", "lens_versions"),
      persist_result=True, **RETRIES)
def prepare_subject(spec: dict[str, Any], subject_id: str, model_key: str, subject_digest: str,
                    lens_versions: str) -> dict[str, Any]:
    """Build the subject's value function and return what later stages need (not the function):
    fingerprint, n, labels, the view the report draws. Nothing here depends on the spec's budget,
    method or gates (they are not in the cache key)."""
    from spex.audit.spec import subject_view

    audit_spec = runtime.spec_from(spec)
    vf = runtime.value_function(audit_spec, subject_id)
    n = int(vf.n_features)
    describe = vf.describe() if hasattr(vf, "describe") else {}
    subject = runtime.subject_of(audit_spec, subject_id)
    info = {
        "id": subject_id,
        "digest": subject_digest,
        "fingerprint": vf.fingerprint,
        "n": n,
        "labels": [str(x) for x in vf.feature_labels],
        "full_value": float(describe.get("full_value", float("nan"))),
        "target": describe.get("target"),
        "view": subject_view(audit_spec, subject, vf),
        "describe": {k: v for k, v in describe.items() if k not in ("prompt",)},
    }
    if audit_spec.redact:  # privacy.redact_text: nothing downstream (records, report, cache) sees the text
        from spex.audit.spec import redact_subject_info

        info = redact_subject_info(info)
    return info


def lens_versions() -> str:
    """Versions of the lens code: a lens bumps its ``LENS_VERSION`` when a mask's value changes."""
    import importlib

    import spex

    versions = [f"spex={spex.__version__}"]
    for lens in ("features", "heads", "data"):
        versions.append(f"{lens}={importlib.import_module(f'spex.lenses.{lens}').LENS_VERSION}")
    return ";".join(versions)
