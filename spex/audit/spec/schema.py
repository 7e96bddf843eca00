"""The audit spec: one YAML file that says what to audit, how, and what must hold for a release.

    model: models:/sentiment@champion        # or {uri: ..., device: cpu, dtype: float32}
    lens: features                           # features | heads | data
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

Why pydantic and why the error format: a spec is written by hand and read by CI. Every problem is
reported as ONE line that names the field (``gates.faithfulness_min``), says what was wrong, and says
what to write instead — a user never has to read a traceback to fix a spec. The same models also turn
a spec into value functions (:func:`build_value_function`), so a notebook can run an audit's subject
without Prefect.

This module imports pydantic and PyYAML only; torch is imported when a value function is built.
"""

from __future__ import annotations

import difflib
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from spex.content import content_hash
from spex.errors import SpexInputError

LENSES = ("features", "heads", "data")
METHODS = ("proxyspex", "spex", "linear", "faith_banzhaf")
INDEX_NAMES = ("fourier", "mobius", "banzhaf", "shapley", "fbii", "fsii", "stii", "sii")
EXACT_MAX_N = 20  # spex.engine.exact: at n <= 20 a budget covering all 2^n masks gives the exact spectrum


class SpecError(SpexInputError):
    """A spec that cannot be run: the message names the field and the fix (one line)."""

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message, field=field)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# --------------------------------------------------------------------------------------------- model
class ModelSpec(_Strict):
    """Where the audited model comes from (anything :func:`spex.models.load` takes) and how to run it."""

    uri: str = Field(min_length=1)
    device: str = "auto"
    dtype: str | None = None
    kind: Literal["causal-lm", "classifier", "encoder"] | None = None
    trust_remote_code: bool = False

    @field_validator("uri")
    @classmethod
    def _strip(cls, value: str) -> str:
        value = value.strip()
        if not value:
            raise ValueError("must not be empty")
        return value


def _model(value: Any) -> Any:
    return {"uri": value} if isinstance(value, str) else value


# --------------------------------------------------------------------------------------------- lenses
class FeaturesOptions(_Strict):
    """Options of the features lens (see :func:`spex.lenses.features`)."""

    unit: Literal["word", "sentence"] = "word"
    mask: str = "remove"
    system: str | None = None
    chat: bool | None = None
    max_new_tokens: int = Field(48, ge=1, le=4096)
    prefix_cache: bool = False


class HeadsOptions(_Strict):
    """Options of the heads lens (see :func:`spex.lenses.heads`)."""

    layers: list[int] | None = None
    mode: Literal["zero", "mean"] = "zero"
    rescale: bool = False
    reference: list[str] | None = None
    chat: bool = False


class TrainExample(_Strict):
    text: str = Field(min_length=1)
    label: str | int
    group: str | int | None = None


class DataOptions(_Strict):
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


LENS_OPTIONS: dict[str, type[_Strict]] = {"features": FeaturesOptions, "heads": HeadsOptions, "data": DataOptions}


# --------------------------------------------------------------------------------------------- subjects
class FeaturesSubject(_Strict):
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
        return value


class HeadsSubject(_Strict):
    """A task: prompts and their answers (continuations for a causal LM, classes for a classifier)."""

    id: str = Field(min_length=1, max_length=200)
    prompts: list[str] = Field(min_length=1)
    answers: list[str | int] = Field(min_length=1)

    @model_validator(mode="after")
    def _same_length(self) -> HeadsSubject:
        if len(self.prompts) != len(self.answers):
            raise ValueError(f"has {len(self.prompts)} prompts but {len(self.answers)} answers; fix: give one answer per prompt")
        return self


class DataSubject(_Strict):
    """A target example: the prediction whose training examples are audited."""

    id: str = Field(min_length=1, max_length=200)
    text: str = Field(min_length=1)
    label: str | int


SUBJECTS: dict[str, type[_Strict]] = {"features": FeaturesSubject, "heads": HeadsSubject, "data": DataSubject}


