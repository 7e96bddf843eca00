"""The three lenses: ways to turn "remove a set of things" into one number per mask.

* ``spex.lenses.features(model, prompt, ...)`` — words / sentences / spans of a prompt;
* ``spex.lenses.heads(model, prompts, answers, ...)`` — attention heads;
* ``spex.lenses.data(train_texts, train_labels, target_text, target_label, ...)`` — training examples.

Each returns a :class:`~spex.lenses.base.ValueFunction`. The lens functions are loaded lazily: the
ablation engine imports :mod:`spex.lenses.base` and must not pay for importing torch.

Naming: ``spex.lenses.features`` etc. are the lens *functions* (the modules of the same name are made
callable too, so the call works whichever was imported first); import the classes from their modules
(``from spex.lenses.features import FeatureLens, segment, render``).
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import Any

__all__ = ["features", "heads", "data"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        module = importlib.import_module(f"{__name__}.{name}")
        function = getattr(module, name)
        # Importing the submodule bound the package attribute to the module; bind the function instead.
        globals()[name] = function
        return function
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class _CallableModule(types.ModuleType):
    """A lens module that forwards calls to its lens function.

    ``import spex.lenses.features`` binds the package attribute ``features`` to the *module*; making
    the module callable keeps ``spex.lenses.features(model, prompt)`` working whatever was imported first.
    """

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return getattr(self, self.__name__.rsplit(".", 1)[-1])(*args, **kwargs)


def _callable_module(module_name: str) -> None:
    sys.modules[module_name].__class__ = _CallableModule


def __dir__() -> list[str]:
    return sorted(list(globals()) + __all__)
