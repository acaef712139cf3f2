"""The layering of mmbot's packages, checked from the source so it cannot drift.

The exchange client (``mmbot.kalshi``) is a library of its own; the daemon's parts build on
it; the mock exchange, the benchmark and the command line sit on top. Dependencies run
downwards only, and there are no cycles between packages.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OURS = ("mmbot", "mmbot_strategies", "strategies", "benchmarks", "tests")
#: Packages that assemble or drive the daemon; nothing in the daemon may import them.
ON_TOP = ("mmbot.cli", "mmbot.bench", "mmbot.mock", "mmbot.__main__")


def _unit(module: str) -> str:
    """Return the unit a module belongs to: ``mmbot.x`` for ``mmbot.x.y``."""
    return ".".join(module.split(".")[:2])


def _imports() -> dict[str, set[str]]:
    """Map each unit under mmbot/ to the units of ours it imports at any depth of its code."""
    graph: dict[str, set[str]] = defaultdict(set)
    for path in ROOT.glob("mmbot/**/*.py"):
        parts = path.relative_to(ROOT).with_suffix("").parts
        module = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        unit = _unit(module)
        graph.setdefault(unit, set())
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            elif isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            else:
                continue
            for name in names:
                if name.split(".")[0] in OURS and _unit(name) != unit:
                    graph[unit].add(_unit(name))
    return graph


def test_the_exchange_client_depends_on_nothing_else_of_mmbot() -> None:
    assert _imports()["mmbot.kalshi"] == set()


def test_mmbot_never_imports_tests_benchmarks_or_the_bundled_strategies() -> None:
    offenders = {
        unit: sorted(t for t in targets if t.split(".")[0] != "mmbot")
        for unit, targets in _imports().items()
        if any(t.split(".")[0] != "mmbot" for t in targets)
    }
    assert offenders == {}


def test_the_daemon_does_not_import_what_drives_it() -> None:
    offenders = {
        unit: sorted(t for t in targets if t in ON_TOP)
        for unit, targets in _imports().items()
        if not unit.startswith(ON_TOP) and any(t in ON_TOP for t in targets)
    }
    assert offenders == {}


def test_only_the_command_line_imports_the_command_line() -> None:
    importers = {unit for unit, targets in _imports().items() if "mmbot.cli" in targets}
    assert importers <= {"mmbot.__main__"}


def test_there_are_no_cycles_between_packages() -> None:
    graph = _imports()
    cycles: list[list[str]] = []

    def visit(unit: str, path: list[str]) -> None:
        for target in sorted(graph.get(unit, ())):
            if target == "mmbot":
                continue  # the root package holds only the version
            if target in path:
                cycles.append([*path[path.index(target) :], target])
            elif len(path) < len(graph):
                visit(target, [*path, target])

    for unit in sorted(graph):
        visit(unit, [unit])
    assert cycles == []


def test_no_module_is_too_big_to_live_in() -> None:
    # Past this a module holds more than one concern; split it along its seams.
    limit = 800
    sizes = {
        str(path.relative_to(ROOT)): len(path.read_text().splitlines())
        for path in ROOT.glob("mmbot/**/*.py")
    }
    assert {path: n for path, n in sizes.items() if n > limit} == {}
