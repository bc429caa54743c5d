"""Imports run one way: no circle among the modules of cpsweep, service and trainables.

Every `import` and `from ... import` counts, function-local ones included (a lazy import is
fine as long as it follows the direction). Parsed with ast, nothing is imported, so this is
quick and needs no Ray or MLflow.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("cpsweep", "service", "trainables")


def _module_names(root: Path, packages: tuple[str, ...]) -> dict[str, Path]:
    """Dotted module name -> file, for every .py under the packages."""
    out = {}
    for pkg in packages:
        for f in sorted((root / pkg).rglob("*.py")):
            name = ".".join(f.relative_to(root).with_suffix("").parts)
            out[name.removesuffix(".__init__")] = f
    return out


def _known(name: str, modules: dict[str, Path]) -> str | None:
    """The module `name` means (itself or the package holding a name imported from it)."""
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def _targets(node: ast.AST, here: str, is_pkg: bool, modules: dict[str, Path]) -> list[str]:
    if isinstance(node, ast.Import):
        return [m for a in node.names if (m := _known(a.name, modules))]
    assert isinstance(node, ast.ImportFrom)
    base = node.module or ""
    if node.level:  # relative: from the package of `here`
        pkg = here if is_pkg else here.rpartition(".")[0]
        for _ in range(node.level - 1):
            pkg = pkg.rpartition(".")[0]
        base = f"{pkg}.{base}" if base else pkg
    found = []
    for a in node.names:  # `from service.tracking import schema` imports a module
        m = f"{base}.{a.name}" if f"{base}.{a.name}" in modules else _known(base, modules)
        if m:
            found.append(m)
    return found


def import_graph(root: Path, packages: tuple[str, ...] = PACKAGES) -> dict[str, set[str]]:
    """Module -> the modules it imports anywhere in its body (function-local included)."""
    modules = _module_names(root, packages)
    graph: dict[str, set[str]] = {}
    for name, f in modules.items():
        deps: set[str] = set()
        for node in ast.walk(ast.parse(f.read_text(), str(f))):
            if isinstance(node, ast.Import | ast.ImportFrom):
                deps.update(_targets(node, name, f.name == "__init__.py", modules))
        graph[name] = deps - {name}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One circle per strongly connected component with more than one module, as a path
    that starts and ends at the same module (Tarjan's algorithm, iteratively)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[set[str]] = []
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            v, children = work[-1]
            w = next(children, None)
            if w is not None:
                if w not in index:
                    index[w] = low[w] = len(index)
                    stack.append(w)
                    on_stack.add(w)
                    work.append((w, iter(sorted(graph[w]))))
                elif w in on_stack:
                    low[v] = min(low[v], index[w])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
            if low[v] == index[v]:
                comp = set()
                while True:
                    w = stack.pop()
                    on_stack.discard(w)
                    comp.add(w)
                    if w == v:
                        break
                if len(comp) > 1:
                    components.append(comp)
    return [_circle(graph, comp) for comp in components]


def _circle(graph: dict[str, set[str]], comp: set[str]) -> list[str]:
    """A shortest path from the component's first module back to itself, inside it."""
    first = min(comp)
    paths = {first: [first]}
    queue = [first]
    while queue:
        v = queue.pop(0)
        for w in sorted(graph[v] & comp):
            if w == first:
                return [*paths[v], first]
            if w not in paths:
                paths[w] = [*paths[v], w]
                queue.append(w)
    raise AssertionError(f"no circle through {first}")  # a component always has one


def test_no_import_circles() -> None:
    found = cycles(import_graph(ROOT))
    assert not found, "import circles (move the shared piece down a layer):\n" + "\n".join(
        " -> ".join(c) for c in found
    )


# service/ from the bottom up (README "Layout"): a module imports only from its own layer
# or below. The spec layer is service's top-level modules other than the entry points.
LAYERS = ("trainables", "spec", "tracking", "reporting", "sweeps", "jobs", "api", "entry")
_ENTRY_POINTS = {"service.cli", "service.job_entry"}


def _layer(module: str) -> int:
    parts = module.split(".")
    if parts[0] != "service":
        return 0  # trainables, and cpsweep (lazy re-exports, checked as trainables)
    if module in _ENTRY_POINTS:
        return LAYERS.index("entry")
    if len(parts) > 2 or (len(parts) == 2 and parts[1] in LAYERS):
        return LAYERS.index(parts[1])
    return LAYERS.index("spec")


def test_service_imports_only_downward() -> None:
    graph = import_graph(ROOT, ("service",))
    upward = [
        f"{m} ({LAYERS[_layer(m)]}) -> {d} ({LAYERS[_layer(d)]})"
        for m, deps in sorted(graph.items())
        for d in sorted(deps)
        if _layer(d) > _layer(m)
    ]
    assert not upward, "imports against the layering:\n" + "\n".join(upward)


def test_trainables_never_imports_service() -> None:
    graph = import_graph(ROOT)
    wrong = {
        m: sorted(d for d in deps if d.startswith("service"))
        for m, deps in graph.items()
        if m.startswith("trainables")
    }
    assert not {m: d for m, d in wrong.items() if d}


def test_a_circle_through_a_function_local_import_is_found(tmp_path: Path) -> None:
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from pkg.sub import b\n")
    (pkg / "sub" / "b.py").write_text("from . import c\n")
    (pkg / "sub" / "c.py").write_text("def f():\n    from pkg.a import x\n")
    (pkg / "d.py").write_text("import pkg.a\n")  # imports into the circle, not part of it
    assert cycles(import_graph(tmp_path, ("pkg",))) == [
        ["pkg.a", "pkg.sub.b", "pkg.sub.c", "pkg.a"]
    ]
