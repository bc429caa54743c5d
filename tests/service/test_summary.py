"""summary.json from Tune's results: a resent (replayed) epoch is counted once; the test
split's accuracy reaches the summary, the table and the sweep's totals."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pandas as pd

from service.spec import SweepSpec
from service.sweeps.progress import format_table
from service.sweeps.summary import once_per_epoch, summarize_results
from service.tracking.parent_run import sweep_totals
from trainables.core.wire import REPLAYED, TEST_ACC, TEST_LOSS


def _rows(epochs: list[int], replayed: list[bool]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "epoch": epochs,
            "time/train_s": [1.0] * len(epochs),
            "time/eval_s": [0.5] * len(epochs),
            "time/epoch_s": [2.0] * len(epochs),
            "val/acc": [0.1 * e for e in epochs],
            REPLAYED: replayed,
        }
    )


def test_a_replayed_epoch_tune_had_recorded_is_dropped_one_it_lacked_stays() -> None:
    # Epochs 1-3, then a resume resends 3 (recorded) and 4 (lost before the interrupt).
    df = _rows([1, 2, 3, 3, 4, 5], [False, False, False, True, True, False])
    assert once_per_epoch(df)["epoch"].tolist() == [1, 2, 3, 4, 5]
    plain = _rows([1, 2], [False, False]).drop(columns=[REPLAYED])  # no resume: untouched
    assert once_per_epoch(plain) is plain and once_per_epoch(None) is None


def test_summary_times_count_a_resent_epoch_once() -> None:
    spec = SweepSpec.model_validate({"name": "s", "train": {"epochs": 4}})
    df = _rows([1, 2, 2, 3, 4], [False, False, True, False, False])
    result = SimpleNamespace(
        metrics={"trial_id": "t1", "epoch": 4, "time_total_s": 9.0, "samples_total": 40},
        config={},
        metrics_dataframe=df,
        path="/x/trial_t1",
        error=None,
    )
    scheduler: Any = SimpleNamespace(decisions=lambda: {})
    [t] = summarize_results(spec, [result], scheduler, wall_s=10.0).trials
    assert (t.train_s, t.eval_s, t.epoch_s) == (4.0, 2.0, 8.0)
    assert t.outside_epochs_s == 1.0


def _result(tid: str, val_acc: float, test_acc: float | None, stopped_at: int = 4) -> Any:
    df = _rows(list(range(1, stopped_at + 1)), [False] * stopped_at)
    df["val/acc"] = val_acc
    last = {"trial_id": tid, "epoch": stopped_at, "val/acc": val_acc, "samples_total": 1}
    if test_acc is not None:  # measured after the last epoch only
        df[TEST_ACC] = [None] * (stopped_at - 1) + [test_acc]
        last.update({TEST_ACC: test_acc, TEST_LOSS: 0.3})
    return SimpleNamespace(
        metrics=last, config={}, metrics_dataframe=df, path=f"/x/{tid}", error=None
    )


def test_test_accuracy_reaches_summary_table_and_totals() -> None:
    spec = SweepSpec.model_validate({"name": "s", "train": {"epochs": 4}})
    scheduler: Any = SimpleNamespace(decisions=lambda: {})
    grid = [_result("a", 0.8, 0.71), _result("b", 0.9, 0.75), _result("c", 0.95, None, 2)]
    summary = summarize_results(spec, grid, scheduler, wall_s=1.0)
    by_id = {t.trial_id: t for t in summary.trials}
    assert by_id["a"].final_test_acc == 0.71 and by_id["a"].final_test_loss == 0.3
    assert by_id["a"].final_test == 0.71  # the headline's test value (val/acc by default)
    assert by_id["c"].final_test_acc is None  # stopped early (ASHA): never tested
    table = format_table(summary)
    assert "test/acc" in table.splitlines()[0] and "0.7500" in table
    # The sweep's pick is made on validation; its test accuracy is what a user gets.
    totals = sweep_totals(summary)
    assert totals["sweep/best_val_acc"] == 0.95
    assert "sweep/test_acc_of_best_val" not in totals  # the best trial was never tested
    summary = summary.model_copy(update={"trials": (by_id["a"], by_id["b"])})
    assert sweep_totals(summary)["sweep/test_acc_of_best_val"] == 0.75
