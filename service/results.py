"""The result schema of a sweep: what the table, summary.json, the report and MLflow share.

One home for the shape of a sweep's results: the headline metric's columns
(`metric_columns`), the budget flags of the end of the period (`period_flag`), one
trial's row (`TrialSummary`) and the sweep's summary (`SweepSummary`), frozen and
typed. `service.sweeps.summary` builds the summary from Tune's results, the tracking
callback adds what MLflow and the accounting know (`model_copy`), the CLI prints it
(`service.sweeps.progress.format_table`), `summary.json` is its `to_json()`
(docs/results.md lists the keys), the parent run logs its totals and the report and the
MLflow view use the same headline and columns. The metric keys themselves (`val/*`,
`test/*`, `Headline`) live in `trainables.core.wire`, which trials share.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from trainables.core.wire import Headline
from trainables.method.criteria import earliest_end

__all__ = [
    "FLAG_NOTES",
    "MetricInfo",
    "MlflowIds",
    "PeriodFlag",
    "SweepSummary",
    "TrialSummary",
    "headline_from_tags",
    "headline_tags",
    "metric_columns",
    "period_flag",
]

# A budget flag: `earliest` the rule ended at the first epoch its window allows (the
# end is a lower bound, not a detection: a longer budget would likely end it later);
# `no_end` the rule ran the whole budget without ending the period.
PeriodFlag = Literal["earliest", "no_end"]
FLAG_NOTES: dict[str, str] = {
    "earliest": "ended at the earliest epoch its window allows: a lower bound, not a detection",
    "no_end": "did not end the period within the budget",
}


def period_flag(
    criterion: Mapping[str, Any], end: int | None, epochs: int, budget: int
) -> PeriodFlag | None:
    """The budget flag of one trial's period (None: a detection inside the budget, or a
    rule that detects nothing, such as `fixed` and `never`). `epochs`: epochs it ran."""
    name = str(criterion.get("name") or "")
    try:
        earliest = earliest_end(
            name, int(criterion.get("window", 5)), int(criterion.get("patience", 2))
        )
    except ValueError:  # a rule this process cannot load: no flag rather than no summary
        return None
    if earliest is None:
        return None
    if end is None:
        return "no_end" if epochs >= budget else None
    return "earliest" if end <= earliest else None


# The sweep's run carries its headline, so what reads a sweep back (the report) ranks and
# labels by the same metric.
_METRIC_TAG, _MODE_TAG = "cpsweep.metric", "cpsweep.metric_mode"


def headline_tags(headline: Headline) -> dict[str, str]:
    """The sweep run's tags that name its headline metric."""
    return {_METRIC_TAG: headline.key, _MODE_TAG: headline.mode}


def headline_from_tags(tags: Mapping[str, str]) -> Headline:
    """The headline a sweep run's tags name; val/acc (max) for a run logged before them."""
    if tags.get(_METRIC_TAG) and tags.get(_MODE_TAG) in ("max", "min"):
        return Headline(tags[_METRIC_TAG], "min" if tags[_MODE_TAG] == "min" else "max")
    return Headline()


def metric_columns(headline: Headline) -> tuple[str, str, str]:
    """Headers of the headline's final value, its best over epochs and its test value:
    `val/loss (min)`, `best val/loss`, `test/loss`."""
    return headline.label, f"best {headline.key}", headline.test_key


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class MetricInfo(_Frozen):
    """The headline as summary.json writes it."""

    name: str = Field(..., description="The validation key results rank by, e.g. val/loss.")
    mode: Literal["max", "min"] = Field(..., description="max: higher is better; min: lower.")
    test: str = Field(..., description="Its test-split counterpart, shown, never decided on.")

    @classmethod
    def of(cls, headline: Headline) -> MetricInfo:
        return cls(name=headline.key, mode=headline.mode, test=headline.test_key)

    @property
    def headline(self) -> Headline:
        return Headline(self.name, self.mode)


