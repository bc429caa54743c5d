"""Live progress lines and the final table of a sweep."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from ray.tune import Callback

from service.tracking.lifecycle import TrialTracker
from service.tracking.schema import trial_run_name
from trainables.core.wire import END_EPOCH, REPLAYED, SWITCH_EPOCH, TEST_ACC, VAL_ACC
from trainables.run.progress import progress_line

__all__ = ["ProgressCallback", "format_table", "tracking_footer"]

log = logging.getLogger("cpsweep.progress")


class ProgressCallback(Callback):
    """One line per trial epoch, plus a line when a trial ends or fails."""

    def __init__(self, budget: int, tracker: TrialTracker | None = None) -> None:
        self.budget = budget
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
        log.info("%s %s%s", trial.trial_id, progress_line(result, self.budget), replayed)

    def on_trial_complete(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        self.tracker.conclude(trial.trial_id)
        r = trial.last_result or {}
        log.info(
            "%s done: period ended at epoch %s, switched at %s, val_acc=%s, test_acc=%s",
            trial.trial_id,
            r.get(END_EPOCH),
            r.get(SWITCH_EPOCH),
            r.get(VAL_ACC),
            r.get(TEST_ACC),
        )

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


def format_table(summary: dict[str, Any]) -> str:
    """Plain-text table of every trial in a sweep summary."""
    head = (
        "trial",
        "run name",
        "status",
        "epochs",
        "cp_end",
        "switch",
        "val_acc",
        "best_val",
        "test_acc",
        "wall_s",
        "samples",
    )
    rows = [head]
    for t in summary["trials"]:
        seed = (t.get("config") or {}).get("seed")
        label = trial_run_name(t, seed=seed)  # the trial's MLflow run name
        rows.append(
            (
                t["trial_id"],
                label[:48],
                t["status"],
                _fmt(t["epochs"]),
                _fmt(t["cp_end_epoch"]),
                _fmt(t["switch_epoch"]),
                _fmt(t["final_val_acc"], ".4f"),
                _fmt(t["best_val_acc"], ".4f"),
                _fmt(t.get("final_test_acc"), ".4f"),
                _fmt(t["wall_s"], ".1f"),
                _fmt(t["samples"]),
            )
        )
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(head))]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(r, widths)) for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    footer = tracking_footer(summary.get("tracking"))
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
