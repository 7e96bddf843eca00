"""The layer rules the import-linter contracts cannot see: what importing a module really loads (a
subprocess, so nothing the test session imported counts), and that no package of spex imports itself
back through a cycle."""

from __future__ import annotations

import ast
import pkgutil
import re
import subprocess
import sys
from pathlib import Path

import spex.engine

SPEX = Path(__file__).resolve().parents[2] / "spex"
ENGINE = ["spex.engine", *(m.name for m in pkgutil.walk_packages(spex.engine.__path__, "spex.engine."))]
LIGHT = ["spex", "spex.errors", "spex.content", *ENGINE, "spex.lenses.base", "spex.ablation"]
FORBIDDEN = ["torch", "sqlalchemy", "mlflow", "prefect", "transformers"]
ACYCLIC = ["spex.engine", "spex.models", "spex.ablation"]


def loaded_after_importing(modules: list[str], watched: list[str]) -> list[str]:
    code = (
        "import importlib, sys\n"
        f"for m in {modules!r}: importlib.import_module(m)\n"
        f"print([m for m in {watched!r} if m in sys.modules])\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return eval(out.stdout)  # a printed list of str


def test_the_engine_lists_every_module():
    assert {"spex.engine.maskbits", "spex.engine.sampling", "spex.engine.methods.proxyspex",
            "spex.engine.methods.bch"} <= set(ENGINE)


def test_the_math_and_the_ablations_load_no_heavy_framework():
    assert loaded_after_importing(LIGHT, FORBIDDEN) == []


def test_the_engine_loads_pandas_only_for_a_table():
    """pandas is for the interaction tables: importing the engine (and running a method) does not need it."""
    assert loaded_after_importing(["spex.engine", "spex.engine.indices", "spex.engine.methods.regression"],
                                  ["pandas"]) == []


def test_spex_never_imports_the_layers_above_it():
    """flows -> tasks -> spex: no module of spex/ imports tasks/, flows/ or Prefect, even lazily."""
    pattern = re.compile(r"^\s*(from|import)\s+(flows|tasks|prefect)\b", re.M)
    offenders = [str(p.relative_to(SPEX)) for p in SPEX.rglob("*.py") if pattern.search(p.read_text())]
    assert offenders == []


def _module_name(path: Path) -> str:
    parts = path.relative_to(SPEX.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _runtime_imports(tree: ast.AST, package: str) -> list[str]:
    """Every module an ``import`` statement names, at any depth (a lazy import in a function counts),
    except under ``if TYPE_CHECKING:`` (those never run)."""
    found: list[str] = []

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            found.extend(f"{base}.{alias.name}" for alias in node.names)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return found


def import_graph() -> dict[str, set[str]]:
    """Module -> the spex modules it imports (``from pkg import name`` counts as pkg.name where that
    is a module, else as pkg). As in import-linter, importing ``pkg.mod`` is no import of ``pkg``'s
    ``__init__``, which Python runs first anyway."""
    paths = {_module_name(p): p for p in SPEX.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in paths.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        targets = set()
        for target in _runtime_imports(ast.parse(path.read_text()), package):
            while target and target not in paths:
                target = target.rpartition(".")[0]
            if target and target != name:
                targets.add(target)
        graph[name] = targets
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def connect(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph.get(v, ()):
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            connect(v)
    return found


def test_the_cycle_finder_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_engine_models_and_ablation_have_no_import_cycle():
    graph = import_graph()
    assert {"spex.models.loading", "spex.models.builtins", "spex.engine.indices"} <= set(graph)
    assert [c for c in cycles(graph) if any(m.startswith(tuple(ACYCLIC)) for m in c)] == []


def test_each_models_module_imports_first_in_a_fresh_interpreter():
    """An import cycle shows up as an ImportError when the 'wrong' module of it is imported first."""
    modules = sorted(m for m in import_graph() if m.startswith("spex.models."))
    assert "spex.models.loading" in modules
    for module in modules:
        subprocess.run([sys.executable, "-c", f"import {module}"], check=True, capture_output=True)
