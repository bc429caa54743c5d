"""`cpsweep report`: one sweep from MLflow as a static HTML page with comparison charts.

The sweep is read back from its MLflow experiment (the latest parent run tagged
`cpsweep.kind=sweep`, or a given one) and its child trial runs. Everything
between MLflow and the page is pure: `RunData` (plain tags, params and metrics)
-> `TrialRow` -> table cells, per-arm means and charts. Only `load_sweep` talks
to MLflow; `service.reporting.html` renders the page, `service.reporting.charts` the PNGs.
"""

from __future__ import annotations

import logging
import re
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trainables.config import ConfigError

__all__ = [
    "ARM_COLUMNS",
    "ENERGY_NOTES",
    "TRIAL_COLUMNS",
    "ArmSummary",
    "Column",
    "ReportError",
    "RunData",
    "SweepData",
    "TrialRow",
    "arm_summaries",
    "build_report",
    "check_store",
    "load_sweep",
    "register_cli",
    "table_cells",
    "trial_row",
    "trial_rows",
]

log = logging.getLogger(__name__)

SAVINGS_KEYS = ("time", "energy", "co2", "cost", "samples")
ENERGY_NOTES = {  # trainables.energy: EnergyReading.method
    "measured": "measured by CodeCarbon from hardware counters (RAPL / NVML)",
    "estimated-tdp": "estimated by CodeCarbon from the CPU's TDP and its load (no RAPL access)",
    "disabled": "not measured (accounting.measure_energy: false); kWh and CO2 read 0",
}


class ReportError(ConfigError):
    """The experiment, sweep or store asked for does not exist; the message says what does."""


# -- plain data ---------------------------------------------------------------------------


@dataclass
class RunData:
    """One MLflow run as plain data: latest metric values and the `val/acc` history."""

    run_id: str
    status: str = "FINISHED"
    tags: dict[str, str] = field(default_factory=dict)
    params: dict[str, str] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    val_acc_history: list[float] = field(default_factory=list)


@dataclass
class SweepData:
    experiment: str
    experiment_id: str
    tracking_uri: str
    parent: RunData
    trials: list[RunData]


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
    final_acc: float | None
    best_acc: float | None
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
    final_acc: float | None
    time_s: float | None
    kwh: float | None
    usd: float | None
    savings_est: dict[str, float]
    savings_measured: dict[str, float]


# -- pure: runs -> rows -> aggregates ------------------------------------------------------


def _int(value: Any) -> int | None:
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


def trial_row(run: RunData) -> TrialRow:
    """One trial's row from its child run (tags and metrics written by service.tracking.callback)."""
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
        baseline=arm == "baseline" or t.get("cp.criterion") == "never",
        status=run.status,
        epochs=_int(t.get("cpsweep.last_epoch")),
        cp_end=_int(t.get("cp.end_epoch")),
        switch=_int(t.get("cp.switch_epoch")),
        final_acc=m.get("val/acc"),
        best_acc=max(run.val_acc_history) if run.val_acc_history else m.get("val/acc"),
        time_s=m.get("time/cum_s"),
        kwh=_scaled(m, "energy/Wh", 1e-3, "energy/kwh"),
        co2_kg=_scaled(m, "co2/g", 1e-3, "co2/kg"),
        usd=m.get("cost/usd"),
        energy_method=t.get("energy.method"),
        savings_est=_pcts(m, "savings"),
        savings_measured=_pcts(m, "savings_measured"),
    )


def trial_rows(runs: Sequence[RunData]) -> list[TrialRow]:
    """Rows in table order: critical-period arms first, baselines last, then label and id."""
    return sorted(
        map(trial_row, runs), key=lambda r: (r.baseline, r.arm or "", r.label, r.trial_id)
    )


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
            final_acc=_mean([r.final_acc for r in g]),
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


TRIAL_COLUMNS: list[Column] = [
    _col("trial", "trial_id"), _col("arm / params", "label"), _col("status", "status"),
    _col("epochs", "epochs", "d"), _col("cp_end", "cp_end", "d"), _col("switch", "switch", "d"),
    _col("val acc", "final_acc", ".4f"), _col("best acc", "best_acc", ".4f"),
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


ARM_COLUMNS: list[Column] = [
    _col("arm", "arm"), _col("trials", "trials", "d"), _col("mean cp_end", "cp_end", ".1f"),
    _col("mean val acc", "final_acc", ".4f"), _col("mean time s", "time_s", ".1f"),
    _col("mean kWh", "kwh", ".3g"), _col("mean USD", "usd", ".3g"),
    _arm_saved("est. time saved %", "savings_est", "time"),
    _arm_saved("est. USD saved %", "savings_est", "cost"),
    _arm_saved("meas. time saved %", "savings_measured", "time"),
    _arm_saved("meas. USD saved %", "savings_measured", "cost"),
]  # fmt: skip


def table_cells(obj: Any, columns: Sequence[Column] = TRIAL_COLUMNS) -> list[tuple[str, Any]]:
    """(shown text, sort value) per column."""
    return [(text(obj), value(obj)) for _, value, text in columns]


# -- MLflow glue ---------------------------------------------------------------------------


def _run_data(client: Any, run: Any, history: bool) -> RunData:
    i, d = run.info, run.data
    accs = [m.value for m in client.get_metric_history(i.run_id, "val/acc")] if history else []
    return RunData(i.run_id, i.status, dict(d.tags), dict(d.params), dict(d.metrics), accs)


def check_store(uri: str) -> None:
    """Fail fast and clearly: no silently created sqlite file, no minutes of HTTP retries."""
    if uri.startswith("sqlite:///") and not Path(uri[len("sqlite:///") :]).is_file():
        raise ReportError(
            f"no MLflow database at tracking URI {uri}; pass --tracking-uri or set MLFLOW_TRACKING_URI"
        )
    if uri.startswith(("http://", "https://")):
        import urllib.request

        try:
            with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=5) as r:
                r.read(64)
        except OSError as exc:
            raise ReportError(f"MLflow server at tracking URI {uri} is unreachable: {exc}") from exc


