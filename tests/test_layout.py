"""The collector's layout stays true: its parts import only what their docstrings allow,
nothing imports the CLI, no two modules import each other round, and no file of the
collector or the unit is longer than 700 lines.

Imports are read from the source (module level and inside functions alike, since a
lazy import is still a dependency); only ``if TYPE_CHECKING:`` blocks are left out, as
they never run."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PARTS = ("intake", "reading", "outbound", "edge")
#: Which parts each part may import (``shared``: the modules at the top of collector).
ALLOWED = {
    "shared": {"shared"},
    "migrations": {"shared"},
    "reading": {"shared", "reading"},
    "intake": {"shared", "intake", "reading"},
    "outbound": {"shared", "reading", "outbound"},
    "edge": {"shared", "reading", "outbound", "edge", "intake"},
    "main": {"shared", *PARTS},
    "cli": {"shared", "main", "cli", *PARTS},
}
#: The one door into a part from a part that may otherwise not use it.
DOORS = {
    ("edge", "intake"): {"collector.intake.store"},
    ("intake", "outbound"): {"collector.outbound.outbox"},
}
MAX_LINES = 700


def part_of(module: str) -> str:
    if module == "collector.main":
        return "main"
    for name in (*PARTS, "cli", "migrations"):
        if module == f"collector.{name}" or module.startswith(f"collector.{name}."):
            return name
    return "shared"


def module_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def sources(*tops: str) -> dict[str, str]:
    out = {}
    for top in tops:
        for path in sorted((ROOT / top).rglob("*.py")):
            out[module_name(path)] = path.read_text(encoding="utf-8")
    return out


def _type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def imports(source: str, module: str, known: set[str], *, top_only: bool = False) -> set[str]:
    """The modules of ``known`` that ``source`` imports (a package's submodule named in
    ``from package import name`` counts as that submodule)."""
    package = module if f"{module}.__init__" in known or _is_package(module, known) else ""
    found: set[str] = set()

    def visit(nodes: list[ast.stmt], in_function: bool) -> Iterator[ast.stmt]:
        for node in nodes:
            if isinstance(node, ast.If) and _type_checking(node):
                yield from visit(node.orelse, in_function)
                continue
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and top_only:
                continue
            yield node
            for field in ("body", "orelse", "finalbody", "handlers"):
                inner = getattr(node, field, None)
                if isinstance(inner, list) and inner and isinstance(inner[0], ast.AST):
                    yield from visit(inner, in_function)  # type: ignore[arg-type]

    for node in visit(ast.parse(source).body, False):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name in known:
                    found.add(alias.name)
        elif isinstance(node, ast.ImportFrom) and node.module:
            base = node.module
            if node.level:
                anchor = (package or module).split(".")
                base = ".".join([*anchor[: len(anchor) - node.level + 1], node.module])
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                if sub in known:
                    found.add(sub)
                elif base in known:
                    found.add(base)
    return found - {module}


def _is_package(module: str, known: set[str]) -> bool:
    return any(k.startswith(module + ".") for k in known)


def violations(srcs: dict[str, str]) -> list[str]:
    known = set(srcs)
    out = []
    for module, source in sorted(srcs.items()):
        if not module.startswith("collector"):
            if any(d == "collector.cli" or d.startswith("collector.cli.")
                   for d in imports(source, module, known)):  # fmt: skip
                out.append(f"{module} imports the CLI")
            continue
        mine = part_of(module)
        for dep in sorted(imports(source, module, known)):
            if not dep.startswith("collector"):
                continue
            theirs = part_of(dep)
            door = DOORS.get((mine, theirs))
            if door is not None:
                if dep not in door:
                    out.append(f"{module} ({mine}) imports {dep}: only {sorted(door)} of {theirs}")
                continue
            if theirs not in ALLOWED[mine]:
                out.append(f"{module} ({mine}) imports {dep} ({theirs})")
    return out


def cycles(srcs: dict[str, str]) -> list[list[str]]:
    """Strongly connected groups of modules that import each other at load time
    (importing ``a.b`` runs ``a`` first, so it counts as importing ``a`` too)."""
    known = set(srcs)
    graph: dict[str, set[str]] = {}
    for module, source in srcs.items():
        deps = set()
        for dep in imports(source, module, known, top_only=True):
            deps.add(dep)
            parts = dep.split(".")
            for i in range(1, len(parts)):
                parent = ".".join(parts[:i])
                if parent in known and not module.startswith(parent + "."):
                    deps.add(parent)
        graph[module] = deps
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    groups: list[list[str]] = []

    def strong(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for v in sorted(graph):
        if v not in index:
            strong(v)
    return groups


def test_each_part_imports_only_what_it_may_and_nothing_imports_the_cli() -> None:
    srcs = sources("collector", "device", "simulator", "provisioning", "bench")
    assert violations(srcs) == []


def test_no_modules_import_each_other_round() -> None:
    assert cycles(sources("collector", "device")) == []


@pytest.mark.parametrize(
    ("module", "added", "want"),
    [
        ("collector.reading.scores", "from collector.intake.ingest import Ingest",
         "collector.reading.scores (reading) imports collector.intake.ingest (intake)"),
        ("collector.edge.online", "from collector.intake.store.events import EventWriter",
         "collector.edge.online (edge) imports collector.intake.store.events: only"),
        ("collector.outbound.webhooks", "from collector.edge import auth",
         "collector.outbound.webhooks (outbound) imports collector.edge.auth (edge)"),
        ("collector.registry", "from collector.reading import scores",
         "collector.registry (shared) imports collector.reading.scores (reading)"),
        ("simulator.demo", "from collector.cli import main", "simulator.demo imports the CLI"),
        ("collector.edge.web", "\ndef later() -> None:\n    from collector.cli import entry\n",
         "collector.edge.web (edge) imports collector.cli.entry (cli)"),
    ],
)  # fmt: skip
def test_a_forbidden_import_is_named(module: str, added: str, want: str) -> None:
    srcs = sources("collector", "device", "simulator", "provisioning", "bench")
    srcs[module] += "\n" + added + "\n"
    assert any(v.startswith(want) for v in violations(srcs)), violations(srcs)


def test_a_cycle_is_named() -> None:
    srcs = sources("collector", "device")
    srcs["collector.reading.gaps"] += "\nfrom collector.reading import fleet\n"
    srcs["collector.reading.fleet"] += "\nfrom collector.reading import gaps\n"
    assert ["collector.reading.fleet", "collector.reading.gaps"] in cycles(srcs)


def test_no_file_of_the_collector_or_the_unit_is_longer_than_700_lines() -> None:
    long = {
        str(path.relative_to(ROOT)): n
        for top in ("collector", "device")
        for path in (ROOT / top).rglob("*.py")
        if "migrations" not in path.parts
        and (n := len(path.read_text(encoding="utf-8").splitlines())) > MAX_LINES
    }
    assert long == {}
