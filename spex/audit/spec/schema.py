"""The spec's models: the sections every audit has, and one :class:`AuditSpec` subclass per lens.

Why one subclass per lens: ``lens_options`` and ``subjects`` mean different things per lens. Each
registered lens (:mod:`spex.lenses.registry`) gets a subclass whose ``lens`` is ``Literal[<name>]``
and whose ``lens_options`` / ``subjects`` are that lens's models; :data:`AUDIT_SPEC` is their
discriminated union on ``lens``, so pydantic itself picks the lens's models and an error names the
lens's own fields (``subjects[2].target``, ``lens_options.unit``). Validate through
:func:`spex.audit.spec.validate_spec` (it reads subject files and words errors as one line).
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, Union

from pydantic import (
    BaseModel,
    Field,
    TypeAdapter,
    ValidationInfo,
    create_model,
    field_validator,
    model_validator,
)

from spex.engine import EXACT_MAX_N, INDICES, METHODS, get_method
from spex.engine.inputs import max_budget, over_memory
from spex.errors import SpecError, SpexInputError
from spex.lenses import registry
from spex.lenses.registration import LensRegistration, SpecModel, refuse_boolean_number
from spex.models.kinds import Kind

METHOD_NAMES: tuple[str, ...] = tuple(METHODS)


# --------------------------------------------------------------------------------------------- model
class ModelSpec(SpecModel):
    """Where the audited model comes from (anything :func:`spex.models.load` takes) and how to run it."""

    uri: str = Field(min_length=1)
    device: str = "auto"
    dtype: str | None = None
    kind: Kind | None = None
    trust_remote_code: bool = False

    @field_validator("uri")
    @classmethod
    def _strip(cls, value: str) -> str:
        value = value.strip()
        if not value:
            raise ValueError("must not be empty")
        return value


def model_config(model: ModelSpec, key: str = "model") -> dict[str, Any] | None:
    """The ``config.json`` of a local model folder, read without loading weights (None: the model is
    not a local folder with a config). Every JSON file of the folder must parse: a SpecError names
    the file and the spec field, before the model loads."""
    from spex.models.identity import check_folder_json, read_json_file

    folder = Path(model.uri).expanduser()
    if not (folder / "config.json").is_file():
        return None
    try:
        check_folder_json(folder)
        config = read_json_file(folder / "config.json")
    except SpexInputError as exc:
        raise SpecError(f"spec field `{key}`: {exc}", field=key) from None
    return config if isinstance(config, dict) else None


def check_model_kind(model: ModelSpec, key: str = "model") -> None:
    """A ``kind`` the local checkpoint has no head for is refused before the model loads (transformers
    would initialise that head at random: :mod:`spex.models.kinds`)."""
    if model.kind is None:
        return
    config = model_config(model, key)
    if config is None:
        return
    from spex.models.kinds import check_kind

    try:
        check_kind(model.kind, list(config.get("architectures") or []), f"the model at {model.uri}")
    except SpexInputError as exc:
        raise SpecError(f"spec field `{key}.kind`: {exc}", field=f"{key}.kind") from None


def check_remote_code(model: ModelSpec, key: str = "model") -> None:
    """A local model folder whose config asks for custom code (``auto_map``) runs only with
    ``trust_remote_code: true`` in the spec (registry models are checked when they are loaded)."""
    if model.trust_remote_code:
        return
    config = model_config(model, key)
    needs_code = bool(config.get("auto_map")) if config is not None else False
    if needs_code:
        raise SpecError(
            f"spec field `{key}.trust_remote_code`: the model at {model.uri} ships custom Python code (config "
            f"'auto_map') and spex does not run it by default; fix: write {key}: {{uri: {model.uri}, "
            f"trust_remote_code: true}} only if you trust that code", field=f"{key}.trust_remote_code")


# --------------------------------------------------------------------------------------------- ranking, gates
class RankingSpec(SpecModel):
    """Which interaction index ranks the interactions (diffs, gates and the report use it), how many are
    recorded, and the ``confidence`` level of the intervals recorded with every value."""

    index: Literal[INDICES] = "fbii"  # type: ignore[valid-type]  (the engine's index names)
    order: int | None = Field(2, ge=1, le=16)
    top_k: int = Field(10, ge=1, le=10_000)
    record_top: int = Field(200, ge=1, le=1_000_000)
    confidence: float = Field(0.95, gt=0.5, lt=1.0)  # the level of every recorded interval

    @model_validator(mode="after")
    def _coherent(self) -> RankingSpec:
        if self.index == "shapley" and self.order not in (None, 1):
            raise ValueError("index shapley is first-order; fix: set order: 1, or pick fbii / sii for pairs")
        if self.record_top < self.top_k:
            raise ValueError(f"record_top ({self.record_top}) is below top_k ({self.top_k}); fix: raise record_top to at least {self.top_k}")
        return self


class Gates(SpecModel):
    """Release gates. Each is optional; an audit passes when every configured gate holds, fails when
    one fails, and is *undecided* when none failed but one is within the noise of its threshold (an
    interval straddles it; ``max_budget`` lets the audit add masks until it is decided). The baseline
    gates (significant changes, Jaccard, rank shift) apply to release audits (``spex release``); a
    routine audit, and the baseline's own audit inside a release, evaluate the others.

    * ``max_significant_changes``: (vs baseline) in no subject more than this many interactions of the
      union of both top k changed significantly: Benjamini–Hochberg at false-discovery rate
      ``drift_fdr`` over the interactions tested, and |Δ| at least ``min_effect`` (in the value's
      units; 0: any significant change counts). The default release gate.
    * ``faithfulness_min``: every subject's held-out R² (real model calls) is at least this — decided
      by its bootstrap interval over the held-out masks.
    * ``forbidden``: interactions that must not enter the top k: a string forbids every interaction
      involving that feature label; a list of labels forbids exactly that set (case-insensitive). An
      interaction is in the top k only when its interval says so (its worst rank is within k).
    * ``top_k_jaccard_min`` / ``max_rank_shift``: (vs baseline) the rank gates of earlier versions:
      the top-k sets overlap at least this much / no baseline top-k interaction moves more ranks than
      this. Still available, not the default: an unchanged model re-audited with another seed can fail
      them (benchmarks/README.md, "Gates").
    """

    max_significant_changes: int | None = Field(None, ge=0)
    drift_fdr: float = Field(0.05, gt=0.0, lt=1.0)
    min_effect: float = Field(0.0, ge=0.0)
    faithfulness_min: float | None = Field(None, ge=-1.0, le=1.0)
    top_k_jaccard_min: float | None = Field(None, ge=0.0, le=1.0)
    max_rank_shift: int | None = Field(None, ge=0)
    forbidden: list[str | list[str]] = Field(default_factory=list)

    @field_validator("forbidden")
    @classmethod
    def _forbidden(cls, value: list[str | list[str]]) -> list[str | list[str]]:
        for i, item in enumerate(value):
            if isinstance(item, str) and not item.strip() or isinstance(item, list) and not item:
                raise ValueError(f"entry {i} is empty; fix: write a feature label or a list of labels")
        return value

    @property
    def needs_baseline(self) -> bool:
        return any(g is not None for g in (self.max_significant_changes, self.top_k_jaccard_min,
                                           self.max_rank_shift))

    @property
    def baseline_gates(self) -> list[str]:
        """The configured gates that compare with a baseline."""
        return [g for g in ("max_significant_changes", "top_k_jaccard_min", "max_rank_shift")
                if getattr(self, g) is not None]


class BatchSpec(SpecModel):
    """How the ablation engine batches model calls and how a subject's masks are split into tasks.

    A chunk is measured by one engine call, so a chunk smaller than ``max_batch`` caps the batches at
    the chunk: ``chunk_size`` left out is therefore at least ``max_batch`` (512 otherwise)."""

    max_batch: int = Field(64, ge=1, le=1_000_000)
    token_budget: float | None = Field(None, gt=0)
    chunk_size: int = Field(512, ge=1, le=10_000_000)

    @model_validator(mode="before")
    @classmethod
    def _chunk_holds_a_batch(cls, value: Any) -> Any:
        if isinstance(value, Mapping) and "chunk_size" not in value and isinstance(value.get("max_batch"), int) \
                and not isinstance(value["max_batch"], bool) and value["max_batch"] > 512:
            return {**value, "chunk_size": value["max_batch"]}
        return value


class PrivacySpec(SpecModel):
    """What an audit may keep of its input text.

    ``redact_text: true`` keeps the subjects' text out of everything the audit records or publishes —
    MLflow (params, tags, artifacts, datasets), the metadata DB, the HTML report, the JSON export and the
    CLI's output: feature labels become their indices (``f0``, ``f1``, ...), the prompts, targets,
    responses, training texts and the system prompt are stored as ``[redacted]``, and subject views keep
    only the character offsets of the features (the heads lens keeps its head names, ``L0H3``: they hold
    no text). The numbers (values, interactions, R², gates) are unchanged. What stays in clear: the subject ids (choose ids that reveal nothing), the model URI, and
    the machine-local caches under ``SPEX_DATA_DIR`` (the ablation store's ``meta.json``, Prefect's task
    results) and Prefect's flow-run parameters, which hold the spec itself because a rerun needs it.
    ``gates.forbidden`` names feature labels and so cannot be combined with ``redact_text``.
    """

    redact_text: bool = False


# --------------------------------------------------------------------------------------------- the spec
class AuditSpec(SpecModel):
    """A validated audit spec (see :mod:`spex.audit.spec` for the YAML). Every instance is one of the
    per-lens subclasses in :data:`SPEC_TYPES`; ``registration`` is its lens's registration."""

    registration: ClassVar[LensRegistration]

    name: str | None = Field(None, max_length=200)
    model: ModelSpec
    lens: str
    lens_options: SpecModel
    subjects: list[SpecModel]
    method: Literal[METHOD_NAMES] = "proxyspex"  # type: ignore[valid-type]  (the engine's method names)
    method_options: dict[str, Any] = Field(default_factory=dict)
    budget: int | Literal["auto"] = "auto"
    max_budget: int | None = Field(None, ge=1)  # a ceiling: undecided gates add masks up to it
    alpha: float = Field(4.0, gt=0, le=1000)
    seed: int = Field(0, ge=0, le=2**63 - 1)
    holdout: int = Field(200, ge=8, le=1_000_000)
    removal_r: int = Field(3, ge=0, le=1000)
    ranking: RankingSpec = Field(default_factory=RankingSpec)
    gates: Gates = Field(default_factory=Gates)
    baseline: ModelSpec | None = None
    batch: BatchSpec = Field(default_factory=BatchSpec)
    privacy: PrivacySpec = Field(default_factory=PrivacySpec)

    @field_validator("alpha", "seed", "holdout", "removal_r", mode="before")
    @classmethod
    def _no_boolean_numbers(cls, value: Any, info: ValidationInfo) -> Any:
        """As every section's (:class:`SpecModel`), on this model's number fields only: ``*`` would
        include ``lens``, the union's discriminator, which takes no before-validator."""
        return refuse_boolean_number(cls, value, info)

    @field_validator("model", "baseline", mode="before")
    @classmethod
    def _model_uri(cls, value: Any) -> Any:
        """A plain string is the model's URI."""
        return {"uri": value} if isinstance(value, str) else value

    @field_validator("lens_options", mode="before")
    @classmethod
    def _lens_options(cls, value: Any) -> Any:
        if value is None:
            return cls.registration.default_options_model()
        if not isinstance(value, (Mapping, BaseModel)):
            raise ValueError(f"expected a mapping of {cls.registration.name} options, got {type(value).__name__}; "
                             f"fix: write e.g. lens_options: {{}}")
        return value

    @field_validator("method", mode="before")
    @classmethod
    def _method(cls, value: Any) -> Any:
        if value not in METHOD_NAMES:
            close = difflib.get_close_matches(str(value), METHOD_NAMES, n=1)
            raise ValueError(f"unknown method {value!r}; fix: use one of: {', '.join(METHOD_NAMES)}"
                             + (f" (did you mean {close[0]}?)" if close else ""))
        return value

    @field_validator("budget", mode="plain")
    @classmethod
    def _budget(cls, value: Any) -> Any:
        """``auto`` or a positive whole number (an integral float such as 10.0 is that number)."""
        if value == "auto" and isinstance(value, str):
            return value
        if isinstance(value, bool):
            raise ValueError("is a boolean; fix: write a positive number of masks per subject, or auto")
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, int) and value < 1:
            raise ValueError(f"is {value}; fix: write a positive number of masks per subject, or auto")
        return _WHOLE_NUMBER.validate_python(value)  # its error names ``budget`` alone, not each union member

    @field_validator("subjects")
    @classmethod
    def _subjects(cls, value: list[Any]) -> list[Any]:
        if not value:
            raise ValueError("is empty; fix: give at least one subject")
        seen: dict[str, int] = {}
        for i, s in enumerate(value):
            if s.id in seen:
                raise ValueError(f"ids must be unique but subjects[{i}] repeats id {s.id!r} of subjects[{seen[s.id]}]; fix: give every subject its own id")
            seen[s.id] = i
        return value

    @field_validator("method_options")
    @classmethod
    def _method_options(cls, value: dict[str, Any], info: Any) -> dict[str, Any]:
        method = info.data.get("method")
        if value and method in METHOD_NAMES:
            try:
                get_method(method, **value)
            except SpexInputError as exc:
                field = f"method_options.{exc.field}" if exc.field else "method_options"
                fix = "correct that option" if exc.field else "remove or correct that option"
                raise SpecError(f"spec field `{field}`: {exc}; fix: {fix}", field=field) from None
        return value

    @model_validator(mode="after")
    def _privacy(self) -> AuditSpec:
        if self.privacy.redact_text and self.gates.forbidden:
            raise SpecError("spec field `gates.forbidden`: forbidden interactions name feature labels, which "
                            "privacy.redact_text hides; fix: remove gates.forbidden or set privacy.redact_text: false",
                            field="gates.forbidden")
        return self

    # -- derived
    @property
    def options(self) -> Any:
        """The lens's options (an instance of ``registration.options``)."""
        return self.lens_options

    @property
    def redact(self) -> bool:
        return self.privacy.redact_text

    def budget_for(self, n: int) -> int:
        """Masks for a subject with n features: the spec's number, or ``auto`` = ⌈α·n·log2 n⌉ raised to
        the method's minimum. At n ≤ 20, ``auto`` takes all 2^n masks (the exact spectrum, R² = 1) when
        that is at most twice the sampled budget: for a handful of features exact beats estimated."""
        minimum = get_method(self.method, **self.method_options).minimum_budget(n)
        if self.budget == "auto":
            budget = max(minimum, math.ceil(self.alpha * n * math.log2(max(n, 2))))
            if n <= EXACT_MAX_N and (1 << n) <= 2 * budget:
                budget = max(1 << n, minimum)
            return int(budget)
        return int(self.budget)

    def check_budget(self, n: int, subject: str) -> int:
        """The budget for a subject, or a SpecError that names ``budget`` and the fix."""
        budget = self.budget_for(n)
        minimum = get_method(self.method, **self.method_options).minimum_budget(n)
        exact = n <= EXACT_MAX_N and (1 << n) <= budget
        floor = max(minimum, n + 2) if not exact else 1
        if budget < floor:
            raise SpecError(
                f"spec field `budget`: {budget} masks cannot support subject {subject!r} with n={n} features "
                f"(method {self.method} needs at least {floor}); fix: set budget to at least {floor}, or budget: auto",
                field="budget",
            )
        per_mask = get_method(self.method, **self.method_options).bytes_per_mask(n)
        if self.max_budget is not None and self.max_budget < budget and not exact:  # exact: nothing to add
            raise SpecError(f"spec field `max_budget`: {self.max_budget} is below subject {subject!r}'s budget of "
                            f"{budget} masks; fix: set max_budget to at least {budget}, or remove it",
                            field="max_budget")
        too_big = None if exact else over_memory(budget, n, per_mask)
        ceiling_too_big = None if exact or self.max_budget is None else over_memory(self.max_budget, n, per_mask)
        if too_big is None and ceiling_too_big is not None:
            raise SpecError(f"spec field `max_budget`: subject {subject!r}: {ceiling_too_big}; fix: set max_budget to "
                            f"at most {max_budget(per_mask)}", field="max_budget")
        if too_big is not None:
            fix = f"set budget to at most {max_budget(per_mask)}" + (" (or lower alpha)" if self.budget == "auto" else "")
            raise SpecError(f"spec field `budget`: subject {subject!r}: {too_big}; fix: {fix}", field="budget")
        return budget

    def public_dict(self) -> dict[str, Any]:
        """The spec as JSON-able data (what Prefect parameters and the tasks get; :func:`redact_spec`
        of it is what the metadata DB and MLflow get)."""
        return self.model_dump(mode="json", exclude_none=False)

    def check_offline(self) -> None:
        """Checks that need the spec's text, not the model's weights (run before anything starts):

        * each subject's feature count, where the lens knows it from the text (the features lens
          segments the prompt, the data lens counts its training set), against the budget;
        * a local model folder that ships custom code (config ``auto_map``) without
          ``model.trust_remote_code: true``, or whose JSON files do not parse, or that has no head of
          the spec's ``model.kind``;
        * the lens's options against the model's config (the heads lens's ``layers``) and the files
          they name (the data lens's ``encoder``).

        Raises a :class:`SpecError` naming the field and the fix."""
        from spex.audit.spec.subjects import offline_feature_count

        for key, model in (("model", self.model), ("baseline", self.baseline)):
            if model is not None:
                check_remote_code(model, key)
                check_model_kind(model, key)
                self.registration.check_options(self.options, model_config(model, key))
        for subject in self.subjects:
            n = offline_feature_count(self, subject)
            if n is not None:
                self.check_budget(n, subject.id)


_WHOLE_NUMBER = TypeAdapter(int)


def _spec_type(lens: LensRegistration) -> type[AuditSpec]:
    """The AuditSpec of one lens: its name as the tag, its models for options and subjects."""
    spec_type = create_model(
        f"{lens.name.title()}AuditSpec",
        __base__=AuditSpec,
        __module__=__name__,
        lens=(Literal[lens.name], ...),
        lens_options=(lens.options, Field(default_factory=lens.default_options_model)),
        subjects=(list[lens.subject], ...),  # type: ignore[name-defined]
        batch=(BatchSpec, Field(default_factory=lambda: BatchSpec(max_batch=lens.max_batch))),
    )
    spec_type.registration = lens
    return spec_type


SPEC_TYPES: dict[str, type[AuditSpec]] = {lens.name: _spec_type(lens) for lens in registry.registrations()}
AUDIT_SPEC: TypeAdapter[AuditSpec] = TypeAdapter(
    Annotated[Union[tuple(SPEC_TYPES.values())], Field(discriminator="lens")])  # noqa: UP007
