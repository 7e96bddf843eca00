"""Registration of the data lens: the examples (or groups of examples) of a training set are the features.

Implementation: :mod:`spex.lenses.training_data` (torch). The training set is part of the spec
(``lens_options.train``); :func:`load_training_set` reads it without torch, so the preflight knows n.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    Field,
    TypeAdapter,
    ValidationInfo,
    ValidatorFunctionWrapHandler,
    field_validator,
)

from spex.errors import SpecError, SpexInputError
from spex.lenses.registration import LensRegistration, SpecModel
from spex.lenses.spec_files import read_jsonl

LENS_VERSION = 1  # bump when the value of a mask changes for the same inputs

MAX_BATCH = 1024
"""The spec's default ``batch.max_batch`` for the data lens: the cap on masks per retraining call (and,
since a chunk holds a batch, the chunk size: 1,024-mask store chunks and ablation tasks). The lens's own
batch under it is :func:`preferred_batch`."""

_BATCH_ELEMENTS = 1 << 16
"""Mask x example entries per retraining call that keep its (B, n) float64 working tensors at 512 KiB,
in a core's cache: beyond that each of the 50 gradient steps streams them from memory. Measured at
n = 1,000 (384-dimensional embeddings, through the audit flow, 2 busy cores): batches of 256 ran at
0.86x the speed of batches of 64 (benchmarks/README.md, "The data lens at 1,000+ examples")."""


def preferred_batch(n_train: int) -> int:
    """Masks per retraining call at ``n_train`` training examples: the power of two nearest below
    2^16 / n_train, between 64 and :data:`MAX_BATCH` (1,024 at n <= 64, 256 at n = 256, 64 at
    n >= 1,000). Not more: the batched trainer is memory-bound per step once its tensors leave the
    cache; not less: each call pays fixed costs (Python and torch dispatch per step)."""
    target = max(1, _BATCH_ELEMENTS // max(int(n_train), 1))
    return int(min(MAX_BATCH, max(64, 1 << (target.bit_length() - 1))))


class TrainExample(SpecModel):
    text: str = Field(min_length=1)
    label: str | int
    group: str | int | None = None


_EXAMPLES = TypeAdapter(list[TrainExample])


class DataOptions(SpecModel):
    """Options of the data lens: the training set whose examples are the features.

    ``train``: inline examples, a JSONL file (``text``, ``label``, optional ``group``), or
    ``builtin:sentiment`` (the bundled sentences; ``variant`` picks the training variant). ``limit``
    keeps a seeded subset (``sample_seed``). ``encoder``: ``model`` embeds with the audited model
    (so a new version changes the features' geometry), or any model URI.
    """

    train: list[TrainExample] | str
    variant: Literal["full", "no-negation", "half"] = "full"
    limit: int | None = Field(None, ge=2)
    sample_seed: int = 0
    grouped: bool = False
    encoder: str = "model"
    classes: list[str | int] | None = None
    l2: float = Field(1.0, gt=0)
    steps: int = Field(50, ge=1, le=10_000)

    @field_validator("train", mode="wrap")
    @classmethod
    def _train(cls, value: Any, handler: ValidatorFunctionWrapHandler, info: ValidationInfo) -> Any:
        """A string names a source: ``builtin:<name>`` or a file, made absolute against the spec's
        folder (validation context ``base_dir``). Anything else is a list of examples, validated as
        such, so an error names ``train[2].text`` rather than each member of the union."""
        if isinstance(value, str):
            if value.startswith("builtin:"):
                return value
            path = Path(value).expanduser()
            base_dir = (info.context or {}).get("base_dir")
            if not path.is_absolute() and base_dir is not None:
                path = Path(base_dir) / path
            return str(path)
        return _EXAMPLES.validate_python(value)


class DataSubject(SpecModel):
    """A target example: the prediction whose training examples are audited."""

    id: str = Field(min_length=1, max_length=200)
    text: str = Field(min_length=1)
    label: str | int


def load_training_set(options: DataOptions) -> list[TrainExample]:
    """The data lens' training examples (inline, a JSONL file or the bundled sentences), limited."""
    import numpy as np

    if isinstance(options.train, list):
        rows = list(options.train)
    elif options.train.startswith("builtin:"):
        name = options.train[len("builtin:"):]
        if name != "sentiment":
            raise SpecError(f"spec field `lens_options.train`: {options.train!r} is not a built-in training set; "
                            f"fix: use builtin:sentiment, a JSONL file or inline examples", field="lens_options.train")
        from spex.models.builtins import SENTIMENT_LABELS, sentiment_data

        texts, labels = sentiment_data("train", options.variant)
        rows = [TrainExample(text=t, label=SENTIMENT_LABELS[y]) for t, y in zip(texts, labels)]
    else:
        # The file's rows are validated as if written inline: a bad row is a ValidationError at
        # ``train[k]`` of these options (the spec reports it as ``lens_options.train[k]...``).
        rows = list(options.model_validate({**options.model_dump(exclude={"train"}),
                                            "train": read_jsonl(Path(options.train), field="lens_options.train")}).train)
    if options.limit is not None and options.limit < len(rows):
        keep = np.sort(np.random.default_rng(options.sample_seed).permutation(len(rows))[: options.limit])
        rows = [rows[i] for i in keep]
    return rows


def check_target_label(labels: list[Any], target_label: Any) -> None:
    """The target's label must be the label of some training example: a label none has would be an
    extra, empty class, and every retrained head would score the target's class the same way (a
    meaningless ranking that still passes)."""
    if target_label not in set(labels):
        present = sorted({str(label) for label in labels})
        raise SpexInputError(f"label {target_label!r} is the label of no training example; the labels present are "
                             f"{present}; fix: give one of those labels", field="label")


def count_features(options: DataOptions, subject: DataSubject) -> int:
    """n from the training set alone: its examples, or its groups (``grouped``). The target's label is
    checked against the training labels here too: it is the one offline look at the training set."""
    rows = load_training_set(options)
    check_target_label([r.label for r in rows], subject.label)
    if options.grouped:
        return len({r.group if r.group is not None else j for j, r in enumerate(rows)})
    return len(rows)


def check_options(options: DataOptions, model_config: Mapping[str, Any] | None) -> None:
    """An ``encoder`` given as a local path must exist (checked before the audited model loads)."""
    from spex.models.identity import missing_local_path

    if options.encoder != "model" and missing_local_path(options.encoder):
        raise SpecError(f"spec field `lens_options.encoder`: path {options.encoder} does not exist; fix: give an "
                        f"existing model folder, a model URI, or encoder: model (embed with the audited model)",
                        field="lens_options.encoder")


def view(options: DataOptions, subject: DataSubject, vf: Any) -> dict[str, Any]:
    """The target example and the training examples."""
    rows = load_training_set(options)
    return {"kind": "examples", "target": subject.text, "target_label": str(subject.label),
            "examples": [{"text": r.text, "label": str(r.label)} for r in rows]}


def redact_options(options: dict[str, Any], redact: Any) -> dict[str, Any]:
    """Inline training texts are the user's text (a file path or builtin name is not)."""
    if isinstance(options.get("train"), list):
        options = {**options, "train": [{**row, "text": redact(row["text"])} for row in options["train"]]}
    return options


REGISTRATION = LensRegistration(
    name="data",
    version=LENS_VERSION,
    options=DataOptions,
    subject=DataSubject,
    implementation="spex.lenses.training_data",
    argument_fields={"text": "subjects[{i}].text", "label": "subjects[{i}].label", "classes": "lens_options.classes",
                     "train": "lens_options.train", "model": "model"},
    view=view,
    count_features=count_features,
    default_options={"train": "builtin:sentiment"},
    max_batch=MAX_BATCH,
    subject_text_fields=("text",),
    redact_options=redact_options,
    check_options=check_options,
)
