"""The critical period at the epoch boundary: rotation -> verdict -> end of the period.

One implementation shared by a plain PyTorch loop, `cpsweep train`, every Ray
trial (the built-in loop and a user's `train.loop`) and `CriticalPeriodScheduler`:

    cp = CriticalPeriod(model, "paper", budget=E)    # snapshots the initial weights
    for epoch in range(1, E + 1):
        train_one_epoch(model, repeats=3 if cp.critical else 1)
        d = cp.step()      # d.rotation, d.value, d.end_epoch, d.switch_epoch

With a step budget (`budget_steps`, LLM-style training) `step()` is called every
`step_interval` optimizer steps instead: the rules then run on those checks, one per
interval, as they run on epochs (`check_budget`), and `end_step` / `switch_step` give
the result in steps.

The decisions themselves are pure functions in trainables/method/decide.py (the
scheduler runs the same `PeriodRule` on reported values). A `control`
(trainables/run/channel.py in a Ray trial) lets a scheduler override the rule or
impose a switch (cohort). Under torch.distributed every rank calls `step()`;
rank 0's decision is broadcast.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

import torch
import torch.distributed as dist
from torch import nn

from trainables.core.config import ConfigError, CriterionConfig
from trainables.core.wire import (
    CHECK_STEP,
    END_EPOCH,
    END_STEP,
    EPOCH,
    LAG_EPOCHS,
    MODE,
    ROTATION_MEAN,
    ROTATION_PREFIX,
    SWITCH_EPOCH,
    SWITCH_STEP,
    Assignment,
    Directive,
)
from trainables.method.criteria import stat_key
from trainables.method.decide import (
    SOURCES,
    CriterionLike,
    PeriodRule,
    Ruling,
    criterion_config,
    ruling,
    switch_epoch_for,
)
from trainables.method.rotation import LayerPredicate, LayerRotation

__all__ = ["Control", "CriticalPeriod", "Decision", "check_budget"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Decision:
    """The state of the period after one epoch (what `CriticalPeriod.step` returns)."""

    epoch: int
    rotation: float  # mean over the monitored layers (the paper's signal)
    layers: dict[str, float]  # per-layer rotation
    value: float | None  # the rule's statistic (angle, rate ratio); None before the window fills
    end_epoch: int | None  # epoch the period ended at; None while it lasts
    switch_epoch: int | None  # first epoch of the post-period recipe
    criterion: str = "paper"
    source: str | None = None  # who ended it: "rule", "scheduler", "cohort", "forced"
    mode: str | None = None  # the scheduler channel's control mode; None: no channel
    step_interval: int | None = None  # step budgets: optimizer steps per check ("epoch")

    @property
    def step(self) -> int | None:
        """Optimizer steps trained at this check (step budgets; None counting epochs)."""
        return _steps(self.epoch, self.step_interval)

    @property
    def end_step(self) -> int | None:
        """Step at which the period ended (step budgets): the end check's last step."""
        return _steps(self.end_epoch, self.step_interval)

    @property
    def switch_step(self) -> int | None:
        """First 1-based optimizer step of the post-period recipe (step budgets)."""
        return _first_step(self.switch_epoch, self.step_interval)

    @property
    def critical(self) -> bool:
        """True while the next epoch still belongs to the critical period."""
        return _critical(self.epoch + 1, self.switch_epoch)

    def metrics(self) -> dict[str, Any]:
        """The report keys the scheduler, progress lines and tracking read (trainables/core/wire.py)."""
        m: dict[str, Any] = {EPOCH: self.epoch}
        m.update({f"{ROTATION_PREFIX}{k}": v for k, v in self.layers.items()})
        m[ROTATION_MEAN] = self.rotation
        key = stat_key(self.criterion)
        if key and self.value is not None:
            m[key] = self.value
        m[END_EPOCH], m[SWITCH_EPOCH] = self.end_epoch, self.switch_epoch
        if self.mode is not None:  # tells the scheduler this trial listens to it
            m[MODE] = self.mode
        if self.end_epoch is not None and self.switch_epoch is not None:
            m[LAG_EPOCHS] = self.switch_epoch - self.end_epoch - 1  # 0 unless it landed late
        if self.step_interval is not None:
            m[CHECK_STEP], m[END_STEP], m[SWITCH_STEP] = self.step, self.end_step, self.switch_step
        return m


class Control(Protocol):
    """A scheduler's end of the period (trainables/run/channel.py implements it for Ray)."""

    mode: str  # the requested mode, the same on every rank
    assignment: Assignment | None  # the criterion and budget when the scheduler overrides

    def directive(self) -> Directive | None: ...

    def wait_verdict(self, epoch: int) -> Directive | None: ...


