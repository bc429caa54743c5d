"""Where the scheduler's decisions go: the journal on disk and the trials' control channel.

`CriticalPeriodScheduler` only decides (as ASHA's brackets only compute); what it
decides leaves through the two small interfaces here, which it is given:

- `Journal`: decisions persist as JSON lines (one per decision, the last line of a
  trial wins on reload), so a resumed sweep knows which periods have ended.
- `TrialLink`: what running trials must hear (a rule they cannot know, a cohort's
  forced switch, the scheduler's verdicts in sync/async mode, a released watch).
  `ActorLink` sends it through the sweep's control actor (service/sweeps/control.py)
  with fire-and-forget calls; `NoLink` drops it (decisions are only recorded).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Protocol

from service.sweeps.control import get_or_create_control
from trainables.core.wire import Assignment, control_actor_name

__all__ = ["ActorLink", "FileJournal", "Journal", "NoJournal", "NoLink", "TrialLink"]


class Journal(Protocol):
    def load(self) -> list[dict[str, Any]]:
        """Every entry written so far, oldest first."""
        ...

    def append(self, entry: dict[str, Any]) -> None: ...


class NoJournal:
    """Keeps nothing: a scheduler without a state file."""

    def load(self) -> list[dict[str, Any]]:
        return []

    def append(self, entry: dict[str, Any]) -> None:
        return None


class FileJournal:
    """Append-only JSON lines: O(1) per decision however many trials a sweep has."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def load(self) -> list[dict[str, Any]]:
        if not self.path.is_file():
            return []
        lines = self.path.read_text().splitlines()
        return [json.loads(line) for line in lines if line.strip()]

    def append(self, entry: dict[str, Any]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a") as fh:
            fh.write(json.dumps(entry) + "\n")


class TrialLink(Protocol):
    def attach(self, experiment: str) -> None:
        """Called with each trial's experiment name before anything is sent for it."""
        ...

    def assign(self, trial_id: str, rule: Assignment) -> None: ...

    def force_switch(self, trial_id: str, switch_epoch: int, source: str) -> None: ...

    def post_verdict(self, trial_id: str, epoch: int, end: int | None) -> None: ...

    def release(self, trial_id: str) -> None: ...


class NoLink:
    """Tells the trials nothing: they decide on their own rule (push mode) or not at all."""

    def attach(self, experiment: str) -> None:
        return None

    def assign(self, trial_id: str, rule: Assignment) -> None:
        return None

    def force_switch(self, trial_id: str, switch_epoch: int, source: str) -> None:
        return None

    def post_verdict(self, trial_id: str, epoch: int, end: int | None) -> None:
        return None

    def release(self, trial_id: str) -> None:
        return None


class ActorLink:
    """The sweep's control actor, found or created on the first `attach`.

    `name` None derives it from the experiment (trainables.core.wire.control_actor_name),
    which is what the trials derive too. Calls are fire-and-forget: the scheduler never
    waits on a trial.
    """

    def __init__(self, name: str | None = None) -> None:
        self.name = name
        self._actor: Any = None

    def attach(self, experiment: str) -> None:
        if self._actor is None:
            self._actor = get_or_create_control(self.name or control_actor_name(experiment))

    def assign(self, trial_id: str, rule: Assignment) -> None:
        if self._actor is not None:
            self._actor.assign.remote(trial_id, rule)

    def force_switch(self, trial_id: str, switch_epoch: int, source: str) -> None:
        if self._actor is not None:
            self._actor.force_switch.remote(trial_id, switch_epoch, source)

    def post_verdict(self, trial_id: str, epoch: int, end: int | None) -> None:
        if self._actor is not None:
            self._actor.post_verdict.remote(trial_id, epoch, end)

    def release(self, trial_id: str) -> None:
        if self._actor is not None:  # frees the ended trial's pending watch at the actor
            self._actor.release.remote(trial_id)
