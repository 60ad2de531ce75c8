"""upstreams/ imports one way: no import circle, nothing from the harness, a model that knows no files.

The graph is read from the source by tests/import_graph.py (every import anywhere in a file
counts). Here a string naming one of our modules is an edge as well: the package's lazy exports
(``upstreams.__getattr__``) import by name, so a module that imports the package would close a
circle through them. Run this file to print the edges::

    python tests/test_upstreams_layout.py
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import import_graph as import_graph_module  # tests/import_graph.py
from import_graph import find_cycles

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


def modules() -> dict[str, Path]:
    return import_graph_module.modules((PACKAGE,))


def imported_names(path: Path, this: str | None = None) -> set[str]:
    """Every absolute name ``path`` imports, lazy exports named in strings included."""
    return import_graph_module.imported_names(path, (PACKAGE,), this=this, strings=True)


def edges(names: set[str], known: set[str]) -> set[str]:
    return import_graph_module.edges(names, known)


def import_graph() -> dict[str, set[str]]:
    """``{module: upstreams modules it imports}`` over every file of upstreams/."""
    return import_graph_module.import_graph((PACKAGE,), strings=True)


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
