"""CriticalPeriodScheduler says once what a user's own Tuner would otherwise not notice."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Any

import pytest
import torch

from service.sweeps.scheduler import CriticalPeriodScheduler
from trainables.core.config import TrainConfig
from trainables.core.wire import MODE
from trainables.method.period import CriticalPeriod

_LOGGER = "service.sweeps.scheduler"


@dataclass
class _Trial:
    trial_id: str
    config: dict[str, Any] = field(default_factory=dict)
    experiment_dir_name: str = "exp"


def _cpsweep_trial(tid: str, criterion: str) -> _Trial:
    train = TrainConfig(epochs=20).model_dump()
    train["criterion"]["name"] = criterion
    return _Trial(tid, {"train": train})


def _warnings(caplog: pytest.LogCaptureFixture, needle: str) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == _LOGGER and r.levelno == logging.WARNING and needle in r.getMessage()
    ]


def _report(s: CriticalPeriodScheduler, t: _Trial, epochs: int, **extra: Any) -> None:
    for e in range(1, epochs + 1):
        rotation = 0.6 * (1 - math.exp(-e / 3.0))
        s.on_trial_result(None, t, {"epoch": e, "rotation/mean": rotation, **extra})


def test_scheduler_criterion_replacing_the_trials_own_is_said_once(caplog):
    caplog.set_level(logging.WARNING, _LOGGER)
    s = CriticalPeriodScheduler(criterion="relative", use_control=False)
    for tid in "abc":
        s.on_trial_add(None, _cpsweep_trial(tid, "paper"))
    said = _warnings(caplog, "replaces")
    assert len(said) == 1 and "relative" in said[0] and "paper" in said[0]
    assert "criterion=None" in said[0]


def test_same_criterion_says_nothing(caplog):
    caplog.set_level(logging.WARNING, _LOGGER)
    s = CriticalPeriodScheduler(criterion="paper", use_control=False)
    s.on_trial_add(None, _cpsweep_trial("a", "paper"))
    assert not _warnings(caplog, "replaces")


def test_own_trainables_hear_that_the_scheduler_pushes_its_criterion(caplog):
    caplog.set_level(logging.WARNING, _LOGGER)
    s = CriticalPeriodScheduler(criterion="paper", budget=10, use_control=False)
    for tid in "ab":
        s.on_trial_add(None, _Trial(tid, {"lr": 0.1}))
    said = _warnings(caplog, "replaces the criterion")
    assert len(said) == 1 and "tune_channel()" in said[0]


def test_a_trainable_without_channel_gets_one_hint_not_a_mismatch_per_epoch(caplog):
    caplog.set_level(logging.DEBUG, _LOGGER)
    s = CriticalPeriodScheduler(budget=10, use_control=False)
    trials = [_Trial(tid, {"lr": 0.1}) for tid in "ab"]
    for t in trials:
        s.on_trial_add(None, t)
        # the trainable's own rule ended elsewhere than the scheduler's: no channel, no MODE
        _report(s, t, 10, **{"cp/end_epoch": 1})
    hints = _warnings(caplog, "without a control channel")
    assert len(hints) == 1 and "control=tune_channel()" in hints[0]
    assert not _warnings(caplog, "reports the period ended")


def test_a_trainable_with_channel_still_hears_of_mismatches(caplog):
    caplog.set_level(logging.WARNING, _LOGGER)
    s = CriticalPeriodScheduler(budget=10, use_control=False)
    t = _Trial("a", {"lr": 0.1})
    s.on_trial_add(None, t)
    _report(s, t, 10, **{"cp/end_epoch": 1, MODE: "push"})
    assert not _warnings(caplog, "without a control channel")
    assert _warnings(caplog, "reports the period ended")


def test_cohort_keys_missing_from_trials_are_said_once(caplog):
    caplog.set_level(logging.WARNING, _LOGGER)
    s = CriticalPeriodScheduler(scope="cohort", budget=10, use_control=False)
    for tid, lr in (("a", 0.1), ("b", 0.2)):
        s.on_trial_add(None, _Trial(tid, {"lr": lr, "model": "mlp"}))
    said = _warnings(caplog, "scope='cohort'")
    assert len(said) == 1 and "model.name" in said[0] and "cohort_keys=" in said[0]


def test_own_trainables_group_by_keys_of_their_own_config(caplog):
    caplog.set_level(logging.WARNING, _LOGGER)
    s = CriticalPeriodScheduler(scope="cohort", cohort_keys=["model"], budget=10, use_control=False)
    for tid, model in (("a", "mlp"), ("b", "cnn"), ("c", "mlp")):
        s.on_trial_add(None, _Trial(tid, {"model": model}))
    cohorts = {tid: d["cohort"] for tid, d in s.decisions().items()}
    assert cohorts == {"a": "mlp", "b": "cnn", "c": "mlp"}
    assert not _warnings(caplog, "scope='cohort'")


def test_cpsweep_trials_have_every_default_cohort_key(caplog):
    caplog.set_level(logging.WARNING, _LOGGER)
    s = CriticalPeriodScheduler(scope="cohort", use_control=False)
    s.on_trial_add(None, _cpsweep_trial("a", "paper"))
    assert not _warnings(caplog, "scope='cohort'")


class _Control:
    mode = "push"
    assignment = None

    def directive(self) -> None:
        return None

    def wait_verdict(self, epoch: int) -> None:
        return None


def test_a_connected_period_tells_the_scheduler_it_listens():
    """d.metrics() carries the channel's mode, which is how the scheduler knows."""
    model = torch.nn.Linear(3, 2)
    assert MODE not in CriticalPeriod(model, "paper", budget=5).step().metrics()
    connected = CriticalPeriod(model, "paper", budget=5, control=_Control())
    assert connected.step().metrics()[MODE] == "push"
