"""The code-layout rules, checked from the source text (nothing is imported):

* no import cycle among the project's modules, counting imports inside functions (only those under
  ``if TYPE_CHECKING:`` are left out: they never run);
* the layers: ``rec_contract`` imports no other package of the project; ``service`` and ``training``
  never import ``offline_jobs`` or ``benchmarks``; ``offline_jobs`` reaches into ``service`` only
  through its public write path (``service.online_store``) and the bundle loader
  (``service.bundle_runtime``);
* no file of ``offline_jobs`` over 500 lines but the embedded LLM engine;
* no function over 100 lines outside ``benchmarks``.

``python -m scripts.check_layout`` prints every breach and exits 1 if there is one
(``make lint`` runs it; ``tests/unit/test_code_layout.py`` asserts each rule).
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("rec_contract", "service", "training", "offline_jobs", "benchmarks", "scripts")
MAX_FILE_LINES = 500
FILE_LINES_EXEMPT = frozenset({"offline_jobs/llm/torch_engine.py"})  # the embedded LLM engine
MAX_FUNCTION_LINES = 100
FUNCTION_ROOTS = ("rec_contract", "service", "training", "offline_jobs", "scripts", "tests")
SERVICE_API_FOR_JOBS = frozenset({"service.online_store", "service.bundle_runtime"})
LOWER_THAN = {
    "rec_contract": ("service", "training", "offline_jobs", "benchmarks", "scripts"),
    "service": ("offline_jobs", "benchmarks", "scripts"),
    "training": ("offline_jobs", "benchmarks", "scripts", "service"),
}


@dataclass(frozen=True)
class Import:
    source: str
    target: str
    line: int


def modules(root: Path = ROOT) -> dict[str, Path]:
    """``{dotted module name: file}`` of every project module (a package by its ``__init__``)."""
    out: dict[str, Path] = {}
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            parts = list(path.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            out[".".join(parts)] = path
    return out


def _type_checking_nodes(tree: ast.AST) -> set[int]:
    skipped: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skipped.update(id(child) for stmt in node.body for child in ast.walk(stmt))
    return skipped


def _resolve(name: str, known: dict[str, Path]) -> str | None:
    while name and name not in known:
        name = name.rpartition(".")[0]
    return name or None


def imports(known: dict[str, Path]) -> Iterator[Import]:
    """Every import of one project module by another, wherever it stands in the file."""
    for name, path in known.items():
        tree = ast.parse(path.read_text(), str(path))
        skipped = _type_checking_nodes(tree)
        for node in ast.walk(tree):
            if id(node) in skipped:
                continue
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets = [f"{node.module}.{alias.name}" for alias in node.names]
            for target in targets:
                resolved = _resolve(target, known)
                if resolved is not None and resolved != name:
                    yield Import(name, resolved, getattr(node, "lineno", 0))


def cycles(edges: list[Import]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm, iterative)."""
    graph: dict[str, set[str]] = {}
    for edge in edges:
        graph.setdefault(edge.source, set()).add(edge.target)
        graph.setdefault(edge.target, set())
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def layer_breaches(edges: list[Import]) -> list[str]:
    out = []
    for edge in edges:
        top, target_top = edge.source.split(".")[0], edge.target.split(".")[0]
        if target_top in LOWER_THAN.get(top, ()):
            out.append(f"{edge.source}:{edge.line} imports {edge.target} (a layer above it)")
        if top == "offline_jobs" and target_top == "service" and edge.target not in SERVICE_API_FOR_JOBS:
            out.append(
                f"{edge.source}:{edge.line} imports {edge.target}: the jobs use only "
                f"{', '.join(sorted(SERVICE_API_FOR_JOBS))} of the service"
            )
    return out


def long_files(root: Path = ROOT) -> list[str]:
    out = []
    for path in sorted((root / "offline_jobs").rglob("*.py")):
        rel = path.relative_to(root).as_posix()
        n = len(path.read_text().splitlines())
        if n > MAX_FILE_LINES and rel not in FILE_LINES_EXEMPT:
            out.append(f"{rel}: {n} lines (at most {MAX_FILE_LINES})")
    return out


def long_functions(root: Path = ROOT) -> list[str]:
    out = []
    for folder in FUNCTION_ROOTS:
        for path in sorted((root / folder).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                    n = (node.end_lineno or node.lineno) - node.lineno + 1
                    if n > MAX_FUNCTION_LINES:
                        rel = path.relative_to(root).as_posix()
                        out.append(
                            f"{rel}:{node.lineno} {node.name}: {n} lines (at most {MAX_FUNCTION_LINES})"
                        )
    return out


def problems(root: Path = ROOT) -> list[str]:
    edges = list(imports(modules(root)))
    found = [f"import cycle: {' <-> '.join(component)}" for component in cycles(edges)]
    return found + layer_breaches(edges) + long_files(root) + long_functions(root)


def main() -> int:
    found = problems()
    for line in found:
        print(line)
    print(f"code layout: {len(found)} problem(s)" if found else "code layout: ok")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
