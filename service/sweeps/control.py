"""Control channel from the scheduler to running trials: one named Ray actor per sweep.

Ray Tune has no way to push a decision into a running function trainable, so
the scheduler writes into this actor (fire-and-forget calls) and rank 0 of each
trial reads it at every epoch boundary, then broadcasts to its other ranks.

What flows through it, per trial id:
- `rule`: the criterion and budget the scheduler owns, pushed when the trial
  starts; rank 0 applies it locally at the epoch boundary (zero lag).
- `switch_epoch`: a switch the scheduler decides on its own (cohort median,
  or any later policy), applied by rank 0 at the next epoch boundary.
- `verdict`: the scheduler's own evaluation of each reported epoch, which
  rank 0 waits for in `sync` mode and applies in `async` mode.

Reads do not cost a round trip each. Every write bumps the trial's `version`; a trial
holds one pending `watch(trial_id, version)` call that the actor answers only when
that trial's directive changes, so an epoch boundary checks a local future
(`trainables/run/channel.py`) and the actor serves one call per change, not one per
epoch of every trial, each of which held its single thread for a synchronous read
(bench/driver_scale.py compares the two designs). The actor
is async (one event loop, so the `asyncio.Event`s are safe) and holds no CPU.
Names and the directive's fields live in trainables/core/wire.py.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import ray

from trainables.core.wire import CONTROL_NAMESPACE, Assignment, Directive, control_actor_name

__all__ = [
    "CONTROL_NAMESPACE",
    "MAX_WATCHES",
    "ControlActor",
    "control_actor_name",
    "get_or_create_control",
]

log = logging.getLogger(__name__)

# Calls the actor runs at once: every running trial keeps one `watch` pending, and the
# writes must still find a free slot (an async actor's max_concurrency counts both).
MAX_WATCHES = 100_000


class ControlActor:
    """Per-trial directives and their versions. Every method is cheap; only `watch` waits."""

    def __init__(self) -> None:
        self._assignments: dict[str, Assignment] = {}
        self._switch: dict[str, tuple[int, str]] = {}
        self._verdicts: dict[str, tuple[int, int | None]] = {}
        self._version: dict[str, int] = {}
        self._changed: dict[str, asyncio.Event] = {}  # trial id -> set on its next change

    def _bump(self, trial_id: str) -> None:
        self._version[trial_id] = self._version.get(trial_id, 0) + 1
        event = self._changed.pop(trial_id, None)
        if event is not None:
            event.set()

    async def assign(self, trial_id: str, rule: Assignment) -> None:
        self._assignments[trial_id] = rule
        self._bump(trial_id)

    async def force_switch(self, trial_id: str, switch_epoch: int, source: str) -> None:
        current = self._switch.get(trial_id)
        if current is None or switch_epoch < current[0]:
            self._switch[trial_id] = (switch_epoch, source)
            self._bump(trial_id)

    async def post_verdict(self, trial_id: str, epoch: int, end_epoch: int | None) -> None:
        self._verdicts[trial_id] = (epoch, end_epoch)
        self._bump(trial_id)

    async def release(self, trial_id: str) -> None:
        """The trial has ended: answer its pending watch, which nobody waits for any more
        (a pending watch holds one of the actor's MAX_WATCHES slots)."""
        self._bump(trial_id)

    async def directive(self, trial_id: str) -> Directive:
        """The trial's directive now (one round trip; a trial does this once, at its start)."""
        return self._directive(trial_id)

    async def watch(self, trial_id: str, version: int) -> Directive:
        """The trial's directive as soon as its version differs from `version`."""
        while self._version.get(trial_id, 0) == version:
            await self._changed.setdefault(trial_id, asyncio.Event()).wait()
        return self._directive(trial_id)

    async def snapshot(self) -> dict[str, Any]:
        return {"rules": self._assignments, "switch": self._switch, "verdicts": self._verdicts}

    def _directive(self, trial_id: str) -> Directive:
        switch = self._switch.get(trial_id)
        verdict = self._verdicts.get(trial_id)
        return Directive(
            assignment=self._assignments.get(trial_id),
            switch_epoch=switch[0] if switch else None,
            switch_source=switch[1] if switch else None,
            verdict_epoch=verdict[0] if verdict else 0,
            verdict_end=verdict[1] if verdict else None,
            version=self._version.get(trial_id, 0),
        )


def get_or_create_control(name: str) -> Any:
    """Handle of the control actor `name`; created on first use (in the driver)."""
    actor_cls: Any = ray.remote(ControlActor)
    return actor_cls.options(
        name=name,
        namespace=CONTROL_NAMESPACE,
        get_if_exists=True,
        num_cpus=0,
        max_concurrency=MAX_WATCHES,
    ).remote()