# --------------------------------------------------------------------------------------------- ranking, gates
class RankingSpec(_Strict):
    """Which interaction index ranks the interactions (diffs, gates and the report use it)."""

    index: Literal["fourier", "mobius", "banzhaf", "shapley", "fbii", "fsii", "stii", "sii"] = "fbii"
    order: int | None = Field(2, ge=1, le=16)
    top_k: int = Field(10, ge=1, le=10_000)
    record_top: int = Field(200, ge=1, le=1_000_000)

    @model_validator(mode="after")
    def _coherent(self) -> RankingSpec:
        if self.index == "shapley" and self.order not in (None, 1):
            raise ValueError("index shapley is first-order; fix: set order: 1, or pick fbii / sii for pairs")
        if self.record_top < self.top_k:
            raise ValueError(f"record_top ({self.record_top}) is below top_k ({self.top_k}); fix: raise record_top to at least {self.top_k}")
        return self


class Gates(_Strict):
    """Release gates. Each is optional; an audit passes when every configured gate holds. The two
    baseline gates (Jaccard, rank shift) apply to release audits (``spex release``); a routine audit,
    and the baseline's own audit inside a release, evaluate the others.

    * ``faithfulness_min``: every subject's held-out R² (real model calls) is at least this.
    * ``top_k_jaccard_min``: (vs baseline) each subject's top-k interaction sets overlap at least this much.
    * ``max_rank_shift``: (vs baseline) no baseline top-k interaction moves more than this many ranks.
    * ``forbidden``: interactions that must not enter the top k: a string forbids every interaction
      involving that feature label; a list of labels forbids exactly that set (case-insensitive).
    """

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
        return self.top_k_jaccard_min is not None or self.max_rank_shift is not None


class BatchSpec(_Strict):
    """How the ablation engine batches model calls and how a subject's masks are split into tasks."""

    max_batch: int = Field(64, ge=1, le=1_000_000)
    token_budget: float | None = Field(None, gt=0)
    chunk_size: int = Field(512, ge=1, le=10_000_000)


class PrivacySpec(_Strict):
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


REDACTED = "[redacted]"


