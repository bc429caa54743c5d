"""A user's own training loop in every trial: `train.loop: "package.module:fit"`.

cpsweep imports `fit` inside the trial (never on the REST server) and calls it
once per trial process, on every DDP rank with the train executor:

    def fit(ctx: LoopContext) -> None:
        model = MyNet().to(ctx.device)                  # ctx.config: the trial's TrainConfig
        cp = ctx.period(model)                          # CriticalPeriod wired to the scheduler
        if ctx.checkpoint:                              # a restarted trial: resume
            model.load_state_dict(torch.load(f"{ctx.checkpoint}/model.pt"))
        for epoch in range(cp.epoch + 1, ctx.config.epochs + 1):
            loss = train_one_epoch(model, repeats=3 if cp.critical else 1)
            cp.step()                                   # rotation, the rule, the scheduler
            with tempfile.TemporaryDirectory() as tmp:
                torch.save(model.state_dict(), f"{tmp}/model.pt")
                ctx.report({"train/loss": loss}, checkpoint_dir=tmp)

`ctx.period(model)` uses the trial's `train.criterion` and `train.epochs` (or the
scheduler's override), restores the period from the checkpoint on a restart, and
reads the scheduler's cohort switches at each `step()` exactly as the built-in
loop does. `ctx.report` adds the period's keys (epoch, rotation, end and switch
epochs) to the loop's own metrics, stores the period's state and every report in
the checkpoint directory, sends both to Tune (and so to MLflow and the
scheduler), and in sync mode waits for the scheduler's verdict. Every rank calls
`ctx.report`; rank 0's metrics and checkpoint are kept.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch
import torch.distributed as dist
from torch import nn

from trainables.core.config import TrainConfig
from trainables.core.imports import FactoryError, resolve
from trainables.core.wire import EPOCH
from trainables.method.period import CriticalPeriod
from trainables.method.rotation import LayerPredicate
from trainables.run.channel import ControlChannel
from trainables.run.checkpoints import read_reports, write_records
from trainables.run.energy import EnergyMeter

__all__ = ["LoopContext", "check_loop_signature", "load_loop", "run_user_loop"]

log = logging.getLogger(__name__)

_PERIOD_FILE = "cpsweep_period.pt"  # the CriticalPeriod's state inside the loop's checkpoint


class _Session(Protocol):
    rank: int
    world: int
    device: torch.device

    def report(self, m: dict[str, Any], directory: str | None = None) -> None: ...


@dataclass
class LoopContext:
    """What a user's `fit(ctx)` gets: the trial's config, its place, the period and report."""

    config: TrainConfig  # the trial's resolved train config (swept values applied)
    rank: int  # this process's DDP rank (0 with the inline executor)
    world_size: int  # number of ranks
    device: torch.device  # the device this rank trains on
    checkpoint: str | None  # directory of the checkpoint to resume from; None on a fresh start
    _report: Callable[[dict[str, Any], str | None], None] = field(repr=False)
    _channel: ControlChannel | None = field(default=None, repr=False)
    _meter: EnergyMeter | None = field(default=None, repr=False)
    _period: CriticalPeriod | None = field(default=None, repr=False)
    _reports: list[dict[str, Any]] = field(default_factory=list, repr=False)

    @property
    def params(self) -> dict[str, Any]:
        """The trial's `train.params`: your loop's own hyperparameters, swept values applied."""
        return self.config.params

    def period(self, model: nn.Module, *, layers: LayerPredicate | None = None) -> CriticalPeriod:
        """The trial's CriticalPeriod for `model`; call it before training (it snapshots)."""
        cfg = self.config
        cp = CriticalPeriod(model, cfg.criterion, budget=cfg.epochs, layers=layers)
        state = Path(self.checkpoint, _PERIOD_FILE) if self.checkpoint else None
        if state is not None and state.is_file():
            cp.load_state_dict(torch.load(state, map_location=cp.rotation.device))
            log.info("period resumed at epoch %d (switch_epoch=%s)", cp.epoch, cp.switch_epoch)
        if self._channel is not None:
            self._channel.attach(cp)
        self._period = cp
        return cp

    def report(self, metrics: dict[str, Any], checkpoint_dir: str | Path | None = None) -> None:
        """Send this epoch's metrics (and a checkpoint) to Tune; every rank calls it."""
        cp = self._period
        m: dict[str, Any] = dict(cp.last.metrics()) if cp is not None and cp.last else {}
        m.update(metrics)
        if EPOCH not in m:
            raise ValueError(
                "ctx.report: no epoch to report; call cp.step() (cp = ctx.period(model)) "
                "before ctx.report, or pass metrics['epoch']"
            )
        if cp is not None and "phase" not in m:  # whose recipe trained this epoch: the
            # savings estimate extrapolates the critical phase's cost per reported sample
            after = cp.switch_epoch is not None and m[EPOCH] >= cp.switch_epoch
            m["phase"] = "after" if after else "critical"
        if self._meter is not None:
            reading = self._meter.read()
            m["energy/epoch_kwh"] = _sum_over_ranks(reading.kwh, self.device)
            m["energy/method"] = reading.method
        m["device/name"] = (
            torch.cuda.get_device_name(self.device) if self.device.type == "cuda" else "cpu"
        )
        m["device/workers"] = self.world_size
        if self.rank == 0 and self._channel is not None:
            m.update(self._channel.take_metrics())
        directory = None
        if self.rank == 0:
            self._reports.append(m)
            if checkpoint_dir is not None:
                directory = str(checkpoint_dir)
                if cp is not None:
                    torch.save(cp.state_dict(), Path(directory, _PERIOD_FILE))
                write_records(
                    directory,
                    {
                        EPOCH: m[EPOCH],
                        "cp_end_epoch": cp.end_epoch if cp else None,
                        "switch_epoch": cp.switch_epoch if cp else None,
                    },
                    self._reports,
                )
        self._report(m, directory)
        if cp is not None:
            cp.after_report()  # sync mode: the scheduler's verdict on this epoch


