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

The actor holds no CPU (num_cpus=0) and its methods are tiny, so a read costs
one round trip (about a millisecond on one host). Names and the directive's
fields live in trainables/wire.py; the trial's side in trainables/channel.py.
"""

from __future__ import annotations

import logging
from typing import Any

import ray

from trainables.wire import CONTROL_NAMESPACE, Directive, Rule, control_actor_name

__all__ = ["CONTROL_NAMESPACE", "ControlActor", "control_actor_name", "get_or_create_control"]

log = logging.getLogger(__name__)


class ControlActor:
    """Per-trial directives. All methods are cheap and never block."""

    def __init__(self) -> None:
        self._rules: dict[str, Rule] = {}
        self._switch: dict[str, tuple[int, str]] = {}
        self._verdicts: dict[str, tuple[int, int | None]] = {}

    def set_rule(self, trial_id: str, rule: Rule) -> None:
        self._rules[trial_id] = rule

    def force_switch(self, trial_id: str, switch_epoch: int, source: str) -> None:
        current = self._switch.get(trial_id)
        if current is None or switch_epoch < current[0]:
            self._switch[trial_id] = (switch_epoch, source)

    def post_verdict(self, trial_id: str, epoch: int, end_epoch: int | None) -> None:
        self._verdicts[trial_id] = (epoch, end_epoch)

    def directive(self, trial_id: str) -> Directive:
        switch = self._switch.get(trial_id)
        verdict = self._verdicts.get(trial_id)
        return Directive(
            rule=self._rules.get(trial_id),
            switch_epoch=switch[0] if switch else None,
            switch_source=switch[1] if switch else None,
            verdict_epoch=verdict[0] if verdict else 0,
            verdict_end=verdict[1] if verdict else None,
        )

    def snapshot(self) -> dict[str, Any]:
        return {"rules": self._rules, "switch": self._switch, "verdicts": self._verdicts}


def get_or_create_control(name: str) -> Any:
    """Handle of the control actor `name`; created on first use (in the driver)."""
    actor_cls: Any = ray.remote(ControlActor)
    return actor_cls.options(
        name=name,
        namespace=CONTROL_NAMESPACE,
        get_if_exists=True,
        num_cpus=0,
        max_concurrency=64,
    ).remote()