# --------------------------------------------------------------------------------------------- the spec
class AuditSpec(_Strict):
    """A validated audit spec (see the module docstring for the YAML)."""

    name: str | None = Field(None, max_length=200)
    model: ModelSpec
    lens: Literal["features", "heads", "data"]
    lens_options: FeaturesOptions | HeadsOptions | DataOptions | None = None
    subjects: list[FeaturesSubject | HeadsSubject | DataSubject]
    method: Literal["proxyspex", "spex", "linear", "faith_banzhaf"] = "proxyspex"
    method_options: dict[str, Any] = Field(default_factory=dict)
    budget: int | Literal["auto"] = "auto"
    alpha: float = Field(4.0, gt=0, le=1000)
    seed: int = Field(0, ge=0, le=2**63 - 1)
    holdout: int = Field(200, ge=8, le=1_000_000)
    removal_r: int = Field(3, ge=0, le=1000)
    ranking: RankingSpec = Field(default_factory=RankingSpec)
    gates: Gates = Field(default_factory=Gates)
    baseline: ModelSpec | None = None
    batch: BatchSpec = Field(default_factory=BatchSpec)
    privacy: PrivacySpec = Field(default_factory=PrivacySpec)

    @model_validator(mode="after")
    def _privacy(self) -> AuditSpec:
        if self.privacy.redact_text and self.gates.forbidden:
            raise ValueError("gates.forbidden names feature labels, which privacy.redact_text hides; fix: remove "
                             "gates.forbidden or set privacy.redact_text: false")
        return self

    @model_validator(mode="before")
    @classmethod
    def _dispatch(cls, data: Any) -> Any:
        """Parse ``lens_options`` and ``subjects`` with the models of the chosen lens (so an error
        names the right fields), and accept a plain string for ``model`` / ``baseline``."""
        if not isinstance(data, Mapping):
            return data
        data = dict(data)
        for key in ("model", "baseline"):
            if key in data and data[key] is not None:
                data[key] = _model(data[key])
        lens = data.get("lens")
        if lens in LENS_OPTIONS:
            options = data.get("lens_options")
            data["lens_options"] = LENS_OPTIONS[lens].model_validate(options if options is not None else _default_options(lens))
            subjects = data.get("subjects")
            if isinstance(subjects, list):
                data["subjects"] = [SUBJECTS[lens].model_validate(s) if isinstance(s, Mapping) else s for s in subjects]
        return data

    @field_validator("budget", mode="before")
    @classmethod
    def _budget(cls, value: Any) -> Any:
        if isinstance(value, bool):
            raise ValueError("is a boolean; fix: write a positive number of masks per subject, or auto")
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, int) and value < 1:
            raise ValueError(f"is {value}; fix: write a positive number of masks per subject, or auto")
        return value

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
        if value and method in METHODS:
            import spex

            try:
                spex.get_method(method, **value)
            except SpexInputError as exc:
                raise ValueError(f"{exc}; fix: remove or correct that option") from None
        return value

    # -- derived
    @property
    def options(self) -> FeaturesOptions | HeadsOptions | DataOptions:
        assert self.lens_options is not None
        return self.lens_options

    def budget_for(self, n: int) -> int:
        """Masks for a subject with n features: the spec's number, or ``auto`` = ⌈α·n·log2 n⌉ raised to
        the method's minimum. At n ≤ 20, ``auto`` takes all 2^n masks (the exact spectrum, R² = 1) when
        that is at most twice the sampled budget: for a handful of features exact beats estimated."""
        import spex

        minimum = spex.get_method(self.method, **self.method_options).minimum_budget(n)
        if self.budget == "auto":
            budget = max(minimum, math.ceil(self.alpha * n * math.log2(max(n, 2))))
            if n <= EXACT_MAX_N and (1 << n) <= 2 * budget:
                budget = max(1 << n, minimum)
            return int(budget)
        return int(self.budget)

    def check_budget(self, n: int, subject: str) -> int:
        """The budget for a subject, or a SpecError that names ``budget`` and the fix."""
        import spex

        budget = self.budget_for(n)
        minimum = spex.get_method(self.method, **self.method_options).minimum_budget(n)
        exact = n <= EXACT_MAX_N and (1 << n) <= budget
        floor = max(minimum, n + 2) if not exact else 1
        if budget < floor:
            raise SpecError(
                f"spec field `budget`: {budget} masks cannot support subject {subject!r} with n={n} features "
                f"(method {self.method} needs at least {floor}); fix: set budget to at least {floor}, or budget: auto",
                field="budget",
            )
        return budget

    def public_dict(self) -> dict[str, Any]:
        """The spec as JSON-able data (what Prefect parameters and the tasks get; :func:`redact_spec`
        of it is what the metadata DB and MLflow get)."""
        return self.model_dump(mode="json", exclude_none=False)

    @property
    def redact(self) -> bool:
        return self.privacy.redact_text

    def check_offline(self) -> None:
        """Checks that need the spec's text, not the model's weights (run before anything starts):

        * features lens: each subject's features (words / sentences) exist, and the budget supports n;
        * data lens: the training set's n against the budget;
        * a local model folder that ships custom code (config ``auto_map``) without
          ``model.trust_remote_code: true``.

        Raises a :class:`SpecError` naming the field and the fix."""
        for key, model in (("model", self.model), ("baseline", self.baseline)):
            if model is not None:
                check_remote_code(model, key)
        for i, subject in enumerate(self.subjects):
            n = self._offline_n(i, subject)
            if n is not None:
                self.check_budget(n, subject.id)

    def _offline_n(self, i: int, subject: Any) -> int | None:
        if self.lens == "features":
            from spex.lenses.features import segment

            o = self.options
            assert isinstance(o, FeaturesOptions)
            try:
                return len(segment(subject.prompt, o.unit))
            except SpexInputError as exc:
                raise SpecError(f"spec field `subjects[{i}].prompt` (subject {subject.id!r}): {exc}; fix: give a "
                                f"prompt with at least one {o.unit} to use as a feature",
                                field=f"subjects[{i}].prompt") from None
        if self.lens == "data":
            o = self.options
            assert isinstance(o, DataOptions)
            rows = load_training_set(o)
            if o.grouped:
                return len({r.group if r.group is not None else j for j, r in enumerate(rows)})
            return len(rows)
        return None


