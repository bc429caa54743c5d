"""Live progress lines and the final table of a sweep."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from ray.tune import Callback

from service.results import FLAG_NOTES, SweepSummary, metric_columns, period_flag
from service.tracking.lifecycle import TrialTracker
from service.tracking.schema import trial_run_name
from trainables.core.trial import train_dict_for
from trainables.core.wire import END_EPOCH, EPOCH, REPLAYED, SWITCH_EPOCH, Headline
from trainables.run.progress import progress_line

__all__ = ["ProgressCallback", "format_table", "tracking_footer"]

log = logging.getLogger("cpsweep.progress")


class ProgressCallback(Callback):
    """One line per trial epoch, plus a line when a trial ends or fails."""

    def __init__(
        self, budget: int, tracker: TrialTracker | None = None, headline: Headline | None = None
    ) -> None:
        self.budget = budget
        self.headline = headline or Headline()
        self.tracker = tracker or TrialTracker()
        self.unfinished: list[str] = []  # set when the experiment ends (Ctrl-C included)

    def on_trial_start(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        self.tracker.start(trial.trial_id)

    def on_experiment_end(self, trials: list[Any], **info: Any) -> None:
        self.unfinished = self.tracker.unfinished(trials)

    def on_trial_result(
        self, iteration: int, trials: list[Any], trial: Any, result: dict, **info: Any
    ) -> None:
        self.tracker.start(trial.trial_id)
        if "error" in result:
            return
        replayed = " (replayed from checkpoint)" if result.get(REPLAYED) else ""
        flag = self._flag(trial, result)
        epoch, end = result.get(EPOCH), result.get(END_EPOCH)
        # said once: at the epoch the end was found, or at the last epoch of the budget
        note = f" [{FLAG_NOTES[flag]}]" if flag and epoch in (end, self.budget) else ""
        line = progress_line(result, self.budget, self.headline)
        log.info("%s %s%s%s", trial.trial_id, line, note, replayed)

    def on_trial_complete(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        self.tracker.conclude(trial.trial_id)
        r = trial.last_result or {}
        flag = self._flag(trial, r)
        h = self.headline
        log.info(
            "%s done: period ended at epoch %s%s, switched at %s, %s=%s, %s=%s",
            trial.trial_id,
            r.get(END_EPOCH),
            f" ({FLAG_NOTES[flag]})" if flag else "",
            r.get(SWITCH_EPOCH),
            h.label,
            r.get(h.key),
            h.test_key,
            r.get(h.test_key),
        )

    def _flag(self, trial: Any, result: dict[str, Any]) -> str | None:
        """The trial's budget flag after `result` (service.results.period_flag)."""
        config = getattr(trial, "config", None) or {}
        if "train" not in config or not isinstance(result.get(EPOCH), int):
            return None
        criterion = train_dict_for(config).get("criterion") or {}
        return period_flag(criterion, result.get(END_EPOCH), result[EPOCH], self.budget)

    def on_trial_error(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        self.tracker.conclude(trial.trial_id)
        log.error("%s failed: %s", trial.trial_id, _short_error(trial))


def _short_error(trial: Any) -> str:
    """Last line of the trial's traceback: the exception and its message."""
    try:
        text = Path(trial.error_file).read_text() if trial.error_file else ""
    except OSError:
        text = ""
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return lines[-1] if lines else f"see {trial.error_file or 'the trial directory'}"


def _fmt(v: Any, spec: str = "") -> str:
    if v is None:
        return "-"
    return format(v, spec) if spec else str(v)


def format_table(summary: SweepSummary) -> str:
    """Plain-text table of every trial in a sweep summary, headed by its metric."""
    val, best, test = metric_columns(summary.headline)
    head = ("trial", "run name", "status", "epochs", "cp_end", "switch", val, best, test)
    rows = [(*head, "wall_s", "samples")]
    for t in summary.trials:
        label = trial_run_name(t.model_dump(), seed=t.config.get("seed"))  # its MLflow name
        end = _fmt(t.cp_end_epoch) + {"earliest": " (earliest)", "no_end": " (no end)"}.get(
            t.cp_flag or "", ""
        )
        rows.append(
            (
                t.trial_id,
                label[:48],
                t.status,
                _fmt(t.epochs),
                end,
                _fmt(t.switch_epoch),
                _fmt(t.final_val, ".4f"),
                _fmt(t.best_val, ".4f"),
                _fmt(t.final_test, ".4f"),
                _fmt(t.wall_s, ".1f"),
                _fmt(t.samples),
            )
        )
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(r, widths)) for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    notes = sorted({t.cp_flag for t in summary.trials if t.cp_flag})
    lines += [
        f"cp_end ({'earliest' if f == 'earliest' else 'no end'}): {FLAG_NOTES[f]}" for f in notes
    ]
    footer = tracking_footer(summary.tracking)
    return "\n".join(lines + ([footer] if footer else []))


def tracking_footer(tracking: dict[str, Any] | None) -> str:
    """One line on what reached MLflow (empty when tracking is off)."""
    if not tracking:
        return ""
    delayed = tracking.get("delayed_results") or 0
    late = f" ({delayed} delayed by an MLflow outage)" if delayed else ""
    if tracking.get("all_in_mlflow"):
        return f"MLflow: all {tracking.get('results', 0)} results logged{late}"
    return (
        f"MLflow: {tracking.get('pending_results', 0)} of {tracking.get('results', 0)} results "
        f"not yet in MLflow{late}; kept in {tracking.get('log')}; upload them with: "
        f"cpsweep sync {Path(str(tracking.get('log'))).parent}"
    )
