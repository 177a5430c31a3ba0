"""The package's import graph: no circle anywhere, and the layers import only downwards.

Every module under ``lscape_cli`` is parsed with :mod:`ast` (nothing is imported) and every import
statement counts, wherever it sits: at the top, inside a function, or under ``if TYPE_CHECKING:``.
``from pkg import name`` is an edge to the submodule ``pkg.name`` when there is one, else to ``pkg``.
"""

from __future__ import annotations

import ast
import functools
from pathlib import Path

import pytest

PACKAGE = "lscape_cli"
ROOT = Path(__file__).resolve().parent.parent / PACKAGE

# layer -> the layers it must not import (a layer is a module or subpackage of lscape_cli)
FORBIDDEN = {
    "core": ("cli", "storage", "report", "models", "plotting"),
    "storage": ("cli", "models", "report"),
    "models": ("cli", "report", "plotting"),
    "report": ("cli",),
    "plotting": ("cli", "report"),
}


def module_files() -> dict[str, Path]:
    """Dotted module name -> file, for every module of the package."""
    found = {}
    for path in sorted(ROOT.rglob("*.py")):
        parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def _resolve(module: str, is_package: bool, level: int, target: str | None) -> str:
    """The absolute name ``from {'.' * level}{target} import ...`` means inside ``module``."""
    if level == 0:
        return target or ""
    parts = module.split(".")
    base = parts if is_package else parts[:-1]
    base = base[: len(base) - (level - 1)]
    return ".".join([*base, target] if target else base)


def _edge(name: str, modules: dict[str, Path]) -> str | None:
    """The package module ``name`` stands for (its longest prefix that is one), None outside the package."""
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def imports_of(module: str, modules: dict[str, Path]) -> set[str]:
    """The package modules ``module`` imports, at any level of its code."""
    path = modules[module]
    tree = ast.parse(path.read_text(), filename=str(path))
    is_package = path.name == "__init__.py"
    targets: set[str | None] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets.update(_edge(alias.name, modules) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = _resolve(module, is_package, node.level, node.module)
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                targets.add(sub if sub in modules else _edge(base, modules))
    return {t for t in targets if t is not None and t != module}


@functools.cache
def import_graph() -> dict[str, set[str]]:
    """Module -> the package modules it imports (read once per session)."""
    modules = module_files()
    return {m: imports_of(m, modules) for m in modules}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle as ``[a, b, ..., a]``, or None (depth-first search, iterative)."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    for start in sorted(graph):
        if start in state:
            continue
        path: list[str] = [start]
        stack = [iter(sorted(graph[start]))]
        state[start] = 1
        while stack:
            nxt = next(stack[-1], None)
            if nxt is None:
                state[path.pop()] = 2
                stack.pop()
            elif state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt]
            elif nxt not in state:
                state[nxt] = 1
                path.append(nxt)
                stack.append(iter(sorted(graph[nxt])))
    return None