def check_remote_code(model: ModelSpec, key: str = "model") -> None:
    """A local model folder whose config asks for custom code (``auto_map``) runs only with
    ``trust_remote_code: true`` in the spec (registry models are checked when they are loaded)."""
    if model.trust_remote_code:
        return
    folder = Path(model.uri).expanduser()
    config = folder / "config.json"
    if not config.is_file():
        return
    try:
        needs_code = bool(json.loads(config.read_text(encoding="utf-8")).get("auto_map"))
    except (OSError, ValueError, AttributeError):
        return  # not ours to judge here: loading reports a broken config
    if needs_code:
        raise SpecError(
            f"spec field `{key}.trust_remote_code`: the model at {model.uri} ships custom Python code (config "
            f"'auto_map') and spex does not run it by default; fix: write {key}: {{uri: {model.uri}, "
            f"trust_remote_code: true}} only if you trust that code", field=f"{key}.trust_remote_code")


_TEXT_FIELDS = ("prompt", "target", "prompts", "answers", "text")


def _redacted(value: Any) -> Any:
    if isinstance(value, list):
        return [_redacted(v) for v in value]
    if isinstance(value, str):
        return REDACTED
    return value


def redact_spec(spec: Mapping[str, Any]) -> dict[str, Any]:
    """A spec dict (``public_dict``) as it may be stored: when ``privacy.redact_text`` is on, subjects'
    texts (prompt, target, prompts, answers, text; a classifier's integer class stays), the system
    prompt, the heads lens' reference prompts and inline training texts become ``[redacted]``."""
    spec = dict(spec)
    if not (spec.get("privacy") or {}).get("redact_text"):
        return spec
    spec["subjects"] = [{k: (_redacted(v) if k in _TEXT_FIELDS else v) for k, v in s.items()}
                        for s in spec.get("subjects") or []]
    options = dict(spec.get("lens_options") or {})
    for key in ("system", "reference"):
        if options.get(key) is not None:
            options[key] = _redacted(options[key])
    if isinstance(options.get("train"), list):
        options["train"] = [{**row, "text": REDACTED} for row in options["train"]]
    spec["lens_options"] = options
    return spec


def redact_subject_info(info: dict[str, Any]) -> dict[str, Any]:
    """A prepared subject (``tasks.prepare``) without its text: labels ``f0..``, the view's text dropped
    (the features' offsets stay), the scored target / response and text-bearing descriptions removed.
    The heads lens keeps its labels and grid: head names (``L0H3``) carry no text of the prompts."""
    n = int(info["n"])
    view = dict(info.get("view") or {})
    describe = {k: v for k, v in (info.get("describe") or {}).items()
                if k not in ("prompt", "prompts", "system", "target", "targets", "answers", "reference", "replacement",
                             "target_text", "texts")}
    if view.get("kind") == "grid":
        return {**info, "target": REDACTED if info.get("target") is not None else None, "describe": describe}
    if "text" in view:
        view["text"] = None
    if "target" in view:
        view["target"] = REDACTED
    if "examples" in view:
        view["examples"] = [{"text": REDACTED, "label": e.get("label")} for e in view["examples"]]
    view["redacted"] = True
    return {**info, "labels": [f"f{i}" for i in range(n)], "view": view,
            "target": REDACTED if info.get("target") is not None else None, "describe": describe}


def _default_options(lens: str) -> dict[str, Any]:
    if lens == "data":
        return {"train": "builtin:sentiment"}
    return {}


# --------------------------------------------------------------------------------------------- loading
_HINTS: dict[str, str] = {
    "model": "write the model as a URI: a folder, a .gguf file, builtin:smollm2-135m-instruct, models:/<name>/<version> or models:/<name>@<alias>",
    "model.uri": "give a folder, a .gguf file, builtin:<name> or models:/<name>/<version>",
    "lens": "use one of: features, heads, data",
    "method": "use one of: proxyspex, spex, linear, faith_banzhaf",
    "budget": "write a positive number of masks per subject, or auto",
    "alpha": "write a positive number (the budget is alpha * n * log2 n masks); 2-8 is typical",
    "seed": "write a non-negative integer",
    "holdout": "write the number of held-out masks (at least 8; the papers use 1000)",
    "subjects": "list the subjects inline, or write subjects: {file: subjects.jsonl}",
    "gates.faithfulness_min": "write a held-out R² threshold between -1 and 1, e.g. 0.7",
    "gates.top_k_jaccard_min": "write an overlap threshold between 0 and 1, e.g. 0.5",
    "gates.max_rank_shift": "write a non-negative number of ranks, e.g. 5",
    "gates.forbidden": "write a list whose entries are a feature label or a list of labels",
    "ranking.index": f"use one of: {', '.join(INDEX_NAMES)}",
    "ranking.top_k": "write a positive integer, e.g. 10",
    "subjects.id": "give each subject a short unique id",
    "subjects.prompt": "give the prompt text",
    "subjects.prompts": "give a list of prompts",
    "subjects.answers": "give one answer per prompt",
    "subjects.text": "give the target example's text",
    "subjects.label": "give the target example's class",
    "lens_options.train": "give inline examples, a JSONL file or builtin:sentiment",
    "baseline": "write the baseline model's URI, e.g. models:/<name>/<version>",
}


