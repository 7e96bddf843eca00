"""The layer rule: the math in spex/ imports no torch, SQLAlchemy, MLflow or Prefect."""

from __future__ import annotations

import subprocess
import sys

CORE = ["spex", "spex.api", "spex.sets", "spex.spectrum", "spex.indices", "spex.exact", "spex.metrics",
        "spex.removal", "spex.masks", "spex.walsh", "spex.synthetic", "spex.methods.proxyspex",
        "spex.methods.trees", "spex.methods.regression", "spex.methods.spex_coded", "spex.methods.bch",
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
