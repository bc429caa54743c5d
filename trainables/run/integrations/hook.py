"""What a trainer's callback does at the period's boundaries, whatever the trainer.

The Lightning and Hugging Face callbacks (lightning_callback.py, hf_callback.py) only
translate their library's events into these calls:

    hook.start(model, epochs=..., max_steps=...)   # training starts: snapshot the weights
    hook.epoch_start(epoch)                        # the sampler's epoch (0-based)
    if hook.due(global_step): hook.check(logged)   # step budgets: every step_interval steps
    hook.check(logged)                             # epoch budgets: at the end of each epoch

`check` measures rotation and applies the rule (`CriticalPeriod.step`, the one
implementation), reports to Tune with the scheduler's control channel when it runs in
a Tune trial, and switches the recipe the moment the next epoch (or step window) is no
longer critical: the sampler's `repeats` drop to `after_repeats`, and every
`on_switch(decision)` callable runs once (augmentation off, a loss term, ...).
"""

from __future__ import annotations

import logging
import sys
import warnings
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from torch import nn

from trainables.core.config import ConfigError
from trainables.core.wire import EPOCH
from trainables.data.sampler import RepeatSampler
from trainables.method.decide import CriterionLike
from trainables.method.period import CriticalPeriod, Decision
from trainables.method.rotation import LayerPredicate

__all__ = ["REPEATS", "PeriodHook", "numeric"]

log = logging.getLogger(__name__)

REPEATS = "recipe/repeats"  # the sampler's repeats in the epoch just checked

Switch = Callable[[Decision], Any]


class PeriodHook:
    """A `CriticalPeriod` driven by a trainer's events, and the recipe it switches.

    Args: see `CriticalPeriodCallback` (trainables/run/integrations/lightning_callback.py).
    """

    def __init__(
        self,
        criterion: CriterionLike = "paper",
        budget: int | None = None,
        *,
        budget_steps: int | None = None,
        step_interval: int | None = None,
        sampler: RepeatSampler | None = None,
        after_repeats: int = 1,
        on_switch: Switch | Iterable[Switch] = (),
        tune: bool | None = None,
        layers: LayerPredicate | None = None,
        rule: Mapping[str, Any] | None = None,
    ) -> None:
        if budget_steps is not None and step_interval is None:
            raise ConfigError(f"budget_steps={budget_steps}: also give step_interval")
        if int(after_repeats) != after_repeats or after_repeats < 1:
            raise ConfigError(f"after_repeats={after_repeats!r}: need a whole number >= 1")
        self.criterion, self.budget, self.budget_steps = criterion, budget, budget_steps
        self.step_interval = step_interval
        self.sampler, self.after_repeats = sampler, int(after_repeats)
        self.on_switch = [on_switch] if callable(on_switch) else list(on_switch)
        self.tune, self.layers, self.rule = tune, layers, dict(rule or {})
        self.period: CriticalPeriod | None = None
        self.switched_at: int | None = None  # first epoch (or step) run after the switch
        self.decisions: list[Decision] = []
        self._channel: Any = None

    @property
    def steps(self) -> bool:
        """True when the period counts steps (a check every `step_interval` steps)."""
        return self.step_interval is not None

    def start(self, model: nn.Module, *, epochs: int | None, max_steps: int | None) -> None:
        """Snapshot `model`'s weights now; budgets default to the trainer's own."""
        self._channel = _tune_channel(self.tune)
        budget_steps = self.budget_steps
        if self.steps and budget_steps is None and self.budget is None:
            budget_steps = max_steps if max_steps and max_steps > 0 else None
        budget = self.budget
        if not self.steps and budget is None and epochs and epochs > 0:
            budget = epochs
        self.period = CriticalPeriod(
            model,
            self.criterion,
            budget,
            budget_steps=budget_steps,
            step_interval=self.step_interval,
            layers=self.layers,
            control=self._channel,
            **self.rule,
        )
        self.switched_at, self.decisions = None, []

    def epoch_start(self, epoch: int) -> None:
        """Seed the sampler's order with the trainer's (0-based) epoch."""
        if self.sampler is not None:
            self.sampler.set_epoch(epoch)

    def due(self, global_step: int) -> bool:
        """Step budgets: whether `global_step` optimizer steps complete the next interval."""
        if not self.steps or self.period is None:
            return False
        assert self.step_interval is not None
        return global_step == (self.period.epoch + 1) * self.step_interval

    def check(self, logged: Mapping[str, Any] | None = None) -> dict[str, float]:
        """The boundary: rotation, the rule, Tune, the switch; returns the metrics to log."""
        if self.period is None:
            raise RuntimeError("PeriodHook.check before start: the trainer sent no start event")
        d = self.period.step()
        metrics = numeric(d.metrics())
        metrics.pop(EPOCH, None)  # the trainer logs its own epoch (0-based in Lightning)
        if self.sampler is not None:
            metrics[REPEATS] = float(self.sampler.repeats)
        if self._channel is not None:
            from ray import tune  # only inside a Tune trial, where Ray is imported already

            tune.report({**numeric(logged or {}), **d.metrics(), **metrics, **self._take()})
            d = self.period.after_report() or d
        self.decisions.append(d)
        if self.switched_at is None and not self.period.critical:
            self._switch(d)
        return metrics

    def _take(self) -> dict[str, Any]:
        out: dict[str, Any] = self._channel.take_metrics()
        return out

    def _switch(self, d: Decision) -> None:
        assert self.period is not None
        nxt = self.period.epoch + 1
        self.switched_at = (d.step or 0) + 1 if self.steps else nxt
        if self.sampler is not None:
            self.sampler.repeats = self.after_repeats
        for fn in self.on_switch:
            fn(d)
        unit = "step" if self.steps else "epoch"
        log.info(
            "post-period recipe from %s %d (period ended at %s %s)",
            unit,
            self.switched_at,
            unit,
            d.end_step if self.steps else d.end_epoch,
        )


def numeric(metrics: Mapping[str, Any]) -> dict[str, float]:
    """The numbers among `metrics` (0-d tensors included), as floats: what loggers take."""
    out = {}
    for k, v in metrics.items():
        if hasattr(v, "item") and getattr(v, "ndim", 1) == 0:
            v = v.item()
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            out[k] = float(v)
    return out


def _tune_channel(tune: bool | None) -> Any:
    """The Tune trial's control channel when this runs in one (tune=None: detect)."""
    if tune is False:
        return None
    trial = _tune_trial_id()
    if trial is None:
        if tune:
            raise ConfigError("tune=True: this process is not a Ray Tune trial")
        return None
    from trainables.run.channel import tune_channel

    return tune_channel()


def _tune_trial_id() -> str | None:
    if "ray" not in sys.modules:  # a plain run: Ray was never imported, no trial
        return None
    import ray
    from ray import tune

    if not ray.is_initialized():
        return None
    with warnings.catch_warnings():  # outside a trial Ray warns and returns None
        warnings.simplefilter("ignore")
        trial_id: str | None = tune.get_context().get_trial_id()
    return trial_id
