"""The import graph of services/ and schemas/, read from the source (ast: nothing is imported).

Two rules keep the house readable:
- services/common is plumbing: it imports nothing from the domain (no services.<anything other
  than common>), so any service can use it without pulling in another's logic;
- packages do not import each other in a circle (services.common, services.policy, services.jobs,
  services.executor, services.intake, services.jobrunner, services.status, services.safety, schemas,
  and the top-level domain modules such as services.buckets): a package can be read knowing only
  what it imports.

A failure names each offending arrow and the line that draws it."""

from __future__ import annotations

import ast
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
ROOTS = ("services", "schemas")
PLUMBING = "services.common"


@dataclass(frozen=True)
class Arrow:
    source: str  # the importing module
    target: str  # the imported module
    where: str  # path:line

    def __str__(self) -> str:
        return f"{self.source} -> {self.target} ({self.where})"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def all_modules() -> dict[str, Path]:
    modules = {}
    for root in ROOTS:
        for path in sorted((REPO / root).rglob("*.py")):
            if "__pycache__" not in path.parts:
                modules[module_name(path)] = path
    return modules


def arrows(modules: dict[str, Path]) -> list[Arrow]:
    """Every import of a module of services/ or schemas/ by one of them (at any depth of the file:
    an import inside a function or under TYPE_CHECKING is a dependency all the same)."""
    found = []
    for name, path in modules.items():
        is_package = path.name == "__init__.py"
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = name.split(".") if is_package else name.split(".")[:-1]
                    base = base[: len(base) - (node.level - 1)]
                    module = ".".join(base + ([node.module] if node.module else []))
                else:
                    module = node.module or ""
                # `from services import workreqs` imports the module services.workreqs
                targets = [f"{module}.{alias.name}" if f"{module}.{alias.name}" in modules else module
                           for alias in node.names]
            for target in targets:
                if target.split(".")[0] in ROOTS:
                    found.append(Arrow(name, target, f"{path.relative_to(REPO)}:{node.lineno}"))
    return found


def package_of(module: str) -> str:
    """services.<package> for a module of a package, the module itself for a top-level one
    (services.buckets), `schemas` for all of schemas/."""
    parts = module.split(".")
    if parts[0] == "schemas":
        return "schemas"
    return ".".join(parts[:2])


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one node (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(edges.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
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

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return found


def test_the_graph_is_read_from_the_source():
    modules = all_modules()
    assert "services.common.bus" in modules and "schemas.subjects" in modules
    found = {(a.source, a.target) for a in arrows(modules)}
    assert ("services.policy.registry", "services.policy.vocabulary") in found  # a relative import resolved
    assert ("services.policy.service", "services.workreqs") in found  # `from services import workreqs`


def test_common_is_plumbing_and_imports_nothing_from_the_domain():
    wrong = [a for a in arrows(all_modules())
             if package_of(a.source) == PLUMBING and a.target.startswith("services.")
             and package_of(a.target) != PLUMBING]
    assert not wrong, (
        "services/common holds plumbing only and must not import the domain; move the domain code out "
        "of common (or the plumbing into common). Offending imports:\n  " + "\n  ".join(map(str, wrong))
    )


def test_no_two_packages_import_each_other_in_a_circle():
    by_edge: dict[tuple[str, str], list[Arrow]] = defaultdict(list)
    for arrow in arrows(all_modules()):
        source, target = package_of(arrow.source), package_of(arrow.target)
        if source != target and target != "services":
            by_edge[source, target].append(arrow)
    edges: dict[str, set[str]] = defaultdict(set)
    for source, target in by_edge:
        edges[source].add(target)
    messages = []
    for component in cycles(edges):
        members = set(component)
        lines = [f"  {s} -> {t}: {by_edge[s, t][0]}" + (f" (and {len(by_edge[s, t]) - 1} more)" if len(by_edge[s, t]) > 1 else "")
                 for s, t in sorted(by_edge) if s in members and t in members]
        messages.append(f"packages {', '.join(component)} import each other in a circle:\n" + "\n".join(lines))
    assert not messages, "\n".join(messages)


def test_the_checks_catch_what_they_are_for():
    """The detector itself: a circle and an arrow out of common are found and named."""
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []
    assert package_of("services.common.bus") == PLUMBING
    assert package_of("services.buckets") == "services.buckets"
    assert package_of("schemas.subjects") == "schemas"
