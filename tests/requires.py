"""What a test needs from outside the repository, and what a missing piece does.

`make test` on a machine without a system package or file that a test needs skips that
test with one line naming the piece and how to get it. Under CI (`CI` set, as `.ci/run`
sets it, and that script installs every piece) the same absence fails the test instead,
so CI always runs everything. README's "What `make test` skips" lists these pieces;
`tests/test_docs.py` checks that it names each one's install command.
"""

from __future__ import annotations

import glob
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from trainables.data.datasets import DEFAULT_ROOTS

__all__ = [
    "ALL",
    "CHROMEDRIVER",
    "CHROMIUM",
    "CHROMIUM_AND_DRIVER",
    "FASHION_MNIST",
    "IN_CI",
    "OPENSSL",
    "POSTGRESQL",
    "Requirement",
    "pg_bin",
    "requires",
]

IN_CI = os.environ.get("CI", "").lower() not in ("", "0", "false", "no")

CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
_FASHION_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)


@dataclass(frozen=True)
class Requirement:
    """A piece from outside the repository: what it is, how to get it, whether it is here."""

    what: str  # e.g. "Fashion-MNIST in /usr/share/datasets/fashion-mnist"
    how: str  # the command that installs it, e.g. "apt-get install dataset-fashion-mnist"
    present: Callable[[], bool]


def pg_bin(name: str) -> str | None:
    """A PostgreSQL server binary (initdb, pg_ctl): on PATH or in Debian's versioned dirs."""
    found = shutil.which(name)
    if found:
        return found
    versions = sorted(
        glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), key=lambda p: int(p.split("/")[4])
    )
    return versions[-1] if versions else None


def _fashion_mnist_present() -> bool:
    root = Path(DEFAULT_ROOTS["fashion-mnist"] or "")
    return all((root / f).is_file() or (root / f"{f}.gz").is_file() for f in _FASHION_FILES)


FASHION_MNIST = Requirement(
    f"Fashion-MNIST in {DEFAULT_ROOTS['fashion-mnist']}",
    "apt-get install dataset-fashion-mnist",
    _fashion_mnist_present,
)
CHROMIUM_AND_DRIVER = Requirement(
    f"headless Chromium ({CHROMIUM}, {CHROMEDRIVER})",
    "apt-get install chromium chromium-driver",
    lambda: CHROMIUM.exists() and CHROMEDRIVER.exists(),
)
POSTGRESQL = Requirement(
    "PostgreSQL (initdb, pg_ctl)",
    "apt-get install postgresql",
    lambda: pg_bin("initdb") is not None and pg_bin("pg_ctl") is not None,
)
OPENSSL = Requirement(
    "openssl (docs/cluster.md's commands make a token with it)",
    "apt-get install openssl",
    lambda: shutil.which("openssl", path="/usr/local/bin:/usr/bin:/bin") is not None,
)
ALL = (FASHION_MNIST, CHROMIUM_AND_DRIVER, POSTGRESQL, OPENSSL)


def requires(*needed: Requirement, ci: bool = IN_CI) -> None:
    """Skip the calling test (or fixture) when a requirement is absent; under CI, fail."""
    missing = [r for r in needed if not r.present()]
    if not missing:
        return
    line = "; ".join(f"{r.what} missing: {r.how}" for r in missing)
    if ci:
        pytest.fail(f"CI is set, so a missing requirement fails: {line}", pytrace=False)
    pytest.skip(line)
