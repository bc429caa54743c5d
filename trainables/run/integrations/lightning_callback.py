"""`CriticalPeriodCallback`: the critical period in a Lightning `Trainer`, in one line.

    sampler = RepeatSampler(train_set, repeats=3)       # in your train_dataloader()
    trainer = L.Trainer(max_epochs=E, reload_dataloaders_every_n_epochs=1,
                        callbacks=[CriticalPeriodCallback("paper", sampler=sampler)])

At the end of every epoch (or every `step_interval` optimizer steps) it measures
rotation, applies the rule and, once the next epoch is past the period, sets the
sampler's repeats to `after_repeats` and calls each `on_switch`. The period's metrics go
to the trainer's loggers (`LightningModule.log_dict`) and, in a Ray Tune trial, to Tune
with the scheduler's control channel (trainables/run/integrations/hook.py). Reload the
dataloaders every epoch so that Lightning counts the new epoch length; under DDP pass
`use_distributed_sampler=False` (the sampler shards by rank itself).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from trainables.data.sampler import RepeatSampler
from trainables.method.decide import CriterionLike
from trainables.method.period import CriticalPeriod, Decision
from trainables.method.rotation import LayerPredicate
from trainables.run.integrations.hook import PeriodHook, Switch

try:
    import lightning.pytorch as pl
except ImportError as exc:  # the optional extra
    raise ImportError(
        "CriticalPeriodCallback needs Lightning: pip install 'cpsweep[lightning]'"
    ) from exc

__all__ = ["CriticalPeriodCallback"]


class CriticalPeriodCallback(pl.Callback):
    """Ends the critical period by a cpsweep rule and switches the recipe, in Lightning.

    Args:
        criterion: "paper", "relative", "fixed", "never", a CriterionConfig or a dict.
        budget: planned epochs (default: the trainer's `max_epochs`).
        budget_steps: planned optimizer steps instead (default with `step_interval`:
            the trainer's `max_steps`); the rules then run on one check per interval.
        step_interval: check every this many optimizer steps instead of every epoch.
        sampler: a `RepeatSampler` whose `repeats` drop to `after_repeats` at the switch.
        on_switch: callables called once with the `Decision` at the switch.
        tune: report to Ray Tune (None: when this runs in a Tune trial).
        layers: `(name, parameter) -> bool` selecting the monitored parameters.
        **rule: the criterion's fields (window, threshold_deg, ratio, patience, fraction).
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
        **rule: Any,
    ) -> None:
        super().__init__()
        self.hook = PeriodHook(
            criterion,
            budget,
            budget_steps=budget_steps,
            step_interval=step_interval,
            sampler=sampler,
            after_repeats=after_repeats,
            on_switch=on_switch,
            tune=tune,
            layers=layers,
            rule=rule,
        )

    @property
    def period(self) -> CriticalPeriod | None:
        """The `CriticalPeriod` of the current fit (None before training starts)."""
        return self.hook.period

    @property
    def decisions(self) -> list[Decision]:
        """Every check's `Decision`, in order."""
        return self.hook.decisions

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.hook.start(pl_module, epochs=trainer.max_epochs, max_steps=trainer.max_steps)

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, i: int
    ) -> None:
        if self.hook.due(trainer.global_step):
            self._check(trainer, pl_module)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not self.hook.steps:
            self._check(trainer, pl_module)

    def _check(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        metrics = self.hook.check(trainer.callback_metrics)
        pl_module.log_dict(metrics)
