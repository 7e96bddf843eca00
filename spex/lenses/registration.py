"""What a lens tells the rest of spex about itself: one :class:`LensRegistration` per lens.

The audit spec, the pipeline and the report never compare lens names; they ask the lens's
registration (:func:`spex.lenses.registry.get`) for its spec models, its value function, its feature
count before a model loads, its report view and the spec fields its arguments come from.

Registrations import no torch: the spec (``spex.audit.spec``) is validated by CI and by the CLI's
preflight, which must stay fast. The value function lives in the lens's implementation module
(``implementation``), imported by name on first use; that module may import its registration (its
``LENS_VERSION``, its option models), never the other way round, so there is no import cycle.

``SpecModel`` lives here, below both the lens registrations and the audit spec that assembles them: a
lens's options are a section of the spec. A registration that reads the spec's files reports a problem
as the spec does, with :class:`spex.errors.SpecError`.
"""

from __future__ import annotations

import importlib
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType, ModuleType
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationInfo, field_validator


def _admits_bool(annotation: Any) -> bool:
    """Whether a field's type takes a boolean as itself (``bool``, ``bool | None``, ``Any``)."""
    if annotation is bool or annotation is Any:
        return True
    return any(_admits_bool(arg) for arg in typing.get_args(annotation))


def _numbers_only(annotation: Any) -> bool:
    """Whether a field's type is a number (or a list of numbers), where pydantic would read ``true`` as 1."""
    args = typing.get_args(annotation)
    if annotation in (int, float):
        return True
    if typing.get_origin(annotation) is list:
        return bool(args) and _numbers_only(args[0])
    return bool(args) and all(_numbers_only(a) or a is type(None) for a in args) and not _admits_bool(annotation)


class SpecModel(BaseModel):
    """Base of every section of the spec: an unknown field is an error (a typo must not be ignored)
    and a validated spec is frozen (its digest identifies what was audited)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    @field_validator("*", mode="before")
    @classmethod
    def _no_boolean_numbers(cls, value: Any, info: ValidationInfo) -> Any:
        """``seed: true`` or ``top_k: on`` (YAML's booleans) is refused where a number is meant:
        pydantic would read it as 1 and the audit would run with a value nobody wrote."""
        return refuse_boolean_number(cls, value, info)


def refuse_boolean_number(model: type[BaseModel], value: Any, info: ValidationInfo) -> Any:
    """The check of :meth:`SpecModel._no_boolean_numbers` (a model whose ``*`` cannot include a
    tagged union's discriminator names its number fields and calls this)."""
    field = model.model_fields.get(info.field_name or "")
    if field is None or not _numbers_only(field.annotation):
        return value
    items = value if isinstance(value, list) else [value]
    if any(isinstance(item, bool) for item in items):
        shown = str(value).lower() if not isinstance(value, list) else "a list holding true/false"
        raise ValueError(f"is a boolean ({shown}) where a number is meant; fix: write a number")
    return value


def _no_offline_count(options: Any, subject: Any) -> int | None:
    return None


def _keep_options(options: dict[str, Any], redact: Callable[[Any], Any]) -> dict[str, Any]:
    return options


def _no_option_checks(options: Any, model_config: Mapping[str, Any] | None) -> None:
    return None


@dataclass(frozen=True)
class LensRegistration:
    """Everything the spec, the pipeline and the report need to know about one lens.

    * ``name``: the spec's ``lens:`` value (also the name of the lens function ``spex.lenses.<name>``);
    * ``version``: bump it when the value of a mask changes for the same inputs (it enters the cache
      keys of prepared subjects: :func:`spex.lenses.registry.lens_versions`);
    * ``options`` / ``subject``: the spec models of ``lens_options`` and of one entry of ``subjects``;
    * ``implementation``: the module (torch) that holds the lens function ``<name>(...)`` and
      ``from_spec(options, subject, model) -> ValueFunction``;
    * ``argument_fields``: a lens argument named by a :class:`SpexInputError` (``field``) -> the spec
      field it comes from (``{i}`` is the subject's index), so an error names what the user wrote;
    * ``view(options, subject, vf)``: what the report draws for a subject, without the model's outputs;
    * ``count_features(options, subject)``: n before any model loads, where the text alone tells it
      (None: only the loaded model knows), so a budget too small for n fails in preflight;
    * ``default_options``: ``lens_options`` when the spec gives none;
    * ``max_batch``: the lens's preferred masks per model call (the spec's ``batch.max_batch`` default);
    * ``subject_text_fields`` / ``redact_options(options, redact)``: which parts of a subject and of
      the options hold the user's text, for ``privacy.redact_text``;
    * ``check_options(options, model_config)``: checks of the options that need no weights, before the
      model loads (``model_config``: a local model folder's ``config.json``, or None); a problem is a
      :class:`spex.errors.SpecError` naming ``lens_options.<field>``.
    """

    name: str
    version: int
    options: type[SpecModel]
    subject: type[SpecModel]
    implementation: str
    argument_fields: Mapping[str, str]
    view: Callable[[Any, Any, Any], dict[str, Any]]
    count_features: Callable[[Any, Any], int | None] = _no_offline_count
    default_options: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    max_batch: int = 64
    subject_text_fields: tuple[str, ...] = ()
    redact_options: Callable[[dict[str, Any], Callable[[Any], Any]], dict[str, Any]] = _keep_options
    check_options: Callable[[Any, Mapping[str, Any] | None], None] = _no_option_checks

    def module(self) -> ModuleType:
        """The implementation module (imports torch on first use)."""
        return importlib.import_module(self.implementation)

    def function(self) -> Callable[..., Any]:
        """The lens function, e.g. ``spex.lenses.features``."""
        return getattr(self.module(), self.name)

    def build(self, options: Any, subject: Any, model: Any) -> Any:
        """The value function of one subject on a loaded model (:class:`spex.models.LoadedModel`)."""
        return self.module().from_spec(options, subject, model)

    def default_options_model(self) -> SpecModel:
        return self.options.model_validate(dict(self.default_options))
