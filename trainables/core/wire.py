"""The wire contract between trials, the scheduler, the control actor and the callbacks.

One home for every name that crosses a process boundary (as Ray keeps its result
keys in `tune/result.py`): the per-epoch metric keys a trial reports and the
scheduler, progress lines, tracking and summaries read (the validation split's
`val/*`, which decisions read, and the test split's `test/*`, which none may: see
`decision_view`); the control actor's name
and namespace; and the directive a trial reads from that actor. Pure data: no
Ray, no torch.

The decision types, one meaning each:
- `Verdict` (method/criteria.py): a rule's reading after one epoch (its statistic and
  the end it has found, if any).
- `Ruling` (method/decide.py): a decision to switch: the end, the first epoch of the
  post-period recipe, and who decided it.
- `Decision` (method/period.py): what `CriticalPeriod.step` returns, the period's state
  after one epoch (rotation, statistic, end, switch), the public record.
- `Directive` (here): what the scheduler has told one trial so far, read at an epoch
  boundary; its `Assignment` is configuration (a criterion and budget the trial cannot
  know itself), not a decision.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

__all__ = [
    "ANGLE",
    "CHECK_STEP",
    "CONTROL_MODES",
    "CONTROL_NAMESPACE",
    "END_EPOCH",
    "END_STEP",
    "EPOCH",
    "HANDSHAKE_S",
    "LAG_EPOCHS",
    "MODE",
    "PRUNED_FRACTION",
    "RATE_RATIO",
    "REPLAYED",
    "ROTATION_MEAN",
    "ROTATION_PREFIX",
    "SAMPLES",
    "SAMPLES_TOTAL",
    "STAT_KEYS",
    "SWITCH_EPOCH",
    "SWITCH_STEP",
    "TEST_ACC",
    "TEST_LOSS",
    "TEST_PREFIX",
    "VAL_ACC",
    "VAL_LOSS",
    "VAL_PREFIX",
    "Assignment",
    "Directive",
    "Headline",
    "control_actor_name",
    "decision_view",
    "eval_keys",
    "headline_of",
]

# -- per-epoch report keys --------------------------------------------------------------
EPOCH = "epoch"  # 1-based epoch the report is about
ROTATION_PREFIX = "rotation/"  # rotation/<layer>: cosine distance of one layer to its init
ROTATION_MEAN = "rotation/mean"  # the paper's signal: mean over the monitored layers
END_EPOCH = "cp/end_epoch"  # epoch at which the critical period ended (None before)
SWITCH_EPOCH = "cp/switch_epoch"  # first epoch of the post-period recipe (None before)
# Step budgets (`CriticalPeriod(budget_steps=..., step_interval=...)`): "epoch" above then
# counts checks, one every step_interval optimizer steps; these give the same in steps.
CHECK_STEP = "cp/step"  # optimizer steps trained when the check was taken
END_STEP = "cp/end_step"  # step at which the critical period ended (None before)
SWITCH_STEP = "cp/switch_step"  # first (1-based) step of the post-period recipe
ANGLE = "cp/angle_deg"  # paper rule's statistic
RATE_RATIO = "cp/rate_ratio"  # relative rule's statistic
HANDSHAKE_S = "cp/handshake_s"  # time spent talking to the scheduler since the last report
MODE = "cp/mode"  # control mode the trial ran with
LAG_EPOCHS = "cp/lag_epochs"  # epochs the switch landed after the first possible one
REPLAYED = "cp/replayed"  # a report resent from a checkpoint after a resume
SAMPLES = "samples"  # training samples processed this epoch (all ranks, repeats counted)
SAMPLES_TOTAL = "samples_total"  # the same, summed over the epochs so far
PRUNED_FRACTION = "recipe/pruned_fraction"  # share of the data loss-aware pruning left out
# Held-out splits (trainables/data/splits.py). val/*: every decision reads these (ASHA, the
# best epoch, anything tuned). test/*: what a user gets; reported, never decided on.
VAL_PREFIX = "val/"
VAL_LOSS = "val/loss"
VAL_ACC = "val/acc"
TEST_PREFIX = "test/"
TEST_LOSS = "test/loss"
TEST_ACC = "test/acc"
_EVAL_KEYS = {"val": (VAL_LOSS, VAL_ACC), "test": (TEST_LOSS, TEST_ACC)}

# the built-in rules' statistics (each rule names its own: EndRule.stat_key)
STAT_KEYS = (ANGLE, RATE_RATIO)


def eval_keys(split: str) -> tuple[str, str]:
    """(loss key, accuracy key) of an evaluated split: "val" or "test"."""
    if split not in _EVAL_KEYS:
        raise ValueError(f"split={split!r} is not one of {', '.join(_EVAL_KEYS)}")
    return _EVAL_KEYS[split]


@dataclass(frozen=True)
class Headline:
    """The metric a sweep is judged by (`train.metric`): a validation key, which every
    decision reads, and whether higher or lower is better. Its test counterpart
    (`test/<name>`) is shown beside it where a loop reports one, never decided on."""

    key: str = VAL_ACC
    mode: Literal["max", "min"] = "max"

    def __post_init__(self) -> None:
        if not self.key.startswith(VAL_PREFIX) or self.key == VAL_PREFIX:
            raise ValueError(
                f"metric name {self.key!r}: decisions read the validation split; name a "
                f"'{VAL_PREFIX}<metric>' key your loop reports, e.g. {VAL_LOSS!r}"
            )
        if self.mode not in ("max", "min"):
            raise ValueError(f"metric mode {self.mode!r}: use 'max' or 'min'")

    @property
    def test_key(self) -> str:
        """`val/loss` -> `test/loss`: the same quantity on the test split."""
        return TEST_PREFIX + self.key[len(VAL_PREFIX) :]

    @property
    def label(self) -> str:
        """`val/loss (min)`: the key and its direction, for headers and log lines."""
        return f"{self.key} ({self.mode})"

    def best(self, values: Iterable[float | None]) -> float | None:
        """The best of `values` in this mode (None: no value)."""
        xs = [v for v in values if v is not None]
        if not xs:
            return None
        return max(xs) if self.mode == "max" else min(xs)


# The headline of the built-in loop (classification) and of a user's own loop, which may
# solve any task: every loop can report a validation loss, not every one an accuracy.
_BUILTIN_HEADLINE = Headline(VAL_ACC, "max")
_OWN_LOOP_HEADLINE = Headline(VAL_LOSS, "min")


def headline_of(train: Mapping[str, Any]) -> Headline:
    """The headline of a TrainConfig dict: its `metric`, else val/acc (max) for the
    built-in loop and val/loss (min) for a user's own loop (`loop` set)."""
    metric = train.get("metric")
    if metric:
        return Headline(str(metric["name"]), metric["mode"])
    return _OWN_LOOP_HEADLINE if train.get("loop") else _BUILTIN_HEADLINE


