"""README.md and docs/: every relative link resolves, the README stays a front door, and
its list of what `make test` skips names every requirement in tests/requires.py."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.requires import ALL

REPO = Path(__file__).resolve().parents[1]
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
README_MAX_LINES = 300

# [text](target) and ![alt](target), outside code blocks; the target up to a space or ")".
_LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
_FENCE = re.compile(r"^```.*?^```", re.S | re.M)


def relative_links(markdown: str) -> list[str]:
    """Targets of the page's links that are paths in this repository (no URL, no anchor)."""
    targets = _LINK.findall(_FENCE.sub("", markdown))
    paths = [t.split("#", 1)[0] for t in targets if not re.match(r"[a-z][a-z0-9+.-]*:", t)]
    return [p for p in paths if p]


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_every_relative_link_points_to_a_file_in_the_repository(page: Path) -> None:
    broken = [t for t in relative_links(page.read_text()) if not (page.parent / t).exists()]
    assert not broken, f"{page.relative_to(REPO)} links to missing paths: {broken}"


def test_the_link_reader_skips_urls_anchors_and_code() -> None:
    text = "[a](docs/x.md#part) ![b](img.png) [c](https://x.org) [d](#here)\n```\n[e](no.md)\n```"
    assert relative_links(text) == ["docs/x.md", "img.png"]


def test_readme_is_a_front_door() -> None:
    lines = (REPO / "README.md").read_text().splitlines()
    assert len(lines) <= README_MAX_LINES, "move reference material into docs/"


def test_readme_says_how_to_get_what_make_test_would_skip() -> None:
    readme = (REPO / "README.md").read_text()
    missing = [r.how for r in ALL if f"`{r.how}`" not in readme]
    assert not missing, f"README's 'What `make test` skips' lacks: {missing}"
