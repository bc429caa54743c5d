"""Code, comments and docs say what and why in their own words: no tracker numbers
("issue 12") and no notes kept outside the repository, which a reader of a clone lacks."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SCANNED = (
    "cpsweep",
    "service",
    "trainables",
    "tests",
    "bench",
    "examples",
    "docker",
    "k8s",
    "search_spaces",
    "docs",
    ".ci",
    "Makefile",
    "README.md",
    "BENCHMARKS.md",
)
SKIPPED_DIRS = {"__pycache__", "results"}  # bench/results: recorded data, not prose
TEXT_SUFFIXES = {"", ".py", ".md", ".yaml", ".yml", ".sh", ".toml", ".ini", ".txt", ".Dockerfile"}
FORBIDDEN = re.compile(r"\bissues? ?#?\d+|\bSTYLE\.md\b|\bDESIGN\.md\b", re.I)


def _files() -> list[Path]:
    out: list[Path] = []
    for name in SCANNED:
        top = REPO / name
        paths = [top] if top.is_file() else sorted(top.rglob("*"))
        out += [
            p
            for p in paths
            if p.is_file()
            and p.suffix in TEXT_SUFFIXES
            and not SKIPPED_DIRS & set(p.relative_to(REPO).parts)
        ]
    return out


def test_no_tracker_numbers_or_outside_notes() -> None:
    me = Path(__file__).resolve()
    hits = [
        f"{p.relative_to(REPO)}:{n}: {line.strip()}"
        for p in _files()
        if p.resolve() != me
        for n, line in enumerate(p.read_text(errors="replace").splitlines(), 1)
        if FORBIDDEN.search(line)
    ]
    assert not hits, "say it in the repository's own words:\n" + "\n".join(hits)


def test_the_pattern_catches_what_it_should() -> None:
    for text in ("(issue 16)", "Issue 12 row 9", "issue #15", "issues 16 and 18", "STYLE.md"):
        assert FORBIDDEN.search(text), text
    for text in ("Friedman #1 problem", "an issue with 2 workers", "TrialTracker"):
        assert not FORBIDDEN.search(text), text
