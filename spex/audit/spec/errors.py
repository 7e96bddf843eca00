"""Spec errors as ONE line: the field (``gates.faithfulness_min``), what was wrong, what to write instead.

A spec is written by hand and read by CI: a user never has to read a traceback to fix it. This
module turns a pydantic ``ValidationError`` into that line. The field path is read off the spec's own
models: a location part that names a field of the model at that point (or a list index) is kept;
any other part is pydantic's label for a union member or a validator and is dropped — so the path
does not depend on how a pydantic version spells its internals.
"""

from __future__ import annotations

import difflib
import json
import re
import typing
from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel, ValidationError

from spex.engine import INDICES, METHODS
from spex.errors import SpecError, SpexInputError
from spex.lenses import registry

__all__ = ["SpecError", "one_line", "spec_error"]

_HINTS: dict[str, str] = {
    "model": "write the model as a URI: a folder, a .gguf file, builtin:smollm2-135m-instruct, models:/<name>/<version> or models:/<name>@<alias>",
    "model.uri": "give a folder, a .gguf file, builtin:<name> or models:/<name>/<version>",
    "lens": f"use one of: {', '.join(registry.names())}",
    "method": f"use one of: {', '.join(METHODS)}",
    "budget": "write a positive number of masks per subject, or auto",
    "alpha": "write a positive number (the budget is alpha * n * log2 n masks); 2-8 is typical",
    "seed": "write a non-negative integer",
    "holdout": "write the number of held-out masks (at least 8; the papers use 1000)",
    "subjects": "list the subjects inline, or write subjects: {file: subjects.jsonl}",
    "gates.faithfulness_min": "write a held-out R² threshold between -1 and 1, e.g. 0.7",
    "gates.top_k_jaccard_min": "write an overlap threshold between 0 and 1, e.g. 0.5",
    "gates.max_rank_shift": "write a non-negative number of ranks, e.g. 5",
    "gates.forbidden": "write a list whose entries are a feature label or a list of labels",
    "ranking.index": f"use one of: {', '.join(INDICES)}",
    "ranking.top_k": "write a positive integer, e.g. 10",
    "subjects.id": "give each subject a short unique id",
    "subjects.prompt": "give the prompt text",
    "subjects.prompts": "give a list of prompts",
    "subjects.answers": "give one answer per prompt",
    "subjects.text": "give the target example's text",
    "subjects.label": "give the target example's class",
    "subjects.question": "give the question asked about the documents",
    "subjects.documents": "give the passages as a list of strings (or one long text with lens_options.unit: sentence)",
    "lens_options.train": "give inline examples, a JSONL file or builtin:sentiment",
    "baseline": "write the baseline model's URI, e.g. models:/<name>/<version>",
}


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    """The models an annotation holds, through lists, unions and Optional (``list[X] | str`` -> [X])."""
    if isinstance(annotation, type) and not typing.get_args(annotation) and issubclass(annotation, BaseModel):
        return [annotation]
    return [m for arg in typing.get_args(annotation) for m in _models_in(arg)]


def _field_names(models: list[type[BaseModel]]) -> list[str]:
    if len(models) == 1:
        return list(models[0].model_fields)
    return sorted({f for m in models for f in m.model_fields})


def _walk(model: type[BaseModel], loc: Sequence[Any], keep_last: bool) -> tuple[str, list[str]]:
    """(the spec path of ``loc``, the field names known where its last part sits).

    A part is kept when it is a list index or a field of a model reachable at that point; the last
    part of an unknown-field error (``keep_last``) is the unknown key and is kept too."""
    path = ""
    models: list[type[BaseModel]] = [model]
    known = _field_names(models)
    for position, part in enumerate(loc):
        if isinstance(part, int):
            path += f"[{part}]"
            continue
        known = _field_names(models)
        owner = next((m for m in models if part in m.model_fields), None)
        if owner is None:
            if keep_last and position == len(loc) - 1:
                path += ("." if path else "") + str(part)
            continue  # otherwise: a union member's or a validator's label
        path += ("." if path else "") + str(part)
        models = _models_in(owner.model_fields[part].annotation)
    return path, known


def _generic(loc: str) -> str:
    return re.sub(r"\[\d+\]", "", loc)


_LENS_SECTIONS: dict[str, tuple[str, str]] = {
    # section of the spec -> (how its location looks, the registration's model of it)
    "subjects": (r"subjects\[\d+\]\.(\w+)", "subject"),
    "lens_options": (r"lens_options\.(\w+)", "options"),
}


