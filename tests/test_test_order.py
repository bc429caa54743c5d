"""tests/conftest.py's SLOW_FILES: every entry names a test file, and they go out first."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

from tests import conftest

TESTS = Path(__file__).resolve().parent


def test_every_slow_file_exists() -> None:
    # A renamed file would silently lose its place at the front of `make test`.
    missing = [f for f in conftest.SLOW_FILES if not (TESTS / f).is_file()]
    assert not missing, f"SLOW_FILES names files that are gone: {missing}"


def test_slow_files_go_first_in_their_listed_order_and_the_rest_keep_theirs() -> None:
    def item(rel: str) -> Any:
        return SimpleNamespace(path=TESTS / rel, name=rel)

    items = [item("test_a.py"), item(conftest.SLOW_FILES[1]), item("test_b.py")]
    items += [item(conftest.SLOW_FILES[0]), item(conftest.SLOW_FILES[1])]
    conftest._slow_files_first(items)
    assert [i.name for i in items] == [
        conftest.SLOW_FILES[0],
        conftest.SLOW_FILES[1],
        conftest.SLOW_FILES[1],
        "test_a.py",
        "test_b.py",
    ]
