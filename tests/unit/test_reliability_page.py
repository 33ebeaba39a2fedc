"""docs/RELIABILITY.md names the test that proves each promise: a name that matches no test is a promise nobody
checks (helper-173 found none, but nothing kept it so)."""

from __future__ import annotations

import ast
import functools
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


@functools.cache
def _tests_in(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return {node.name for node in ast.walk(tree) if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))}


def named_tests(text: str) -> list[tuple[str, str]]:
    """(file, test) for every test the page's tables name: `tests/x.py::name`, `::name` (the file named last in that
    cell), a bare `name` (the section's file: its table header's or its heading's `tests in ...`; in a section without
    one, the file named last in the cell), and a file alone (test "")."""
    named: list[tuple[str, str]] = []
    section = ""
    for line in text.splitlines():
        if line.startswith("## "):
            found = re.search(r"tests in `([^`]+)`", line)
            section = found.group(1) if found else ""
            continue
        header = re.match(r"\| promise \| test \(`([^`]+)`", line)
        if header:
            section = header.group(1)
            continue
        if not line.startswith("| ") or line.startswith("| promise"):
            continue
        last = section
        for item in re.findall(r"`([^`]+)`", line.rstrip().rstrip("|").rsplit("|", 1)[1]):
            if item.startswith("tests/"):
                last, _, name = item.partition("::")
                named.append((last, name.split(" ")[0]))
            elif item.startswith("::"):
                named.append((last, item[2:]))
            elif re.fullmatch(r"test_\w+", item):
                named.append((section or last, item))
    return named


def test_every_test_the_reliability_page_names_exists() -> None:
    named = named_tests((ROOT / "docs" / "RELIABILITY.md").read_text(encoding="utf-8"))
    assert len(named) > 200  # the parser still reads the tables
    missing = []
    for file, name in named:
        path = ROOT / file
        if not path.exists() or (name and name not in _tests_in(path)):
            missing.append(f"{file}::{name}" if name else file)
    assert not missing, missing


def test_a_name_that_matches_no_test_is_found() -> None:
    page = "## 9. X\n\n| promise | test (`tests/unit/test_reliability_page.py` unless named) |\n|---|---|\n"
    page += "| a | `test_nope`, `tests/unit/test_recipe.py::test_also_nope`, `::test_neither`, `test_none` |\n"
    page += "\n## 10. Y\n\n| promise | test |\n|---|---|\n| b | `tests/unit/test_api.py::test_a`, `test_b` |\n"
    assert named_tests(page) == [
        ("tests/unit/test_reliability_page.py", "test_nope"),
        ("tests/unit/test_recipe.py", "test_also_nope"),
        ("tests/unit/test_recipe.py", "test_neither"),
        ("tests/unit/test_reliability_page.py", "test_none"),
        ("tests/unit/test_api.py", "test_a"),
        ("tests/unit/test_api.py", "test_b"),
    ]
    assert "test_nope" not in _tests_in(ROOT / "tests" / "unit" / "test_reliability_page.py")
