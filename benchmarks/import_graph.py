"""The import graph of the ``varsmooth`` package, read from the source with ``ast`` (nothing is imported).

    python benchmarks/import_graph.py [SRC_DIR]          # default: src/varsmooth next to this file

Prints the modules (with their line counts), the edges (``a -> b``: ``a`` imports ``b``, at module level or inside a
function; ``if TYPE_CHECKING:`` blocks never run and are left out), each module's level (0: imports no other
varsmooth module; otherwise 1 + the highest level it imports,
computed on the graph with its cycles collapsed), the import cycles (strongly connected components with more than
one module), the private imports across modules (``from x import _y``, ``import x._y``, ``x._y`` on an imported
module, a private module ``_m`` imported from outside its own file) and the experiments that import another
experiment. ``tests/test_architecture.py`` runs the same functions and fails on any cycle or private import.
"""

from __future__ import annotations

import ast
import sys
from dataclasses import dataclass, field
from pathlib import Path

ROOT = "varsmooth"


@dataclass
class Graph:
    """Modules (dotted names -> file), edges (``(a, b, line, kind)``, kind "module" or "function") and the
    private imports found (``"file:line: text"``)."""

    files: dict[str, Path] = field(default_factory=dict)
    edges: set[tuple[str, str]] = field(default_factory=set)
    function_edges: set[tuple[str, str]] = field(default_factory=set)
    private: list[str] = field(default_factory=list)

    def imports(self, module: str) -> set[str]:
        return {b for a, b in self.edges | self.function_edges if a == module}


