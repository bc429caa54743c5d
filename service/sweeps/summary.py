"""The summary of a finished sweep from Tune's results (service.results.SweepSummary)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from service.results import MetricInfo, SweepSummary, TrialSummary, period_flag
from service.spec import SweepSpec
from service.sweeps.scheduler import CriticalPeriodScheduler
from trainables.core.trial import train_dict_for
from trainables.core.wire import (
    END_EPOCH,
    EPOCH,
    REPLAYED,
    SAMPLES,
    SAMPLES_TOTAL,
    SWITCH_EPOCH,
    TEST_ACC,
    TEST_LOSS,
    VAL_ACC,
    Headline,
    headline_of,
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
) -> SweepSummary:
    """One row per trial. `unfinished`: trials Tune had not concluded when the sweep ended
    (Ctrl-C): status INTERRUPTED, and the summary says `interrupted: true`."""
    decisions = scheduler.decisions()
    headline = headline_of(spec.train.model_dump())
    trials = [_trial_row(spec, headline, result, decisions, unfinished) for result in grid]
    trials.sort(key=lambda t: (str(t.arm), t.trial_id))
    return SweepSummary(
        sweep=spec.name,
        metric=MetricInfo.of(headline),
        budget=spec.train.epochs,
        wall_s=round(wall_s, 2),
        interrupted=bool(unfinished),
        trials=tuple(trials),
    )


def _samples(df: Any, m: dict[str, Any]) -> int:
    """Training samples over the trial: the built-in loop's running total, else the sum of
    the `samples` a user's loop reported per epoch (0: it reported none)."""
    if m.get(SAMPLES_TOTAL):
        return int(m[SAMPLES_TOTAL])
    return int(_col_sum(df, SAMPLES) or 0)


def _values(df: Any, key: str) -> list[float]:
    return [float(v) for v in df[key].dropna().tolist()] if df is not None and key in df else []


def _timings(df: Any, m: dict[str, Any]) -> dict[str, float | None]:
    wall_s, epoch_s = _num(m.get("time_total_s")), _col_sum(df, "time/epoch_s")
    return {
        "wall_s": wall_s,
        "train_s": _col_sum(df, "time/train_s"),
        "eval_s": _col_sum(df, "time/eval_s"),
        "epoch_s": epoch_s,
        # trial start-up, reporting and checkpoints: what the sweep machinery costs
        "outside_epochs_s": None
        if wall_s is None or epoch_s is None
        else round(wall_s - epoch_s, 3),
    }


def _status(result: Any, unfinished: bool, short: bool) -> str:
    if result.error:
        return "ERROR"
    if unfinished:
        return "INTERRUPTED"
    # fewer epochs than planned: an inner scheduler (ASHA) stopped it
    return "STOPPED" if short else "TERMINATED"


def _trial_row(
    spec: SweepSpec,
    headline: Headline,
    result: Any,
    decisions: dict[str, Any],
    unfinished: Sequence[str],
) -> TrialSummary:
    """One trial's row of the summary from its Tune result."""
    m = dict(result.metrics or {})
    config = result.config or {}
    df = once_per_epoch(result.metrics_dataframe)
    tid = m.get("trial_id") or (result.path or "").rsplit("_", 1)[-1]
    epochs = int(m.get("epoch") or 0)
    status = _status(result, tid in unfinished, epochs < spec.train.epochs)
    train = train_dict_for(config) if "train" in config else {}
    end = m.get(END_EPOCH)
    accs = _values(df, VAL_ACC)
    return TrialSummary(
        trial_id=tid,
        arm=config.get("arm"),
        params=config.get("params", {}),
        config=train,
        status=status,
        error=str(result.error).strip().splitlines()[-1] if result.error else None,
        epochs=epochs,
        cp_end_epoch=end,
        switch_epoch=m.get(SWITCH_EPOCH),
        cp_source=decisions.get(tid, {}).get("source"),
        cp_flag=period_flag(
            train.get("criterion") or spec.train.criterion.model_dump(),
            end,
            epochs,
            spec.train.epochs,
        ),
        final_val=_num(m.get(headline.key)),
        best_val=headline.best(_values(df, headline.key)),
        # the test split, measured after the last epoch (None: stopped early, or no test
        # split); reported only, no decision read it
        final_test=_last(df, m, headline.test_key),
        final_val_acc=_num(m.get(VAL_ACC)),
        best_val_acc=max(accs) if accs else None,
        final_test_acc=_last(df, m, TEST_ACC),
        final_test_loss=_last(df, m, TEST_LOSS),
        **_timings(df, m),
        samples=_samples(df, m),
    )
