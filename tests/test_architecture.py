"""The package's shape: no import cycles, lower layers never import upper ones, one place decides the modality."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = SRC / "mcl"
# Lower layers: building blocks that know nothing of runs, stages, evaluation or the CLI.
LOWER = ("mcl.data", "mcl.models", "mcl.objectives", "mcl.sampling", "mcl.clustering", "mcl.pseudolabels")
UPPER = ("mcl.stages", "mcl.api", "mcl.cli", "mcl.evaluation", "mcl.report", "mcl.modalities")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports() -> dict[str, set[str]]:
    """Module -> the mcl modules it imports anywhere in its body (function-level imports included)."""
    modules = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        targets = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
            elif isinstance(node, ast.If) and getattr(node.test, "id", None) == "TYPE_CHECKING":
                continue
            else:
                continue
            targets.update(n for n in names if n in modules and n != name)
        graph[name] = targets
    return graph


def _in(module: str, layers: tuple[str, ...]) -> bool:
    return any(module == layer or module.startswith(layer + ".") for layer in layers)


def _type_checking_only(path: Path) -> set[str]:
    """Modules imported only under ``if TYPE_CHECKING:`` (not an import at run time)."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.If) and getattr(node.test, "id", None) == "TYPE_CHECKING":
            for inner in ast.walk(node):
                if isinstance(inner, ast.ImportFrom) and inner.module:
                    out.add(inner.module)
    return out


def test_no_import_cycles() -> None:
    graph = _imports()
    for name in graph:
        path = PACKAGE.parent / (name.replace(".", "/") + ".py")
        if not path.exists():
            path = PACKAGE.parent / name.replace(".", "/") / "__init__.py"
        graph[name] -= _type_checking_only(path)
    # Packages import their submodules and vice versa by design of __init__ re-exports: an edge
    # from a package to its own submodule is not a cycle we care about.
    def edges(module: str) -> set[str]:
        return {t for t in graph[module] if not t.startswith(module + ".") and not module.startswith(t + ".")}

    index, low, stack, on_stack, cycles = {}, {}, [], set(), []

    def visit(node: str) -> None:  # Tarjan's strongly connected components
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in edges(node):
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

    sys.setrecursionlimit(10000)
    for module in graph:
        if module not in index:
            visit(module)
    assert cycles == []


def test_lower_layers_never_import_upper_ones() -> None:
    wrong = [(module, target) for module, targets in _imports().items() if _in(module, LOWER)
             for target in targets if _in(target, UPPER)]
    assert wrong == []


def test_the_modality_is_decided_in_one_place() -> None:
    readers = [str(path.relative_to(SRC)) for path in PACKAGE.rglob("*.py")
               if "multimodal.enabled" in path.read_text() and path != PACKAGE / "modalities" / "__init__.py"]
    # the config validation checks the key against the objective
    assert sorted(readers) == ["mcl/config/validation.py"]


def test_import_sampling_stays_light() -> None:
    code = "import sys, mcl.sampling; print(sorted(m for m in ('kornia', 'matplotlib') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
