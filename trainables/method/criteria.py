"""Rules that decide when the critical learning period has ended.

All rules read the per-epoch history of `rotation/mean` (index 0 = epoch 1)
and return the 1-based epoch at which the period ends, or None. The decision
is taken once: later epochs never move it.

- `paper`: Fukase et al. (arXiv 2506.15954), as the authors' code does it. Fit
  a least-squares line to the last `window` values against epoch positions
  rescaled to [0, 1] over the planned budget (epoch e of E sits at
  (e-1)/(E-1)); the period ends at the first epoch whose slope angle
  `degrees(atan(slope))` is below `threshold_deg` (45). Because positions are
  rescaled by E-1, an angle of 45 degrees means the mean rotation grows by
  1/(E-1) per epoch: the same curve ends later under a longer budget.
- `relative` (ours): the rotation rate (least-squares slope per epoch over the
  window) relative to the highest rate seen so far in this run. The period ends
  once that ratio stays below `ratio` for `patience` consecutive epochs. Both
  the slope's unit (per epoch) and the ratio are independent of E, so doubling
  the budget leaves the decision on a given curve unchanged.
- `fixed`: the period ends after `ceil(fraction * E)` epochs (the "1/8 of
  training" rule the paper did not compare against).
- `never`: the baseline that keeps the critical-period recipe throughout.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import ClassVar

from trainables.core.registry import CRITERIA
from trainables.core.wire import ANGLE, RATE_RATIO

__all__ = [
    "CRITERIA",
    "CriterionState",
    "EndRule",
    "FixedRule",
    "NeverRule",
    "PaperRule",
    "RelativeRule",
    "Verdict",
    "earliest_end",
    "end_epoch",
    "fixed_end",
    "least_squares_slope",
    "paper_angle",
    "paper_end",
    "relative_end",
    "rule_class",
    "stat_key",
]


@dataclass(frozen=True)
class Verdict:
    """The rule's state after the latest epoch."""

    end_epoch: int | None  # 1-based epoch at which the period ended, or None
    value: float | None  # the rule's statistic at the latest epoch (angle, rate ratio)


def least_squares_slope(xs: Sequence[float], ys: Sequence[float]) -> float:
    """Slope of the ordinary least-squares line through (xs, ys)."""
    n = len(xs)
    if n < 2 or n != len(ys):
        raise ValueError(f"need >= 2 paired points, got {len(xs)} xs and {len(ys)} ys")
    mx = sum(xs) / n
    my = sum(ys) / n
    sxx = sum((x - mx) ** 2 for x in xs)
    if sxx == 0:
        raise ValueError("xs are all equal; the slope is undefined")
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sxx


def _check_budget(budget: int, window: int) -> None:
    if budget < 2:
        raise ValueError(f"budget={budget}: the paper rule rescales epochs by E-1, need E >= 2")
    if window < 2:
        raise ValueError(f"window={window}: need at least 2 epochs to fit a line")


def paper_angle(history: Sequence[float], epoch: int, budget: int, window: int = 5) -> float | None:
    """Angle in degrees of the line over epochs epoch-window+1..epoch; None before `window`."""
    _check_budget(budget, window)
    if epoch < window or epoch > len(history):
        return None
    epochs = range(epoch - window + 1, epoch + 1)
    xs = [(e - 1) / (budget - 1) for e in epochs]
    ys = [history[e - 1] for e in epochs]
    return math.degrees(math.atan(least_squares_slope(xs, ys)))


def paper_end(
    history: Sequence[float], budget: int, window: int = 5, threshold_deg: float = 45.0
) -> int | None:
    """First epoch whose fitted angle is below `threshold_deg`, or None."""
    for epoch in range(window, len(history) + 1):
        angle = paper_angle(history, epoch, budget, window)
        if angle is not None and angle < threshold_deg:
            return epoch
    return None


def _rate(history: Sequence[float], epoch: int, window: int) -> float:
    epochs = range(epoch - window + 1, epoch + 1)
    return least_squares_slope([float(e) for e in epochs], [history[e - 1] for e in epochs])


def relative_end(
    history: Sequence[float], window: int = 5, ratio: float = 0.25, patience: int = 2
) -> int | None:
    """First epoch at which rate/peak rate has been below `ratio` for `patience` epochs."""
    state = CriterionState("relative", budget=None, window=window, ratio=ratio, patience=patience)
    for v in history:
        verdict = state.update(v)
        if verdict.end_epoch is not None:
            return verdict.end_epoch
    return None


def fixed_end(budget: int, fraction: float = 0.125) -> int:
    """End of the period for the fixed rule: ceil(fraction * E), at least 1."""
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction={fraction} must be in (0, 1]")
    return max(1, math.ceil(fraction * budget - 1e-9))


