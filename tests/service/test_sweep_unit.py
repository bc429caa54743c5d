"""Pure parts of service.sweeps.run: retries and resources per executor."""

from __future__ import annotations

import pytest

from service.spec import SweepSpec
from service.sweeps.run import _trial_resources, _trial_retries


def _spec(scaling: dict, failures: dict | None = None) -> SweepSpec:
    return SweepSpec.model_validate({"name": "x", "scaling": scaling, "failures": failures or {}})


@pytest.mark.parametrize(
    ("scaling", "failures", "retries"),
    [
        ({"executor": "train"}, {"worker_failures": 2, "trial_failures": 0}, 0),
        ({"executor": "inline"}, {"worker_failures": 2, "trial_failures": 0}, 2),
        ({"executor": "inline"}, {"worker_failures": 2, "trial_failures": 1}, 3),
        ({"executor": "inline"}, {"worker_failures": -1, "trial_failures": 1}, -1),
        ({"num_workers": 2}, {"worker_failures": -1, "trial_failures": 1}, 1),
    ],
)
def test_inline_trials_count_worker_failures_as_trial_retries(scaling, failures, retries):
    assert _trial_retries(_spec(scaling, failures)) == retries


def test_inline_trials_hold_their_workers_resources():
    spec = _spec({"executor": "inline", "cpus_per_worker": 2})
    assert _trial_resources(spec) == {"CPU": 2, "GPU": 0}
    gpu = _spec({"executor": "inline", "use_gpu": True})
    assert _trial_resources(gpu) == {"CPU": 1, "GPU": 1}


def test_a_fresh_sweep_never_writes_into_an_earlier_one(tmp_path, monkeypatch):
    """`make run` twice: the second run gets runs/<name>-2; --resume continues the latest."""
    from service.sweeps.run import resolve_output_dir

    monkeypatch.chdir(tmp_path)
    runs = tmp_path / "runs"
    assert resolve_output_dir("q", None, resume=False) == runs / "q"
    assert resolve_output_dir("q", None, resume=True) == runs / "q"  # nothing yet: run refuses
    (runs / "q" / "ray" / "q").mkdir(parents=True)
    assert resolve_output_dir("q", None, resume=False) == runs / "q-2"
    assert resolve_output_dir("q", None, resume=True) == runs / "q"
    (runs / "q-2" / "ray" / "q").mkdir(parents=True)
    assert resolve_output_dir("q", None, resume=False) == runs / "q-3"
    assert resolve_output_dir("q", None, resume=True) == runs / "q-2"
    (runs / "q-4").mkdir()  # a directory without a sweep in it is free to use
    assert resolve_output_dir("q", None, resume=False) == runs / "q-3"
    (runs / "q-5" / "ray" / "q").mkdir(parents=True)  # numbers keep rising past gaps
    assert resolve_output_dir("q", None, resume=False) == runs / "q-6"
    assert resolve_output_dir("q", None, resume=True) == runs / "q-5"
    # An explicit directory is taken as given (run_sweep refuses one that holds a sweep).
    assert resolve_output_dir("q", "runs/q", resume=False) == runs / "q"


def test_an_explicit_directory_holding_a_sweep_is_refused(tmp_path):
    from service.sweeps.run import run_sweep
    from trainables.core.config import ConfigError

    (tmp_path / "ray" / "x").mkdir(parents=True)
    with pytest.raises(ConfigError, match=r"already holds a sweep x; pass --resume"):
        run_sweep(_spec({}), output_dir=tmp_path)


def test_sweep_totals_sum_resources_and_count_outcomes():
    from service.results import MetricInfo, SweepSummary, TrialSummary
    from service.tracking.parent_run import sweep_totals
    from trainables.core.wire import Headline

    # fmt: off
    trials = (
        TrialSummary(trial_id="a", status="TERMINATED", final_val=0.9, energy_kwh=1e-3,
                     cost_usd=0.5, co2_kg=4e-4, billed_s=30.0, samples=10),
        TrialSummary(trial_id="b", status="ERROR", energy_kwh=2e-3, cost_usd=0.25,
                     co2_kg=2e-4, billed_s=12.0),
        TrialSummary(trial_id="c", status="INTERRUPTED", final_val=0.95),
    )
    # fmt: on
    summary = SweepSummary(
        sweep="s", metric=MetricInfo.of(Headline()), budget=4, wall_s=12.5, trials=trials
    )
    assert sweep_totals(summary) == pytest.approx(
        {
            "sweep/trials": 3,
            "sweep/finished": 1,
            "sweep/failed": 1,
            "sweep/wall_s": 12.5,
            "sweep/best_val_acc": 0.95,
            "sweep/samples": 10.0,
            # The trials' own keys and units, so the parent's row fills the same columns.
            "energy/Wh": 3.0,
            "co2/g": 0.6,
            "cost/usd": 0.75,
            "time/cum_s": 42.0,
            "total/kWh": 3e-3,
            "total/co2_kg": 6e-4,
        }
    )
