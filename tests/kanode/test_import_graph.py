"""kanode's import graph, parsed from the source (ast): no import cycle among kanode's modules, and
no library module imports a command-line module (``kanode.fit``, ``*.cli``, ``*.__main__``).

Edges are every runtime import of a module, at module level or inside a function (a lazy
import is still a dependency); imports under ``if TYPE_CHECKING:`` are not. Importing
``a.b.c`` also runs the package ``a.b`` first, so that is an edge too, except to the
importer's own ancestor packages (already running) and to the root package.
"""

from __future__ import annotations

import ast
from pathlib import Path

import kanode

ROOT = Path(kanode.__file__).parent


def _modules() -> dict[str, tuple[Path, bool]]:
    """Module name → (file, is a package)."""
    modules = {}
    for path in ROOT.rglob("*.py"):
        parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
        package = parts[-1] == "__init__"
        modules[".".join(parts[:-1] if package else parts)] = (path, package)
    return modules


def _runtime_imports(tree: ast.AST) -> list[ast.Import | ast.ImportFrom]:
    """Import statements outside ``if TYPE_CHECKING:`` blocks."""
    found = []

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            found.append(node)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return found


def import_graph() -> dict[str, set[str]]:
    """kanode module → the kanode modules it imports (see the module docstring)."""
    modules = _modules()
    graph = {}
    for name, (path, package) in modules.items():
        targets = []
        for node in _runtime_imports(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                targets += [alias.name for alias in node.names]
                continue
            base = name if package else name.rpartition(".")[0]
            for _ in range(max(node.level - 1, 0)):
                base = base.rpartition(".")[0]
            target = (base + ("." + node.module if node.module else "")) if node.level else node.module
            subs = [f"{target}.{a.name}" for a in node.names if f"{target}.{a.name}" in modules]
            targets += subs + ([target] if len(subs) < len(node.names) else [])
        deps = set()
        for target in targets:
            if target in modules and target != name:
                deps.add(target)
            parts = target.split(".")
            for i in range(2, len(parts)):  # the subpackages that run first
                package_name = ".".join(parts[:i])
                if package_name in modules and not name.startswith(package_name + ".") and package_name != name:
                    deps.add(package_name)
        graph[name] = deps
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def connect(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                connect(w)
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
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            connect(v)
    return found


def is_cli(name: str) -> bool:
    return name == "kanode.fit" or name.endswith((".cli", ".__main__"))


def test_the_graph_sees_known_imports() -> None:
    graph = import_graph()
    # lifecycle imports kanode.ensemble.field (and so runs the package kanode.ensemble first)
    assert {"kanode.train", "kanode.ensemble.field", "kanode.ensemble"} <= graph["kanode.lifecycle"]
    assert "kanode.ensemble" not in graph["kanode.ensemble.field"]  # its own package is running already
    assert "kanode.ensemble.cli" in graph["kanode.fit"]            # the lazy import of --seeds
    assert "kanode.fitting" in graph["kanode"]                      # the package's fit property
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_kanode_has_no_import_cycle() -> None:
    assert cycles(import_graph()) == []


def test_no_library_module_imports_a_command_line_module() -> None:
    graph = import_graph()
    clis = {name for name in graph if is_cli(name)}
    assert {"kanode.fit", "kanode.ensemble.cli", "kanode.ensemble.__main__", "kanode.__main__"} <= clis
    offenders = {name: sorted(deps & clis) for name, deps in graph.items() if not is_cli(name) and deps & clis}
    assert offenders == {}
