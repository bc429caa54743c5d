"""Which trials a sweep session started and saw conclude: one record for all its callbacks.

The progress callback (service.sweeps.progress) and the MLflow callback
(service.tracking.callback) share one `TrialTracker`, made by service.sweeps.run, so
they agree on which trials a Ctrl-C left unfinished.
"""

from __future__ import annotations

from typing import Any

__all__ = ["TrialTracker", "unfinished_trials"]


def unfinished_trials(trials: list[Any], started: set[str], concluded: set[str]) -> list[str]:
    """Trials a sweep left unfinished. After Ctrl-C Tune's clean-up marks running trials
    TERMINATED without calling on_trial_complete, so status alone does not tell: a trial is
    unfinished if it never left PENDING/PAUSED/RUNNING, or started here and never concluded."""
    return [
        t.trial_id
        for t in trials
        if t.status not in ("TERMINATED", "ERROR")
        or (t.trial_id in started and t.trial_id not in concluded)
    ]


class TrialTracker:
    """Which trials this session started or heard from, and which it saw conclude: one
    record shared by the sweep's callbacks (progress and MLflow)."""

    def __init__(self) -> None:
        self.started: set[str] = set()
        self.concluded: set[str] = set()

    def start(self, trial_id: str) -> None:
        self.started.add(trial_id)

    def conclude(self, trial_id: str) -> None:
        self.concluded.add(trial_id)

    def unfinished(self, trials: list[Any]) -> list[str]:
        return unfinished_trials(trials, self.started, self.concluded)
