"""`CriticalPeriodTrainerCallback`: the critical period in a Hugging Face `Trainer`.

    trainer = Trainer(model, args, train_dataset=train_set)
    CriticalPeriodTrainerCallback("paper", sampler=sampler).attach(trainer)

At the end of every epoch (or every `step_interval` optimizer steps) it measures
rotation, applies the rule and, once the next epoch is past the period, sets the
sampler's repeats to `after_repeats` and calls each `on_switch`. `attach` adds it to the
trainer and logs the period's metrics through `Trainer.log` (so to every `report_to`
integration); added by `callbacks=[...]` instead, it keeps them in `state.log_history`.
In a Ray Tune trial it reports to Tune with the scheduler's control channel
(trainables/run/integrations/hook.py). The Trainer draws from the sampler when
`get_train_dataloader` returns a DataLoader over it (docs/own-code.md); after the switch
an epoch is shorter, and the Trainer ends it when the loader is exhausted.
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
    import transformers
except ImportError as exc:  # the optional extra
    raise ImportError(
        "CriticalPeriodTrainerCallback needs transformers: pip install 'cpsweep[hf]'"
    ) from exc

__all__ = ["CriticalPeriodTrainerCallback"]


class CriticalPeriodTrainerCallback(transformers.TrainerCallback):
    """Ends the critical period by a cpsweep rule and switches the recipe, in a HF Trainer.

    Args: as `CriticalPeriodCallback` (trainables/run/integrations/lightning_callback.py);
    `budget` defaults to `args.num_train_epochs`, `budget_steps` to the Trainer's max steps.
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
        self.trainer: transformers.Trainer | None = None
        self._epoch = 0  # epochs begun in this run: the sampler's 0-based epoch

    def attach(self, trainer: transformers.Trainer) -> CriticalPeriodTrainerCallback:
        """Add this callback to `trainer` and log through its `log` (its integrations)."""
        trainer.add_callback(self)
        self.trainer = trainer
        return self

    @property
    def period(self) -> CriticalPeriod | None:
        """The `CriticalPeriod` of the current run (None before training starts)."""
        return self.hook.period

    @property
    def decisions(self) -> list[Decision]:
        """Every check's `Decision`, in order."""
        return self.hook.decisions

    def on_train_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        epochs = int(args.num_train_epochs) if args.max_steps <= 0 else None
        self.hook.start(kw["model"], epochs=epochs, max_steps=state.max_steps)
        self._epoch = 0

    def on_epoch_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        self.hook.epoch_start(self._epoch)
        self._epoch += 1

    def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        if self.hook.due(state.global_step):
            self._check(state)

    def on_epoch_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        if not self.hook.steps:
            self._check(state)

    def _check(self, state: Any) -> None:
        last = state.log_history[-1] if state.log_history else {}
        metrics = self.hook.check(last)
        if self.trainer is not None:
            self.trainer.log(metrics)
        else:
            state.log_history.append({**metrics, "step": state.global_step})