def _sum_over_ranks(value: float, device: torch.device) -> float:
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return value
    t = torch.tensor([value], dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return float(t.item())


def load_loop(target: str, paths: list[str] | tuple[str, ...] = ()) -> Callable[[LoopContext], Any]:
    """Import `train.loop` and check that it takes what cpsweep passes; errors name the field."""
    fn = resolve(target, field="train.loop", paths=paths)
    if not callable(fn):
        raise FactoryError(
            f"train.loop: {target!r} is a {type(fn).__name__}, not a function; "
            "point it at a function fit(ctx)"
        )
    check_loop_signature(fn, target)
    return fn  # type: ignore[no-any-return]


def check_loop_signature(fn: Callable[..., Any], target: str) -> None:
    """FactoryError unless `fn` can be called as fn(ctx), one positional argument."""
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):  # a builtin without a signature: the call will tell
        return
    try:
        sig.bind(None)
    except TypeError as exc:
        raise FactoryError(
            f"train.loop: {target}{sig} cannot be called as {target.split(':')[-1]}(ctx) "
            f"({exc}); cpsweep passes one argument, ctx: cpsweep.LoopContext (its config, "
            "params, device, rank, period() and report()): write def fit(ctx): ..."
        ) from None


def run_user_loop(
    cfg: TrainConfig,
    session: _Session,
    *,
    checkpoint: Any,
    channel: ControlChannel | None,
    meter: EnergyMeter | None,
    import_paths: list[str] | tuple[str, ...] = (),
) -> list[dict[str, Any]]:
    """Call the user's `fit(ctx)` for one trial process; returns rank 0's reports."""
    assert cfg.loop is not None
    fn = load_loop(cfg.loop, import_paths)
    directory = checkpoint.to_directory() if checkpoint is not None else None
    ctx = LoopContext(
        cfg,
        session.rank,
        session.world,
        session.device,
        directory,
        _report=session.report,
        _channel=channel,
        _meter=meter,
        _reports=read_reports(directory) if directory and session.rank == 0 else [],
    )
    log.info("running train.loop %s (rank %d of %d)", cfg.loop, session.rank, session.world)
    fn(ctx)
    return ctx._reports
