"""The project's import graph, read from the source with ``ast`` (nothing is imported), shared by
tests/test_architecture.py (all packages) and tests/test_upstreams_layout.py (upstreams/).

Every import anywhere in a file counts: at module level, inside functions and under
``if TYPE_CHECKING:`` alike (a lazy import hides a circle from Python, not from a reader). A
package's ``__init__.py`` is the node named after the package; ``from pkg import X`` is an edge to
``pkg`` (and to ``pkg.X`` too when X is a module). With ``strings``, a string constant naming one of
the packages' modules (``"upstreams.model"``, ``"upstreams.model:hubert_base"``) is an edge as well:
lazy exports and ``"module:attr"`` registry entries import by name.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules(packages: tuple[str, ...]) -> dict[str, Path]:
    return {module_name(path): path for package in packages for path in sorted((REPO / package).rglob("*.py"))}


def imported_names(path: Path, packages: tuple[str, ...], this: str | None = None, strings: bool = False) -> set[str]:
    """Every absolute name ``path`` imports, anywhere in the file (relative imports resolved).

    ``from m import x`` gives ``m`` and ``m.x`` (``m.x`` is kept as an edge only if it is a module).
    """
    this = this or module_name(path)
    package = this if path.name == "__init__.py" else this.rpartition(".")[0]
    named = re.compile(rf"({'|'.join(packages)})(\.\w+)*(:\w+)?")
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                base = parts[: len(parts) - (node.level - 1)]
                module = ".".join([*base, node.module] if node.module else base)
            else:
                module = node.module or ""
            names.add(module)
            names.update(f"{module}.{alias.name}" for alias in node.names)
        elif strings and isinstance(node, ast.Constant) and isinstance(node.value, str) and named.fullmatch(node.value):
            names.add(node.value.split(":")[0])
    return names


def edges(names: set[str], known: set[str], source: str | None = None) -> set[str]:
    """The modules of ``known`` that ``names`` import (``pkg.x.y`` of a name y in x -> ``pkg.x``)."""
    found = set()
    for name in names:
        while name not in known and "." in name:
            name = name.rpartition(".")[0]
        if name in known and name != source:
            found.add(name)
    return found


def import_graph(packages: tuple[str, ...], strings: bool = False) -> dict[str, set[str]]:
    """``{module: the modules of packages it imports}`` over every file of ``packages``."""
    known = modules(packages)
    return {
        name: edges(imported_names(path, packages, strings=strings), set(known), source=name)
        for name, path in known.items()
    }


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle (as a path that returns to its start) per strongly connected component that has one."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[set[str]] = []

    def visit(node: str) -> None:  # Tarjan
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph.get(node, ())):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = set()
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.add(member)
                if member == node:
                    break
            if len(component) > 1 or node in graph.get(node, ()):
                components.append(component)

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return [_cycle_in(graph, component) for component in components]


def _cycle_in(graph: dict[str, set[str]], component: set[str]) -> list[str]:
    start = min(component)
    path, seen = [start], {start}
    while True:
        step = sorted(target for target in graph[path[-1]] if target in component)
        if start in step:
            return [*path, start]
        step = [target for target in step if target not in seen] or step
        path.append(step[0])
        if step[0] in seen:
            return path[path.index(step[0]) :]
        seen.add(step[0])
