"""The house plan, enforced beside its import-linter contracts (pyproject.toml, checked by
tests/unit/test_import_contracts.py): what those cannot see (the package ``__init__`` files an import
runs), no private names across modules, no import cycles. Every module under src/edgeprune is read
with ``ast`` (nothing is imported), so a new leak fails here naming the module, the line and the
import that causes it."""

from __future__ import annotations

import ast
import inspect
import tomllib
from functools import cache
from pathlib import Path

import edgeprune.memory
import edgeprune.runtime.runner

SRC = Path(__file__).resolve().parents[2] / "src"
ROOT = "edgeprune"

# Import cycles allowed for now, each as the set of modules in one strongly connected component; any
# other cycle fails. None today: config.py's cycles with pipeline/steps.py and compress/structured/prune.py
# -> compress/registry.py go through its ``importlib.import_module`` lookup of BUILTIN_STEPS, which a
# static reading does not follow; they go away with issue 17's step protocol.
KNOWN_CYCLES: tuple[frozenset[str], ...] = ()

# Private names still imported across modules, as (importing module, imported module, name): files
# another change is editing, left alone here. Make the name public and delete the row.
KNOWN_PRIVATE_IMPORTS: set[tuple[str, str, str]] = set()


class Import:
    """``module`` imports ``target`` (a module under src/edgeprune, or an outside package such as
    ``torch``) at ``line``. ``name`` is the name a ``from X import name`` takes (None for
    ``import X``); ``top`` is False for an import inside a function (it runs when called)."""

    def __init__(self, module: str, target: str, line: int, name: str | None, top: bool, text: str):
        self.module, self.target, self.line, self.name, self.top, self.text = module, target, line, name, top, text

    def __repr__(self) -> str:
        return f"{self.module}:{self.line} `{self.text}`"


@cache
def modules() -> dict[str, Path]:
    out = {}
    for path in sorted((SRC / ROOT).rglob("*.py")):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def _in(target: str, packages) -> bool:
    return any(target == p or target.startswith(p + ".") for p in packages)


def _own(package: str) -> list[str]:
    return [m for m in modules() if _in(m, [package])]


def _is_type_checking(node: ast.AST) -> bool:
    test = getattr(node, "test", None)
    return isinstance(node, ast.If) and (
        (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING")
        or (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")
    )


def _walk(node: ast.AST, top: bool):
    """(import node, runs at import time) for every import under ``node``; ``if TYPE_CHECKING:``
    blocks never run and are skipped."""
    for child in ast.iter_child_nodes(node):
        if isinstance(child, (ast.Import, ast.ImportFrom)):
            yield child, top
        elif not _is_type_checking(child):
            yield from _walk(child, top and not isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)))


@cache
def imports(module: str) -> tuple[Import, ...]:
    path = modules()[module]
    package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    out = []
    for node, top in _walk(ast.parse(path.read_text(), filename=str(path)), True):
        text = ast.unparse(node)
        if isinstance(node, ast.Import):
            out += [Import(module, a.name, node.lineno, None, top, text) for a in node.names]
            continue
        base = node.module or ""
        if node.level:  # relative: from .x import y
            base = ".".join(package[: len(package) - node.level + 1] + ([node.module] if node.module else []))
        for alias in node.names:
            # `from pkg import sub` imports the module pkg.sub; `from mod import name` imports mod
            target = f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules() else base
            out.append(Import(module, target, node.lineno, alias.name, top, text))
    return tuple(out)


def _edges(module: str, *, deferred: bool = False) -> list[Import]:
    """Imports of our own modules: at import time only, or ``deferred`` ones (in functions) too.

    Importing ``a.b.c`` also runs the ``__init__`` of ``a.b``: an edge too, unless ``module`` lives
    in that package (whose ``__init__`` has then already started). The root package is left out: it
    runs before any of its modules, so an edge back to it (``from edgeprune import __version__``,
    its ``build()`` facade) closes no loop that matters."""
    out = []
    for imp in imports(module):
        if not (imp.top or deferred) or not _in(imp.target, [ROOT]) or imp.target == ROOT:
            continue
        parts = imp.target.split(".")
        for i in range(2, len(parts)):
            pkg = ".".join(parts[:i])
            if pkg in modules() and not _in(module, [pkg]):
                out.append(Import(module, pkg, imp.line, imp.name, imp.top, imp.text))
        out.append(imp)
    return [e for e in out if e.target in modules()]


def _chain(start: str, forbidden) -> list[Import] | None:
    """The shortest chain of import-time imports from ``start`` into a ``forbidden`` package (ours
    or an outside one such as torch), or None."""
    seen, frontier = {start}, [[]]
    while frontier:
        nxt = []
        for chain in frontier:
            module = chain[-1].target if chain else start
            hit = [imp for imp in imports(module) if imp.top and _in(imp.target, forbidden)]
            if hit:
                return chain + hit[:1]
            for imp in _edges(module):
                if imp.target not in seen:
                    seen.add(imp.target)
                    nxt.append(chain + [imp])
        frontier = nxt
    return None


