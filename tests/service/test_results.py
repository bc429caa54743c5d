"""The result schema (service.results): the headline metric (`train.metric`) in the summary,
the table, the sweep's totals, the MLflow view, the report's columns and the inner ASHA; the
budget flags of the period's end. Pure: no Ray, no MLflow."""

from __future__ import annotations

import json
import logging
from types import SimpleNamespace
from typing import Any

import pandas as pd
import pytest

from service.reporting.rows import arm_columns, trial_columns, trial_row
from service.results import SweepSummary, metric_columns, period_flag
from service.spec import SweepSpec, load_spec
from service.sweeps.progress import ProgressCallback, format_table
from service.sweeps.summary import summarize_results
from service.tracking.parent_run import sweep_totals
from service.tracking.reader import RunData
from service.tracking.view import shared_view
from tests.reference import REPO
from trainables.core.config import ConfigError, TrainConfig
from trainables.core.wire import Headline, headline_of
from trainables.run.progress import progress_line

LOSS = Headline("val/loss", "min")


def _regression_spec(**train: Any) -> SweepSpec:
    base = {
        "loop": "regression_loop:fit",
        "epochs": 4,
        "metric": {"name": "val/loss", "mode": "min"},
    }
    return SweepSpec.model_validate({"name": "reg", "train": {**base, **train}})


def _loss_result(tid: str, losses: list[float], test: float | None, end: int | None) -> Any:
    """A Tune result of a regression loop: val/loss per epoch, `samples` per epoch (no
    running total: a user's loop), test/loss after the last epoch."""
    n = len(losses)
    df = pd.DataFrame({"epoch": range(1, n + 1), "val/loss": losses, "samples": [100] * n})
    last: dict[str, Any] = {"trial_id": tid, "epoch": n, "val/loss": losses[-1]}
    last["cp/end_epoch"] = end
    if test is not None:
        df["test/loss"] = [None] * (n - 1) + [test]
        last["test/loss"] = test
    train = {
        "loop": "regression_loop:fit",
        "epochs": 4,
        "criterion": {"name": "paper", "window": 2},
    }
    return SimpleNamespace(
        metrics=last,
        config={"train": train, "params": {}},
        metrics_dataframe=df,
        path=f"/x/{tid}",
        error=None,
    )


def _summary() -> SweepSummary:
    scheduler: Any = SimpleNamespace(decisions=lambda: {})
    grid = [
        _loss_result("a", [0.9, 0.5, 0.6, 0.55], 0.58, end=3),
        _loss_result("b", [0.8, 0.4, 0.3, 0.35], 0.33, end=2),
    ]
    return summarize_results(_regression_spec(), grid, scheduler, wall_s=3.0)


def test_the_headline_defaults_to_accuracy_for_the_builtin_loop_only():
    assert headline_of(TrainConfig().model_dump()) == Headline("val/acc", "max")
    assert headline_of({"loop": "m:fit"}) == LOSS  # any loop can report a loss
    spec = _regression_spec(metric={"name": "val/r2", "mode": "max"})
    assert headline_of(spec.train.model_dump()) == Headline("val/r2", "max")
    assert Headline("val/r2", "max").test_key == "test/r2"


@pytest.mark.parametrize(
    ("metric", "match"),
    [
        ({"name": "test/loss", "mode": "min"}, "decisions read the validation split"),
        ({"name": "loss", "mode": "min"}, "val/<metric>"),
        ({"name": "val/loss"}, "train.metric.mode"),
        ({"name": "val/loss", "mode": "lowest"}, "train.metric.mode"),
    ],
)
def test_a_bad_metric_is_refused_naming_the_field(tmp_path, metric, match):
    spec = tmp_path / "s.yaml"
    spec.write_text(json.dumps({"name": "s", "train": {"metric": metric}}))
    with pytest.raises(ConfigError, match=match):
        load_spec(str(spec))


def test_a_regression_summary_ranks_by_val_loss_and_counts_the_loops_samples():
    summary = _summary()
    assert summary.metric.name == "val/loss" and summary.metric.mode == "min"
    a, b = summary.trials
    assert (a.final_val, a.best_val, a.final_test) == (0.55, 0.5, 0.58)  # best: the lowest
    assert (b.final_val, b.best_val, b.final_test) == (0.35, 0.3, 0.33)
    assert a.final_val_acc is None and a.samples == 400  # 4 epochs x 100, no running total
    assert summary.best_trial() is b
    totals = sweep_totals(summary)
    assert totals["sweep/best_val_loss"] == 0.35 and totals["sweep/test_loss_of_best_val"] == 0.33
    assert not any("acc" in k for k in totals)
    # summary.json's form reads back as the same object (the tracking log's final op)
    doc = json.loads(json.dumps(summary.to_json()))
    assert doc["metric"] == {"name": "val/loss", "mode": "min", "test": "test/loss"}
    assert SweepSummary.model_validate(doc) == summary


