"""Independent reference implementations the tests compare the product against."""

from __future__ import annotations

from collections.abc import Sequence

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
