"""Stage 0: resolve the model and prepare each subject (its value function's identity and shape).

Both are cacheable on the *cheap model key* (:func:`spex.audit.runtime.cheap_model_key`) and, for a
subject, the lens code's versions (:func:`spex.lenses.registry.lens_versions`), so a rerun of an audit
knows every subject's fingerprint, features and budget without loading the model. Nothing
here depends on the spec's budget, method or gates: :func:`plan_subject` adds the budget afterwards.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from typing import Any

from spex.audit import runtime
from spex.audit.spec import AuditSpec
from spex.engine.exact import EXACT_MAX_N


@dataclass(frozen=True)
class ModelInfo:
    """The audited model: ``name`` (the MLflow experiment and DB model name), ``revision`` (its content
    identity), the registry name and version when it is a registry model, and its cheap ``key``."""

    uri: str
    name: str
    revision: str
    registry_name: str | None
    registry_version: str | None
    kind: str
    describe: dict[str, Any]
    key: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def ref(self) -> Any:
        """The metadata store's reference to this model."""
        from spex.records.metadata import ModelRef

        return ModelRef(self.name, self.revision, source_uri=self.uri, registry_version=self.registry_version)

    @property
    def in_registry(self) -> bool:
        return bool(self.registry_name and self.registry_version)


@dataclass(frozen=True)
class PreparedSubject:
    """A subject as its value function sees it — what later stages need, not the function itself."""

    id: str
    digest: str
    fingerprint: str
    n: int
    labels: list[str]
    full_value: float
    target: Any
    view: dict[str, Any] = field(repr=False)
    describe: dict[str, Any] = field(repr=False)


@dataclass(frozen=True)
class SubjectPlan(PreparedSubject):
    """A prepared subject with the budget the spec gives it at its number of features."""

    budget: int

    @property
    def exact(self) -> bool:
        """Whether the budget covers all 2^n masks: the exact spectrum, nothing left to add."""
        return self.n <= EXACT_MAX_N and (1 << self.n) <= self.budget

    @classmethod
    def of(cls, prepared: PreparedSubject, budget: int) -> SubjectPlan:
        return cls(**{**asdict(prepared), "budget": int(budget)})


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


def resolve_model(spec: AuditSpec, model_key: str) -> ModelInfo:
    """Load the model once and describe it: name, revision (its content identity), registry version."""
    loaded = runtime.loaded_model(spec.model)
    source = dict(loaded.source or {})
    registry_version = str(source["version"]) if source.get("version") and source.get("name") else None
    return ModelInfo(uri=spec.model.uri, name=model_name(spec.model.uri, source), revision=loaded.identity,
                     registry_name=source.get("name") if registry_version else None,
                     registry_version=registry_version, kind=loaded.kind, describe=loaded.describe(), key=model_key)


def prepare_subject(spec: AuditSpec, subject_id: str, subject_digest: str) -> PreparedSubject:
    """Build the subject's value function and describe it: fingerprint, n, labels, the view the report
    draws. Under ``privacy.redact_text`` nothing downstream (records, report, cache) sees the text."""
    from spex.audit.spec import redact_subject_info, subject_view

    vf = runtime.value_function(spec, subject_id)
    describe = vf.describe() if hasattr(vf, "describe") else {}
    info = {
        "id": subject_id,
        "digest": subject_digest,
        "fingerprint": vf.fingerprint,
        "n": int(vf.n_features),
        "labels": [str(x) for x in vf.feature_labels],
        "full_value": float(describe.get("full_value", float("nan"))),
        "target": describe.get("target"),
        "view": subject_view(spec, runtime.subject_of(spec, subject_id), vf),
        "describe": {k: v for k, v in describe.items() if k not in ("prompt",)},
    }
    if spec.redact:
        info = redact_subject_info(info)
    return PreparedSubject(**info)


def plan_subject(spec: AuditSpec, prepared: PreparedSubject) -> SubjectPlan:
    """The subject with the spec's budget at its n (a spec error, before any ablation, when it does not fit)."""
    return SubjectPlan.of(prepared, spec.check_budget(prepared.n, prepared.id))