def test_the_table_heads_its_columns_with_the_headline_and_no_accuracy():
    table = format_table(_summary())
    head = table.splitlines()[0].split()
    assert head[7:12] == ["val/loss", "(min)", "best", "val/loss", "test/loss"]
    assert "acc" not in table and "0.5500" in table and "0.3300" in table
    assert "400" in table  # samples
    assert "2 (earliest)" in table  # window 2: the paper rule's first possible end
    assert "lower bound, not a detection" in table


def test_budget_flags_mark_an_end_at_the_first_full_window_and_no_end():
    paper = {"name": "paper", "window": 5}
    assert period_flag(paper, 5, 15, 15) == "earliest"  # a lower bound, not a detection
    assert period_flag(paper, 6, 15, 15) is None
    assert period_flag(paper, None, 15, 15) == "no_end"
    assert period_flag(paper, None, 9, 15) is None  # stopped early (ASHA): no verdict
    relative = {"name": "relative", "window": 5, "patience": 2}
    assert period_flag(relative, 7, 30, 30) == "earliest"
    assert period_flag(relative, 8, 30, 30) is None
    assert period_flag({"name": "fixed"}, 2, 15, 15) is None  # fixed detects nothing
    assert period_flag({"name": "never"}, None, 15, 15) is None


def _trial(result: dict[str, Any]) -> Any:
    config = {"train": {"epochs": 15, "criterion": {"name": "paper", "window": 5}}}
    return SimpleNamespace(trial_id="t1", config=config, last_result=result)


def test_the_progress_and_done_lines_show_the_headline_and_the_flags(caplog):
    cb = ProgressCallback(15, headline=LOSS)
    caplog.set_level(logging.INFO, logger="cpsweep.progress")
    r = {"epoch": 5, "cp/end_epoch": 5, "val/loss": 0.25, "train/loss": 0.3}
    cb.on_trial_result(5, [], _trial(r), r)
    assert "val/loss=0.2500" in caplog.text and "lower bound, not a detection" in caplog.text
    caplog.clear()
    last = {"epoch": 15, "cp/end_epoch": None, "val/loss": 0.2, "test/loss": 0.21}
    cb.on_trial_complete(15, [], _trial(last))
    assert "val/loss (min)=0.2" in caplog.text and "test/loss=0.21" in caplog.text
    assert "did not end the period within the budget" in caplog.text
    assert "val/loss=" in progress_line({"epoch": 1, "val/loss": 0.5}, 4, LOSS)


def test_the_inner_asha_compares_the_headline_unless_told_otherwise():
    spec = _regression_spec()
    inner = SweepSpec.model_validate(
        {**spec.model_dump(exclude_unset=True), "scheduler": {"inner": {"name": "asha"}}}
    ).scheduler.inner
    assert inner is not None and inner.compared(LOSS) == ("val/loss", "min")
    assert inner.compared(Headline()) == ("val/acc", "max")
    other = inner.model_copy(update={"metric": "val/mae", "mode": "min"})
    assert other.compared(LOSS) == ("val/mae", "min")


def test_the_mlflow_view_sorts_by_the_headline_best_first():
    view = shared_view(["optim.lr"], "p" * 32, LOSS)
    assert view["orderByKey"] == "metrics.`val/loss`" and view["orderByAsc"] is True
    assert "metrics.`test/loss`" in view["selectedColumns"]
    assert not any("acc" in c for c in view["selectedColumns"])
    assert [c["metricKey"] for c in view["compareRunCharts"]][2] == "val/loss"
    assert shared_view([], "p" * 32)["orderByAsc"] is False  # val/acc: highest first


def test_the_report_columns_and_rows_follow_the_headline():
    assert metric_columns(LOSS) == ("val/loss (min)", "best val/loss", "test/loss")
    heads = [h for h, _, _ in trial_columns(LOSS)] + [h for h, _, _ in arm_columns(LOSS)]
    assert "val/loss (min)" in heads and not any("acc" in h for h in heads)
    run = RunData(
        "r" * 32, metrics={"val/loss": 0.4, "test/loss": 0.41}, val_history=[0.5, 0.3, 0.4]
    )
    row = trial_row(run, LOSS)
    assert (row.final_val, row.best_val, row.final_test) == (0.4, 0.3, 0.41)


def test_the_regression_example_names_its_metric():
    spec = load_spec(str(REPO / "examples" / "regression.yaml"))
    assert headline_of(spec.train.model_dump()) == LOSS
