"""summary.json from Tune's results: a resent (replayed) epoch is counted once."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pandas as pd

from service.spec import SweepSpec
from service.sweeps.summary import once_per_epoch, summarize_results
from trainables.core.wire import REPLAYED


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
    [t] = summarize_results(spec, [result], scheduler, wall_s=10.0)["trials"]
    assert (t["train_s"], t["eval_s"], t["epoch_s"]) == (4.0, 2.0, 8.0)
    assert t["outside_epochs_s"] == 1.0
