"""From a rotation curve and a scheduler's directive to the end of the period: pure functions.

`PeriodRule` feeds a criterion (trainables/method/criteria.py) one epoch at a time and
tolerates what reports do after failures; the scheduler runs it on reported
values, `CriticalPeriod` (trainables/method/period.py) on measured ones. `ruling` is the
one function that turns a trial's own verdict and the scheduler's directive into
a decision, for every control mode, and `switch_epoch_for` the one place where
the switch epoch is computed. No torch, no Ray.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from trainables.core.config import ConfigError, CriterionConfig, format_validation_error
from trainables.core.wire import Directive
from trainables.method.criteria import CriterionState, Verdict

__all__ = [
    "SOURCES",
    "CriterionLike",
    "PeriodRule",
    "Ruling",
    "criterion_config",
    "criterion_state",
    "ruling",
    "switch_epoch_for",
]

log = logging.getLogger(__name__)

CriterionLike = str | CriterionConfig | Mapping[str, Any] | None
SOURCES = ("rule", "scheduler", "cohort", "forced")  # who can end a period


def criterion_config(criterion: CriterionLike = None, **overrides: Any) -> CriterionConfig:
    """A CriterionConfig from a rule name, a config or a dict, plus non-None field overrides."""
    if isinstance(criterion, CriterionConfig):
        base: dict[str, Any] = criterion.model_dump()
    elif isinstance(criterion, str):
        base = {"name": criterion}
    elif isinstance(criterion, Mapping):
        base = dict(criterion)
    elif criterion is None:
        base = {}
    else:
        raise ConfigError(
            f"criterion={criterion!r}: pass a rule name ('paper', 'relative', 'fixed', "
            "'never'), a CriterionConfig or a dict"
        )
    base.update({k: v for k, v in overrides.items() if v is not None})
    try:
        return CriterionConfig.model_validate(base)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, "criterion")) from None


def criterion_state(cfg: CriterionConfig, budget: int | None) -> CriterionState:
    """The incremental rule for `cfg` over an epoch budget."""
    try:
        return CriterionState(
            cfg.name,
            budget=budget,
            window=cfg.window,
            threshold_deg=cfg.threshold_deg,
            ratio=cfg.ratio,
            patience=cfg.patience,
            fraction=cfg.fraction,
        )
    except ValueError as exc:
        raise ConfigError(f"criterion {cfg.name!r} with budget={budget}: {exc}") from None


def switch_epoch_for(epoch: int, *, end: int | None = None, forced: int | None = None) -> int:
    """First epoch of the post-period recipe, decided after `epoch` has been trained.

    From the period's `end` it is the next epoch (end + 1); a switch `forced` by the
    scheduler applies as given. Either way never an epoch already trained.
    """
    if forced is not None:
        return max(int(forced), epoch + 1)
    if end is None:
        raise ValueError("switch_epoch_for needs end or forced")
    return max(int(end), epoch) + 1


@dataclass(frozen=True)
class Ruling:
    """A decision to end the period: at `end`, post-period recipe from `switch`."""

    end: int
    switch: int
    source: str  # "rule" (the trial's own), "scheduler" (its verdict), "cohort", ...


def ruling(
    mode: str, epoch: int, own_end: int | None, d: Directive | None, *, after_report: bool = False
) -> Ruling | None:
    """What to apply after `epoch`, from the trial's own verdict and the scheduler's directive.

    push: the trial's own rule decides (zero lag). async: the scheduler's latest
    verdict, however late. sync, after the report: the scheduler's verdict on this
    epoch. In every mode a switch the scheduler forces (cohort) applies.
    """
    if after_report:
        if d is None or d.verdict_epoch < epoch:
            return None
        if d.verdict_end is not None:
            return _from_end(epoch, d.verdict_end, "scheduler")
    elif mode == "push" and own_end is not None:
        return _from_end(epoch, own_end, "rule")
    elif mode == "async" and d is not None and d.verdict_end is not None:
        return _from_end(epoch, d.verdict_end, "scheduler")
    if d is not None and d.switch_epoch is not None:
        switch = switch_epoch_for(epoch, forced=d.switch_epoch)
        return Ruling(switch - 1, switch, d.switch_source or "scheduler")
    return None


def _from_end(epoch: int, end: int, source: str) -> Ruling:
    return Ruling(end, switch_epoch_for(epoch, end=end), source)


class PeriodRule:
    """A criterion over a rotation curve fed one epoch at a time (no model needed).

    `observe` tolerates what reports do after failures: an epoch seen again (a
    retry) rebuilds the rule on the kept prefix; skipped epochs hold the last value.
    """

    def __init__(self, criterion: CriterionConfig, budget: int | None) -> None:
        self.criterion, self.budget = criterion, budget
        self._state = criterion_state(criterion, budget)
        self.last = Verdict(None, None)

    @property
    def history(self) -> list[float]:
        return self._state.history

    @property
    def detected_end(self) -> int | None:
        return self._state.end_epoch

    def observe(self, epoch: int, rotation: float) -> Verdict:
        seen = len(self.history)
        if epoch <= seen:
            self._rebuild(self.history[: epoch - 1])
        elif epoch > seen + 1:
            log.warning("epochs %d..%d never observed; holding the last value", seen + 1, epoch - 1)
            for _ in range(epoch - seen - 1):
                self._state.update(self.history[-1] if self.history else rotation)
        self.last = self._state.update(rotation)
        return self.last

    def use(self, criterion: CriterionConfig, budget: int | None) -> None:
        """Switch to another criterion (a scheduler's override) and re-judge the curve."""
        self.criterion, self.budget = criterion, budget
        self._rebuild(list(self.history))

    def _rebuild(self, history: list[float]) -> None:
        self._state = criterion_state(self.criterion, self.budget)
        self.last = Verdict(None, None)
        for v in history:
            self.last = self._state.update(v)