def load_sweep(experiment: str, tracking_uri: str, parent_id: str | None = None) -> SweepData:
    """Read the sweep's parent run (latest, or `parent_id`) and its trial runs from MLflow."""
    check_store(tracking_uri)
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri)
    where = f"experiment {experiment!r} at tracking URI {tracking_uri}"
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        names = sorted(e.name for e in client.search_experiments(max_results=1000))
        raise ReportError(
            f"{where}: no such experiment; available: {', '.join(map(repr, names)) or 'none'}"
        )
    if parent_id:
        try:
            parent = client.get_run(parent_id)
        except MlflowException as exc:
            raise ReportError(f"{where}: no run {parent_id!r} ({exc.message})") from exc
        if (
            parent.info.experiment_id != exp.experiment_id
            or parent.data.tags.get("cpsweep.kind") != "sweep"
        ):
            raise ReportError(
                f"{where}: run {parent_id} is not a sweep run of it (tag cpsweep.kind=sweep)"
            )
    else:
        found = client.search_runs(
            [exp.experiment_id],
            "tags.`cpsweep.kind` = 'sweep'",
            order_by=["attributes.start_time DESC"],
            max_results=1,
        )
        if not found:
            raise ReportError(
                f"{where}: no sweep run (tag cpsweep.kind=sweep); run one with `cpsweep run`"
            )
        parent = found[0]
    pid = parent.info.run_id
    children = client.search_runs(
        [exp.experiment_id], f"tags.`mlflow.parentRunId` = '{pid}'", max_results=10_000
    )
    if not children:
        raise ReportError(f"{where}: sweep run {pid} has no trial runs yet")
    log.debug("%s: sweep run %s with %d trials", where, pid, len(children))
    trials = [_run_data(client, c, history=True) for c in children]
    return SweepData(
        experiment, exp.experiment_id, tracking_uri, _run_data(client, parent, False), trials
    )


def build_report(data: SweepData, out_dir: str | Path) -> Path:
    """Write index.html and its PNGs into out_dir; returns the page's path."""
    out = Path(out_dir)
    rows = trial_rows(data.trials)
    from service.reporting.charts import write_charts
    from service.reporting.html import render_html

    params = data.parent.params
    charts = write_charts(rows, out, _int(params.get("epochs", params.get("train.epochs"))))
    # Images inline as data: URIs: MLflow's artifact viewer shows the page without the
    # files beside it, so relative <img> paths would break there.
    inline = {name: _data_uri(out / name) for name, _ in charts}
    page = out / "index.html"
    page.write_text(render_html(data, rows, charts, inline), encoding="utf-8")
    return page


def _data_uri(png: Path) -> str:
    import base64

    return "data:image/png;base64," + base64.b64encode(png.read_bytes()).decode("ascii")


# -- CLI -----------------------------------------------------------------------------------


def _cmd_report(args: Any) -> int:
    from service.tracking.callback import resolve_tracking_uri

    data = load_sweep(args.experiment, resolve_tracking_uri(args.tracking_uri), args.parent)
    out = args.out or Path("reports") / re.sub(r"[^A-Za-z0-9_.-]", "_", args.experiment)
    page = build_report(data, out)
    log.info("report of sweep run %s (%d trials)", data.parent.run_id, len(data.trials))
    print(page.resolve())
    return 0


def register_cli(sub: Any) -> None:
    """`cpsweep report EXPERIMENT [--tracking-uri URI] [--parent RUN_ID] [--out DIR]`."""
    p = sub.add_parser("report", help="write an HTML report with charts of one sweep from MLflow")
    p.add_argument("experiment", help="MLflow experiment name (the sweep's name unless set)")
    p.add_argument("--tracking-uri", help="default $MLFLOW_TRACKING_URI or sqlite:///mlflow.db")
    p.add_argument("--parent", help="sweep parent run id (default: the experiment's latest sweep)")
    p.add_argument("--out", help="output directory (default reports/<experiment>/)")
    p.set_defaults(func=_cmd_report)
