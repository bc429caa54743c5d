"""A trial's end of the control channel: rank 0 reads the sweep's control actor.

`ControlChannel` implements `trainables.method.period.Control`: a `CriticalPeriod` given
one asks it for the scheduler's directive at every epoch boundary (cohort
switches, verdicts in sync/async mode) and, in sync mode, waits after each
report for the scheduler's verdict on it. A read is local: the channel keeps one
`watch` call pending at the actor, which answers when this trial's directive changes.
The actor lives in service/sweeps/control.py; names and the directive's fields in
trainables/core/wire.py.
"""

from __future__ import annotations

import concurrent.futures
import logging
import time
from typing import Any

import ray

from trainables.core.wire import (
    CONTROL_MODES,
    CONTROL_NAMESPACE,
    HANDSHAKE_S,
    MODE,
    Directive,
    control_actor_name,
)
from trainables.method.period import CriticalPeriod

__all__ = ["ControlChannel", "tune_channel"]

log = logging.getLogger(__name__)

_SYNC_TIMEOUT_S = 120.0
_LOOKUP_TRIES = 50


class ControlChannel:
    """Directive reads for one trial. Every rank holds one (for `mode`); only rank 0 reads.

    Args:
        trial_id: the Tune trial id the scheduler keys its directives by.
        actor_name: the control actor's name (None: no scheduler to talk to).
        mode: "push", "sync" or "async" (trainables/core/wire.py CONTROL_MODES); None takes
            the mode the scheduler pushed, else push.
        rank: this process's rank; only rank 0 contacts the actor.
    """

    def __init__(
        self, trial_id: str, actor_name: str | None, mode: str | None = None, rank: int = 0
    ) -> None:
        if mode is not None and mode not in CONTROL_MODES:
            raise ValueError(f"control mode {mode!r} is unknown; choose one of {CONTROL_MODES}")
        self.trial_id = trial_id
        self.handshake_s = 0.0
        self._last: Directive | None = None  # the newest directive the actor sent
        self._watch: Any = None  # the pending `watch` call (a Future) bringing the next one
        self.actor = _lookup_actor(actor_name) if actor_name and rank == 0 else None
        first = self.directive() if self.actor is not None else None
        self.assignment = first.assignment if first else None
        self.mode: str = mode or (self.assignment.mode if self.assignment else "push")
        if rank == 0 and self.actor is None and self.mode != "push":
            log.warning("no control actor: %s mode falls back to push", self.mode)

    def directive(self) -> Directive | None:
        """The scheduler's directive for this trial as of now.

        The first call asks the actor (one round trip); after that a pending `watch`
        call brings every change, and a read only checks whether it has arrived (a
        `concurrent.futures.Future`: no round trip, no call into Ray) and re-arms it
        when it has. An actor that died raises here, as a round trip would."""
        if self.actor is None:
            return None
        t0 = time.perf_counter()
        if self._last is None:
            self._take(ray.get(self.actor.directive.remote(self.trial_id)))
        elif self._watch.done():
            self._take(self._watch.result())
        self.handshake_s += time.perf_counter() - t0
        return self._last

    def wait_verdict(self, epoch: int) -> Directive | None:
        """Block until the scheduler has judged `epoch` (sync mode); None after a timeout."""
        if self.actor is None:
            return None
        before, t0 = self.handshake_s, time.perf_counter()
        try:
            d = self.directive()
            while d is None or d.verdict_epoch < epoch:
                left = _SYNC_TIMEOUT_S - (time.perf_counter() - t0)
                try:
                    d = self._take(self._watch.result(timeout=max(left, 0.0)))
                except concurrent.futures.TimeoutError:
                    log.warning(
                        "no scheduler verdict for epoch %d after %.0fs", epoch, _SYNC_TIMEOUT_S
                    )
                    return None
            return d
        finally:  # the whole wait reported with the next epoch
            self.handshake_s = before + time.perf_counter() - t0

    def _take(self, d: Directive) -> Directive:
        """Keep `d` and watch for the next change after it."""
        assert self.actor is not None  # only rank 0 with an actor reads
        self._last = d
        self._watch = self.actor.watch.remote(self.trial_id, d.version).future()
        return d

    def attach(self, period: CriticalPeriod) -> CriticalPeriod:
        """Wire `period` to the scheduler: its rule override (if any) and directives."""
        period.connect(self)
        return period

    def take_metrics(self) -> dict[str, Any]:
        """Report keys for the time spent on the scheduler since the last report, and the mode."""
        out = {HANDSHAKE_S: self.handshake_s, MODE: self.mode}
        self.handshake_s = 0.0
        return out


def _lookup_actor(name: str) -> Any:
    for _ in range(_LOOKUP_TRIES):
        try:
            return ray.get_actor(name, namespace=CONTROL_NAMESPACE)
        except ValueError:
            time.sleep(0.1)
    log.warning("control actor %s not found; applying the trial's own criterion", name)
    return None


def tune_channel(mode: str | None = None, actor_name: str | None = None) -> ControlChannel:
    """The channel of the Tune trial this runs in, for a user's own trainable.

    The actor name defaults to the one `CriticalPeriodScheduler` derives from the
    experiment name; the mode to the one the scheduler pushed.
    """
    from ray import tune  # a user's trainable imports this module; Tune only when called

    ctx = tune.get_context()
    name = actor_name or control_actor_name(ctx.get_experiment_name())
    return ControlChannel(ctx.get_trial_id(), name, mode)
