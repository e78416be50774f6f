"""The package's shape: no import cycles (package ``__init__`` edges and typing-only imports count), no upward
imports (a lower layer importing an upper one, a module taking names from its own package's ``__init__``, the
foundation importing anything above it), no module named like a standard-library module, no source file over
400 lines, one place decides the modality, and ``import mcl.sampling`` stays light.

The import graph is read from the source (``ast``), not by importing: an edge ``a -> b`` for every
``import b`` / ``from b import x`` anywhere in ``a`` (function bodies and ``if TYPE_CHECKING:`` blocks included),
plus ``a -> b.x`` when ``b.x`` is itself a module. ``from mcl.report import plots`` is therefore an edge to the
package ``mcl.report`` (its ``__init__`` runs first) as well as to ``mcl.report.plots``.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from functools import cache
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = SRC / "mcl"
MAX_LINES = 400
# Foundation: small utilities every layer may use (logging and its metric trackers included); they import
# nothing of mcl but each other.
BASE = ("mcl.errors", "mcl.files", "mcl.faults", "mcl.distributed", "mcl.logging_utils", "mcl.tracking")
# Lower layers: building blocks that know nothing of runs, stages, evaluation or the CLI.
LOWER = ("mcl.data", "mcl.models", "mcl.objectives", "mcl.sampling", "mcl.clustering", "mcl.pseudolabels")
UPPER = ("mcl.stages", "mcl.api", "mcl.cli", "mcl.evaluation", "mcl.report", "mcl.modalities")

def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


@cache
def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


@cache
def _imports() -> dict[str, frozenset[str]]:
    """Module -> the mcl modules it imports anywhere in its body (see the module docstring for the edges)."""
    modules = _modules()
    graph = {}
    for name, path in modules.items():
        targets = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets.add(node.module)
                targets.update(f"{node.module}.{alias.name}" for alias in node.names)
        graph[name] = frozenset(t for t in targets if t in modules and t != name)
    return graph


def _in(module: str, layers: tuple[str, ...]) -> bool:
    return any(module == layer or module.startswith(layer + ".") for layer in layers)


def _cycles(graph: dict[str, frozenset[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph[node]):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(max(limit, 10000))
    try:
        for module in sorted(graph):
            if module not in index:
                visit(module)
    finally:
        sys.setrecursionlimit(limit)
    return sorted(cycles)


def test_the_cycle_finder_sees_package_init_and_typing_edges() -> None:
    graph = {"p": frozenset({"p.a"}), "p.a": frozenset({"p.b"}), "p.b": frozenset({"p"}),
             "q": frozenset({"r"}), "r": frozenset()}
    assert _cycles(graph) == [["p", "p.a", "p.b"]]
    # the real graph has the edge from a package __init__ to its own submodule
    assert "mcl.config.schema" in _imports()["mcl.config"]


def test_no_import_cycles() -> None:
    cycles = _cycles(_imports())
    assert cycles == []


def test_lower_layers_never_import_upper_ones() -> None:
    wrong = [(module, target) for module, targets in _imports().items() if _in(module, LOWER)
             for target in targets if _in(target, UPPER)]
    assert wrong == []


def test_no_module_takes_names_from_its_own_package_init() -> None:
    # `from mcl.data import GENERATORS` inside mcl.data.resolve runs upwards: the package's __init__ gathers its
    # submodules, so a submodule that needs its __init__ closes a cycle as soon as the __init__ needs it back.
    # Importing a sibling submodule (`from mcl.data import images`) names that submodule, not the __init__.
    modules = _modules()
    upward = []
    for name, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0 and node.module != "mcl" \
                    and name.startswith(node.module + ".") \
                    and any(f"{node.module}.{alias.name}" not in modules for alias in node.names):
                upward.append((name, node.module))
    upward = sorted(set(upward))
    assert upward == []


def test_the_foundation_imports_only_the_foundation() -> None:
    wrong = [(module, target) for module, targets in _imports().items() if _in(module, BASE)
             for target in targets if target != "mcl" and not _in(target, BASE)]
    assert wrong == []


def test_no_module_is_named_like_a_standard_library_module() -> None:
    # `import io` next to `from mcl.io import ...` reads as the wrong module; tools that put src/mcl on the path
    # would shadow the standard library outright
    clashes = [name for name in _modules() if name.rsplit(".", 1)[-1] in sys.stdlib_module_names]
    assert clashes == []


def test_no_source_file_is_over_the_line_limit() -> None:
    long_files = sorted(str(path.relative_to(SRC)) for path in _modules().values()
                        if len(path.read_text().splitlines()) > MAX_LINES)
    assert long_files == []


def test_the_modality_is_decided_in_one_place() -> None:
    readers = [str(path.relative_to(SRC)) for path in PACKAGE.rglob("*.py")
               if "multimodal.enabled" in path.read_text() and path != PACKAGE / "modalities" / "__init__.py"]
    # the config validation checks the key against the objective
    assert sorted(readers) == ["mcl/config/validation.py"]


def test_import_sampling_stays_light() -> None:
    code = "import sys, mcl.sampling; print(sorted(m for m in ('kornia', 'matplotlib') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
