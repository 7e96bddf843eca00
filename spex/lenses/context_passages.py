"""The context lens: which retrieved passages an answer rests on, and which only matter together.

A feature is a source of the context: a document of a RAG prompt, or a paragraph / sentence of a long
context (:func:`spex.lenses.registrations.context.sources`). A mask keeps some sources; the context is
the kept sources joined as ContextCite joins them, the question and the prompt template around it are
always kept, and only then is the chat template applied. Value of a mask: the summed teacher-forced
log-prob of the answer (the model's own greedy answer to the full context, or a ``target`` you give).

It is the features lens with another renderer: :class:`ContextLens` subclasses
:class:`~spex.lenses.prompt_features.FeatureLens`, so the chat template, the target, the memoised
tokenisation, the batched teacher-forced scoring (:mod:`spex.models.scoring`) and the shared-prefix KV
cache (with its check against the plain forward) are the same code.

What the KV cache reuses: the token prefix every masked prompt shares. With ContextCite's template
(``Context: {context}\\n\\nQuery: {question}``) the question comes after the context, so the shared
prefix is the system prompt and the user's ``Context:`` head (SmolLM2: 30 tokens); a template that asks
the question first (``Question: {question}\\n\\nContext: {context}``) shares the question too.
Measured in ``docs/context.md``.

Batching: ``cost`` is each masked prompt's token count (plus the answer's), and ``batch_tokens`` tells
the ablation engine how many padded tokens one model call should hold, so long rows are packed by
tokens rather than by a fixed count.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from spex.errors import SpexInputError
from spex.lenses.base import fingerprint_of
from spex.lenses.prompt_features import FeatureLens
from spex.lenses.registrations.context import (
    DEFAULT_TEMPLATE,
    LENS_VERSION,
    PLACEHOLDERS,
    ContextOptions,
    ContextSubject,
    Unit,
    labels,
    sources,
)
from spex.models import LoadedModel, as_loaded

__all__ = ["LENS_VERSION", "ContextLens", "context", "from_spec"]


class ContextLens(FeatureLens):
    """Value function of the context lens (build it with :func:`context`)."""

    def __init__(self, model: LoadedModel, question: str, documents: Sequence[str] | str, *, unit: Unit,
                 template: str, separator: str, target: str | None, system: str | None, chat: bool | None,
                 max_new_tokens: int, prefix_cache: bool | None, batch_tokens: int | None) -> None:
        if model.kind != "causal-lm":
            raise SpexInputError(f"the context lens scores a causal LM's answer; {model.uri} is a {model.kind}; fix: "
                                 f"audit a causal LM (or load it with kind='causal-lm' if its config is misleading)",
                                 field="model")
        if not isinstance(question, str) or not question.strip():
            raise SpexInputError("question must be a non-empty string; fix: give the question asked about the "
                                 "documents", field="question")
        for placeholder in PLACEHOLDERS:
            if template.count(placeholder) != 1:
                raise SpexInputError(f"template must hold {placeholder} exactly once; fix: write e.g. "
                                     f"{DEFAULT_TEMPLATE!r}", field="template")
        self.question = question
        self.template = template
        self.separator = separator
        self.documents = [documents] if isinstance(documents, str) else list(documents)
        self._sources = sources(self.documents, unit, separator)
        content, spans = self._render_with_spans(np.ones(len(self._sources), dtype=bool))
        super().__init__(model, content, target=target, unit=spans, mask="remove", system=system, chat=chat,
                         max_new_tokens=max_new_tokens, prefix_cache=prefix_cache)
        self.unit = unit
        self.source_texts = [text for _, text in self._sources]
        self.feature_labels = labels(self.source_texts)
        self.batch_tokens = float(batch_tokens) if batch_tokens is not None else None
        self.fingerprint = fingerprint_of(
            lens="context", version=LENS_VERSION, model=model.identity, dtype=str(model.dtype), question=question,
            sources=self._sources, template=template, system=system, chat=self.chat, target_ids=self.target_ids,
        )

    # -- rendering
    def _render_with_spans(self, keep: np.ndarray) -> tuple[str, list[tuple[int, int]]]:
        """The user's message for one mask, and where each kept source sits in it."""
        head, _, rest = self.template.partition("{context}")
        head = head.replace("{question}", self.question)
        tail = rest.replace("{question}", self.question)
        parts, spans, cursor, first = [head], [], len(head), True
        for (before, text), k in zip(self._sources, keep):
            if not k:
                continue
            if not first:
                parts.append(before)
                cursor += len(before)
            parts.append(text)
            spans.append((cursor, cursor + len(text)))
            cursor += len(text)
            first = False
        parts.append(tail)
        return "".join(parts), spans

    def masked_prompt(self, keep: np.ndarray) -> str:
        """The user's message under one mask: the template around the kept sources (before any chat template)."""
        return self._render_with_spans(np.asarray(keep, dtype=bool))[0]

    def describe(self) -> dict[str, Any]:
        out = super().describe()
        out.update(lens="context", unit=self.unit, template=self.template, sources=self.n_features,
                   batch_tokens=self.batch_tokens, mask="remove")
        out.pop("replacement", None)
        return out


def context(model: LoadedModel | str, question: str, documents: Sequence[str] | str, *, unit: Unit = "document",
            template: str = DEFAULT_TEMPLATE, separator: str = "\n\n", target: str | None = None,
            system: str | None = None, chat: bool | None = None, max_new_tokens: int = 48,
            prefix_cache: bool | None = None, batch_tokens: int | None = 8192) -> ContextLens:
    """A value function over the sources of a context: ``vf(masks (B, n)) -> (B,)``.

    * ``documents``: the passages (a list), or one long text; ``unit``: ``"document"`` (each passage is
      a feature), ``"paragraph"`` or ``"sentence"`` (each paragraph / sentence of the documents is).
    * ``template``: the user message with ``{context}`` and ``{question}`` (default: ContextCite's).
    * ``target``: the answer to score (default: the model's greedy answer to the full context, at most
      ``max_new_tokens`` tokens, kept as ``vf.target``).
    * ``prefix_cache``: reuse the KV cache of the prefix every masked prompt shares (default ``None``:
      on when it has >= 8 tokens); ``batch_tokens``: padded tokens per model call for the engine.
    """
    return ContextLens(as_loaded(model), question, documents, unit=unit, template=template, separator=separator,
                       target=target, system=system, chat=chat, max_new_tokens=max_new_tokens,
                       prefix_cache=prefix_cache, batch_tokens=batch_tokens)


def from_spec(options: ContextOptions, subject: ContextSubject, model: LoadedModel) -> ContextLens:
    """The value function of one spec subject (``lens: context``)."""
    return context(model, subject.question, subject.documents, unit=options.unit, template=options.template,
                   separator=options.separator, target=subject.target, system=options.system, chat=options.chat,
                   max_new_tokens=options.max_new_tokens, prefix_cache=options.prefix_cache,
                   batch_tokens=options.batch_tokens)
