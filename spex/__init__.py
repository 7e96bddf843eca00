"""spex: find the interactions that drive a model's output.

The engine (``spex.engine``, re-exported here) is pure numpy / scipy / LightGBM::

    import spex
    from spex.engine import sampling

    ex = spex.explain(value_fn, n, budget=4000, method="proxyspex", seed=0)
    ex.interactions(index="mobius", top=10)
    spex.faithfulness(value_fn, ex.spectrum, sampling.holdout(n, 1000, seed=1))

The rest of the package is the application around it — ``spex.lenses`` (model value functions),
``spex.models``, ``spex.ablation``, ``spex.audit`` (spec, stages, gates), ``spex.records`` (metadata DB
and MLflow) and ``spex.report``; ``docs/architecture.md`` maps them. Importing spex changes no
environment variable: the entry points (CLI, flows, demo) set the offline and telemetry defaults.
"""

from __future__ import annotations

import importlib
from typing import Any

from spex import engine as _engine
from spex.engine import *  # noqa: F403  (the engine's entry points are spex's: spex.explain is spex.engine.explain)

__all__ = [*_engine.__all__, "lenses"]  # noqa: F405  (lenses: loaded on first use by __getattr__)
__version__ = "0.1.0"

_SUBPACKAGES = ("lenses", "models", "ablation", "audit", "records", "report", "engine")


def __getattr__(name: str) -> Any:
    """``spex.lenses`` & co. load on first use (``import spex`` stays free of torch and MLflow)."""
    if name in _SUBPACKAGES:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
