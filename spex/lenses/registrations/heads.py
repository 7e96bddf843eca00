"""Registration of the heads lens: the attention heads of a model are the features.

Implementation: :mod:`spex.lenses.attention_heads` (torch). n is the model's head count, known only
once it loads (no offline count).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from pydantic import Field, model_validator

from spex.errors import SpecError
from spex.lenses.registration import LensRegistration, SpecModel

LENS_VERSION = 1  # bump when the value of a mask changes for the same inputs


class HeadsOptions(SpecModel):
    """Options of the heads lens (see :func:`spex.lenses.heads`)."""

    layers: list[int] | None = None
    mode: Literal["zero", "mean"] = "zero"
    rescale: bool = False
    reference: list[str] | None = None
    chat: bool = False


class HeadsSubject(SpecModel):
    """A task: prompts and their answers (continuations for a causal LM, classes for a classifier)."""

    id: str = Field(min_length=1, max_length=200)
    prompts: list[str] = Field(min_length=1)
    answers: list[str | int] = Field(min_length=1)

    @model_validator(mode="after")
    def _same_length(self) -> HeadsSubject:
        if len(self.prompts) != len(self.answers):
            raise ValueError(f"has {len(self.prompts)} prompts but {len(self.answers)} answers; fix: give one answer per prompt")
        return self


def check_options(options: HeadsOptions, model_config: Mapping[str, Any] | None) -> None:
    """``layers`` against the layer count in the model's config, before its weights load."""
    count = next((model_config.get(k) for k in ("num_hidden_layers", "n_layer", "num_layers")
                  if isinstance(model_config.get(k), int)), None) if model_config else None
    if options.layers is None or count is None:
        return
    bad = [layer for layer in options.layers if not -count <= layer < count]
    if bad or not options.layers:
        raise SpecError(f"spec field `lens_options.layers`: the model has {count} layers, so layers must be indices in "
                        f"[0, {count}) (negative counts from the end); got {options.layers}; fix: pick layers in that "
                        f"range, or leave layers out for all of them", field="lens_options.layers")


def view(options: HeadsOptions, subject: HeadsSubject, vf: Any) -> dict[str, Any]:
    """The layer x head grid (head names such as ``L0H3`` hold no text of the prompts)."""
    return {"kind": "grid", "labels": list(vf.feature_labels), "layers": list(getattr(vf, "layers", [])),
            "prompts": len(subject.prompts)}


def redact_options(options: dict[str, Any], redact: Any) -> dict[str, Any]:
    """The reference prompts (mean ablation) are the user's text."""
    if options.get("reference") is not None:
        options = {**options, "reference": redact(options["reference"])}
    return options


REGISTRATION = LensRegistration(
    name="heads",
    version=LENS_VERSION,
    options=HeadsOptions,
    subject=HeadsSubject,
    implementation="spex.lenses.attention_heads",
    argument_fields={"prompts": "subjects[{i}].prompts", "answers": "subjects[{i}].answers",
                     "layers": "lens_options.layers", "reference": "lens_options.reference", "chat": "lens_options.chat",
                     "model": "model"},
    view=view,
    subject_text_fields=("prompts", "answers"),
    redact_options=redact_options,
    check_options=check_options,
)
