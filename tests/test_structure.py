"""The code's structure, as the layer contract in pyproject.toml does not check it: no module
imports the package's own modules inside a function (which hides cycles), and no import cycle."""

from __future__ import annotations

import ast
from pathlib import Path

import grimp

import safetransfer

PACKAGE = Path(safetransfer.__file__).parent
# The CLI imports the library inside each command so that `safetransfer --help` and the commands
# that need no torch start in about 0.3 s instead of 3 s (measured); see safetransfer/cli/__init__.py.
LAZY_PACKAGES = ("cli",)


def function_level_imports(path: Path, root: Path = PACKAGE) -> list[str]:
    """``module:line`` (relative to ``root``) of every import of a ``safetransfer`` module made inside
    a function, unless the line (or the one above it) carries a comment saying why."""
    text = path.read_text()
    lines = text.splitlines()
    found = []
    for fn in ast.walk(ast.parse(text)):
        if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        for node in ast.walk(fn):
            if isinstance(node, ast.ImportFrom):
                names = [node.module or ""] if node.level == 0 else ["(relative)"]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            else:
                continue
            if not any(n == "safetransfer" or n.startswith(("safetransfer.", "(relative)")) for n in names):
                continue
            said = "#" in lines[node.lineno - 1] or lines[node.lineno - 2].strip().startswith("#")
            if not said:
                found.append(f"{path.relative_to(root)}:{node.lineno}")
    return found


def test_no_function_level_imports_of_the_package():
    modules = [p for p in PACKAGE.rglob("*.py") if p.relative_to(PACKAGE).parts[0] not in LAZY_PACKAGES]
    assert len(modules) > 50
    offenders = [hit for p in modules for hit in function_level_imports(p)]
    assert offenders == []


def test_the_checker_finds_a_hidden_import(tmp_path):
    sample = tmp_path / "probe.py"
    sample.write_text("def f():\n    from safetransfer.files import atomic_write_text\n\n\n"
                      "def g():\n    # optional dependency\n    from safetransfer.errors import DataError\n")
    assert function_level_imports(sample, tmp_path) == ["probe.py:2"]


def import_cycles(graph: grimp.ImportGraph) -> list[list[str]]:
    """Cycles among the package's modules (a package importing its own submodules from its
    ``__init__`` is how a package exposes them, not a cycle)."""
    edges = {m: {i for i in graph.find_modules_directly_imported_by(m)
                 if not m.startswith(i + ".")}  # a submodule importing its parent package's names
             for m in graph.modules if m.startswith("safetransfer")}
    cycles, state = [], {}

    def visit(module: str, stack: list[str]) -> None:
        state[module] = "open"
        for other in sorted(edges.get(module, ())):
            if state.get(other) == "open":
                cycles.append(stack[stack.index(other):] + [other])
            elif other not in state:
                visit(other, stack + [other])
        state[module] = "done"

    for module in sorted(edges):
        if module not in state:
            visit(module, [module])
    return cycles


def test_no_import_cycles():
    graph = grimp.build_graph("safetransfer", cache_dir=None)
    assert len(graph.modules) > 50
    assert import_cycles(graph) == []


def test_the_cycle_finder_finds_a_cycle():
    graph = grimp.ImportGraph()
    for m in ("safetransfer.a", "safetransfer.b", "safetransfer.c"):
        graph.add_module(m)
    graph.add_import(importer="safetransfer.a", imported="safetransfer.b")
    graph.add_import(importer="safetransfer.b", imported="safetransfer.c")
    assert import_cycles(graph) == []
    graph.add_import(importer="safetransfer.c", imported="safetransfer.a")
    assert import_cycles(graph) == [["safetransfer.a", "safetransfer.b", "safetransfer.c", "safetransfer.a"]]
