"""CriticalPeriodScheduler: a Ray Tune scheduler that ends each trial's critical period.

Thin glue over `_TrialState` (per-trial `PeriodRule` and decision) and
`_Cohort` (decisions shared across trials). For every reported epoch it feeds
`rotation/mean` into the trial's rule (trainables/method/period.py). The same rule runs
on the trial's rank 0 (`CriticalPeriod`), so the switch lands at the first epoch
after the detected end; here decisions are recorded, shared across a cohort and
audited. The scheduler pushes a rule to a trial only when the trial cannot know
it (a scheduler-wide criterion, or a trial without a cpsweep `train` config such
as a user's own trainable), and cohort switches when a cohort decides.

scope="trial" is the paper's behaviour. scope="cohort": once the first
`cohort_min_trials` trials of a cohort (same values at `cohort_keys`) have
detected their end, every other trial of the cohort switches at the cohort's
median end + 1 without waiting for its own detection.

An optional `inner` scheduler (ASHA, ...) makes stop decisions, but only sees a
trial's results once its critical period has ended, and never their test split's
`test/*` keys (`decision_view`): those measure what a user gets, not what to choose.
"""

from __future__ import annotations

import logging
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ray.tune.schedulers import FIFOScheduler, TrialScheduler

from service.sweeps.effects import ActorLink, FileJournal, Journal, NoJournal, NoLink, TrialLink
from trainables.core.config import COHORT_KEYS, ConfigError, CriterionConfig
from trainables.core.trial import train_dict_for
from trainables.core.wire import (
    CONTROL_MODES,
    END_EPOCH,
    EPOCH,
    MODE,
    ROTATION_MEAN,
    SWITCH_EPOCH,
    TEST_PREFIX,
    VAL_ACC,
    Assignment,
    decision_view,
)
from trainables.method.criteria import rule_class
from trainables.method.decide import PeriodRule, criterion_config, switch_epoch_for

__all__ = ["CriticalPeriodScheduler"]

log = logging.getLogger(__name__)


_ABSENT = object()  # a cohort key the trial's config does not have at all


def _lookup(config: dict[str, Any], dotted: str) -> Any:
    """The value at `dotted`, None when unset, `_ABSENT` when the path does not exist."""
    node: Any = config
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return _ABSENT
        node = node[part]
    return node


@dataclass
class _TrialState:
    """Rotation history and critical-period decision of one trial."""

    trial_id: str
    criterion: CriterionConfig
    budget: int | None
    cohort: str | None = None
    rule: PeriodRule = field(init=False)
    end_epoch: int | None = None  # detected by the rule here
    source: str | None = None  # "rule" or "cohort"
    forced_switch: int | None = None  # pushed by the cohort
    reported_switch: int | None = None  # what the trial says it applied
    mismatches: int = 0
    own: bool = True  # a cpsweep trial (its config has `train`), not a user's own trainable
    channel: bool | None = None  # reports carry the control channel's mode; None: no report yet

    def __post_init__(self) -> None:
        self.rule = PeriodRule(self.criterion, self.budget)

    @property
    def ended(self) -> bool:
        return self.end_epoch is not None or self.reported_switch is not None

    def observe(self, epoch: int, rotation: float) -> int | None:
        """Feed `rotation` of 1-based `epoch`; tolerate repeats and rewinds after a retry."""
        return self.rule.observe(epoch, rotation).end_epoch


@dataclass
class _Cohort:
    ends: list[int] = field(default_factory=list)
    switch_epoch: int | None = None


