"""One human-readable line per reported epoch (`cpsweep train` and a sweep's live progress)."""

from __future__ import annotations

from typing import Any

from trainables.core.wire import EPOCH, ROTATION_MEAN, STAT_KEYS, SWITCH_EPOCH, Headline

__all__ = ["progress_line"]


def _num(m: dict[str, Any], key: str, label: str, fmt: str) -> str:
    v = m.get(key)
    return f" {label}={v:{fmt}}" if isinstance(v, int | float) and not isinstance(v, bool) else ""


def progress_line(m: dict[str, Any], budget: int, headline: Headline | None = None) -> str:
    """Tolerates any metric set: a user's loop reports its own metrics (no accuracy, say).
    Shows the headline metric (default val/acc) and its test value where reported."""
    h = headline or Headline()
    stat = next((k for k in STAT_KEYS if m.get(k) is not None), None)
    phase = f" {m['phase']:<8}" if "phase" in m else ""
    repeats = f" x{m['recipe/repeats']}" if "recipe/repeats" in m else ""
    switch = f" switch@{m[SWITCH_EPOCH]}" if m.get(SWITCH_EPOCH) else ""
    return (
        f"epoch {m.get(EPOCH, '?'):>3}/{budget}{phase}{repeats}"
        f"{_num(m, ROTATION_MEAN, 'rot', '.4f')}"
        f"{_num(m, stat, stat.split('/')[1], '6.2f') if stat else ''}"
        f"{_num(m, 'train/loss', 'loss', '.4f')}{_num(m, h.key, h.key, '.4f')}"
        f"{_num(m, h.test_key, h.test_key, '.4f')}{switch}"
        f"{' ' + format(m['time/epoch_s'], '.2f') + 's' if 'time/epoch_s' in m else ''}"
    )