def _other_lens_field(model: type[BaseModel], loc: str, name: str, errors: list[Any], err: Any) -> SpecError | None:
    """An unknown field of a subject or of ``lens_options`` that another lens has (``text`` is a data
    subject's, ``layers`` a heads option): say whose it is and what this lens takes instead, rather
    than "did you mean" a field of this lens that merely looks alike."""
    this = getattr(model, "registration", None)
    section = next((s for s, (pattern, _) in _LENS_SECTIONS.items() if re.fullmatch(pattern, loc)), None)
    if this is None or section is None:
        return None
    part = _LENS_SECTIONS[section][1]
    owners = [r.name for r in registry.registrations()
              if r.name != this.name and name in getattr(r, part).model_fields]
    if not owners:
        return None
    whose = " / ".join(owners) + (" lens" if section == "subjects" else " lens's options")
    parent = tuple(err["loc"][:-1])
    missing = [str(e["loc"][-1]) for e in errors if e["type"] == "missing" and tuple(e["loc"][:-1]) == parent]
    if missing:
        takes = f"the {this.name} lens takes {', '.join(f'`{m}`' for m in missing)}"
        fix = f"write {', '.join(f'`{m}`' for m in missing)} instead of `{name}`, or set lens: {owners[0]}"
    else:
        known = ", ".join(getattr(this, part).model_fields)
        takes = f"the {this.name} lens's {'subject fields' if section == 'subjects' else 'options'} are {known}"
        fix = f"remove `{name}`, or set lens: {owners[0]}"
    return SpecError(f"spec field `{loc}` is not a known field: `{name}` belongs to the {whose}; {takes}; fix: {fix}",
                     field=loc)


def one_line(exc: ValidationError, model: type[BaseModel], prefix: str = "", skip: int = 0) -> SpecError:
    """The SpecError for the first error of a pydantic ValidationError of ``model``, in the spec's words.

    ``prefix`` puts the model's own path in front (``lens_options`` for a lens's options); ``skip``
    drops leading location parts that are not fields (a tagged union's tag).
    A missing field yields to an unknown field beside it: that pair is one misspelling, and the
    unknown one says "did you mean"."""
    errors = exc.errors(include_url=False)
    err = errors[0]
    if err["type"] == "missing":
        parent = tuple(err["loc"][:-1])
        err = next((e for e in errors if e["type"] == "extra_forbidden" and tuple(e["loc"][:-1]) == parent), err)
    cause = (err.get("ctx") or {}).get("error")
    if isinstance(cause, SpecError):  # a validator that knows the spec field has said it all
        return cause
    kind = err["type"]
    inner, known = _walk(model, list(err["loc"])[skip:], keep_last=kind == "extra_forbidden")
    loc = prefix + ("." if prefix and inner and not inner.startswith("[") else "") + inner
    given = err.get("input")
    if kind == "extra_forbidden":
        name = loc.split(".")[-1].split("[")[0]
        other = _other_lens_field(model, loc, name, errors, err)
        if other is not None:
            return other
        close = difflib.get_close_matches(name, known, n=1)
        hint = f"did you mean `{close[0]}`?" if close else f"remove it (known fields: {', '.join(known) or '-'})"
        return SpecError(f"spec field `{loc}` is not a known field; fix: {hint}", field=loc)
    if kind == "missing":
        hint = _HINTS.get(loc) or _HINTS.get(_generic(loc)) or "add it"
        return SpecError(f"spec field `{loc}` is missing; fix: {hint}", field=loc)
    message = err["msg"]
    if message.startswith("Value error, "):
        message = message[len("Value error, "):]
    if "fix:" in message:
        return SpecError(f"spec field `{loc or 'spec'}`: {message}", field=loc)
    shown = json.dumps(given, default=str) if not isinstance(given, (dict, list)) else type(given).__name__
    if len(shown) > 60:
        shown = shown[:57] + "..."
    generic = _HINTS.get(loc) or _HINTS.get(_generic(loc)) or "correct the value"
    return SpecError(f"spec field `{loc or 'spec'}`: {message} (got {shown}); fix: {generic}", field=loc)


def spec_error(exc: SpexInputError, subject_id: str, index: int, argument_fields: dict[str, str] | Any) -> SpecError:
    """A lens's SpexInputError (naming its argument, ``field="target"``) as a SpecError naming the spec
    field it came from (``subjects[2].target``) and the subject; a SpecError passes unchanged."""
    if isinstance(exc, SpecError):
        return exc
    field = argument_fields.get(exc.field or "", "subjects[{i}]").format(i=index)
    message = " ".join(str(exc).split())
    if "fix:" not in message:
        message += "; fix: correct that field"
    return SpecError(f"spec field `{field}` (subject {subject_id!r}): {message}", field=field)
