"""The sweep's own MLflow run: totals as metrics, the summary as an artifact.

The child runs hold each trial's curves; the parent run is where a user landing on the
experiment sees the sweep as a whole: its totals under the trials' own keys
(`energy/Wh`, `co2/g`, `cost/usd`, `time/cum_s`: its row fills the same columns),
`total/kWh` and `total/co2_kg`, `sweep/*` counts and `summary.json`. The
`cpsweep report` page (`report/index.html`) joins them once tracking has finished
(service.reporting.report.upload_report, called by the sweep and by `cpsweep sync`).
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

from service.results import SweepSummary
from service.tracking.schema import EXPERIMENT_TAGS, parent_totals
from service.tracking.view import SHARED_VIEW_PREFIX, shared_view, shared_view_key

__all__ = ["log_sweep_results", "sweep_totals"]

log = logging.getLogger(__name__)


def _key(metric: str) -> str:
    return metric.replace("/", "_")  # val/acc -> sweep/best_val_acc


def sweep_totals(summary: SweepSummary) -> dict[str, float]:
    """Sweep-level metrics from a summary: counts, the best headline value (its mode) and
    that trial's test value, summed resources."""
    trials = summary.trials
    out: dict[str, float] = {
        "sweep/trials": len(trials),
        "sweep/finished": sum(t.status == "TERMINATED" for t in trials),
        "sweep/failed": sum(t.status == "ERROR" for t in trials),
        "sweep/wall_s": float(summary.wall_s),
    }
    h, best = summary.headline, summary.best_trial()
    if best is not None and best.final_val is not None:
        out[f"sweep/best_{_key(h.key)}"] = best.final_val
        # What a user gets: the trial chosen on validation, measured on test.
        if best.final_test is not None:
            out[f"sweep/{_key(h.test_key)}_of_best_val"] = best.final_test
    if trials:
        out["sweep/samples"] = float(sum(t.samples for t in trials))
    return out | parent_totals([t.model_dump() for t in trials])


def log_sweep_results(client: Any, summary: SweepSummary, strict: bool = False) -> None:
    """Log totals and summary.json to the parent run; never raises (the sweep's
    results are already on disk and in the trial runs) unless `strict` (the tracking
    writer retries it when MLflow answers again)."""
    assert summary.mlflow is not None and summary.mlflow.parent_run_id is not None
    parent_id = summary.mlflow.parent_run_id
    try:
        from mlflow.entities import Metric

        step = max((t.epochs for t in summary.trials), default=0)
        now = int(time.time() * 1000)
        metrics = [Metric(k, v, now, step) for k, v in sweep_totals(summary).items()]
        client.log_batch(parent_id, metrics=metrics)
        _tag_experiment(client, summary, parent_id)
        client.log_text(parent_id, json.dumps(summary.to_json(), indent=2), "summary.json")
    except Exception as exc:
        if strict:
            raise
        log.warning("MLflow: could not log the sweep's results to run %s: %s", parent_id, exc)


def _tag_experiment(client: Any, summary: SweepSummary, parent_id: str) -> None:
    """Say what the experiment holds (model training) and store this sweep's runs view,
    which the link `cpsweep run` prints opens (service.tracking.view.runs_view_url). The
    view filters on the parent run's id, so trials that start later need no rewrite."""
    assert summary.mlflow is not None
    exp_id = summary.mlflow.experiment_id or client.get_run(parent_id).info.experiment_id
    searched = sorted({p for t in summary.trials for p in t.params})
    view = json.dumps(shared_view(searched, parent_id, summary.headline))
    tag = SHARED_VIEW_PREFIX + shared_view_key(parent_id)
    for key, value in {**EXPERIMENT_TAGS, tag: view}.items():
        client.set_experiment_tag(exp_id, key, value)
