"""Imports run one way (CONTRIBUTING.md, "Architecture"): checked on the source, not on what happens to load.

The graph is built from every module's ``import`` statements (module level, inside
functions, and under ``if TYPE_CHECKING:`` alike), so a lazy import or an
annotation-only import cannot hide an edge. Layers, lowest first:

* engine: ``interlock`` itself and ``interlock.core`` except the assembly modules;
* accounting: ``interlock.accounting``;
* assembly: ``interlock.core.{config, gateway, app, admin}``, ``interlock.cli`` and ``interlock.workers``;
* plugins: ``interlock.plugins`` (built-in plugins, registered like third-party ones);
* testing: ``interlock.testing`` (public fakes and the conformance suite; may use anything).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import interlock
from interlock.core.plugins import BUILTIN_PLUGINS

ROOT = Path(interlock.__file__).parent
ASSEMBLY = frozenset({"interlock.core.config", "interlock.core.gateway", "interlock.core.app", "interlock.core.admin",
                      "interlock.cli", "interlock.__main__", "interlock.workers"})
#: what each layer may import (besides itself)
ALLOWED = {
    "engine": {"engine"},
    "accounting": {"engine"},
    "assembly": {"engine", "accounting"},
    "plugins": {"engine", "accounting"},
    "testing": {"engine", "accounting", "assembly", "plugins"},
}


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(ROOT.rglob("*.py"))}


def layer(module: str) -> str:
    if module in ASSEMBLY:
        return "assembly"
    for prefix, name in (("interlock.accounting", "accounting"), ("interlock.plugins", "plugins"),
                         ("interlock.testing", "testing")):
        if module == prefix or module.startswith(prefix + "."):
            return name
    return "engine"


def _target(name: str) -> str | None:
    """The interlock module an imported name lives in (the longest existing module prefix)."""
    while name:
        if name in MODULES:
            return name
        name = name.rpartition(".")[0]
    return None


def imports(module: str) -> set[str]:
    """Every interlock module ``module`` imports, wherever the statement is."""
    path = MODULES[module]
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            # ``from pkg import sub`` imports the submodule when there is one
            names = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base for alias in node.names]
        else:
            continue
        for name in names:
            target = _target(name) if name.startswith("interlock") else None
            if target is not None and target != module:
                found.add(target)
    return found


GRAPH = {module: imports(module) for module in MODULES}


def _is_package_init(module: str) -> bool:
    return MODULES[module].name == "__init__.py"


def test_the_graph_sees_the_modules_and_their_edges() -> None:
    """The checks below are only as good as this graph: it must find known edges of every kind."""
    assert "interlock.core.lifecycle" in MODULES and "interlock.accounting.budgets" in MODULES
    assert "interlock.core.router" in GRAPH["interlock.core.lifecycle"]  # from-import of a module
    assert "interlock.accounting.spend" in GRAPH["interlock.core.app"]  # ``from interlock.accounting import spend``
    assert "interlock.core.catalog" in GRAPH["interlock.core.hookspecs"]  # under TYPE_CHECKING
    assert "interlock.testing.demo" in GRAPH["interlock.cli"]  # inside a function


@pytest.mark.parametrize("module", sorted(MODULES))
def test_imports_run_one_way(module: str) -> None:
    mine = layer(module)
    upward = sorted(t for t in GRAPH[module] if layer(t) != mine and layer(t) not in ALLOWED[mine])
    if module == "interlock.cli":  # the program entry point: ``serve --demo`` starts the testing fakes
        upward = [t for t in upward if t != "interlock.testing.demo"]
    assert not upward, f"{module} ({mine}) imports upward: {upward}"


@pytest.mark.parametrize("module", sorted(m for m in MODULES if layer(m) == "plugins"))
def test_plugins_use_the_public_surface_and_no_other_plugin(module: str) -> None:
    """A plugin imports public core and accounting modules, never another registered plugin."""
    private = sorted(t for t in GRAPH[module] if layer(t) in ("engine", "accounting") and t.rpartition(".")[2].startswith("_")
                     and not _is_package_init(t))
    assert not private, f"{module} imports private modules: {private}"
    other_plugins = sorted(t for t in GRAPH[module] if t in BUILTIN_PLUGINS and t != module)
    assert not other_plugins, f"{module} imports other registered plugins: {other_plugins}"


def test_core_never_imports_plugins_or_testing() -> None:
    offenders = {m: sorted(t for t in GRAPH[m] if layer(t) in ("plugins", "testing"))
                 for m in MODULES if m.startswith("interlock.core")}
    assert {m: ts for m, ts in offenders.items() if ts} == {}


def test_there_are_no_import_cycles() -> None:
    """No module reaches itself through its imports (package ``__init__`` edges included)."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    cycles: list[list[str]] = []

    def visit(module: str, path: list[str]) -> None:
        state[module] = 1
        for target in sorted(GRAPH[module]):
            if state.get(target) == 1:
                cycles.append([*path[path.index(target):], target] if target in path else [*path, target])
            elif target not in state:
                visit(target, [*path, target])
        state[module] = 2

    for module in sorted(MODULES):
        if module not in state:
            visit(module, [module])
    assert cycles == []
