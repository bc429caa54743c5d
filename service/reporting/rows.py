"""The rows of `cpsweep report`: trial runs as table rows, per-arm means and table columns.

Pure: `RunData` (service.tracking.reader: plain tags, params and metrics) -> `TrialRow`
-> table cells and per-arm `ArmSummary` means; `service.reporting.charts` and
`service.reporting.html` draw and render them.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from service.results import metric_columns
from service.spec import runs_full_recipe
from service.tracking.reader import RunData
from trainables.core.wire import Headline

__all__ = [
    "ENERGY_NOTES",
    "SAVINGS_KEYS",
    "ArmSummary",
    "Column",
    "TrialRow",
    "arm_columns",
    "arm_summaries",
    "table_cells",
    "to_int",
    "trial_columns",
    "trial_row",
    "trial_rows",
]

SAVINGS_KEYS = ("time", "energy", "co2", "cost", "samples")
ENERGY_NOTES = {  # trainables.run.energy: EnergyReading.method
    "measured": "measured by CodeCarbon from hardware counters (RAPL / NVML)",
    "estimated-tdp": "estimated by CodeCarbon from the CPU's TDP and its load (no RAPL access)",
    "disabled": "not measured (accounting.measure_energy: false); kWh and CO2 read 0",
}


@dataclass
class TrialRow:
    trial_id: str
    run_id: str
    arm: str | None
    label: str  # the run name: arm and searched params, e.g. "critical-period lr=0.05"
    baseline: bool  # the full recipe throughout (criterion never)
    status: str
    epochs: int | None
    cp_end: int | None
    switch: int | None
    final_val: float | None  # the headline metric on validation: what the decisions read
    best_val: float | None  # its best over the epochs, in its mode
    final_test: float | None  # its test value after the last epoch: what a user gets
    time_s: float | None
    kwh: float | None
    co2_kg: float | None
    usd: float | None
    energy_method: str | None
    savings_est: dict[str, float] = field(default_factory=dict)  # savings/<k>_pct
    savings_measured: dict[str, float] = field(default_factory=dict)  # savings_measured/<k>_pct


@dataclass
class ArmSummary:
    arm: str
    trials: int
    cp_end: float | None  # means over the arm's trials that did not fail
    final_val: float | None
    final_test: float | None
    time_s: float | None
    kwh: float | None
    usd: float | None
    savings_est: dict[str, float]
    savings_measured: dict[str, float]


# -- pure: runs -> rows -> aggregates ------------------------------------------------------


def to_int(value: Any) -> int | None:
    try:
        return int(float(value))
    except (TypeError, ValueError):
        return None


def _short(value: str) -> str:
    try:
        return format(float(value), ".3g") if any(c in value for c in ".e") else value
    except ValueError:
        return value


def _scaled(metrics: dict[str, float], key: str, scale: float, legacy: str) -> float | None:
    """A metric in the report's unit (kWh, kg) from MLflow's (Wh, g), or an older run's key."""
    return metrics[key] * scale if key in metrics else metrics.get(legacy)


def _pcts(metrics: dict[str, float], prefix: str) -> dict[str, float]:
    return {k: metrics[f"{prefix}/{k}_pct"] for k in SAVINGS_KEYS if f"{prefix}/{k}_pct" in metrics}


def trial_row(run: RunData, headline: Headline | None = None) -> TrialRow:
    """One trial's row from its child run (tags and metrics written by service.tracking.callback),
    with the values of `headline` (default val/acc, max)."""
    h = headline or Headline()
    t, m = run.tags, run.metrics
    arm = t.get("cpsweep.arm")
    arm = None if arm in (None, "", "None") else arm
    label = t.get("mlflow.runName", "")  # service.tracking.schema.trial_run_name
    if not label:  # runs logged before trials were named for what varies
        searched = sorted((k[7:], v) for k, v in run.params.items() if k.startswith("search."))
        label = " ".join(
            ([arm] if arm else []) + [f"{k.split('.')[-1]}={_short(v)}" for k, v in searched]
        )
    return TrialRow(
        trial_id=t.get("cpsweep.trial_id", run.run_id[:8]),
        run_id=run.run_id,
        arm=arm,
        label=label or "-",
        baseline=runs_full_recipe(arm, t.get("cp.criterion")),
        status=run.status,
        epochs=to_int(t.get("cpsweep.last_epoch")),
        cp_end=to_int(t.get("cp.end_epoch")),
        switch=to_int(t.get("cp.switch_epoch")),
        final_val=m.get(h.key),
        best_val=h.best(run.val_history) if run.val_history else m.get(h.key),
        final_test=m.get(h.test_key),
        time_s=m.get("time/cum_s"),
        kwh=_scaled(m, "energy/Wh", 1e-3, "energy/kwh"),
        co2_kg=_scaled(m, "co2/g", 1e-3, "co2/kg"),
        usd=m.get("cost/usd"),
        energy_method=t.get("energy.method"),
        savings_est=_pcts(m, "savings"),
        savings_measured=_pcts(m, "savings_measured"),
    )