@dataclass
class _Applied:
    end: int | None = None
    switch: int | None = None
    source: str | None = None
    history: list[Decision] = field(default_factory=list)


class CriticalPeriod:
    """Measures rotation at each epoch boundary and ends the critical period by a rule.

    Args:
        model: the network (DDP / torch.compile wrappers are unwrapped); its current
            weights are the initial snapshot rotation is measured against.
        criterion: "paper", "relative", "fixed", "never", a CriterionConfig or a dict.
        budget: planned epoch budget E (the paper and fixed rules need it).
        budget_steps: planned optimizer steps instead of epochs; `step()` is then called
            every `step_interval` steps, and the rules see budget_steps // step_interval
            checks (`check_budget`): their `window` and `patience` count checks.
        step_interval: optimizer steps between two calls of `step()` (step budgets).
        window, threshold_deg, ratio, patience, fraction: override the criterion's fields.
        layers: `(name, parameter) -> bool` selecting the monitored parameters
            (default: Conv/Linear kernels and attention input projections).
        control: a scheduler's channel (Ray trials); None decides locally.
    """

    def __init__(
        self,
        model: nn.Module,
        criterion: CriterionLike = "paper",
        budget: int | None = None,
        *,
        budget_steps: int | None = None,
        step_interval: int | None = None,
        window: int | None = None,
        threshold_deg: float | None = None,
        ratio: float | None = None,
        patience: int | None = None,
        fraction: float | None = None,
        layers: LayerPredicate | None = None,
        control: Control | None = None,
    ) -> None:
        cfg = criterion_config(
            criterion,
            window=window,
            threshold_deg=threshold_deg,
            ratio=ratio,
            patience=patience,
            fraction=fraction,
        )
        if budget_steps is not None:
            if budget is not None:
                raise ConfigError(
                    f"budget={budget}, budget_steps={budget_steps}: give one budget, "
                    "in epochs or in steps"
                )
            budget = check_budget(budget_steps, step_interval)
        elif step_interval is not None and step_interval < 1:
            raise ConfigError(f"step_interval={step_interval}: need a whole number of steps >= 1")
        self.step_interval = step_interval
        self.rule = PeriodRule(cfg, budget)
        self.rotation = LayerRotation(model, layers)
        self.control: Control | None = None
        self.epoch = 0  # last epoch stepped
        self.last: Decision | None = None
        self._applied = _Applied()
        if control is not None:
            self.connect(control)

    # -- state ------------------------------------------------------------------------------

    @property
    def criterion(self) -> CriterionConfig:
        return self.rule.criterion

    @property
    def budget(self) -> int | None:
        return self.rule.budget

    @property
    def end_epoch(self) -> int | None:
        return self._applied.end

    @property
    def switch_epoch(self) -> int | None:
        return self._applied.switch

    @property
    def end_step(self) -> int | None:
        """Step budgets: the step the period ended at (the end check's last step)."""
        return _steps(self.end_epoch, self.step_interval)

    @property
    def switch_step(self) -> int | None:
        """Step budgets: the first 1-based step of the post-period recipe."""
        return _first_step(self.switch_epoch, self.step_interval)

    @property
    def critical(self) -> bool:
        """True while the next epoch belongs to the critical period (through the end epoch)."""
        return _critical(self.epoch + 1, self.switch_epoch)

    # -- the epoch boundary -----------------------------------------------------------------

    def step(self) -> Decision:
        """Measure rotation after the epoch just trained, apply the rule; every rank calls it."""
        epoch = self.epoch + 1
        layers = self.rotation.compute()
        mean = layers.pop("mean")
        verdict = self.rule.observe(epoch, mean)
        decided: Ruling | None = None
        if self.switch_epoch is None and _rank() == 0:
            mode = self.control.mode if self.control else "push"
            d = self.control.directive() if self.control else None
            if mode != "push" and self.control is not None and d is None:
                mode = "push"  # no scheduler to listen to: decide locally
            decided = ruling(mode, epoch, verdict.end_epoch, d)
        self._adopt(_broadcast(decided, self._device()), epoch)
        self.epoch = epoch
        self.last = Decision(
            epoch,
            mean,
            layers,
            verdict.value,
            self.end_epoch,
            self.switch_epoch,
            self.criterion.name,
            self._applied.source,
            self.control.mode if self.control is not None else None,
            self.step_interval,
        )
        return self.last

    def after_report(self) -> Decision | None:
        """sync mode: wait for the scheduler's verdict on the epoch just reported.

        A no-op without a sync control. Under torch.distributed every rank calls it.
        """
        if self.control is None or self.control.mode != "sync" or self.last is None:
            return self.last
        decided = None
        if self.switch_epoch is None and _rank() == 0:
            d = self.control.wait_verdict(self.epoch)
            decided = ruling("sync", self.epoch, None, d, after_report=True)
        if self._adopt(_broadcast(decided, self._device()), self.epoch):
            self.last = replace(
                self.last,
                end_epoch=self.end_epoch,
                switch_epoch=self.switch_epoch,
                source=self._applied.source,
            )
        return self.last

    def end(self, epoch: int | None = None, *, switch_epoch: int | None = None) -> None:
        """End the period now (or record an end at `epoch`), or impose `switch_epoch`.

        For switches a scheduler imposes (a cohort's median); the next epoch at the
        earliest uses the post-period recipe. Ignored once the period has ended.
        """
        if switch_epoch is not None:
            switch = switch_epoch_for(self.epoch, forced=switch_epoch)
            self._adopt(Ruling(switch - 1, switch, "forced"), self.epoch)
        else:
            end = self.epoch if epoch is None else epoch
            switch = switch_epoch_for(self.epoch, end=end)
            self._adopt(Ruling(end, switch, "forced"), self.epoch)

    def connect(self, control: Control) -> None:
        """Take directives from a scheduler from now on, and its rule if it overrides ours."""
        if control.assignment is not None:
            self.use_rule(control.assignment.criterion, control.assignment.budget)
        self.control = control

    def use_rule(self, criterion: CriterionLike, budget: int | None) -> None:
        """Adopt another criterion and budget (a scheduler's override); re-judges the curve."""
        self.rule.use(criterion_config(criterion), budget)

    def _adopt(self, r: Ruling | None, epoch: int) -> bool:
        if r is None or self.switch_epoch is not None:
            return False
        self._applied.end, self._applied.switch, self._applied.source = r.end, r.switch, r.source
        log.info(
            "critical period ended at epoch %d (%s, %s, seen after epoch %d); "
            "post-period recipe from epoch %d",
            r.end,
            self.criterion.name,
            r.source,
            epoch,
            r.switch,
        )
        return True

    def _device(self) -> torch.device:
        return self.rotation.device

    # -- checkpoints ------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        return {
            "rotation": self.rotation.state_dict(),
            "criterion": self.criterion.model_dump(),
            "budget": self.budget,
            "history": list(self.rule.history),
            "epoch": self.epoch,
            "end_epoch": self.end_epoch,
            "switch_epoch": self.switch_epoch,
            "source": self._applied.source,
            "step_interval": self.step_interval,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.rotation.load_state_dict(state["rotation"])
        self.rule = PeriodRule(criterion_config(state["criterion"]), state["budget"])
        for e, v in enumerate(state["history"], start=1):
            self.rule.observe(e, v)
        self.epoch = int(state["epoch"])
        self.step_interval = state.get("step_interval")
        self._applied = _Applied(state["end_epoch"], state["switch_epoch"], state.get("source"))
        self.last = None


