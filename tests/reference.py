"""Independent reference implementations and project facts the tests compare against."""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np


def reference_paper_end(
    curve: Sequence[float], budget: int, window: int = 5, threshold: float = 45.0
) -> int | None:
    """The paper rule with numpy.polyfit, as the authors' code fits the line."""
    pos = (np.arange(1, len(curve) + 1) - 1) / (budget - 1)
    for t in range(window, len(curve) + 1):
        slope = np.polyfit(pos[t - window : t], np.asarray(curve[t - window : t]), 1)[0]
        if np.degrees(np.arctan(slope)) < threshold:
            return t
    return None


REPO = Path(__file__).resolve().parents[1]


def pinned_version(package: str) -> str:
    """The exact version constraints.txt pins for `package`."""
    for line in (REPO / "constraints.txt").read_text().splitlines():
        match = re.match(rf"{package}==(\S+)", line.strip())
        if match:
            return match.group(1)
    raise AssertionError(f"constraints.txt pins no {package}==")
