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


# service/ from the bottom up (docs/architecture.md, "Layout"): a module imports only from its
# own layer or below. The spec layer is service's top-level modules other than the entry points.
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


# trainables/ from the bottom up (trainables/__init__.py): the method sits on core alone,
# data and models on the method, the trial runtime on top. data and models share a floor
# and do not import each other.
TRAINABLES_LAYERS = {"core": 0, "method": 1, "data": 2, "models": 2, "run": 3}
# Third-party packages a layer must not import (the method is pure: no Ray, no I/O stacks).
FORBIDDEN = {"method": ("ray", "mlflow", "codecarbon", "service")}


def _trainables_layer(module: str) -> str:
    parts = module.split(".")
    assert parts[0] == "trainables"
    if len(parts) == 1:
        return "core"  # the package docstring only
    assert parts[1] in TRAINABLES_LAYERS, f"{module}: not in a layer {sorted(TRAINABLES_LAYERS)}"
    return parts[1]


def test_every_trainables_module_is_in_a_layer() -> None:
    stray = sorted(
        str(f.relative_to(ROOT))
        for f in (ROOT / "trainables").glob("*.py")
        if f.name != "__init__.py"
    )
    assert not stray, f"modules outside trainables' layer folders: {stray}"


def test_trainables_imports_only_downward() -> None:
    graph = import_graph(ROOT, ("trainables",))
    wrong = []
    for m, deps in sorted(graph.items()):
        here = _trainables_layer(m)
        for d in sorted(deps):
            there = _trainables_layer(d)
            lower = TRAINABLES_LAYERS[there] < TRAINABLES_LAYERS[here]
            if there != here and not lower:
                wrong.append(f"{m} ({here}) -> {d} ({there})")
    assert not wrong, "imports against trainables' layering:\n" + "\n".join(wrong)


def _top_level_imports(f: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(f.read_text(), str(f))):
        if isinstance(node, ast.Import):
            found.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
            found.add(node.module.split(".")[0])
    return found


def test_the_method_imports_no_ray_or_tracking() -> None:
    wrong = {
        str(f.relative_to(ROOT)): sorted(_top_level_imports(f) & set(FORBIDDEN["method"]))
        for f in sorted((ROOT / "trainables" / "method").glob("*.py"))
    }
    assert not {k: v for k, v in wrong.items() if v}, wrong
