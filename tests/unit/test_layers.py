"""bridge's packages form one-way layers: the import graph, read with `ast`, has no cycle and no
upward edge, only the top layer imports verify/, and no function imports a bridge module."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2] / "bridge"

#: The layers, lowest first (the same order as bridge/__init__.py's docstring). A package or
#: top-level module may import its own layer or a lower one, never a higher one.
LAYERS: tuple[frozenset[str], ...] = tuple(
    frozenset(names.split())
    for names in (
        "errors registry qparams",
        "contract",
        "artifact",
        "runtime",
        "modes",
        "passes",
        "quantize",
        "lower",
        "verify outdir export trace_hazards inspect",
        "api importqdq",
        "cli compare __init__",
    )
)
#: Only these import verify/ (it judges a conversion; nothing below the API needs it).
VERIFY_IMPORTERS = frozenset({"verify"}) | LAYERS[-2] | LAYERS[-1]


@dataclass(frozen=True)
class Edge:
    """One import of a bridge module: where it is, what it imports, whether inside a function."""

    module: str
    target: str
    line: int
    in_function: bool

    def __str__(self) -> str:
        where = "in a function" if self.in_function else "at module level"
        return f"{self.module}:{self.line} imports {self.target} {where}"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def package(module: str) -> str:
    """The unit of layering: a subpackage (`bridge.verify.gate` → verify) or a top-level module
    (`bridge.api` → api); the package itself is `__init__`."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


MODULES = {module_name(p): p for p in ROOT.rglob("*.py")}


def targets(module: str, node: ast.Import | ast.ImportFrom) -> Iterator[str]:
    """The bridge modules an import statement names (a `from pkg import mod` names pkg.mod)."""
    if isinstance(node, ast.Import):
        names = [a.name for a in node.names]
    else:
        base = module.split(".")
        if node.level:
            is_pkg = MODULES[module].name == "__init__.py"
            base = base[: len(base) - node.level + is_pkg]
            prefix = ".".join([*base, *([node.module] if node.module else [])])
        else:
            prefix = node.module or ""
        full = [f"{prefix}.{a.name}" for a in node.names]
        names = [name if name in MODULES else prefix for name in full]
    for name in names:
        if name.split(".")[0] == "bridge":
            while name not in MODULES and "." in name:
                name = name.rsplit(".", 1)[0]
            yield name


def edges_of(module: str) -> Iterator[Edge]:
    tree = ast.parse(MODULES[module].read_text())

    def walk(node: ast.AST, in_function: bool) -> Iterator[Edge]:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.Import | ast.ImportFrom):
                for target in targets(module, child):
                    yield Edge(module, target, child.lineno, in_function)
            inner = isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda)
            yield from walk(child, in_function or inner)

    yield from walk(tree, False)


EDGES = [e for m in sorted(MODULES) for e in edges_of(m)]


def layer(pkg: str) -> int:
    found = [i for i, names in enumerate(LAYERS) if pkg in names]
    assert found, f"{pkg} is in no layer: add it to LAYERS (and to bridge/__init__.py's docstring)"
    return found[0]


def package_edges() -> dict[tuple[str, str], Edge]:
    """One example import per (importing package, imported package) pair."""
    out: dict[tuple[str, str], Edge] = {}
    for e in EDGES:
        a, b = package(e.module), package(e.target)
        if a != b:
            out.setdefault((a, b), e)
    return out


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one node (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            scc = []
            while True:
                w = stack.pop()
                scc.append(w)
                if w == v:
                    break
            if len(scc) > 1:
                found.append(sorted(scc))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_every_package_has_a_layer():
    for pkg in sorted({package(m) for m in MODULES}):
        layer(pkg)


def test_no_cycle_between_packages():
    graph: dict[str, set[str]] = {}
    for a, b in package_edges():
        graph.setdefault(a, set()).add(b)
    found = cycles(graph)
    assert not found, "package cycles:\n" + "\n".join(" ⇄ ".join(c) for c in found)


def test_no_cycle_between_modules():
    graph: dict[str, set[str]] = {}
    for e in EDGES:
        if e.target != e.module:
            graph.setdefault(e.module, set()).add(e.target)
    found = cycles(graph)
    assert not found, "module cycles:\n" + "\n".join(" ⇄ ".join(c) for c in found)


def test_no_upward_import():
    upward = [
        f"{a} (layer {layer(a)}) → {b} (layer {layer(b)}): {e}"
        for (a, b), e in sorted(package_edges().items())
        if layer(b) > layer(a)
    ]
    assert not upward, "upward imports:\n" + "\n".join(upward)


def test_verify_imported_only_by_the_top_layer():
    wrong = [
        str(e)
        for e in EDGES
        if package(e.target) == "verify" and package(e.module) not in VERIFY_IMPORTERS
    ]
    assert not wrong, "verify/ imported below the API:\n" + "\n".join(wrong)


def test_no_function_level_bridge_import():
    local = [str(e) for e in EDGES if e.in_function]
    assert not local, f"{len(local)} function-level bridge imports:\n" + "\n".join(local)
