"""The layout of the README's table, kept true: imports point down, and there is no cycle.

The import graph is read from the source with ``ast`` (imports under ``TYPE_CHECKING`` count: a
cycle of types is still a cycle a reader has to untangle).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import ROOT

PACKAGES = ("aggregator", "simulator", "tui", "bench", "fuzz", "mutation")
# The floors of aggregator/, top down: a module may import only from floors below its own, or
# from its own package (a package's modules may import each other, without a cycle).
FLOORS = {
    "aggregator.__main__": 6,
    "aggregator.reads": 6,  # the read process's program: it builds the server's app
    "aggregator.service": 5,
    "aggregator.front": 4,
    "aggregator.actors": 3,
    "aggregator.decoders": 2,
    "aggregator.store": 2,
}
SHARED_FLOOR = 1  # config, settings, messages, incidents, the package itself
# What each program outside the server may take from it.
OUTSIDE = {
    "tui": ("aggregator.settings",),
    "simulator": ("aggregator.",),
    "bench": ("aggregator.", "simulator."),
    "fuzz": ("aggregator.", "simulator."),
    "mutation": (),  # it edits and runs the tree; it imports none of it
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules() -> dict[str, Path]:
    return {
        module_name(path): path
        for package in PACKAGES
        for path in sorted((ROOT / package).rglob("*.py"))
    }


def imports(name: str, path: Path, known: set[str]) -> Iterator[str]:
    """The modules of this tree that ``path`` imports (``from a import b`` names a.b if it is a
    module, else a)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            targets = [f"{base}.{alias.name}" for alias in node.names]
            targets = [t if t in known else base for t in targets]
        else:
            continue
        for target in targets:
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target and target != name:
                yield target


def graph() -> dict[str, set[str]]:
    found = modules()
    known = set(found)
    return {name: set(imports(name, path, known)) for name, path in found.items()}


def group(module: str) -> str:
    """The floor's name a module belongs to (``shared`` for the bottom modules)."""
    for prefix in FLOORS:
        if module == prefix or module.startswith(prefix + "."):
            return prefix
    return "shared"


def floor(module: str) -> int:
    return FLOORS.get(group(module), SHARED_FLOOR)


def test_there_is_no_import_cycle() -> None:
    edges = graph()
    visiting: list[str] = []
    done: set[str] = set()

    def visit(module: str) -> None:
        if module in done:
            return
        assert module not in visiting, "import cycle: " + " -> ".join(
            [*visiting[visiting.index(module) :], module]
        )
        visiting.append(module)
        for target in sorted(edges[module]):
            visit(target)
        visiting.pop()
        done.add(module)

    for module in sorted(edges):
        visit(module)


def test_the_graph_is_read() -> None:
    """The checks above mean something only if the reader finds the known arrows."""
    edges = graph()
    assert "aggregator.actors.writer" in edges["aggregator.service"]
    assert "aggregator.messages" in edges["aggregator.decoders.publish"]
    assert "aggregator.settings" in edges["tui.__main__"]


@pytest.mark.parametrize("module", sorted(m for m in modules() if m.startswith("aggregator")))
def test_server_imports_point_down(module: str) -> None:
    for target in graph()[module]:
        assert target.startswith("aggregator"), f"{module} imports {target}: outside the server"
        down = floor(target) < floor(module) or group(target) == group(module)
        assert down, f"{module} ({group(module)}) imports {target} ({group(target)}): up or across"


@pytest.mark.parametrize("program", sorted(OUTSIDE))
def test_programs_take_only_what_the_layout_allows(program: str) -> None:
    allowed = (f"{program}", *OUTSIDE[program])
    for module, targets in graph().items():
        if module.split(".")[0] != program:
            continue
        for target in targets:
            assert target == program or target.startswith(allowed), f"{module} imports {target}"


def test_the_readme_has_a_line_for_every_package() -> None:
    layout = (ROOT / "README.md").read_text().partition("## Layout")[2]
    rows = [line for line in layout.splitlines() if line.startswith("| `")]
    for package in PACKAGES:
        if package == "aggregator":
            continue  # one line per subpackage of the server, checked by the floors above
        assert any(row.startswith(f"| `{package}/`") for row in rows), f"no line for {package}/"
    for prefix in FLOORS:
        if prefix.count(".") == 1 and not prefix.endswith(("__main__", "service", "reads")):
            path = prefix.replace(".", "/") + "/"
            assert any(row.startswith(f"| `{path}`") for row in rows), f"no line for {path}"


def test_the_development_page_names_every_module_of_the_server() -> None:
    page = (ROOT / "docs" / "development.md").read_text().partition("## Layout")[2]
    block = page.partition("```\n")[2].partition("```")[0]
    for path in sorted((ROOT / "aggregator").rglob("*.py")):
        if path.name != "__init__.py":
            assert f" {path.name} " in f" {block} ".replace("\n", " "), f"{path} not in the page"
