"""From a validated spec's subject to what the pipeline needs: its identity, its value function, its view.

Every lens-specific step asks the lens's registration (``spec.registration``); a lens's error that
names one of its arguments is re-raised as a :class:`SpecError` naming the spec field it came from.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from pydantic import ValidationError

from spex.audit.spec.errors import one_line, spec_error
from spex.content import content_hash
from spex.errors import SpexInputError
from spex.lenses.registrations import data as data_lens

if TYPE_CHECKING:  # annotations only: the schema calls offline_feature_count, so no import back at run time
    from spex.audit.spec.schema import AuditSpec

T = TypeVar("T")


def subject_payload(spec: AuditSpec, subject: Any) -> dict[str, Any]:
    """What determines a subject independently of the model: lens, lens options, the subject's content.

    Its digest identifies the subject across model versions (the metadata DB's subject key), so the
    same prompt audited on two versions is one subject with two sets of interactions.
    """
    body = subject.model_dump(mode="json", exclude={"id"})
    payload = {"lens": spec.lens, "options": spec.options.model_dump(mode="json"), "subject": body}
    if spec.redact:  # what is recorded differs (labels f0.., no text): a subject of its own, cached apart
        payload["privacy"] = spec.privacy.model_dump(mode="json")
    return payload


def subject_digest(spec: AuditSpec, subject: Any) -> str:
    return content_hash(subject_payload(spec, subject))


def _lens_call(spec: AuditSpec, subject: Any, call: Callable[[], T]) -> T:
    """Run one of the lens's steps for ``subject``; its errors come out as one-line SpecErrors."""
    try:
        return call()
    except ValidationError as exc:  # a registration validating a file its options name (lens_options.train)
        raise one_line(exc, spec.registration.options, prefix="lens_options") from None
    except SpexInputError as exc:
        index = next((i for i, s in enumerate(spec.subjects) if s.id == subject.id), 0)
        raise spec_error(exc, subject.id, index, spec.registration.argument_fields) from None


def offline_feature_count(spec: AuditSpec, subject: Any) -> int | None:
    """The subject's n from the spec's text alone, where the lens can tell it (None: only the loaded
    model knows, e.g. its number of heads)."""
    lens = spec.registration
    return _lens_call(spec, subject, lambda: lens.count_features(spec.options, subject))


def build_value_function(spec: AuditSpec, subject: Any, model: Any) -> Any:
    """The lens value function of one subject on a loaded model (:class:`spex.models.LoadedModel`).

    A lens that rejects its input names its argument (``SpexInputError.field``); the error is re-raised
    as a :class:`SpecError` naming the spec field it came from (``lens_options.chat``,
    ``subjects[2].target``), with the subject's id."""
    return _lens_call(spec, subject, lambda: spec.registration.build(spec.options, subject, model))


def subject_view(spec: AuditSpec, subject: Any, vf: Any) -> dict[str, Any]:
    """What the report needs to draw a subject, independent of the model's outputs: the text and
    where each feature sits in it (features), the layer x head grid (heads), the examples (data)."""
    return _lens_call(spec, subject, lambda: spec.registration.view(spec.options, subject, vf))


def load_training_set(options: Any) -> list[Any]:
    """The data lens' training examples (inline, a JSONL file or the bundled sentences), limited."""
    try:
        return data_lens.load_training_set(options)
    except ValidationError as exc:
        raise one_line(exc, type(options), prefix="lens_options") from None
