"""The sweep driver's own load: one warning, with numbers, when it nears its ceiling.

Every result of every trial passes through Tune's single event loop on the driver: the
scheduler, the progress and MLflow callbacks, Tune's own bookkeeping. When the time
spent per result times the result rate approaches the loop's whole time, reports queue
up in the trials (inline trials wait for their report to be taken) and decisions land
late. And when MLflow takes writes more slowly than the sweep produces them, the tracking
log grows (nothing is lost; it drains later). The warning comes before either hurts,
so an operator can act while the sweep runs.

`DriverLoad` is the pure logic (a sliding window over per-result loop time and the
tracking backlog, fed with explicit clock values); `load_meters` gives the two Tune
callbacks that feed it from the first and the last place of the callback list.
"""

from __future__ import annotations

import itertools
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ray.tune import Callback

__all__ = ["DriverLoad", "load_meters"]

log = logging.getLogger(__name__)


@dataclass
class DriverLoad:
    """Per-result loop time and tracking backlog over windows of `window_s`; each kind of
    warning is given once per sweep.

    Args:
        window_s: length of one measurement window (seconds of wall time).
        busy_fraction: warn when per-result time x result rate exceeds this share of the
            loop (0.7: at 70% a burst of results already queues).
        min_results: results a window needs before its rate means anything.
        backlog_windows: warn when the tracking backlog grew in this many windows in a row
            and holds more than one window's worth of results.
    """

    window_s: float = 30.0
    busy_fraction: float = 0.7
    min_results: int = 50
    backlog_windows: int = 2
    stall_s: float = 0.5  # one step of Tune's loop handles one event: longer is a stall
    _start: float | None = None
    _busy: float = 0.0
    _results: int = 0
    _step_start: float | None = None
    _stalled: float = 0.0
    _longest: float = 0.0
    _backlogs: list[int] = field(default_factory=list)
    warned: set[str] = field(default_factory=set)

    def observe(self, now: float, loop_s: float, backlog: int | None = None) -> list[str]:
        """One result that took `loop_s` of the loop at time `now` (seconds, monotonic);
        `backlog`: writes queued for MLflow. Returns the warnings due (each once)."""
        if self._start is None:
            self._start = now
        self._busy += loop_s
        self._results += 1
        elapsed = now - self._start
        if elapsed < self.window_s:
            return []
        out = []
        rate = self._results / elapsed
        per_result = self._busy / self._results
        share = per_result * rate
        if self._results >= self.min_results and share > self.busy_fraction:
            out += self._once(
                "loop",
                f"the sweep driver spends {share:.0%} of its time on results "
                f"({per_result * 1e3:.2f} ms per result on Tune's loop x {rate:.0f} results/s "
                f"over the last {elapsed:.0f} s; its ceiling is ~{1 / per_result:.0f} results/s): "
                "reports will queue in the trials and decisions land late. Run fewer trials "
                "at once (max_concurrent), report less often or fewer metrics per report, "
                "or use an MLflow server instead of a sqlite file (its writer shares the "
                "driver's CPU)",
            )
        if backlog is not None:
            self._backlogs.append(backlog)
            out += self._backlog_warning(rate, elapsed)
        self._start, self._busy, self._results = now, 0.0, 0
        return out

    def step(self, now: float, step_s: float) -> list[str]:
        """One step of Tune's loop (one event, or a 0.1 s wait, plus Tune's periodic
        experiment-state snapshot) that took `step_s`. Steps over `stall_s` are stalls;
        warns when they fill more than `1 - busy_fraction` of a window."""
        if self._step_start is None:
            self._step_start = now
        if step_s > self.stall_s:
            self._stalled += step_s
            self._longest = max(self._longest, step_s)
        elapsed = now - self._step_start
        if elapsed < self.window_s:
            return []
        share, longest = self._stalled / elapsed, self._longest
        self._step_start, self._stalled, self._longest = now, 0.0, 0.0
        if share <= 1 - self.busy_fraction:
            return []
        return self._once(
            "stall",
            f"Tune's loop on the driver was stuck in single steps for {share:.0%} of the last "
            f"{elapsed:.0f} s (longest {longest:.1f} s): with many trials that report many "
            "metrics its experiment-state snapshot (every trial's metric statistics, forced "
            "after every `num_to_keep` checkpoints of a trial) dominates. Run fewer trials at "
            "once or report fewer metrics per epoch",
        )

    def _backlog_warning(self, rate: float, elapsed: float) -> list[str]:
        recent = self._backlogs[-(self.backlog_windows + 1) :]
        if len(recent) <= self.backlog_windows:
            return []
        growing = all(b > a for a, b in itertools.pairwise(recent))
        if not growing or recent[-1] < rate * self.window_s:
            return []
        grew = recent[-1] - recent[0]
        span = elapsed * self.backlog_windows
        return self._once(
            "backlog",
            f"MLflow is falling behind: {recent[-1]} writes queued in the tracking log, "
            f"{grew} more than {span:.0f} s ago (results arrive at {rate:.0f}/s). Nothing "
            "is lost: they are kept on disk and sent as MLflow takes them (or later by "
            "`cpsweep sync`). Give the MLflow server more workers and CPU, or log fewer "
            "metrics per epoch",
        )

    def _once(self, kind: str, message: str) -> list[str]:
        if kind in self.warned:
            return []
        self.warned.add(kind)
        return [message]


class _Meter:
    """What the two callbacks share: the load, the backlog probe, the current start."""

    def __init__(self, load: DriverLoad, backlog: Callable[[], int | None]) -> None:
        self.load, self.backlog = load, backlog
        self.t0: float | None = None  # the current result's pass through the callbacks
        self.step0: float | None = None  # the current step of Tune's loop

    def __getstate__(self) -> dict[str, Any]:
        # Tune pickles its callbacks into tuner.pkl; a resumed sweep builds fresh ones.
        return {"load": DriverLoad(), "backlog": _no_backlog, "t0": None, "step0": None}


def _no_backlog() -> int | None:
    return None


class _Begin(Callback):
    def __init__(self, meter: _Meter) -> None:
        self.meter = meter

    def on_step_begin(self, iteration, trials, **info):  # type: ignore[no-untyped-def]
        self.meter.step0 = time.perf_counter()

    def on_trial_result(self, iteration, trials, trial, result, **info):  # type: ignore[no-untyped-def]
        self.meter.t0 = time.perf_counter()


class _End(Callback):
    def __init__(self, meter: _Meter) -> None:
        self.meter = meter

    def on_step_end(self, iteration, trials, **info):  # type: ignore[no-untyped-def]
        m = self.meter
        if m.step0 is not None:
            now = time.perf_counter()
            for message in m.load.step(now, now - m.step0):
                log.warning(message)
        m.step0 = None

    def on_trial_result(self, iteration, trials, trial, result, **info):  # type: ignore[no-untyped-def]
        m = self.meter
        if m.t0 is None:
            return
        now = time.perf_counter()
        for message in m.load.observe(now, now - m.t0, m.backlog()):
            log.warning(message)
        m.t0 = None


def load_meters(
    load: DriverLoad, backlog: Callable[[], int | None] = _no_backlog
) -> tuple[Callback, Callback]:
    """Two Tune callbacks: put the first before and the second after every other callback;
    together they time each result's pass through the callbacks (the scheduler's
    `on_trial_result` runs before them and is not included)."""
    meter = _Meter(load, backlog)
    return _Begin(meter), _End(meter)
