"""The lenses: ways to turn "remove a set of things" into one number per mask.

* ``spex.lenses.features(model, prompt, ...)`` — words / sentences / spans of a prompt;
* ``spex.lenses.heads(model, prompts, answers, ...)`` — attention heads;
* ``spex.lenses.data(train_texts, train_labels, target_text, target_label, ...)`` — training examples;
* ``spex.lenses.context(model, question, documents, ...)`` — the passages of a RAG prompt (or the
  sentences / paragraphs of a long context), the question always kept.

Each returns a :class:`~spex.lenses.base.ValueFunction`. The lens functions load on first use: the
ablation engine imports :mod:`spex.lenses.base` and the spec imports :mod:`spex.lenses.registry`, and
neither may pay for importing torch.

Layout and naming: the package attribute ``spex.lenses.<lens>`` is the lens *function*, so no module
may share its name (importing a submodule binds the package attribute to it). The implementation
modules are named for what their features are: :mod:`~spex.lenses.prompt_features`
(``FeatureLens``, ``segment``, ``render``), :mod:`~spex.lenses.attention_heads` (``HeadLens``,
``head_sites``), :mod:`~spex.lenses.training_data` (``DataLens``, ``LogisticTrainer``,
``SklearnTrainer``), :mod:`~spex.lenses.context_passages` (``ContextLens``). Each lens is registered once, torch-free, in ``spex/lenses/registrations/<lens>.py``
(its spec models, version, report view; see :mod:`spex.lenses.registry`).
"""

from __future__ import annotations

from typing import Any

from spex.lenses import registry

__all__ = list(registry.names())


def __getattr__(name: str) -> Any:
    if name in registry.LENSES:
        function = registry.get(name).function()
        globals()[name] = function
        return function
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(list(globals()) + __all__)