def _loc(loc: Sequence[Any]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part in ("FeaturesSubject", "HeadsSubject", "DataSubject", "FeaturesOptions", "HeadsOptions",
                      "DataOptions", "ModelSpec", "list[str]", "str", "int", "function-after[_same_length(), HeadsSubject]"):
            continue
        elif isinstance(part, str) and (part.startswith("function-") or part.startswith("literal[")):
            continue
        else:
            out += ("." if out else "") + str(part)
    return out


def _fields_of(loc: str) -> list[str]:
    """Known field names at the level of ``loc`` (for 'did you mean')."""
    parts = loc.split(".")
    table: dict[str, type[BaseModel]] = {"": AuditSpec, "gates": Gates, "ranking": RankingSpec, "batch": BatchSpec,
                                          "model": ModelSpec, "baseline": ModelSpec, "privacy": PrivacySpec}
    parent = ".".join(parts[:-1])
    parent_key = parent.split("[")[0]
    if parent_key in table:
        return list(table[parent_key].model_fields)
    if parent_key == "lens_options":
        return sorted({f for m in LENS_OPTIONS.values() for f in m.model_fields})
    if parent_key == "subjects":
        return sorted({f for m in SUBJECTS.values() for f in m.model_fields})
    return []


def _one_line(exc: ValidationError, prefix: str = "") -> tuple[str, str]:
    """(field, message) for the first error of a pydantic ValidationError, in the spec's words."""
    errors = exc.errors(include_url=False)
    # A misspelt field shows up twice (missing + unknown): the unknown one says "did you mean".
    err = next((e for e in errors if e["type"] == "extra_forbidden"), errors[0])
    inner = _loc(err["loc"])
    loc = prefix + ("." if prefix and inner and not inner.startswith("[") else "") + inner
    kind = err["type"]
    given = err.get("input")
    if kind == "extra_forbidden":
        name = loc.split(".")[-1].split("[")[0]
        close = difflib.get_close_matches(name, _fields_of(loc), n=1)
        hint = f"did you mean `{close[0]}`?" if close else f"remove it (known fields: {', '.join(_fields_of(loc)) or '-'})"
        return loc, f"spec field `{loc}` is not a known field; fix: {hint}"
    if kind == "missing":
        hint = _HINTS.get(loc) or _HINTS.get(_generic_loc(loc)) or "add it"
        return loc, f"spec field `{loc}` is missing; fix: {hint}"
    message = err["msg"]
    if message.startswith("Value error, "):
        message = message[len("Value error, "):]
    if "fix:" in message:
        return loc, f"spec field `{loc or 'spec'}`: {message}"
    shown = json.dumps(given, default=str) if not isinstance(given, (dict, list)) else type(given).__name__
    if len(shown) > 60:
        shown = shown[:57] + "..."
    generic = _HINTS.get(loc) or _HINTS.get(_generic_loc(loc)) or "correct the value"
    return loc, f"spec field `{loc or 'spec'}`: {message} (got {shown}); fix: {generic}"


def _generic_loc(loc: str) -> str:
    import re

    return re.sub(r"\[\d+\]", "", loc)


def validate_spec(data: Any, *, base_dir: Path | None = None) -> AuditSpec:
    """Validate a spec given as a mapping (YAML already parsed); relative files resolve against ``base_dir``."""
    if not isinstance(data, Mapping):
        raise SpecError(
            f"the spec must be a YAML mapping of fields (model, lens, subjects, ...); got {type(data).__name__}; "
            f"fix: start the file with `model: <uri>`",
            field="spec",
        )
    data = dict(data)
    if "lens" in data and data["lens"] not in LENSES:
        close = difflib.get_close_matches(str(data["lens"]), LENSES, n=1)
        raise SpecError(f"spec field `lens`: unknown lens {data['lens']!r}; fix: use one of: {', '.join(LENSES)}"
                        + (f" (did you mean {close[0]}?)" if close else ""), field="lens")
    if "method" in data and data["method"] not in METHODS:
        close = difflib.get_close_matches(str(data["method"]), METHODS, n=1)
        raise SpecError(f"spec field `method`: unknown method {data['method']!r}; fix: use one of: {', '.join(METHODS)}"
                        + (f" (did you mean {close[0]}?)" if close else ""), field="method")
    data["subjects"] = _expand_subjects(data.get("subjects"), base_dir)
    lens = data.get("lens")
    options = data.get("lens_options")
    if lens == "data" and isinstance(options, Mapping) and isinstance(options.get("train"), str):
        train = options["train"]
        if not train.startswith("builtin:"):
            path = Path(train).expanduser()
            if not path.is_absolute() and base_dir is not None:
                path = base_dir / path
            data["lens_options"] = options = {**options, "train": str(path)}
    # Lens-specific parts first, with their own models, so an error names the lens's own fields.
    if lens in LENS_OPTIONS:
        if options is not None and not isinstance(options, (Mapping, BaseModel)):
            raise SpecError(f"spec field `lens_options`: expected a mapping of {lens} options, got "
                            f"{type(options).__name__}; fix: write e.g. lens_options: {{}}", field="lens_options")
        try:
            data["lens_options"] = LENS_OPTIONS[lens].model_validate(options if options is not None else _default_options(lens))
        except ValidationError as exc:
            field, message = _one_line(exc, "lens_options")
            raise SpecError(message, field=field) from None
        if isinstance(data["subjects"], list):
            parsed = []
            for i, s in enumerate(data["subjects"]):
                try:
                    parsed.append(SUBJECTS[lens].model_validate(s))
                except ValidationError as exc:
                    field, message = _one_line(exc, f"subjects[{i}]")
                    raise SpecError(message, field=field) from None
            data["subjects"] = parsed
    privacy, gates = data.get("privacy"), data.get("gates")
    if (isinstance(privacy, Mapping) and privacy.get("redact_text") is True and isinstance(gates, Mapping)
            and gates.get("forbidden")):
        raise SpecError("spec field `gates.forbidden`: forbidden interactions name feature labels, which "
                        "privacy.redact_text hides; fix: remove gates.forbidden or set privacy.redact_text: false",
                        field="gates.forbidden")
    try:
        return AuditSpec.model_validate(data)
    except ValidationError as exc:
        field, message = _one_line(exc)
        raise SpecError(message, field=field) from None


def _expand_subjects(value: Any, base_dir: Path | None) -> Any:
    """``subjects: {file: x.jsonl}`` or ``subjects: x.jsonl`` -> the list of rows in that file."""
    file = None
    if isinstance(value, str):
        file = value
    elif isinstance(value, Mapping) and set(value) == {"file"}:
        file = value["file"]
    elif isinstance(value, Mapping):
        raise SpecError("spec field `subjects`: a mapping must be exactly {file: <path.jsonl>}; fix: list the subjects "
                        "inline or write subjects: {file: subjects.jsonl}", field="subjects")
    if file is None:
        if value is None:
            return value
        if not isinstance(value, list):
            raise SpecError(f"spec field `subjects`: expected a list of subjects or {{file: path.jsonl}}, got "
                            f"{type(value).__name__}; fix: list the subjects inline", field="subjects")
        return [dict(s, id=str(s.get("id", f"s{i + 1}"))) if isinstance(s, Mapping) else s for i, s in enumerate(value)]
    path = Path(str(file)).expanduser()
    if not path.is_absolute() and base_dir is not None:
        path = base_dir / path
    return read_jsonl(path, field="subjects.file", default_id=True)


def read_jsonl(path: Path, *, field: str, default_id: bool = False) -> list[dict[str, Any]]:
    """Rows of a JSONL file; a clear SpecError naming ``field`` and the line on any problem."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise SpecError(f"spec field `{field}`: cannot read {path}: {exc.strerror or exc}; fix: give an existing "
                        f"JSONL file (one JSON object per line), relative to the spec's folder", field=field) from None
    rows = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise SpecError(f"spec field `{field}`: {path} line {number} is not JSON ({exc.msg}); fix: write one JSON "
                            f"object per line", field=field) from None
        if not isinstance(row, dict):
            raise SpecError(f"spec field `{field}`: {path} line {number} is not a JSON object; fix: write one "
                            f"object per line, e.g. {{\"id\": \"s1\", \"prompt\": \"...\"}}", field=field)
        if default_id:
            row.setdefault("id", f"s{len(rows) + 1}")
            row["id"] = str(row["id"])
        rows.append(row)
    if not rows:
        raise SpecError(f"spec field `{field}`: {path} holds no rows; fix: write one JSON object per line", field=field)
    return rows


class _DuplicateKey(Exception):
    def __init__(self, key: Any, line: int) -> None:
        super().__init__(key)
        self.key, self.line = key, line


def _unique_key_loader() -> type:
    import yaml

    class Loader(yaml.SafeLoader):
        """PyYAML's safe loader, except that a key given twice in one mapping is an error: a spec that
        says ``budget:`` twice would otherwise run with whichever came last."""

        def construct_mapping(self, node: Any, deep: bool = False) -> Any:
            if isinstance(node, yaml.MappingNode):
                seen: set[Any] = set()
                for key_node, _ in node.value:
                    if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == "tag:yaml.org,2002:merge":
                        continue  # merge keys (<<) may override by design
                    key = self.construct_object(key_node, deep=deep)
                    if isinstance(key, (str, int, float, bool)) or key is None:
                        if key in seen:
                            raise _DuplicateKey(key, key_node.start_mark.line + 1)
                        seen.add(key)
            return super().construct_mapping(node, deep=deep)

    return Loader


class _LazyLoader:
    """Build the loader class on first use (this module imports PyYAML lazily)."""

    _cls: type | None = None

    def __call__(self, stream: Any) -> Any:
        if _LazyLoader._cls is None:
            _LazyLoader._cls = _unique_key_loader()
        return _LazyLoader._cls(stream)


_UniqueKeyLoader = _LazyLoader()


def load_spec(source: str | Path | Mapping[str, Any]) -> AuditSpec:
    """Read and validate a spec from a YAML file (or an already parsed mapping)."""
    if isinstance(source, Mapping):
        return validate_spec(source)
    import yaml

    path = Path(source).expanduser()
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SpecError(f"spec file {path} does not exist; fix: pass the path of a YAML audit spec", field="spec") from None
    except OSError as exc:
        raise SpecError(f"cannot read spec file {path}: {exc.strerror or exc}; fix: pass the path of a readable YAML "
                        f"audit spec", field="spec") from None
    except UnicodeDecodeError:
        raise SpecError(f"spec file {path} is not UTF-8 text; fix: save it as UTF-8 YAML", field="spec") from None
    try:
        data = yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506  (a SafeLoader that refuses duplicate keys)
    except _DuplicateKey as exc:
        raise SpecError(f"spec file {path} line {exc.line}: spec field `{exc.key}` is given twice (YAML would keep "
                        f"only the last one silently); fix: keep one `{exc.key}:`", field=str(exc.key)) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1} column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise SpecError(f"spec file {path}{where}: invalid YAML ({problem}); fix: check the indentation and quoting "
                        f"there", field="spec") from None
    if data is None:
        raise SpecError(f"spec file {path} is empty; fix: write at least model, lens and subjects", field="spec")
    return validate_spec(data, base_dir=path.parent)


# --------------------------------------------------------------------------------------------- subjects -> value functions
def subject_payload(spec: AuditSpec, subject: FeaturesSubject | HeadsSubject | DataSubject) -> dict[str, Any]:
    """What determines a subject independently of the model: lens, lens options, the subject's content.

    Its digest identifies the subject across model versions (the metadata DB's subject key), so the
    same prompt audited on two versions is one subject with two sets of interactions.
    """
    body = subject.model_dump(mode="json", exclude={"id"})
    payload = {"lens": spec.lens, "options": spec.options.model_dump(mode="json"), "subject": body}
    if spec.redact:  # what is recorded differs (labels f0.., no text): a subject of its own, cached apart
        payload["privacy"] = spec.privacy.model_dump(mode="json")
    return payload


def subject_digest(spec: AuditSpec, subject: FeaturesSubject | HeadsSubject | DataSubject) -> str:
    return content_hash(subject_payload(spec, subject))


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
        raw = read_jsonl(Path(options.train), field="lens_options.train")
        try:
            rows = [TrainExample.model_validate(r) for r in raw]
        except ValidationError as exc:
            field, message = _one_line(exc, "lens_options.train")
            raise SpecError(message, field=field) from None
    if options.limit is not None and options.limit < len(rows):
        keep = np.sort(np.random.default_rng(options.sample_seed).permutation(len(rows))[: options.limit])
        rows = [rows[i] for i in keep]
    return rows


_LENS_FIELDS = {"prompt": "subjects[{i}].prompt", "target": "subjects[{i}].target", "prompts": "subjects[{i}].prompts",
                "answers": "subjects[{i}].answers", "text": "subjects[{i}].text", "label": "subjects[{i}].label",
                "chat": "lens_options.chat", "system": "lens_options.system", "mask": "lens_options.mask",
                "unit": "lens_options.unit", "layers": "lens_options.layers", "reference": "lens_options.reference",
                "classes": "lens_options.classes", "train": "lens_options.train", "model": "model"}


def build_value_function(spec: AuditSpec, subject: Any, model: Any) -> Any:
    """The lens value function of one subject on a loaded model (:class:`spex.models.LoadedModel`).

    A lens that rejects its input names its argument (``SpexInputError.field``); the error is re-raised
    as a :class:`SpecError` naming the spec field it came from (``lens_options.chat``,
    ``subjects[2].target``), with the subject's id."""
    try:
        return _build_value_function(spec, subject, model)
    except SpecError:
        raise
    except SpexInputError as exc:
        index = next((i for i, s in enumerate(spec.subjects) if s.id == subject.id), 0)
        field = _LENS_FIELDS.get(exc.field or "", "subjects[{i}]").format(i=index)
        message = " ".join(str(exc).split())
        if "fix:" not in message:
            message += "; fix: correct that field"
        raise SpecError(f"spec field `{field}` (subject {subject.id!r}): {message}", field=field) from None


def _build_value_function(spec: AuditSpec, subject: Any, model: Any) -> Any:
    import spex.lenses

    o = spec.options
    if spec.lens == "features":
        assert isinstance(o, FeaturesOptions)
        return spex.lenses.features(model, subject.prompt, target=subject.target, unit=o.unit, mask=o.mask,
                                    system=o.system, chat=o.chat, max_new_tokens=o.max_new_tokens,
                                    prefix_cache=o.prefix_cache)
    if spec.lens == "heads":
        assert isinstance(o, HeadsOptions)
        return spex.lenses.heads(model, subject.prompts, subject.answers, layers=o.layers, mode=o.mode,
                                 rescale=o.rescale, reference=o.reference, chat=o.chat)
    assert isinstance(o, DataOptions)
    from spex.lenses.data import LogisticTrainer

    rows = load_training_set(o)
    encoder = model if o.encoder == "model" else o.encoder
    groups = [r.group if r.group is not None else i for i, r in enumerate(rows)] if o.grouped else None
    return spex.lenses.data([r.text for r in rows], [r.label for r in rows], subject.text, subject.label,
                            encoder=encoder, groups=groups, trainer=LogisticTrainer(l2=o.l2, steps=o.steps),
                            classes=o.classes)


def subject_view(spec: AuditSpec, subject: Any, vf: Any) -> dict[str, Any]:
    """What the report needs to draw a subject, independent of the model's outputs: the text and
    where each feature sits in it (features), the layer x head grid (heads), the examples (data)."""
    if spec.lens == "features":
        return {"kind": "text", "text": subject.prompt, "spans": [list(s) for s in getattr(vf, "spans", [])]}
    if spec.lens == "heads":
        labels = list(vf.feature_labels)
        return {"kind": "grid", "labels": labels, "layers": list(getattr(vf, "layers", [])),
                "prompts": len(subject.prompts)}
    rows = load_training_set(spec.options)  # type: ignore[arg-type]
    return {"kind": "examples", "target": subject.text, "target_label": str(subject.label),
            "examples": [{"text": r.text, "label": str(r.label)} for r in rows]}
