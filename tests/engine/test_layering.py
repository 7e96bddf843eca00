"""The layer rule: the math in spex/ imports no torch, SQLAlchemy, MLflow or Prefect."""

from __future__ import annotations

import subprocess
import sys

CORE = ["spex", "spex.engine.explainer", "spex.engine.sets", "spex.engine.spectrum", "spex.engine.indices", "spex.engine.exact", "spex.engine.heldout",
        "spex.engine.removal_choice", "spex.engine.sampling", "spex.engine.walsh", "spex.engine.synthetic", "spex.engine.methods.proxyspex",
        "spex.engine.methods.trees", "spex.engine.methods.regression", "spex.engine.methods.spex_coded", "spex.engine.methods.bch",
        "spex.lenses.base"]
FORBIDDEN = ["torch", "sqlalchemy", "mlflow", "prefect", "transformers"]


def test_core_imports_no_heavy_frameworks():
    code = (
        "import importlib, sys\n"
        f"for m in {CORE!r}: importlib.import_module(m)\n"
        f"print([m for m in {FORBIDDEN!r} if m in sys.modules])\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout


def test_spex_never_imports_the_layers_above_it():
    """flows -> tasks -> spex: no module of spex/ imports tasks/, flows/ or Prefect, even lazily."""
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parents[2] / "spex"
    pattern = re.compile(r"^\s*(from|import)\s+(flows|tasks|prefect)\b", re.M)
    offenders = [str(p.relative_to(root)) for p in root.rglob("*.py") if pattern.search(p.read_text())]
    assert offenders == []