class TrialSummary(_Frozen):
    """One trial's row of the summary (summary.json `trials[]`)."""

    trial_id: str = Field(..., description="Tune's trial id.")
    arm: str | None = Field(None, description="The arm (cp, baseline, ...), None without arms.")
    params: dict[str, Any] = Field(default_factory=dict, description="Searched values.")
    config: dict[str, Any] = Field(default_factory=dict, description="Resolved TrainConfig.")
    status: str = Field(..., description="TERMINATED, STOPPED (inner ASHA), ERROR, INTERRUPTED.")
    error: str | None = Field(None, description="Last line of the error, if it failed.")
    epochs: int = Field(0, description="Epochs reported.")
    cp_end_epoch: int | None = Field(None, description="End of the critical period.")
    switch_epoch: int | None = Field(None, description="First epoch of the post-period recipe.")
    cp_source: str | None = Field(None, description="Who decided the switch (trial, cohort).")
    cp_flag: PeriodFlag | None = Field(None, description="Budget flag (FLAG_NOTES).")
    final_val: float | None = Field(None, description="The headline metric after the last epoch.")
    best_val: float | None = Field(None, description="Its best value over the epochs (mode).")
    final_test: float | None = Field(None, description="Its test value; never decided on.")
    final_val_acc: float | None = Field(None, description="val/acc after the last epoch.")
    best_val_acc: float | None = Field(None, description="Highest val/acc.")
    final_test_acc: float | None = Field(None, description="test/acc, last reported.")
    final_test_loss: float | None = Field(None, description="test/loss, last reported.")
    wall_s: float | None = Field(None, description="Tune's time_total_s.")
    train_s: float | None = Field(None, description="Sum of time/train_s.")
    eval_s: float | None = Field(None, description="Sum of time/eval_s.")
    epoch_s: float | None = Field(None, description="Sum of time/epoch_s.")
    outside_epochs_s: float | None = Field(None, description="wall_s - epoch_s: start-up etc.")
    samples: int = Field(0, description="Training samples (the loop's `samples`, summed).")
    # added by the tracking callback (service.tracking.callback.finish)
    mlflow_run_id: str | None = Field(None, description="The trial's MLflow run.")
    energy_kwh: float | None = Field(None, description="Energy measured or estimated.")
    co2_kg: float | None = Field(None, description="CO2 from the energy.")
    cost_usd: float | None = Field(None, description="Device-hours at the price table.")
    billed_s: float | None = Field(None, description="Seconds the cost is billed for.")
    price_device: str | None = Field(None, description="Price-table key of the device.")
    savings_pct: dict[str, float] = Field(
        default_factory=dict, description="Estimated savings against the full recipe."
    )
    baseline_trial_id: str | None = Field(None, description="Its baseline arm's trial.")
    savings_measured_pct: dict[str, float] | None = Field(
        None, description="Measured savings against that baseline trial."
    )
    val_delta_vs_baseline: float | None = Field(
        None, description="final_val minus the baseline trial's final_val."
    )


class MlflowIds(_Frozen):
    """Where the sweep went in MLflow."""

    tracking_uri: str
    experiment: str
    experiment_id: str | None = None
    parent_run_id: str | None = None


class SweepSummary(_Frozen):
    """A finished (or interrupted) sweep: what `run_sweep` returns and summary.json holds."""

    sweep: str = Field(..., description="The spec's name.")
    metric: MetricInfo = Field(..., description="The headline metric and its mode.")
    budget: int = Field(..., description="Planned epochs per trial (train.epochs).")
    wall_s: float = Field(..., description="The sweep's wall time.")
    interrupted: bool = Field(False, description="Ctrl-C or SIGTERM ended it; --resume goes on.")
    trials: tuple[TrialSummary, ...] = Field(default=(), description="One row per trial.")
    output_dir: str | None = Field(None, description="Where the sweep wrote.")
    mlflow: MlflowIds | None = Field(None, description="Its MLflow run ids (tracking on).")
    tracking: dict[str, Any] | None = Field(
        None, description="What reached MLflow (service.tracking.wal.log_report)."
    )

    @property
    def headline(self) -> Headline:
        return self.metric.headline

    def best_trial(self) -> TrialSummary | None:
        """The trial with the best final validation value (the sweep's pick)."""
        scored = [t for t in self.trials if t.final_val is not None]
        best = self.headline.best(t.final_val for t in scored)
        return next((t for t in scored if t.final_val == best), None)

    def to_json(self) -> dict[str, Any]:
        """summary.json's content (plain JSON types)."""
        return self.model_dump(mode="json")
