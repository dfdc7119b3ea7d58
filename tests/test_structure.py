"""The code's structure, as the layer contract in pyproject.toml does not check it: no module
imports the package's own modules inside a function (which hides cycles), and no import cycle."""

from __future__ import annotations

import ast
import importlib
import importlib.util
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


def missing_package_names(path: Path) -> list[str]:
    """``line: module.name`` for every ``from safetransfer... import name`` in ``path`` whose module or
    name does not exist (a benchmark is not run by the suite, so a rename would break it silently)."""
    missing = []
    for node in ast.walk(ast.parse(path.read_text())):
        if not (isinstance(node, ast.ImportFrom) and node.level == 0 and node.module
                and (node.module == "safetransfer" or node.module.startswith("safetransfer."))):
            continue
        try:
            module = importlib.import_module(node.module)
        except ImportError:
            missing.append(f"{node.lineno}: {node.module}")
            continue
        for alias in node.names:  # a name the module defines, or a submodule of a package
            if not hasattr(module, alias.name) and not (hasattr(module, "__path__") and importlib.util.find_spec(
                    f"{node.module}.{alias.name}") is not None):
                missing.append(f"{node.lineno}: {node.module}.{alias.name}")
    return missing


def test_every_benchmark_imports_names_the_package_has():
    scripts = sorted((PACKAGE.parent.parent / "benchmarks").glob("*.py"))
    assert len(scripts) > 10
    offenders = {p.name: hits for p in scripts if (hits := missing_package_names(p))}
    assert offenders == {}


def test_the_name_checker_finds_a_renamed_name(tmp_path):
    sample = tmp_path / "probe.py"
    sample.write_text("from safetransfer.files import atomic_write_text\nfrom safetransfer.models.io import gone\n"
                      "from safetransfer import models\n")
    assert missing_package_names(sample) == ["2: safetransfer.models.io.gone"]
