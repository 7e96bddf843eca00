"""Registration of the context lens: the passages of a RAG prompt (or the sentences / paragraphs of a
long context) are the features; the question and the chat template are always kept.

Implementation: :mod:`spex.lenses.context_passages` (torch). The spec part is here, torch-free: the
preflight counts a subject's passages from its text (:func:`sources`) before a model loads, so a budget
too small for n fails in a second.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import Field, field_validator

from spex.errors import SpexInputError
from spex.lenses.registration import LensRegistration, SpecModel
from spex.lenses.segmentation import has_visible_text, segment

LENS_VERSION = 1  # bump when the value of a mask changes for the same inputs

# ContextCite's default prompt (context_cite.context_citer.DEFAULT_PROMPT_TEMPLATE, with its {query} named
# {question} here), so an audit and a ContextCite run read the same prompt.
DEFAULT_TEMPLATE = "Context: {context}\n\nQuery: {question}"
PLACEHOLDERS = ("{context}", "{question}")
LABEL_WORDS, LABEL_CHARS = 6, 48

Unit = Literal["document", "paragraph", "sentence"]
_PARAGRAPH = re.compile(r"\S.*?(?=\n[ \t]*\n|\Z)", re.S)


class ContextOptions(SpecModel):
    """Options of the context lens (see :func:`spex.lenses.context`).

    * ``unit``: a source is a whole ``document`` (default), or each ``paragraph`` / ``sentence`` of the
      documents (a long context given as one text).
    * ``template``: the user message; ``{context}`` becomes the kept sources, ``{question}`` the
      question. Default: ContextCite's ``Context: {context}\\n\\nQuery: {question}``.
    * ``separator``: what stands between two documents (sources inside a document keep the text's own
      whitespace between them).
    * ``batch_tokens``: padded tokens per model call; the ablation engine packs rows up to it (a
      spec's ``batch.token_budget`` overrides it).
    """

    unit: Unit = "document"
    template: str = DEFAULT_TEMPLATE
    separator: str = "\n\n"
    system: str | None = None
    chat: bool | None = None
    max_new_tokens: int = Field(48, ge=1, le=4096)
    prefix_cache: bool | None = None
    batch_tokens: int = Field(8192, ge=16, le=10_000_000)

    @field_validator("template")
    @classmethod
    def _template(cls, value: str) -> str:
        for placeholder in PLACEHOLDERS:
            count = value.count(placeholder)
            if count != 1:
                raise ValueError(f"holds {placeholder} {count} times; fix: write {placeholder} exactly once, e.g. "
                                 f"{DEFAULT_TEMPLATE!r}")
        return value


class ContextExpectation(SpecModel):
    """What the subject's author expects (read by the benchmark, never scored): the reference answer,
    the passages the answer needs (``needs``), and whether they are needed together (``bridge``) or
    either one suffices (``redundant``)."""

    answer: str | None = None
    needs: list[int] = Field(default_factory=list)
    kind: Literal["bridge", "redundant"] | None = None


class ContextSubject(SpecModel):
    """A question about documents: the documents (a list of passages, or one long text to split by
    ``unit``) are the features; ``target``: the answer to score (default: the model's own answer)."""

    id: str = Field(min_length=1, max_length=200)
    question: str
    documents: list[str] | str
    target: str | None = None
    expect: ContextExpectation | None = None

    @field_validator("question")
    @classmethod
    def _question(cls, value: str) -> str:
        if not has_visible_text(value):
            raise ValueError("is empty; fix: give the question the documents are asked about")
        return value

    @field_validator("documents")
    @classmethod
    def _documents(cls, value: list[str] | str) -> list[str] | str:
        items = [value] if isinstance(value, str) else value
        if not items:
            raise ValueError("is an empty list; fix: give the passages the question is asked about")
        for i, text in enumerate(items):
            if not has_visible_text(text):
                where = "is" if isinstance(value, str) else f"entry {i} is"
                raise ValueError(f"{where} empty (no visible text); fix: give each passage its text, or drop it")
        return value


# --------------------------------------------------------------------------------------------- sources
def sources(documents: list[str] | str, unit: Unit, separator: str) -> list[tuple[str, str]]:
    """The features of a subject as ``(separator before it, its text)``, in reading order.

    A document's paragraphs / sentences keep the document's own whitespace between them; documents
    are joined by ``separator``. The context of a mask is the kept sources, each after its separator
    (the first kept one without): the way ContextCite's partitioner renders an ablated context."""
    documents = [documents] if isinstance(documents, str) else list(documents)
    out: list[tuple[str, str]] = []
    for d, text in enumerate(documents):
        if unit == "document":
            spans = [(len(text) - len(text.lstrip()), len(text.rstrip()))]
        elif unit == "paragraph":
            spans = [m.span() for m in _PARAGRAPH.finditer(text)]
        else:
            spans = segment(text, "sentence")
        for k, (a, b) in enumerate(spans):
            before = separator if k == 0 else text[spans[k - 1][1]:a]
            out.append(("" if d == 0 and k == 0 else before, text[a:b]))
    if not out:
        raise SpexInputError("the documents hold no passages to use as features; fix: give at least one passage",
                             field="documents")
    return out


def label(text: str) -> str:
    """A source as people read it in a table: its first words (``Mira Tolsen was born in the…``)."""
    words = text.split()
    short = " ".join(words[:LABEL_WORDS])
    if len(short) > LABEL_CHARS:
        short = short[: LABEL_CHARS - 1].rstrip()
    return short + ("…" if short != " ".join(words) else "")


def labels(texts: list[str]) -> list[str]:
    """Labels of every source; a label two sources share gets its source number (``… (#3)``)."""
    out = [label(t) for t in texts]
    counts: dict[str, int] = {}
    for x in out:
        counts[x] = counts.get(x, 0) + 1
    return [f"{x} (#{i})" if counts[x] > 1 else x for i, x in enumerate(out)]


def count_features(options: ContextOptions, subject: ContextSubject) -> int:
    """n from the text alone: the subject's documents, paragraphs or sentences."""
    return len(sources(subject.documents, options.unit, options.separator))


def view(options: ContextOptions, subject: ContextSubject, vf: Any) -> dict[str, Any]:
    """The question, the scored answer and each source's text (the report shades them by effect)."""
    texts = [t for _, t in sources(subject.documents, options.unit, options.separator)]
    return {"kind": "documents", "question": subject.question, "target": getattr(vf, "target", subject.target),
            "documents": texts, "unit": options.unit}


def redact_options(options: dict[str, Any], redact: Any) -> dict[str, Any]:
    """The system prompt and the template are the user's text."""
    for key in ("system", "template"):
        if options.get(key) is not None:
            options = {**options, key: redact(options[key])}
    return options


REGISTRATION = LensRegistration(
    name="context",
    version=LENS_VERSION,
    options=ContextOptions,
    subject=ContextSubject,
    implementation="spex.lenses.context_passages",
    argument_fields={"question": "subjects[{i}].question", "documents": "subjects[{i}].documents",
                     "target": "subjects[{i}].target", "chat": "lens_options.chat", "system": "lens_options.system",
                     "template": "lens_options.template", "unit": "lens_options.unit", "model": "model"},
    view=view,
    count_features=count_features,
    subject_text_fields=("question", "documents", "target", "expect"),
    redact_options=redact_options,
)
