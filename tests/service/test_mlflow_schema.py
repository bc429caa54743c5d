"""What a sweep looks like in MLflow: run names, params, units and keys (pure functions)."""

from __future__ import annotations

import json

import pytest

from service.spec import SweepSpec
from service.tracking.schema import (
    STATE_KEYS,
    epoch_metrics,
    estimate_metrics,
    fmt_value,
    legible,
    parent_params,
    parent_totals,
    state_from_run,
    state_metrics,
    trial_params,
    trial_run_name,
)
from service.tracking.view import (
    TRIAL_COLORS,
    run_url,
    runs_view_url,
    shared_view,
    shared_view_key,
    trial_color,
    view_columns,
)


def test_run_names_say_what_varies_names_first() -> None:
    cfg = {"params": {"optim.lr": 0.05, "optim.name": "adam"}}
    assert trial_run_name(cfg, seed=0) == "adam lr=0.05 s0"
    assert trial_run_name({**cfg, "arm": "cp"}, seed=1) == "critical-period adam lr=0.05 s1"
    assert trial_run_name({"arm": "baseline"}) == "baseline (full recipe)"
    assert trial_run_name({"arm": "no-mixup"}, seed=2) == "no-mixup s2"  # user arms as written
    # A sampled float is rounded; the criterion is named as a rule; a searched seed once.
    searched = {"params": {"optim.lr": 0.00010000000000000002, "criterion.name": "relative"}}
    assert trial_run_name(searched) == "relative rule lr=0.0001"
    assert trial_run_name({"params": {"seed": 3, "optim.lr": 0.1}}) == "lr=0.1 s3"
    assert trial_run_name({}) == "trial"


def test_param_values_are_legible() -> None:
    assert fmt_value(0.00010000000000000002) == "0.0001"
    assert fmt_value(0.1 + 0.2) == "0.3"
    assert fmt_value(True) == "True" and fmt_value(None) == "None" and fmt_value(3) == "3"
    assert fmt_value([0.01, 0.05000000001]) == "[0.01, 0.05]"
    assert trial_params({"optim": {"lr": 0.30000000000000004, "name": "sgd"}, "seed": 0}) == {
        "optim.lr": "0.3",
        "optim.name": "sgd",
        "seed": "0",
    }


def _spec(**changes: object) -> SweepSpec:
    raw: dict = {
        "name": "s",
        "train": {"optim": {"name": "sgd", "lr": 0.05}, "epochs": 12},
        "search_space": {"optim.lr": {"grid": [0.01, 0.05]}, "optim.name": {"grid": ["sgd"]}},
    }
    raw.update(changes)
    return SweepSpec.model_validate(raw)


def test_parent_params_hold_the_sweep_once_and_correctly() -> None:
    p = parent_params(_spec(baseline_arm=True))
    # The searched values are not the base config's: no `optim.lr=0.05` on the parent.
    assert "optim.lr" not in p and "optim.name" not in p
    assert p["search.optim.lr"] == "grid [0.01, 0.05]"
    assert p["epochs"] == "12" and p["optim.momentum"] == "0.9"  # fixed: the trials' keys
    # The baseline arm overrides the criterion: its base value is not logged either.
    assert "criterion.name" not in p and p["arm.baseline"] == "criterion.name=never"
    assert p["arm.cp"] == "base"
    assert p["sweep.num_samples"] == "1" and p["sweep.scheduler"] == "trial/push"
    assert not any(k.startswith("train.") for k in p)
    assert all(isinstance(v, str) and len(v) <= 6000 for v in p.values())


def test_epoch_metrics_mark_the_critical_period_and_skip_bookkeeping() -> None:
    result = {
        "epoch": 3, "phase": "critical", "trial_id": "t", "val/acc": 0.9, "lr": 0.05,
        "recipe/repeats": 3, "rotation/mean": 0.2, "energy/epoch_kwh": 1.23456e-6,
        "cp/end_epoch": None, "cp/mode": "push", "cp/angle_deg": 12.5, "done": False,
        "time_total_s": 9.0, "bad": float("nan"), "flag": True, "device/name": "cpu",
    }  # fmt: skip
    m = epoch_metrics(result)
    assert m["cp/critical"] == 1.0 and m["cp/angle_deg"] == 12.5
    assert m["energy/epoch_Wh"] == pytest.approx(0.001235)
    assert set(m) == {
        "val/acc", "lr", "recipe/repeats", "rotation/mean", "cp/angle_deg", "cp/critical",
        "energy/epoch_Wh",
    }  # fmt: skip
    assert epoch_metrics({"phase": "after"})["cp/critical"] == 0.0


def test_units_are_legible_and_the_state_round_trips() -> None:
    assert legible(1.234567e-5) == pytest.approx(1.235e-5) and legible(0.0) == 0.0
    assert legible(98765.4321) == 98770.0
    state = {
        "energy_kwh": 1.2345678e-5, "co2_kg": 5.5e-6, "cost_usd": 3.21e-5, "seconds": 12.3456,
        "samples": 9000, "crit_epochs": 5, "crit_train_s": 4.5, "crit_samples": 7000,
        "crit_kwh": 1e-5, "crit_co2": 4e-6, "crit_cost": 2e-5,
    }  # fmt: skip
    m = state_metrics(state)
    assert set(m) == set(STATE_KEYS)
    assert (m["energy/Wh"], m["co2/g"], m["cost/usd"]) == (0.01235, 0.0055, 3.21e-5)
    back = state_from_run(m, {"cpsweep.last_epoch": "7", "cost.device": "cpu-core"})
    assert back["last_epoch"] == 7 and back["device"] == "cpu-core"
    assert back["samples"] == 9000 and isinstance(back["crit_samples"], int)
    assert back["crit_kwh"] == pytest.approx(1e-5) and back["energy_kwh"] == 1.235e-5
    assert state_from_run({"energy/Wh": 1.0}, {}) == {}  # incomplete: start afresh