def _forbidden_contracts() -> list[dict]:
    with open(SRC.parent / "pyproject.toml", "rb") as f:
        contracts = tomllib.load(f)["tool"]["importlinter"]["contracts"]
    return [c for c in contracts if c["type"] == "forbidden"]


def test_forbidden_contracts_hold_through_package_inits():
    # The layer rules are import-linter contracts in pyproject.toml (tests/unit/test_import_contracts.py
    # checks them on every import as written, one in a function included). Its graph leaves out what
    # Python also runs: importing a.b.c runs a.b's __init__ first. This follows those too, at import
    # time, from every module a forbidden contract covers (e.g. devices/ -> models.cache runs
    # models/__init__, which must not bring torch in).
    problems = []
    for contract in _forbidden_contracts():
        forbidden = [m.removesuffix(".**").removesuffix(".*") for m in contract["forbidden_modules"]]
        for source in contract["source_modules"]:
            for module in _own(source):
                chain = _chain(module, [f for f in forbidden if not _in(module, [f])])
                if chain:
                    problems.append(f"[{contract['id']}] {module} reaches {chain[-1].target} at import time: "
                                    + " -> ".join(map(repr, chain)))  # fmt: skip
    assert not problems, "import-time imports that package __init__ files bring in:\n" + "\n".join(problems)


def _private_imports() -> dict[tuple[str, str, str], Import]:
    out = {}
    for module in modules():
        for imp in imports(module):
            name = imp.name or ""
            if name.startswith("_") and not name.startswith("__") and _in(imp.target, [ROOT]) and imp.target != module:
                out[(module, imp.target, name)] = imp
    return out


def test_no_private_names_imported_across_modules():
    problems = [f"{imp!r} takes private {key[2]} from {key[1]}" for key, imp in _private_imports().items()
                if key not in KNOWN_PRIVATE_IMPORTS]  # fmt: skip
    assert not problems, "make the name public where it is defined, or move it:\n" + "\n".join(problems)


def _cycles(*, deferred: bool) -> dict[frozenset[str], list[Import]]:
    """Each strongly connected component of the import graph (Tarjan), with one shortest cycle in it."""
    graph = {m: _edges(m, deferred=deferred) for m in modules()}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    comps: list[frozenset[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for edge in graph[node]:
            if edge.target not in index:
                visit(edge.target)
                low[node] = min(low[node], low[edge.target])
            elif edge.target in stack:
                low[node] = min(low[node], index[edge.target])
        if low[node] == index[node]:
            comp = set()
            while not comp or node not in comp:
                comp.add(stack.pop())
            if len(comp) > 1 or any(e.target == node for e in graph[node]):
                comps.append(frozenset(comp))

    for m in graph:
        if m not in index:
            visit(m)
    return {comp: _shortest_cycle(graph, comp) for comp in comps}


def _shortest_cycle(graph, comp: frozenset[str]) -> list[Import]:
    start = min(comp)
    seen, frontier = {start}, [[e] for e in graph[start] if e.target in comp]
    while frontier:
        nxt = []
        for path in frontier:
            if path[-1].target == start:
                return path
            for e in graph[path[-1].target]:
                if e.target in comp and (e.target == start or e.target not in seen):
                    seen.add(e.target)
                    nxt.append(path + [e])
        frontier = nxt
    raise AssertionError(f"no cycle through {start} in {sorted(comp)}")


def _cycle_problems(deferred: bool) -> list[str]:
    return [" -> ".join(map(repr, cycle)) for comp, cycle in _cycles(deferred=deferred).items() if comp not in KNOWN_CYCLES]


def test_no_import_cycles():
    problems = _cycle_problems(deferred=False)
    assert not problems, "import cycles among module-level imports (break one edge):\n" + "\n".join(problems)


def test_no_import_cycles_through_deferred_imports():
    # An import moved into a function hides a cycle from Python, not from the design: devices/host.py
    # <-> devices/profiles.py and models/ <-> edgeprune._autoregister were both of this kind.
    problems = _cycle_problems(deferred=True)
    assert not problems, "import cycles once imports inside functions count too:\n" + "\n".join(problems)


def test_known_exceptions_are_still_real():
    # a fixed exception must leave the lists, or it would let the same leak back in unnoticed
    stale = [f"cycle {sorted(c)}" for c in KNOWN_CYCLES if c not in _cycles(deferred=True)]
    stale += [f"private import {k}" for k in KNOWN_PRIVATE_IMPORTS if k not in _private_imports()]
    assert not stale, "gone from the code, remove from this test's known exceptions:\n" + "\n".join(stale)


def test_the_runner_keeps_a_verbatim_copy_of_the_peak_rss_probe():
    # runner.py is copied alone to remote boards and imports only the standard library, so it cannot
    # import edgeprune.memory: it keeps its own copy, which must measure exactly the same way.
    assert inspect.getsource(edgeprune.runtime.runner.peak_rss_mb) == inspect.getsource(edgeprune.memory.peak_rss_mb)
    assert edgeprune.runtime.runner.peak_rss_mb is not edgeprune.memory.peak_rss_mb
