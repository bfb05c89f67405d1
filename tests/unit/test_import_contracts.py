"""The house plan as import-linter contracts, and no import cycle once the imports Python cannot see
statically are counted (issue 17).

The contracts live in pyproject.toml's ``[tool.importlinter]`` (run them alone with ``lint-imports``).
The cycle check builds the same graph with grimp (import-linter's graph library) and adds the imports
made by name: ``importlib.import_module("edgeprune...")``, ``Lazy("edgeprune.x.y:function")`` rows
in the export registry, the ``_LAZY`` tables of packages built on ``edgeprune/_lazy.py``, the step
registry's rows. Any string literal that is exactly the name of one of our modules (optionally
followed by ``:name``) counts as an import of that module by the module holding the string.

grimp records ``from a.b import c`` as an import of ``a.b.c`` only, not of the package ``a.b`` whose
``__init__`` Python also runs; so a package's lazy table (``a.b`` -> ``a.b.c``, imported on first
attribute access) closes no loop with the modules that merely import ``a.b.c``, while a submodule
that imports its own package back (``a.b`` -> ``a.b.c`` -> ``a.b``) is a cycle here. What package
``__init__`` files run at import time is tests/unit/test_layering.py's cycle check.
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import grimp

from tests.unit.test_layering import modules as module_files

REPO = Path(__file__).resolve().parents[2]
PACKAGE = "edgeprune"
MODULE_NAME = re.compile(rf"{PACKAGE}(?:\.\w+)+")


def test_the_layer_contracts_hold():
    # in a child process: the report is import-linter's own, and nothing of edgeprune is imported
    lint = "import sys; from importlinter.cli import lint_imports_command; sys.exit(lint_imports_command())"
    proc = subprocess.run([sys.executable, "-c", lint, str(REPO / "pyproject.toml"), "--no-cache"],
                          cwd=REPO, capture_output=True, text=True, timeout=300)  # fmt: skip
    assert proc.returncode == 0, f"import-linter (pyproject.toml [tool.importlinter]):\n{proc.stdout}\n{proc.stderr}"


def hidden_imports(modules) -> list[tuple[str, str, int, str]]:
    """(importer, imported, line, the string) for every string literal in our source that names one
    of ``modules`` other than its own (a ``python -m`` of itself is no import)."""
    out = []
    for importer, path in module_files().items():
        if importer not in modules:
            continue
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                name = node.value.partition(":")[0]
                if MODULE_NAME.fullmatch(name) and name in modules and name != importer:
                    out.append((importer, name, node.lineno, repr(node.value)))
    return out


def import_graph() -> grimp.ImportGraph:
    """Every import of edgeprune's modules, the ones made by name included."""
    # imports under `if TYPE_CHECKING:` never run: they close no cycle
    graph = grimp.build_graph(PACKAGE, cache_dir=None, exclude_type_checking_imports=True)
    for importer, imported, line, text in hidden_imports(graph.modules):
        graph.add_import(importer=importer, imported=imported, line_number=line, line_contents=text)
    return graph


def cycles(graph: grimp.ImportGraph) -> list[tuple[str, ...]]:
    """A shortest cycle through each import that closes one (first module repeated last), one per set
    of modules, shortest first."""
    found: dict[frozenset[str], tuple[str, ...]] = {}
    for importer in sorted(graph.modules):
        for imported in sorted(graph.find_modules_directly_imported_by(importer)):
            back = graph.find_shortest_chain(importer=imported, imported=importer)
            if back:
                cycle = (importer, *back)
                found.setdefault(frozenset(cycle), cycle)
    return sorted(found.values(), key=lambda c: (len(c), c))


def _render(graph: grimp.ImportGraph, cycle: tuple[str, ...]) -> str:
    hops = []
    for importer, imported in zip(cycle, cycle[1:]):
        details = graph.get_import_details(importer=importer, imported=imported)
        where = f":{details[0]['line_number']} {details[0]['line_contents']}" if details else ""
        hops.append(f"  {importer}{where}  ->  {imported}")
    return "\n".join(hops)


def test_no_import_cycles_hidden_ones_included():
    graph = import_graph()
    found = cycles(graph)
    report = "\n\n".join(_render(graph, c) for c in found)
    print(f"{len(found)} import cycles (string-named imports included)\n{report}")
    assert not found, f"{len(found)} import cycles, string-named imports included (break one edge of each):\n{report}"


def test_the_cycle_check_sees_imports_by_name():
    # the check is only as good as the graph: it must hold each kind of by-name import, and find a
    # cycle that one of them closes
    graph = import_graph()
    assert graph.direct_import_exists(importer="edgeprune.export.registry", imported="edgeprune.export.gguf.artifact")  # Lazy row
    assert graph.direct_import_exists(importer="edgeprune.models", imported="edgeprune.models.loading")  # a _LAZY table
    assert graph.direct_import_exists(importer="edgeprune.runtime.profile", imported="edgeprune.runtime.worker")  # python -m
    # grimp's reading, which the module docstring relies on: importing a.b.c is no import of a.b
    assert graph.direct_import_exists(importer="edgeprune.describe", imported="edgeprune.export.registry")
    assert not graph.direct_import_exists(importer="edgeprune.describe", imported="edgeprune.export")
    # a submodule importing its package back closes a cycle through the package's lazy table
    graph.add_import(importer="edgeprune.models.loading", imported="edgeprune.models")
    assert ("edgeprune.models", "edgeprune.models.loading", "edgeprune.models") in cycles(graph)