def check_budget(budget_steps: int, step_interval: int | None) -> int:
    """The rules' budget for a step budget: the number of checks, one per interval.

    Check k (1-based) is taken after step k * step_interval, so the paper rule's
    positions (k-1)/(K-1) are the check steps rescaled to [0, 1] over the last check's
    step, as epochs are over the epoch budget; a partial last interval has no check.
    """
    if step_interval is None or int(step_interval) != step_interval or step_interval < 1:
        raise ConfigError(
            f"step_interval={step_interval!r}: a step budget needs the optimizer steps "
            "between two checks, a whole number >= 1"
        )
    if int(budget_steps) != budget_steps or budget_steps < step_interval:
        raise ConfigError(
            f"budget_steps={budget_steps!r}: need a whole number of steps >= "
            f"step_interval={step_interval}"
        )
    return int(budget_steps) // int(step_interval)


def _steps(check: int | None, interval: int | None) -> int | None:
    return None if check is None or interval is None else check * interval


def _first_step(check: int | None, interval: int | None) -> int | None:
    return None if check is None or interval is None else (check - 1) * interval + 1


def _critical(epoch: int, switch_epoch: int | None) -> bool:
    return switch_epoch is None or epoch < switch_epoch


def _rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def _broadcast(r: Ruling | None, device: torch.device) -> Ruling | None:
    """Rank 0's ruling to every rank, so all switch recipe at the same epoch."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return r
    if dist.get_backend() == "nccl" and device.type != "cuda":
        device = torch.device("cuda", torch.cuda.current_device())
    source = SOURCES.index(r.source) if r is not None and r.source in SOURCES else -1
    row = [-1, -1, -1] if r is None else [r.end, r.switch, source]
    t = torch.tensor(row, dtype=torch.long, device=device)
    dist.broadcast(t, src=0)
    end, switch, source = (int(v) for v in t.tolist())
    if switch < 0:
        return None
    return Ruling(end, switch, SOURCES[source] if source >= 0 else "scheduler")