def layer(module: str) -> str:
    """``lscape_cli.storage.files`` -> ``storage``; the package itself is ``""``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def test_the_graph_is_read() -> None:
    graph = import_graph()
    assert len(graph) > 100
    assert "lscape_cli.errors" in graph["lscape_cli.storage.files"]
    assert "lscape_cli.cli.console" in graph["lscape_cli.cli"]  # an import inside a function counts


def test_the_walker_finds_a_circle_and_type_only_imports() -> None:
    modules = {"p": Path("p/__init__.py"), "p.a": Path("p/a.py"), "p.b": Path("p/b.py")}
    assert find_cycle({"p.a": {"p.b"}, "p.b": set(), "p": {"p.a"}}) is None
    assert find_cycle({"p.a": {"p.b"}, "p.b": {"p"}, "p": {"p.a"}}) == ["p", "p.a", "p.b", "p"]
    assert _resolve("p.a", False, 1, "b") == "p.b"
    assert _resolve("p", True, 1, None) == "p"
    assert _edge("p.b.thing", modules) == "p.b" and _edge("torch.nn", modules) is None


def test_type_only_imports_are_edges(tmp_path: Path) -> None:
    source = "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .b import B\n"
    (tmp_path / "a.py").write_text(source)
    (tmp_path / "b.py").write_text("from . import a\n")
    modules = {"p": tmp_path / "__init__.py", "p.a": tmp_path / "a.py", "p.b": tmp_path / "b.py"}
    graph = {m: imports_of(m, modules) for m in ("p.a", "p.b")}
    assert graph == {"p.a": {"p.b"}, "p.b": {"p.a"}}
    assert find_cycle(graph) == ["p.a", "p.b", "p.a"]


def test_no_import_circle() -> None:
    cycle = find_cycle(import_graph())
    assert cycle is None, "import circle: " + " -> ".join(cycle or [])


@pytest.mark.parametrize("low", sorted(FORBIDDEN))
def test_layers_import_downwards(low: str) -> None:
    graph = import_graph()
    wrong = sorted(
        f"{m} imports {t}"
        for m, targets in graph.items()
        if layer(m) == low
        for t in targets
        if layer(t) in FORBIDDEN[low]
    )
    assert not wrong, "\n".join(wrong)


def test_only_the_cli_and_the_entry_point_import_the_cli() -> None:
    graph = import_graph()
    wrong = sorted(
        f"{m} imports {t}"
        for m, targets in graph.items()
        if layer(m) not in ("cli", "__main__")
        for t in targets
        if layer(t) == "cli"
    )
    assert not wrong, "\n".join(wrong)


# models/, bottom up, as its __init__ docstring lists it: each imports only the ones before it
MODELS_ORDER = ["user", "registry", "losses", "training", "loading", "initial", "evaluation"]


def test_models_modules_import_only_those_below_them() -> None:
    graph = import_graph()
    names = [f"{PACKAGE}.models.{m}" for m in MODELS_ORDER]
    assert {m for m in graph if m.startswith(f"{PACKAGE}.models.")} == set(names)
    wrong = [
        f"{m} imports {t}"
        for i, m in enumerate(names)
        for t in sorted(graph[m])
        if t.startswith(f"{PACKAGE}.models") and t not in names[:i]
    ]
    assert not wrong, "\n".join(wrong)


# core/'s subpackages, bottom up, as their __init__ docstrings state: each imports only those before it
CORE_ORDER = ["linalg", "landscape", "probe", "training", "connectivity", "pareto"]


def core_part(module: str) -> str | None:
    """``lscape_cli.core.linalg.hvp`` -> ``linalg``; a top-level core module -> ``""``; outside core: None."""
    parts = module.split(".")
    if parts[:2] != [PACKAGE, "core"] or len(parts) < 3:
        return None
    return parts[2] if f"{PACKAGE}.core.{parts[2]}" in _core_packages() else ""


@functools.cache
def _core_packages() -> frozenset[str]:
    return frozenset(f"{PACKAGE}.core.{p.parent.name}" for p in (ROOT / "core").glob("*/__init__.py"))


def test_core_subpackages_are_the_listed_ones() -> None:
    assert {p.rpartition(".")[2] for p in _core_packages()} == set(CORE_ORDER)
    top = sorted(p.stem for p in (ROOT / "core").glob("*.py"))
    assert len(top) <= 12, f"core/ has {len(top)} top-level modules: {top}"
    for name in CORE_ORDER:  # each names its domain and what it owns
        doc = ast.get_docstring(ast.parse((ROOT / "core" / name / "__init__.py").read_text()))
        assert doc and "owns" in doc and "imports" in doc, f"core/{name}/__init__.py lacks its docstring"


def test_core_layers_import_only_those_below_them() -> None:
    graph = import_graph()
    rank = {name: i for i, name in enumerate(CORE_ORDER)}
    wrong = []
    for m, targets in graph.items():
        part = core_part(m)
        if part is None or m == f"{PACKAGE}.core":  # outside core, or the lazy facade naming every layer
            continue
        for t in sorted(targets):
            other = core_part(t)
            if not other or other == part:
                continue
            if part == "" or rank[other] > rank[part]:
                wrong.append(f"{m} imports {t}")
    assert not wrong, "\n".join(wrong)


def test_the_linear_algebra_layer_imports_no_other_core_subpackage() -> None:
    graph = import_graph()
    wrong = sorted(
        f"{m} imports {t}"
        for m, targets in graph.items()
        if core_part(m) == "linalg"
        for t in targets
        if core_part(t) not in (None, "", "linalg")
    )
    assert not wrong, "\n".join(wrong)