def module_name(src: Path, path: Path) -> str:
    parts = list(path.relative_to(src.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _resolve(graph: Graph, module: str, is_package: bool, node: ast.ImportFrom) -> str:
    if node.level == 0:
        return node.module or ""
    base = module.split(".") if is_package else module.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def build(src: str | Path) -> Graph:
    """The graph of every module under ``src`` (the package folder, e.g. ``src/varsmooth``)."""
    src = Path(src).resolve()
    graph = Graph()
    for path in sorted(src.rglob("*.py")):
        graph.files[module_name(src, path)] = path
    for name, path in graph.files.items():
        _scan(graph, name, path)
    return graph


def _target(graph: Graph, dotted: str) -> str | None:
    """The varsmooth module that ``dotted`` names (a module, or a name inside one), None outside the package."""
    while dotted and dotted not in graph.files:
        dotted = dotted.rpartition(".")[0]
    return dotted or None


def _scan(graph: Graph, module: str, path: Path) -> None:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    is_package = path.name == "__init__.py"
    rel = path.relative_to(path.parents[len(module.split(".")) - (0 if is_package else 1)]).as_posix()
    aliases: dict[str, str] = {}  # local name -> varsmooth module it is bound to

    def add(target: str | None, node: ast.AST, top: bool) -> None:
        if target is None or target == module:
            return
        (graph.edges if top else graph.function_edges).add((module, target))

    def visit(node: ast.AST, top: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                continue  # imports for type checkers only: never run
            inner = top and not isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda)
            if isinstance(child, ast.Import):
                for a in child.names:
                    target = _target(graph, a.name)
                    if target is None:
                        continue
                    add(target, child, top)
                    if any(_is_private(p) for p in a.name.split(".")[1:]):
                        graph.private.append(f"{rel}:{child.lineno}: import {a.name}")
                    if a.asname:
                        aliases[a.asname] = target
            elif isinstance(child, ast.ImportFrom):
                base = _resolve(graph, module, is_package, child)
                if _target(graph, base) is None:
                    continue
                for a in child.names:
                    sub = f"{base}.{a.name}"
                    if sub in graph.files:  # a submodule
                        add(sub, child, top)
                        aliases[a.asname or a.name] = sub
                    else:
                        add(_target(graph, base), child, top)
                    if _is_private(a.name):
                        graph.private.append(f"{rel}:{child.lineno}: from {base} import {a.name}")
                if any(_is_private(p) for p in base.split(".")[1:]):
                    graph.private.append(f"{rel}:{child.lineno}: from {base} import ...")
            elif isinstance(child, ast.Attribute) and isinstance(child.value, ast.Name):
                if child.value.id in aliases and _is_private(child.attr):
                    graph.private.append(f"{rel}:{child.lineno}: {child.value.id}._{child.attr.lstrip('_')} "
                                         f"({aliases[child.value.id]})")  # fmt: skip
            visit(child, inner)

    visit(tree, True)


def cycles(graph: Graph, *, function_level: bool = True) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan), each sorted; module-level edges only when
    ``function_level`` is False."""
    edges = graph.edges | (graph.function_edges if function_level else set())
    succ: dict[str, list[str]] = {m: [] for m in graph.files}
    for a, b in sorted(edges):
        succ[a].append(b)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []
    sys.setrecursionlimit(max(10_000, sys.getrecursionlimit()))

    def strong(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in succ[v]:
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph.files):
        if v not in index:
            strong(v)
    return sorted(out)


def levels(graph: Graph) -> dict[str, int]:
    """Each module's level on the graph with its cycles collapsed (a cycle's modules share one level)."""
    comp_of = {m: m for m in graph.files}
    for comp in cycles(graph):
        for m in comp:
            comp_of[m] = comp[0]
    succ: dict[str, set[str]] = {}
    for a, b in graph.edges | graph.function_edges:
        if comp_of[a] != comp_of[b]:
            succ.setdefault(comp_of[a], set()).add(comp_of[b])
    memo: dict[str, int] = {}

    def level(c: str) -> int:
        if c not in memo:
            memo[c] = 0
            memo[c] = 1 + max((level(d) for d in succ.get(c, ())), default=-1)
        return memo[c]

    return {m: level(comp_of[m]) for m in graph.files}


def experiment_modules(graph: Graph) -> set[str]:
    """The experiment modules: modules of ``varsmooth.experiments`` that assign ``ID`` at module level."""
    out = set()
    for name, path in graph.files.items():
        if not name.startswith(f"{ROOT}.experiments."):
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        if any(isinstance(n, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "ID" for t in n.targets)
               for n in tree.body):  # fmt: skip
            out.add(name)
    return out


def experiment_imports(graph: Graph) -> list[tuple[str, str]]:
    """``(a, b)``: experiment ``a`` imports experiment ``b``."""
    exps = experiment_modules(graph)
    return sorted((a, b) for a, b in graph.edges | graph.function_edges if a in exps and b in exps)


def report(graph: Graph) -> str:
    lv = levels(graph)
    lines = [f"{len(graph.files)} modules, {len(graph.edges)} module-level and "
             f"{len(graph.function_edges - graph.edges)} function-level-only edges"]  # fmt: skip
    by_level: dict[int, list[str]] = {}
    for m, n in lv.items():
        by_level.setdefault(n, []).append(m)
    lines.append("\nlevels (0 imports no varsmooth module):")
    for n in sorted(by_level):
        names = sorted(m.removeprefix(f"{ROOT}.") for m in by_level[n])
        lines.append(f"  {n}: {', '.join(names)}")
    lines.append("\nmodules (lines) -> imports:")
    for m in sorted(graph.files):
        size = len(graph.files[m].read_text(encoding="utf-8").splitlines())
        deps = sorted(graph.imports(m))
        fn = {b for a, b in graph.function_edges if a == m} - {b for a, b in graph.edges if a == m}
        text = ", ".join(d.removeprefix(f"{ROOT}.") + ("*" if d in fn else "") for d in deps)
        lines.append(f"  {m.removeprefix(f'{ROOT}.')} ({size}) -> {text or '-'}")
    lines.append("  (* : imported inside a function only)")
    cyc = cycles(graph)
    lines.append(f"\nimport cycles: {len(cyc)}")
    lines += [f"  {' <-> '.join(c)}" for c in cyc]
    lines.append(f"\nprivate imports across modules: {len(graph.private)}")
    lines += [f"  {p}" for p in graph.private]
    exp = experiment_imports(graph)
    lines.append(f"\nexperiments importing another experiment: {len(exp)}")
    lines += [f"  {a} -> {b}" for a, b in exp]
    big = sorted((len(p.read_text(encoding="utf-8").splitlines()), m) for m, p in graph.files.items())
    lines.append("\nmodules over 400 lines: " + (", ".join(f"{m} ({n})" for n, m in big if n > 400) or "none"))
    return "\n".join(lines)


if __name__ == "__main__":
    default = Path(__file__).resolve().parent.parent / "src" / ROOT
    print(report(build(sys.argv[1] if len(sys.argv) > 1 else default)))