def test_estimates_chart_beside_the_actual_values() -> None:
    est = {"energy_kwh": 2e-5, "co2_kg": 1e-5, "cost_usd": 4e-5, "seconds": 30.0, "samples": 9}
    m = estimate_metrics(est, {"time": 12.3456, "cost": 50.0})
    assert m == {
        "full_recipe_est/Wh": 0.02,
        "full_recipe_est/co2_g": 0.01,
        "full_recipe_est/usd": 4e-5,
        "full_recipe_est/s": 30.0,
        "savings/time_pct": 12.35,
        "savings/cost_pct": 50.0,
    }
    assert estimate_metrics({}, {}) == {}


def test_parent_totals_use_the_trials_keys() -> None:
    trials = [
        {"energy_kwh": 1e-5, "co2_kg": 2e-6, "cost_usd": 1e-4, "billed_s": 3.0},
        {"energy_kwh": 3e-5, "co2_kg": 4e-6, "cost_usd": 2e-4, "billed_s": 5.0},
        {"energy_kwh": None},  # failed before its first epoch
    ]
    assert parent_totals(trials) == pytest.approx(
        {
            "energy/Wh": 0.04,
            "co2/g": 0.006,
            "cost/usd": 3e-4,
            "time/cum_s": 8.0,
            "total/kWh": 4e-5,
            "total/co2_kg": 6e-6,
        }
    )
    assert parent_totals([]) == {}


def test_arm_names_become_keys_mlflow_accepts() -> None:
    """An arm named like paper_repro's `paper+infobatch` must not cost the parent its params."""
    from mlflow.utils.validation import _validate_param_name

    spec = SweepSpec.model_validate(
        {"name": "x", "arms": {"paper+infobatch": {"criterion.name": "never"}, "k3": {}}}
    )
    p = parent_params(spec)
    assert p["arm.paper_infobatch"] == "criterion.name=never" and p["arm.k3"] == "base"
    for key in p:
        _validate_param_name(key)  # raises MlflowException on a refused key


def test_the_link_opens_the_training_runs_with_the_sweeps_own_view() -> None:
    url = runs_view_url("http://h:5000/", "7", "abc123", charts=True)
    assert url == (
        "http://h:5000/#/experiments/7/runs?workflowType=machine_learning"
        "&viewStateShareKey=cpsweep-abc123&compareRunsMode=CHART"
    )
    assert shared_view_key("abc123") != shared_view_key("def456")  # one view per sweep
    # MLflow never took the sweep's run: the plain training-runs page, no view to miss.
    assert "viewStateShareKey" not in runs_view_url("http://h:5000", "7", None)
    assert run_url("http://h:5000/", "7", "abc123") == (
        "http://h:5000/#/experiments/7/runs/abc123?workflowType=machine_learning"
    )


def test_the_view_lists_the_sweeps_trials_flat_with_their_columns_and_curves() -> None:
    view = shared_view(["optim.lr", "optim.name"], "abc123")
    # The trials of this sweep only (no parent row, no parent legend entry), sorted by a
    # metric: the UI nests child runs only while it sorts by start time.
    assert view["searchFilter"] == "tags.`mlflow.parentRunId` = 'abc123'"
    assert view["orderByKey"] == "metrics.`val/acc`" and view["orderByAsc"] is False
    columns = view_columns(["optim.lr", "optim.name"])
    assert view["selectedColumns"] == columns
    assert columns[:3] == ["params.`optim.lr`", "params.`optim.name`", "metrics.`val/acc`"]
    assert {"metrics.`energy/Wh`", "metrics.`co2/g`", "metrics.`cost/usd`"} <= set(columns)
    # A width is applied only to a column that `columnOrder` names.
    assert set(view["columnWidths"]) <= set(view["columnOrder"])
    charts = view["compareRunCharts"]
    assert [c["metricKey"] for c in charts] == [
        "rotation/mean",
        "cp/critical",
        "val/acc",
        "val/loss",
    ]
    assert {c["metricSectionId"] for c in charts} == {s["uuid"] for s in view["compareRunSections"]}
    assert all(c["type"] == "LINE" and c["lineSmoothness"] == 0 for c in charts)
    assert view["runsHiddenMode"] == "SHOW_ALL" and view["isAccordionReordered"] is True
    # Keys a 3.17.2 shared view drops: asking for them would only mislead a reader.
    dropped = {"runsExpanded", "runsPinned", "runsHidden", "runsVisibilityMap"}
    assert not dropped & set(view)
    many = shared_view([f"model.p{i}" for i in range(40)], "a" * 32)
    assert len(json.dumps(many)) < 8000  # an experiment tag value, with room to spare


def test_trials_get_distinct_colours_in_start_order() -> None:
    assert len(set(TRIAL_COLORS)) == len(TRIAL_COLORS)
    assert [trial_color(i) for i in range(len(TRIAL_COLORS))] == list(TRIAL_COLORS)
    assert trial_color(len(TRIAL_COLORS)) == TRIAL_COLORS[0]
