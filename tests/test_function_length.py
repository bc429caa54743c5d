"""No function over 50 lines in the shipped packages (tests and bench are exempt).

A function's length is its `def` line through its last line, as the AST spans it (a
nested function counts within its parent too, and on its own).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("service", "trainables", "cpsweep")
MAX_LINES = 50


def long_functions(source: str, limit: int = MAX_LINES) -> list[tuple[str, int, int]]:
    """(name, first line, length) of every function in `source` longer than `limit`."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            length = (node.end_lineno or node.lineno) - node.lineno + 1
            if length > limit:
                found.append((node.name, node.lineno, length))
    return found


def test_the_checker_counts_def_through_last_line() -> None:
    body = "".join(f"    x{i} = {i}\n" for i in range(49))
    assert long_functions(f"def fits():\n{body}") == []  # 50 lines
    method = "".join(f"        x{i} = {i}\n" for i in range(50))
    assert long_functions(f"class C:\n    async def over(self):\n{method}") == [("over", 2, 51)]


@pytest.mark.parametrize("package", PACKAGES)
def test_no_function_is_longer_than_50_lines(package: str) -> None:
    too_long = [
        f"{path.relative_to(REPO)}:{line} {name} ({length} lines)"
        for path in sorted((REPO / package).rglob("*.py"))
        for name, line, length in long_functions(path.read_text())
    ]
    assert too_long == [], f"split these into functions of at most {MAX_LINES} lines"