def decision_view(result: Mapping[str, Any]) -> dict[str, Any]:
    """`result` without the test split's keys: all that a decision (a scheduler, a stop
    rule, a checkpoint choice) may be given."""
    return {k: v for k, v in result.items() if not k.startswith(TEST_PREFIX)}


# -- the control actor -------------------------------------------------------------------
CONTROL_NAMESPACE = "cpsweep"
# push: the trial applies the rule itself at the epoch boundary (zero lag);
# sync: it waits for the scheduler's verdict after each report; async: never waits.
CONTROL_MODES = ("push", "sync", "async")


def control_actor_name(experiment_name: str) -> str:
    """Name shared by the scheduler (driver) and the trials (workers) of one sweep."""
    return f"cpsweep-control:{experiment_name}"


@dataclass(frozen=True)
class Assignment:
    """What the scheduler pushes to a trial that cannot know it itself.

    Sent only when the scheduler overrides the trial's criterion or the trial
    carries no cpsweep config (a user's own Tuner): `criterion` is a
    CriterionConfig dict, `budget` the epoch budget, `mode` the control mode.
    """

    criterion: dict[str, Any]
    budget: int
    mode: str


@dataclass(frozen=True)
class Directive:
    """A trial's view of the control actor at one epoch boundary."""

    assignment: Assignment | None = None
    switch_epoch: int | None = None  # a switch the scheduler decided (cohort median + 1)
    switch_source: str | None = None  # who decided it ("cohort")
    verdict_epoch: int = 0  # last epoch the scheduler has judged (sync and async modes)
    verdict_end: int | None = None  # the end the scheduler found by then, if any
    version: int = 0  # the trial's change count at the actor: a watch returns on a newer one