class EndRule:
    """One rule, incremental: the statistic after each epoch and whether the period ended.

    A subclass per rule, registered by name in `CRITERIA` (trainables/core/registry.py)
    by its import path; `CriterionState` holds the history and the decision and asks its
    rule for the rest. A library user adds a rule with `CRITERIA.register("mine", MyRule)`
    before a config names it.
    """

    needs_budget: ClassVar[bool] = False  # reads the planned epoch budget E
    stat_key: ClassVar[str | None] = None  # report key of the per-epoch statistic

    def check(self, state: CriterionState) -> None:
        """Raise ValueError when the parameters in `state` cannot work."""

    @classmethod
    def earliest(cls, window: int, patience: int) -> int | None:
        """The first epoch at which this rule can end the period at all (None: the rule
        detects nothing, e.g. a fixed fraction). An end there is a lower bound."""
        return None

    def statistic(self, state: CriterionState, epoch: int) -> float | None:
        return None

    def ended(self, state: CriterionState, epoch: int, stat: float | None) -> bool:
        return False


class PaperRule(EndRule):
    """Slope angle of the last `window` values over the rescaled budget < `threshold_deg`."""

    needs_budget = True
    stat_key = ANGLE

    def check(self, state: CriterionState) -> None:
        _check_budget(state.budget or 0, state.window)

    def statistic(self, state: CriterionState, epoch: int) -> float | None:
        return paper_angle(state.history, epoch, state.budget or 0, state.window)

    @classmethod
    def earliest(cls, window: int, patience: int) -> int | None:
        return window  # the first full window

    def ended(self, state: CriterionState, epoch: int, stat: float | None) -> bool:
        return stat is not None and stat < state.threshold_deg


class RelativeRule(EndRule):
    """Rate / peak rate below `ratio` for `patience` consecutive epochs (budget-free)."""

    stat_key = RATE_RATIO

    def __init__(self) -> None:
        self._peak_rate = 0.0
        self._below = 0

    @classmethod
    def earliest(cls, window: int, patience: int) -> int | None:
        # the first rate is its own peak (ratio 1): below from the next epoch, `patience` times
        return window + patience

    def statistic(self, state: CriterionState, epoch: int) -> float | None:
        if epoch < state.window:
            return None
        rate = _rate(state.history, epoch, state.window)
        self._peak_rate = max(self._peak_rate, rate)
        return rate / self._peak_rate if self._peak_rate > 0 else None

    def ended(self, state: CriterionState, epoch: int, stat: float | None) -> bool:
        self._below = self._below + 1 if stat is not None and stat < state.ratio else 0
        return self._below >= state.patience


class FixedRule(EndRule):
    """The period ends after ceil(fraction * E) epochs."""

    needs_budget = True

    def ended(self, state: CriterionState, epoch: int, stat: float | None) -> bool:
        return epoch >= fixed_end(state.budget or 0, state.fraction)


class NeverRule(EndRule):
    """The baseline: the critical-period recipe runs throughout."""


def rule_class(name: str) -> type[EndRule]:
    """The registered rule class of `name`; ValueError naming the choices when unknown."""
    try:
        cls = CRITERIA.load(name)
    except ValueError:
        raise ValueError(
            f"criterion {name!r} is unknown; choose one of {', '.join(CRITERIA.names())}"
        ) from None
    if not (isinstance(cls, type) and issubclass(cls, EndRule)):
        raise ValueError(f"criterion {name!r} is registered to {cls!r}, not an EndRule subclass")
    return cls


def stat_key(criterion: str) -> str | None:
    """Report key of a rule's per-epoch statistic (None: the rule has none)."""
    return rule_class(criterion).stat_key


@dataclass
class CriterionState:
    """Incremental form of the rules: O(window) work per epoch, for schedulers and loops.

    `update(v)` appends epoch len(history)+1 and returns the verdict. Feeding a
    whole history gives the same end epoch as the batch functions above.
    """

    name: str
    budget: int | None
    window: int = 5
    threshold_deg: float = 45.0
    ratio: float = 0.25
    patience: int = 2
    fraction: float = 0.125
    history: list[float] = field(default_factory=list)
    end_epoch: int | None = None
    _rule: EndRule = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        cls = rule_class(self.name)
        if cls.needs_budget and self.budget is None:
            raise ValueError(f"criterion {self.name!r} needs the planned epoch budget")
        self._rule = cls()
        self._rule.check(self)

    def update(self, value: float) -> Verdict:
        if not math.isfinite(value):
            raise ValueError(
                f"rotation value {value} at epoch {len(self.history) + 1} is not finite"
            )
        self.history.append(float(value))
        epoch = len(self.history)
        stat = self._rule.statistic(self, epoch)
        if self._rule.ended(self, epoch, stat) and self.end_epoch is None:
            self.end_epoch = epoch
        return Verdict(self.end_epoch, stat)


def earliest_end(name: str, window: int = 5, patience: int = 2) -> int | None:
    """The first epoch at which rule `name` can end the period (None: it detects nothing)."""
    return rule_class(name).earliest(window, patience)


def end_epoch(
    name: str,
    history: Sequence[float],
    budget: int,
    *,
    window: int = 5,
    threshold_deg: float = 45.0,
    ratio: float = 0.25,
    patience: int = 2,
    fraction: float = 0.125,
) -> int | None:
    """Apply rule `name` to a whole history (the `cpsweep detect` entry point)."""
    state = CriterionState(
        name,
        budget=budget,
        window=window,
        threshold_deg=threshold_deg,
        ratio=ratio,
        patience=patience,
        fraction=fraction,
    )
    for v in history:
        if state.update(v).end_epoch is not None:
            break
    return state.end_epoch