class CriticalPeriodScheduler(FIFOScheduler):
    """Detects the end of each trial's critical period and makes the trial switch recipe.

    Args:
        criterion: rule for every trial (a name, CriterionConfig or dict); None uses each
            trial's `train.criterion` (the paper rule for trials without one).
        budget: epoch budget for trials without a cpsweep `train` config (a user's own
            trainable); others use their `train.epochs`.
        scope: "trial" (each trial on its own) or "cohort" (see module docstring).
        cohort_keys: dotted `train` config paths that define a cohort.
        cohort_min_trials: detections needed before a cohort's median applies.
        inner: optional scheduler for stop decisions after the period.
        mode: control mode pushed to trials: "push", "sync" or "async".
        state_path: JSON-lines journal where decisions persist (a resumed sweep reloads it).
        control_actor: name of the control actor; None derives it from the experiment.
        use_control: False runs without an actor (decisions are only recorded).
        journal: where decisions persist, instead of `state_path` (service/sweeps/effects.py).
        link: how trials hear decisions, instead of `control_actor` / `use_control`.

    The scheduler only decides: the journal and the link do all I/O.
    """

    # Every result must reach on_trial_result as it is reported: in sync mode the trial
    # waits for the verdict on it, and a buffered result (TUNE_RESULT_BUFFER_LENGTH > 1)
    # would hold that verdict until the buffer's time runs out (up to 100 s with 1,000
    # trials); Tune then forces the buffer length to 1. Tune's public property
    # `supports_buffered_results` reads this class attribute, which its HyperBand sets
    # the same way (ray/tune/schedulers/trial_scheduler.py, hyperband.py).
    _supports_buffered_results = False

    def __init__(
        self,
        *,
        criterion: str | CriterionConfig | dict[str, Any] | None = None,
        budget: int | None = None,
        scope: str = "trial",
        cohort_keys: Sequence[str] = COHORT_KEYS,
        cohort_min_trials: int = 2,
        inner: TrialScheduler | None = None,
        mode: str = "push",
        rotation_metric: str = ROTATION_MEAN,
        state_path: str | Path | None = None,
        control_actor: str | None = None,
        use_control: bool = True,
        journal: Journal | None = None,
        link: TrialLink | None = None,
    ) -> None:
        super().__init__()
        if scope not in ("trial", "cohort"):
            raise ValueError(f"scope={scope!r} is unknown; use 'trial' or 'cohort'")
        if cohort_min_trials < 1:
            raise ValueError(f"cohort_min_trials={cohort_min_trials} must be >= 1")
        if mode not in CONTROL_MODES:
            raise ValueError(f"mode={mode!r} is unknown; use one of {CONTROL_MODES}")
        if budget is not None and budget < 1:
            raise ValueError(f"budget={budget} must be a positive number of epochs")
        self._criterion = criterion_config(criterion) if criterion is not None else None
        self.budget = budget
        self.scope, self.mode = scope, mode
        self.cohort_keys, self.cohort_min_trials = tuple(cohort_keys), cohort_min_trials
        self.inner = inner
        self.rotation_metric = rotation_metric
        self.state_path = Path(state_path) if state_path else None
        if journal is None:
            journal = FileJournal(self.state_path) if self.state_path else NoJournal()
        if link is None:
            link = ActorLink(control_actor) if use_control else NoLink()
        self.journal, self.link = journal, link
        self._trials: dict[str, _TrialState] = {}
        self._cohorts: dict[str, _Cohort] = {}
        self._saved: dict[str, Any] = self._load()
        self._warned: set[str] = set()  # what `_warn_once` has said already

    # -- Tune hooks ------------------------------------------------------------------------

    def set_search_properties(self, metric: str | None, mode: str | None, **spec: Any) -> bool:
        if metric is not None and metric.startswith(TEST_PREFIX):
            raise ConfigError(
                f"metric={metric!r} is measured on the test split, which no decision may "
                f"read; give Tune a validation metric such as {VAL_ACC!r}"
            )
        if self.inner is not None and not self.inner.set_search_properties(metric, mode, **spec):
            return False
        return super().set_search_properties(metric, mode, **spec)

    def on_trial_add(self, tune_controller: Any, trial: Any) -> None:
        own = "train" in trial.config  # a cpsweep trial: its config carries rule and budget
        train = train_dict_for(trial.config) if own else {}
        criterion = self._criterion or CriterionConfig.model_validate(train.get("criterion", {}))
        budget = int(train["epochs"]) if own else self.budget
        if budget is None and rule_class(criterion.name).needs_budget:
            raise ConfigError(
                f"trial {trial.trial_id} has no cpsweep train config: pass "
                f"CriticalPeriodScheduler(budget=<epochs>) for the {criterion.name} rule"
            )
        self._check_override(trial.trial_id, train, own)
        cohort = None
        if self.scope == "cohort" and criterion.name != "never":  # baselines never switch
            cohort = self._cohort_of(trial.trial_id, train if own else trial.config)
            self._cohorts.setdefault(cohort, _Cohort())
        state = _TrialState(trial.trial_id, criterion, budget, cohort, own=own)
        self._trials[trial.trial_id] = state
        self._restore_trial(state)
        cohort_switch = self._cohorts[cohort].switch_epoch if cohort else None
        if cohort_switch and not state.ended:  # joins a cohort that has already decided
            state.forced_switch, state.source = cohort_switch, "cohort"
        self.link.attach(trial.experiment_dir_name)
        if self._criterion is not None or not own:  # what the trial cannot know itself
            rule = Assignment(criterion.model_dump(), budget or 0, self.mode)
            self.link.assign(trial.trial_id, rule)
        if state.forced_switch:
            self.link.force_switch(trial.trial_id, state.forced_switch, "cohort")
        if self.inner is not None:
            self.inner.on_trial_add(tune_controller, trial)

    def on_trial_result(self, tune_controller: Any, trial: Any, result: dict[str, Any]) -> str:
        state = self._trials.get(trial.trial_id)
        if state is None or self.rotation_metric not in result or EPOCH not in result:
            return TrialScheduler.CONTINUE
        epoch = int(result[EPOCH])
        if state.channel is None:
            self._check_channel(state, result)
        end = state.observe(epoch, float(result[self.rotation_metric]))
        if end is not None and state.end_epoch is None:
            self._record(trial, state, end, epoch)
        if self.mode != "push":
            self.link.post_verdict(trial.trial_id, epoch, end)
        self._audit(state, result)
        if self.inner is not None and state.ended:
            return str(self.inner.on_trial_result(tune_controller, trial, decision_view(result)))
        return TrialScheduler.CONTINUE

    def on_trial_complete(self, tune_controller: Any, trial: Any, result: dict[str, Any]) -> None:
        self._release(trial)
        if self.inner is not None:
            self.inner.on_trial_complete(tune_controller, trial, decision_view(result))

    def on_trial_error(self, tune_controller: Any, trial: Any) -> None:
        if self.inner is not None:
            self.inner.on_trial_error(tune_controller, trial)

    def on_trial_remove(self, tune_controller: Any, trial: Any) -> None:
        self._release(trial)
        if self.inner is not None:
            self.inner.on_trial_remove(tune_controller, trial)

    def choose_trial_to_run(self, tune_controller: Any) -> Any:
        if self.inner is not None:
            return self.inner.choose_trial_to_run(tune_controller)
        return super().choose_trial_to_run(tune_controller)

    def debug_string(self) -> str:
        ended = sum(s.ended for s in self._trials.values())
        return f"CriticalPeriodScheduler: {ended}/{len(self._trials)} trials past their period"

    # -- decisions -------------------------------------------------------------------------

    def decisions(self) -> dict[str, dict[str, Any]]:
        """Per trial: detected end, applied switch, source, audit mismatches."""
        return {
            tid: {
                "end_epoch": s.end_epoch,
                "source": s.source,
                "forced_switch": s.forced_switch,
                "reported_switch": s.reported_switch,
                "cohort": s.cohort,
                "mismatches": s.mismatches,
            }
            for tid, s in self._trials.items()
        }

    def _record(self, trial: Any, state: _TrialState, end: int, epoch: int) -> None:
        state.end_epoch, state.source = end, "rule"
        log.debug(
            "trial %s: %s rule ends the period at epoch %d (seen at epoch %d, rotation %.4f, budget %d)",
            trial.trial_id,
            state.criterion.name,
            end,
            epoch,
            state.rule.history[-1],
            state.budget,
        )
        if state.cohort is not None:
            self._update_cohort(state.cohort, end)
        self._save(state)

    def _update_cohort(self, key: str, end: int) -> None:
        cohort = self._cohorts[key]
        if cohort.switch_epoch is not None:
            return
        cohort.ends.append(end)
        if len(cohort.ends) < self.cohort_min_trials:
            return
        median = int(statistics.median_low(cohort.ends))
        cohort.switch_epoch = switch_epoch_for(median, end=median)
        log.info(
            "cohort %s: first %d ends %s -> remaining trials switch at epoch %d",
            key,
            len(cohort.ends),
            cohort.ends,
            cohort.switch_epoch,
        )
        for s in self._trials.values():
            if s.cohort == key and not s.ended:
                s.forced_switch, s.source = cohort.switch_epoch, "cohort"
                self.link.force_switch(s.trial_id, cohort.switch_epoch, "cohort")

    def _audit(self, state: _TrialState, result: dict[str, Any]) -> None:
        """The trial applied the same rule on the same curve: its end must equal ours."""
        reported_end = result.get(END_EPOCH)
        if result.get(SWITCH_EPOCH) is not None:
            state.reported_switch = int(result[SWITCH_EPOCH])
        if (
            reported_end is not None
            and state.end_epoch is not None
            and state.source == "rule"
            and int(reported_end) != state.end_epoch
        ):
            state.mismatches += 1
            # A trial without a channel was already told why (_check_channel): debug only.
            log.log(
                logging.WARNING if state.channel is not False else logging.DEBUG,
                "trial %s reports the period ended at epoch %s; the scheduler found %d",
                state.trial_id,
                reported_end,
                state.end_epoch,
            )

    # -- what a user's own trainable may not expect: one warning each ---------------------

    def _warn_once(self, kind: str, message: str, *args: Any) -> None:
        if kind not in self._warned:
            self._warned.add(kind)
            log.warning(message, *args)

    def _check_override(self, trial_id: str, train: dict[str, Any], own: bool) -> None:
        """Say once that the scheduler's criterion replaces the trials' own."""
        if own and self._criterion is not None:
            theirs = CriterionConfig.model_validate(train.get("criterion", {}))
            if theirs != self._criterion:
                self._warn_once(
                    "override",
                    "CriticalPeriodScheduler(criterion=%s) replaces the trials' own "
                    "train.criterion (%s in trial %s); pass criterion=None to keep theirs",
                    self._criterion.name,
                    theirs.name,
                    trial_id,
                )
        elif not own:
            chosen = self._criterion.name if self._criterion else "paper (the default)"
            self._warn_once(
                "override",
                "CriticalPeriodScheduler pushes its criterion %s and budget %s to trials "
                "connected with tune_channel(); it replaces the criterion their "
                "CriticalPeriod was built with. Pass criterion= (and budget=) to the "
                "scheduler to choose it",
                chosen,
                self.budget,
            )

    def _check_channel(self, state: _TrialState, result: dict[str, Any]) -> None:
        """A user's trainable reporting rotation without a channel never hears the scheduler."""
        state.channel = MODE in result or state.own
        if not state.channel:
            self._warn_once(
                "channel",
                "trial %s reports rotation without a control channel: its CriticalPeriod "
                "applies its own criterion and budget, so the scheduler's ends and cohort "
                "switches never reach it and their epochs may differ. Build it with "
                "CriticalPeriod(model, ..., control=tune_channel()) (from cpsweep import "
                "tune_channel) and report d.metrics()",
                state.trial_id,
            )

    def _cohort_of(self, trial_id: str, config: dict[str, Any]) -> str:
        """The cohort key of a trial; warns once when some cohort keys are not in its config."""
        values = [_lookup(config, k) for k in self.cohort_keys]
        missing = [k for k, v in zip(self.cohort_keys, values, strict=True) if v is _ABSENT]
        if missing:
            self._warn_once(
                "cohort_keys",
                "scope='cohort': trial %s has no %s in its config, so trials are grouped "
                "as if those keys were None (all trials alike there); pass cohort_keys= "
                "naming keys of your trials' config (dotted paths, e.g. ['model', 'lr'])",
                trial_id,
                missing,
            )
        return "|".join(str(None if v is _ABSENT else v) for v in values)

    # -- persistence: the journal's entries, the last line of a trial wins on reload ------

    def _release(self, trial: Any) -> None:
        self.link.release(trial.trial_id)

    def _load(self) -> dict[str, Any]:
        saved: dict[str, Any] = {}
        for entry in self.journal.load():
            saved[entry["trial_id"]] = entry
            if entry.get("cohort") is not None:
                self._cohorts[entry["cohort"]] = _Cohort(
                    list(entry["cohort_ends"]), entry["cohort_switch"]
                )
        return saved

    def _restore_trial(self, state: _TrialState) -> None:
        saved = self._saved.get(state.trial_id)
        if saved:
            state.end_epoch, state.source = saved["end_epoch"], saved["source"]
            state.forced_switch = saved.get("forced_switch")

    def _save(self, state: _TrialState) -> None:
        cohort = self._cohorts.get(state.cohort) if state.cohort else None
        self.journal.append(
            {
                "trial_id": state.trial_id,
                "end_epoch": state.end_epoch,
                "source": state.source,
                "forced_switch": state.forced_switch,
                "cohort": state.cohort,
                "cohort_ends": cohort.ends if cohort else None,
                "cohort_switch": cohort.switch_epoch if cohort else None,
            }
        )
