"""The package's shape (issue 17): no import circle between its modules, and every name one module
imports from another is in that module's ``__all__``. Read from the source with ``ast``: every
``from .x import ...`` / ``from . import x`` / ``from edgellama.x import ...``, at module level or
inside a function; imports under ``if TYPE_CHECKING:`` never run and are left out."""

import ast
from pathlib import Path

from conftest import ROOT

PACKAGE = ROOT / "edgellama"


def _runtime_imports(tree: ast.AST):
    """ImportFrom nodes of ``tree`` that can run (not under ``if TYPE_CHECKING:``)."""
    skip: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skip |= {id(n) for child in node.body for n in ast.walk(child)}
    return [n for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and id(n) not in skip]


def _module(node: ast.ImportFrom) -> list[tuple[str, list[str]]]:
    """(imported module, names) of an import of our package, else []."""
    if node.level == 1 and node.module:
        return [(node.module.split(".")[0], [a.name for a in node.names])]
    if node.level == 1:  # from . import x
        return [(a.name, []) for a in node.names]
    if node.level == 0 and node.module and node.module.startswith("edgellama."):
        return [(node.module.split(".")[1], [a.name for a in node.names])]
    return []


def _graph() -> dict[str, set[str]]:
    graph = {}
    for path in PACKAGE.glob("*.py"):
        tree = ast.parse(path.read_text())
        graph[path.stem] = {target for node in _runtime_imports(tree) for target, _ in _module(node)}
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v] & graph.keys():
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1 or v in graph[v]:
                found.append(sorted(component))

    for v in graph:
        if v not in index:
            visit(v)
    return found


def test_the_cycle_finder_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_circle_in_the_package():
    graph = _graph()
    assert "entry" in graph and "cli" in graph
    assert _cycles(graph) == []
    assert "entry" not in graph["cli"]  # the fast path falls through to the CLI, never the other way


def test_imported_names_are_in_all():
    exported = {}
    for path in PACKAGE.glob("*.py"):
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "__all__" for t in node.targets):
                exported[path.stem] = set(ast.literal_eval(node.value))
    missing = []
    for path in [*PACKAGE.glob("*.py"), *(ROOT / "tests").glob("*.py"), *(ROOT / "bench").glob("*.py")]:
        for node in _runtime_imports(ast.parse(path.read_text())):
            for target, names in _module(node):
                missing += [f"{path.relative_to(ROOT)}:{node.lineno} {target}.{name}" for name in names
                            if not name.startswith("_") and target in exported and name not in exported[target]]
    assert missing == []
