"""upstreams/ imports one way: no import circle, nothing from the harness, a model that knows no files.

The graph is read from the source with ``ast``, not by importing: every ``import upstreams...`` and
``from upstreams... import`` anywhere in a file counts, at module level, inside functions and
under ``if TYPE_CHECKING:`` alike (a lazy import hides a circle from Python, not from a reader).
``upstreams/__init__.py`` is the node ``upstreams``; ``from upstreams import X`` is an edge to it
(and to ``upstreams.X`` too when X is a module). A string naming one of our modules is an edge as
well: the package's lazy exports (``upstreams.__getattr__``) import by name, so a module that
imports the package would close a circle through them. Run this file to print the edges::

    python tests/test_upstreams_layout.py
"""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

PACKAGE = "upstreams"
ROOT = Path(__file__).resolve().parent.parent / PACKAGE
FOREIGN = ("harness", "tasks", "leaderboard")
#: What model.py must not import: anything that reads or writes files, or the modules that do.
FILE_MODULES = (
    "safetensors", "json", "pathlib", "os", "io", "shutil", "pickle", "tempfile",
    "core.files", "core.paths",
    "upstreams.checkpoint", "upstreams.cost", "upstreams.importers", "upstreams.safe_load", "upstreams.s3prl_hub",
)  # fmt: skip
FILE_CALLS = {"open", "torch.save", "torch.load"}


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(path): path for path in sorted(ROOT.rglob("*.py"))}


def imported_names(path: Path, this: str | None = None) -> set[str]:
    """Every absolute name ``path`` imports, anywhere in the file (relative imports resolved).

    ``from m import x`` gives ``m`` and ``m.x`` (``m.x`` is kept as an edge only if it is a module).
    String constants naming one of our modules (``"upstreams.model"``, ``"upstreams.model:hubert_base"``)
    count too: ``importlib.import_module`` and ``core.registry``'s lazy entries import by name.
    """
    this = this or module_name(path)
    package = this if path.name == "__init__.py" else this.rpartition(".")[0]
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
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            if re.fullmatch(rf"{PACKAGE}(\.\w+)*(:\w+)?", node.value):
                names.add(node.value.split(":")[0])
    return names


def edges(names: set[str], known: set[str]) -> set[str]:
    """The modules of ``known`` that ``names`` import (``upstreams.x.y`` of a name y in x -> ``upstreams.x``)."""
    found = set()
    for name in names:
        if name != PACKAGE and not name.startswith(f"{PACKAGE}."):
            continue
        while name not in known and "." in name:
            name = name.rpartition(".")[0]
        if name in known:
            found.add(name)
    return found


def import_graph() -> dict[str, set[str]]:
    """``{module: upstreams modules it imports}`` over every file of upstreams/."""
    known = modules()
    return {name: edges(imported_names(path), set(known)) for name, path in known.items()}


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


def test_cycle_finder_finds_lazy_and_indirect_cycles():
    assert find_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c", "a"]]
    assert find_cycles({"a": {"a"}}) == [["a", "a"]]
    assert find_cycles({"a": {"b", "c"}, "b": {"c"}, "c": set()}) == []


def test_import_graph_sees_every_kind_of_import(tmp_path):
    source = tmp_path / "example.py"
    source.write_text(
        "from typing import TYPE_CHECKING\n"
        "import upstreams.config\n"
        "if TYPE_CHECKING:\n    from upstreams.model import SpeechEncoder\n"
        "def f():\n    from upstreams import load_upstream\n    from . import cost\n"
        "LAZY = {'x': 'upstreams.safe_load:safe_torch_load'}\n"
    )
    names = imported_names(source, this="upstreams.example")
    found = edges(names, set(modules()))
    assert found == {"upstreams.config", "upstreams.model", "upstreams", "upstreams.cost", "upstreams.safe_load"}


def test_upstreams_has_no_import_cycle():
    graph = import_graph()
    assert {"upstreams", "upstreams.model", "upstreams.pruning", "upstreams.checkpoint"} <= set(graph)
    assert find_cycles(graph) == []


def test_the_edges_that_made_the_old_circles_are_gone():
    graph = import_graph()
    assert graph["upstreams.pruning"] <= {"upstreams.config"}  # model -> pruning -> config, one way
    assert "upstreams.cost" not in graph["upstreams.checkpoint"]  # saving never measures
    assert "upstreams" not in graph["upstreams.importers"]  # ARCHITECTURES lives in upstreams.model


def test_upstreams_imports_nothing_of_the_harness():
    offenders = {
        name: sorted(imported for imported in imported_names(path) if imported.split(".")[0] in FOREIGN)
        for name, path in modules().items()
    }
    assert {name: found for name, found in offenders.items() if found} == {}


def test_model_knows_no_files():
    path = ROOT / "model.py"
    imported = imported_names(path)
    touching = sorted(
        name for name in imported for bad in FILE_MODULES if name == bad or name.startswith(f"{bad}.")
    )
    assert touching == []
    calls = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Call):
            calls.add(ast.unparse(node.func))
    assert calls & FILE_CALLS == set()


if __name__ == "__main__":
    graph = import_graph()
    for name in sorted(graph):
        print(f"{name} -> {', '.join(sorted(graph[name])) or '(nothing)'}")
    cycles = find_cycles(graph)
    print("cycles:", cycles or "none")
    sys.exit(1 if cycles else 0)
