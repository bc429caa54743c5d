"""The summary of a finished sweep: one row per trial from Tune's results (summary.json)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from service.spec import SweepSpec
from service.sweeps.scheduler import CriticalPeriodScheduler
from trainables.core.trial import train_dict_for
from trainables.core.wire import (
    END_EPOCH,
    EPOCH,
    REPLAYED,
    SWITCH_EPOCH,
    TEST_ACC,
    TEST_LOSS,
    VAL_ACC,
)

__all__ = ["once_per_epoch", "summarize_results"]


def _num(value: Any) -> float | None:
    try:
        f = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(f) else f


def _last(df: Any, m: dict[str, Any], key: str) -> float | None:
    """The last value of `key` a trial reported (test/* comes at the end or every N epochs)."""
    if _num(m.get(key)) is not None:
        return _num(m.get(key))
    values = df[key].dropna().tolist() if df is not None and key in df else []
    return _num(values[-1]) if values else None


def _col_sum(df: Any, key: str) -> float | None:
    return _num(df[key].sum()) if df is not None and key in df else None


def once_per_epoch(df: Any) -> Any:
    """Tune's per-result rows of a trial with each epoch once. After a resume the trial
    resends the epoch of its checkpoint (marked `cp/replayed`), which Tune had recorded
    already: summing time/train_s etc. over both would count that epoch twice. A replayed
    row is dropped only when its epoch came before (one Tune had not recorded stays)."""
    if df is None or REPLAYED not in df or EPOCH not in df:
        return df
    replayed = df[REPLAYED].fillna(False).astype(bool)
    return df[~(replayed & df[EPOCH].duplicated(keep="first"))]


def summarize_results(
    spec: SweepSpec,
    grid: Any,
    scheduler: CriticalPeriodScheduler,
    wall_s: float,
    unfinished: Sequence[str] = (),
) -> dict[str, Any]:
    """One row per trial. `unfinished`: trials Tune had not concluded when the sweep ended
    (Ctrl-C): status INTERRUPTED, and the summary says `interrupted: true`."""
    decisions = scheduler.decisions()
    trials = [_trial_row(spec, result, decisions, unfinished) for result in grid]
    trials.sort(key=lambda t: (str(t["arm"]), t["trial_id"]))
    return {
        "sweep": spec.name,
        "wall_s": round(wall_s, 2),
        "interrupted": bool(unfinished),
        "trials": trials,
    }


def _trial_row(
    spec: SweepSpec, result: Any, decisions: dict[str, Any], unfinished: Sequence[str]
) -> dict[str, Any]:
    """One trial's row of the summary from its Tune result."""
    m = dict(result.metrics or {})
    config = result.config or {}
    df = once_per_epoch(result.metrics_dataframe)
    accs = df[VAL_ACC].dropna().tolist() if df is not None and VAL_ACC in df else []
    tid = m.get("trial_id") or (result.path or "").rsplit("_", 1)[-1]
    epochs = int(m.get("epoch") or 0)
    if result.error:
        status = "ERROR"
    elif tid in unfinished:
        status = "INTERRUPTED"
    else:  # fewer epochs than planned: an inner scheduler (ASHA) stopped it
        status = "STOPPED" if epochs < spec.train.epochs else "TERMINATED"
    t: dict[str, Any] = {
        "trial_id": tid,
        "arm": config.get("arm"),
        "params": config.get("params", {}),
        "config": train_dict_for(config) if "train" in config else {},
        "status": status,
        "error": str(result.error).strip().splitlines()[-1] if result.error else None,
        "epochs": epochs,
        "cp_end_epoch": m.get(END_EPOCH),
        "switch_epoch": m.get(SWITCH_EPOCH),
        "cp_source": decisions.get(tid, {}).get("source"),
        "final_val_acc": _num(m.get(VAL_ACC)),
        "best_val_acc": max(accs) if accs else None,
        # the test split, measured after the last epoch (None: stopped early, or no test
        # split); reported only, no decision read it
        "final_test_acc": _last(df, m, TEST_ACC),
        "final_test_loss": _last(df, m, TEST_LOSS),
        "wall_s": _num(m.get("time_total_s")),
        "train_s": _col_sum(df, "time/train_s"),
        "eval_s": _col_sum(df, "time/eval_s"),
        "epoch_s": _col_sum(df, "time/epoch_s"),
        "samples": int(m.get("samples_total") or 0),
    }
    if t["wall_s"] is not None and t["epoch_s"] is not None:
        # trial start-up, reporting and checkpoints: what the sweep machinery costs
        t["outside_epochs_s"] = round(t["wall_s"] - t["epoch_s"], 3)
    return t
