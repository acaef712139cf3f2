"""The test suite's own layout: test modules share code through tests/support/ only.

A test module that imports another one runs that module's import-time code, registers its
fixtures under a second name and ties two suites together, so that moving or marking one
breaks the other. What several modules need lives in ``tests/support/`` (or, for
fixtures, ``tests/conftest.py``).
"""

from __future__ import annotations

import ast
from pathlib import Path

TESTS = Path(__file__).resolve().parent


def _is_test_module(dotted: str) -> bool:
    """Whether a dotted module name (absolute, or relative within tests/) is a test module."""
    return dotted.split(".")[-1].startswith("test_")


def imported_test_modules(source: str) -> list[str]:
    """The test modules ``source`` imports, at any depth of its code."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [alias.name for alias in node.names if _is_test_module(alias.name)]
        elif isinstance(node, ast.ImportFrom):
            module = "." * node.level + (node.module or "")
            if _is_test_module(module):
                found.append(module)
            # `from tests import test_x` and `from . import test_x` name the module itself.
            found += [
                f"{module}.{alias.name}" for alias in node.names if _is_test_module(alias.name)
            ]
    return found


def test_no_test_module_or_support_module_imports_a_test_module() -> None:
    paths = sorted(TESTS.glob("test_*.py")) + sorted((TESTS / "support").glob("*.py"))
    offences = {
        str(path.relative_to(TESTS)): imported
        for path in paths
        if (imported := imported_test_modules(path.read_text(encoding="utf-8")))
    }
    assert offences == {}


def test_the_scan_finds_every_spelling_of_such_an_import() -> None:
    # Prove the scan is not vacuous.
    source = (
        "import tests.test_a\n"
        "from tests.test_b import x\n"
        "from tests import test_c\n"
        "from .test_d import y\n"
        "def f():\n"
        "    from tests.test_e import z\n"
        "from tests.support.polling import eventually\n"
        "import tests.conftest\n"
    )
    assert imported_test_modules(source) == [
        "tests.test_a",
        "tests.test_b",
        "tests.test_c",
        ".test_d",
        "tests.test_e",
    ]
