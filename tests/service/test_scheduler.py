"""CriticalPeriodScheduler logic with stand-in trials (no Ray cluster, no control actor)."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

import pytest
from ray.tune.schedulers import TrialScheduler

from service.sweeps.scheduler import CriticalPeriodScheduler
from trainables.core.config import ConfigError, TrainConfig
from trainables.core.wire import TEST_ACC, TEST_LOSS, TEST_PREFIX, VAL_ACC, decision_view
from trainables.method.criteria import end_epoch


@dataclass
class FakeTrial:
    trial_id: str
    config: dict[str, Any] = field(default_factory=dict)
    experiment_dir_name: str = "exp"


def _trial(tid: str, epochs: int = 30, optim: str = "sgd", criterion: str = "paper") -> FakeTrial:
    train = TrainConfig(epochs=epochs).model_dump()
    train["optim"]["name"] = optim
    train["criterion"]["name"] = criterion
    return FakeTrial(tid, {"train": train})


def _curve(n: int, tau: float) -> list[float]:
    return [0.6 * (1 - math.exp(-e / tau)) for e in range(1, n + 1)]


def _feed(
    s: CriticalPeriodScheduler, t: FakeTrial, curve: list[float], start: int = 1
) -> list[str]:
    return [
        s.on_trial_result(None, t, {"epoch": e, "rotation/mean": v})
        for e, v in enumerate(curve[start - 1 :], start=start)
    ]


def test_detects_each_trial_with_the_paper_rule():
    s = CriticalPeriodScheduler(use_control=False)
    a, b = _trial("a"), _trial("b")
    for t in (a, b):
        s.on_trial_add(None, t)
    _feed(s, a, _curve(30, 3.0))
    _feed(s, b, _curve(30, 8.0))
    d = s.decisions()
    assert d["a"]["end_epoch"] == end_epoch("paper", _curve(30, 3.0), 30)
    assert d["b"]["end_epoch"] == end_epoch("paper", _curve(30, 8.0), 30)
    assert d["a"]["end_epoch"] < d["b"]["end_epoch"]
    assert d["a"]["source"] == "rule"


def test_scheduler_wide_criterion_overrides_trial_config():
    s = CriticalPeriodScheduler(criterion={"name": "fixed", "fraction": 0.25}, use_control=False)
    t = _trial("a", epochs=20)
    s.on_trial_add(None, t)
    _feed(s, t, _curve(20, 3.0))
    assert s.decisions()["a"]["end_epoch"] == 5


def test_retry_replays_epochs_without_double_counting():
    s = CriticalPeriodScheduler(use_control=False)
    t = _trial("a")
    s.on_trial_add(None, t)
    curve = _curve(30, 6.0)
    _feed(s, t, curve[:4])
    _feed(s, t, curve, start=3)  # resumed from the epoch-2 checkpoint: 3, 4 come again
    assert s.decisions()["a"]["end_epoch"] == end_epoch("paper", curve, 30)


def test_cohort_median_switches_the_remaining_trials():
    s = CriticalPeriodScheduler(
        scope="cohort", cohort_keys=["optim.name"], cohort_min_trials=3, use_control=False
    )
    trials = [_trial(f"t{i}") for i in range(4)] + [_trial("other", optim="adam")]
    for t in trials:
        s.on_trial_add(None, t)
    ends = []
    for t, tau in zip(trials[:3], (2.0, 4.0, 8.0)):
        _feed(s, t, _curve(30, tau))
        ends.append(s.decisions()[t.trial_id]["end_epoch"])
    d = s.decisions()
    median = sorted(ends)[1]
    assert d["t3"]["forced_switch"] == median + 1 and d["t3"]["source"] == "cohort"
    assert d["other"]["forced_switch"] is None  # another cohort is untouched


def test_inner_scheduler_never_judges_before_the_period_ends():
    class StopAll(TrialScheduler):
        def __init__(self):
            super().__init__()
            self.seen: list[int] = []

        def on_trial_add(self, tc, trial): ...

        def on_trial_result(self, tc, trial, result):
            self.seen.append(result["epoch"])
            return TrialScheduler.STOP

        def set_search_properties(self, metric, mode, **spec):
            return True

    inner = StopAll()
    s = CriticalPeriodScheduler(inner=inner, use_control=False)
    t = _trial("a")
    s.on_trial_add(None, t)
    decisions = _feed(s, t, _curve(30, 4.0))
    end = s.decisions()["a"]["end_epoch"]
    assert all(d == TrialScheduler.CONTINUE for d in decisions[: end - 1])
    assert decisions[end - 1] == TrialScheduler.STOP
    assert inner.seen[0] == end


def test_no_decision_sees_the_test_split():
    """The inner scheduler (ASHA) is handed val/* but never test/*, and a test metric
    cannot be the one Tune optimises."""

    class Recorder(TrialScheduler):
        def __init__(self):
            super().__init__()
            self.keys: list[set[str]] = []

        def on_trial_add(self, tc, trial): ...

        def on_trial_result(self, tc, trial, result):
            self.keys.append(set(result))
            return TrialScheduler.CONTINUE

        def on_trial_complete(self, tc, trial, result):
            self.keys.append(set(result))

        def set_search_properties(self, metric, mode, **spec):
            return True

    inner = Recorder()
    s = CriticalPeriodScheduler(inner=inner, use_control=False)
    t = _trial("a")
    s.on_trial_add(None, t)
    last: dict[str, Any] = {}
    for e, v in enumerate(_curve(30, 4.0), start=1):
        last = {"epoch": e, "rotation/mean": v, VAL_ACC: 0.5, TEST_ACC: 0.9, TEST_LOSS: 0.1}
        s.on_trial_result(None, t, last)
    s.on_trial_complete(None, t, last)
    assert inner.keys and all(VAL_ACC in k for k in inner.keys)  # it judged on validation
    assert not any(k.startswith(TEST_PREFIX) for keys in inner.keys for k in keys)
    assert TEST_ACC in last  # the trial's own result still carries it (MLflow, summary)
    with pytest.raises(ConfigError, match=r"test/acc.*test split.*val/acc"):
        s.set_search_properties(TEST_ACC, "max")
    assert decision_view({"val/acc": 1, "test/acc": 2, "epoch": 3}) == {"val/acc": 1, "epoch": 3}


def test_audit_counts_disagreeing_reports(caplog):
    s = CriticalPeriodScheduler(use_control=False)
    t = _trial("a")
    s.on_trial_add(None, t)
    curve = _curve(30, 3.0)
    true_end = end_epoch("paper", curve, 30)
    for e, v in enumerate(curve, 1):
        s.on_trial_result(
            None,
            t,
            {
                "epoch": e,
                "rotation/mean": v,
                "cp/end_epoch": (true_end + 1) if e >= true_end else None,
            },
        )
    assert s.decisions()["a"]["mismatches"] > 0
    assert "scheduler found" in caplog.text


def test_decisions_persist_across_a_restart(tmp_path):
    path = tmp_path / "cp.jsonl"
    s = CriticalPeriodScheduler(
        scope="cohort",
        cohort_keys=["optim.name"],
        cohort_min_trials=1,
        state_path=path,
        use_control=False,
    )
    t = _trial("a")
    s.on_trial_add(None, t)
    _feed(s, t, _curve(30, 3.0))
    [saved] = [json.loads(line) for line in path.read_text().splitlines()]
    assert saved["trial_id"] == "a" and saved["end_epoch"] == s.decisions()["a"]["end_epoch"]
    again = CriticalPeriodScheduler(
        scope="cohort",
        cohort_keys=["optim.name"],
        cohort_min_trials=1,
        state_path=path,
        use_control=False,
    )
    again.on_trial_add(None, _trial("a"))
    again.on_trial_add(None, _trial("late"))
    d = again.decisions()
    assert d["a"]["end_epoch"] == s.decisions()["a"]["end_epoch"]  # kept, not re-detected
    assert d["late"]["forced_switch"] == d["a"]["end_epoch"] + 1  # cohort decision reloaded
    assert d["late"]["source"] == "cohort"


def test_bad_arguments_name_the_fix():
    with pytest.raises(ValueError, match="scope"):
        CriticalPeriodScheduler(scope="global")
    with pytest.raises(ValueError, match="cohort_min_trials"):
        CriticalPeriodScheduler(cohort_min_trials=0)


def test_baseline_trials_never_join_a_cohort():
    s = CriticalPeriodScheduler(
        scope="cohort", cohort_keys=["optim.name"], cohort_min_trials=1, use_control=False
    )
    a, base = _trial("a"), _trial("base", criterion="never")
    s.on_trial_add(None, a)
    s.on_trial_add(None, base)
    _feed(s, a, _curve(30, 3.0))
    _feed(s, base, _curve(30, 3.0))
    d = s.decisions()
    assert d["a"]["end_epoch"] is not None
    assert d["base"]["forced_switch"] is None and d["base"]["end_epoch"] is None


@dataclass
class _Recorder:
    """A TrialLink and Journal that keep what they are given (service/sweeps/effects.py)."""

    sent: list[tuple[Any, ...]] = field(default_factory=list)
    entries: list[dict[str, Any]] = field(default_factory=list)

    def attach(self, experiment: str) -> None:
        self.sent.append(("attach", experiment))

    def assign(self, trial_id: str, rule: Any) -> None:
        self.sent.append(("rule", trial_id, rule.criterion["name"], rule.budget))

    def force_switch(self, trial_id: str, switch_epoch: int, source: str) -> None:
        self.sent.append(("switch", trial_id, switch_epoch, source))

    def post_verdict(self, trial_id: str, epoch: int, end: int | None) -> None:
        self.sent.append(("verdict", trial_id, epoch, end))

    def release(self, trial_id: str) -> None:
        self.sent.append(("release", trial_id))

    def load(self) -> list[dict[str, Any]]:
        return list(self.entries)

    def append(self, entry: dict[str, Any]) -> None:
        self.entries.append(entry)


def test_decisions_leave_only_through_the_link_and_journal_it_is_given():
    rec = _Recorder()
    s = CriticalPeriodScheduler(
        criterion="fixed", scope="cohort", cohort_keys=["optim.name"], cohort_min_trials=1,
        mode="sync", link=rec, journal=rec,
    )  # fmt: skip
    a, b = _trial("a", epochs=16), _trial("b", epochs=16)
    for t in (a, b):
        s.on_trial_add(None, t)
    assert ("rule", "a", "fixed", 16) in rec.sent  # the scheduler's rule overrides the trial's
    _feed(s, a, _curve(16, 3.0)[:2])
    assert ("verdict", "a", 1, None) in rec.sent and ("verdict", "a", 2, 2) in rec.sent
    assert ("switch", "b", 3, "cohort") in rec.sent  # fixed: 2 of 16 epochs, cohort of one
    assert [e["trial_id"] for e in rec.entries] == ["a"] and rec.entries[0]["end_epoch"] == 2
    s.on_trial_complete(None, a, {})
    assert rec.sent[-1] == ("release", "a")
    again = CriticalPeriodScheduler(criterion="fixed", link=rec, journal=rec)
    again.on_trial_add(None, _trial("a", epochs=16))
    assert again.decisions()["a"]["end_epoch"] == 2  # reloaded from the journal