def trial_rows(runs: Sequence[RunData], headline: Headline | None = None) -> list[TrialRow]:
    """Rows in table order: critical-period arms first, baselines last, then label and id."""
    rows = [trial_row(r, headline) for r in runs]
    return sorted(rows, key=lambda r: (r.baseline, r.arm or "", r.label, r.trial_id))


def _mean(values: Sequence[float | int | None]) -> float | None:
    xs = [float(v) for v in values if v is not None]
    return statistics.fmean(xs) if xs else None


def _mean_pcts(dicts: Sequence[dict[str, float]]) -> dict[str, float]:
    keys = [k for k in SAVINGS_KEYS if any(k in d for d in dicts)]
    return {k: statistics.fmean(d[k] for d in dicts if k in d) for k in keys}


def arm_summaries(rows: Sequence[TrialRow]) -> list[ArmSummary]:
    """Per-arm means over seeds and searched params; failed trials are left out."""
    groups: dict[str, list[TrialRow]] = {}
    for r in rows:
        if r.status != "FAILED":
            groups.setdefault(r.arm or "(no arm)", []).append(r)
    return [
        ArmSummary(
            arm=arm,
            trials=len(g),
            cp_end=_mean([r.cp_end for r in g]),
            final_val=_mean([r.final_val for r in g]),
            final_test=_mean([r.final_test for r in g]),
            time_s=_mean([r.time_s for r in g]),
            kwh=_mean([r.kwh for r in g]),
            usd=_mean([r.usd for r in g]),
            savings_est=_mean_pcts([r.savings_est for r in g]),
            savings_measured=_mean_pcts([r.savings_measured for r in g]),
        )
        for arm, g in sorted(groups.items(), key=lambda kv: (kv[1][0].baseline, kv[0]))
    ]


def _fmt(v: Any, spec: str) -> str:
    return "-" if v is None else format(v, spec)


# A column: header, sort value, shown text. Savings show "estimate (meas measured)".
Column = tuple[str, Callable[[Any], Any], Callable[[Any], str]]


def _col(head: str, attr: str, spec: str = "") -> Column:
    return (head, lambda r: getattr(r, attr), lambda r: _fmt(getattr(r, attr), spec))


def _saved(head: str, key: str) -> Column:
    def text(r: TrialRow) -> str:
        meas = r.savings_measured.get(key)
        return _fmt(r.savings_est.get(key), ".1f") + ("" if meas is None else f" (meas {meas:.1f})")

    return (head, lambda r: r.savings_est.get(key, r.savings_measured.get(key)), text)


def trial_columns(headline: Headline | None = None) -> list[Column]:
    """The report's trial table: the headline's columns (service.results.metric_columns)."""
    val, best, test = metric_columns(headline or Headline())
    return [
        _col("trial", "trial_id"), _col("arm / params", "label"), _col("status", "status"),
        _col("epochs", "epochs", "d"), _col("cp_end", "cp_end", "d"), _col("switch", "switch", "d"),
        _col(val, "final_val", ".4f"), _col(best, "best_val", ".4f"), _col(test, "final_test", ".4f"),
        _col("time s", "time_s", ".1f"), _col("kWh", "kwh", ".3g"), _col("kg CO2", "co2_kg", ".3g"),
        _col("USD", "usd", ".3g"), _saved("saved time %", "time"), _saved("saved kWh %", "energy"),
        _saved("saved CO2 %", "co2"), _saved("saved USD %", "cost"),
    ]  # fmt: skip


def _arm_saved(head: str, kind: str, key: str) -> Column:
    return (
        head,
        lambda a: getattr(a, kind).get(key),
        lambda a: _fmt(getattr(a, kind).get(key), ".1f"),
    )


def arm_columns(headline: Headline | None = None) -> list[Column]:
    """The report's per-arm table, with the headline's mean values."""
    h = headline or Headline()
    return [
        _col("arm", "arm"), _col("trials", "trials", "d"), _col("mean cp_end", "cp_end", ".1f"),
        _col(f"mean {h.label}", "final_val", ".4f"), _col(f"mean {h.test_key}", "final_test", ".4f"),
        _col("mean time s", "time_s", ".1f"),
        _col("mean kWh", "kwh", ".3g"), _col("mean USD", "usd", ".3g"),
        _arm_saved("est. time saved %", "savings_est", "time"),
        _arm_saved("est. USD saved %", "savings_est", "cost"),
        _arm_saved("meas. time saved %", "savings_measured", "time"),
        _arm_saved("meas. USD saved %", "savings_measured", "cost"),
    ]  # fmt: skip


def table_cells(obj: Any, columns: Sequence[Column]) -> list[tuple[str, Any]]:
    """(shown text, sort value) per column."""
    return [(text(obj), value(obj)) for _, value, text in columns]
