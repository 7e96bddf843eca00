"""Registration of the features lens: the words / sentences of a prompt are the features.

Implementation: :mod:`spex.lenses.prompt_features` (torch). The spec part is here, torch-free, so that
the preflight counts a prompt's features (:func:`spex.lenses.segmentation.segment`) without a model.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator

from spex.errors import SpexInputError
from spex.lenses.registration import LensRegistration, SpecModel
from spex.lenses.segmentation import has_visible_text, segment

LENS_VERSION = 1  # bump when the value of a mask changes for the same inputs


class FeaturesOptions(SpecModel):
    """Options of the features lens (see :func:`spex.lenses.features`)."""

    unit: Literal["word", "sentence"] = "word"
    mask: str = "remove"
    system: str | None = None
    chat: bool | None = None
    max_new_tokens: int = Field(48, ge=1, le=4096)
    prefix_cache: bool = False


class FeaturesSubject(SpecModel):
    """A prompt whose words / sentences are the features; ``target``: the response (causal LM) or the
    class (classifier) to score; default: the model's own answer / predicted class."""

    id: str = Field(min_length=1, max_length=200)
    prompt: str
    target: str | int | None = None

    @field_validator("prompt")
    @classmethod
    def _prompt(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("is empty; fix: give the text whose words or sentences are the features")
        if not has_visible_text(value):
            raise ValueError("has no visible text (only spaces, zero-width or control characters), so every mask "
                             "reads the same; fix: give the text whose words or sentences are the features")
        return value


def count_features(options: FeaturesOptions, subject: FeaturesSubject) -> int:
    """n from the text alone: the prompt's words or sentences."""
    try:
        return len(segment(subject.prompt, options.unit))
    except SpexInputError as exc:
        raise SpexInputError(f"{exc}; fix: give a prompt with at least one {options.unit} to use as a feature",
                             field="prompt") from None


def view(options: FeaturesOptions, subject: FeaturesSubject, vf: Any) -> dict[str, Any]:
    """The text and where each feature sits in it."""
    return {"kind": "text", "text": subject.prompt, "spans": [list(s) for s in getattr(vf, "spans", [])]}


def redact_options(options: dict[str, Any], redact: Any) -> dict[str, Any]:
    """The system prompt is the user's text."""
    if options.get("system") is not None:
        options = {**options, "system": redact(options["system"])}
    return options


REGISTRATION = LensRegistration(
    name="features",
    version=LENS_VERSION,
    options=FeaturesOptions,
    subject=FeaturesSubject,
    implementation="spex.lenses.prompt_features",
    argument_fields={"prompt": "subjects[{i}].prompt", "target": "subjects[{i}].target", "chat": "lens_options.chat",
                     "system": "lens_options.system", "mask": "lens_options.mask", "unit": "lens_options.unit",
                     "model": "model"},
    view=view,
    count_features=count_features,
    subject_text_fields=("prompt", "target"),
    redact_options=redact_options,
)
