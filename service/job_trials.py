"""The trials of one submitted sweep, read back from MLflow (for `cpsweep status` and the API).

A job's parent run carries the tag `cpsweep.job_id`; its trials are the child runs
(`mlflow.parentRunId`). Reading never raises: a status page must survive a missing or
failing tracking server, so failures come back as a note.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from service.jobs import JOB_ID_PATTERN

__all__ = ["SweepTrial", "sweep_trials"]

log = logging.getLogger(__name__)


class SweepTrial(BaseModel):
    """One trial's outcome from its MLflow child run."""

    run_id: str
    name: str | None = None
    status: str | None = None
    end_epoch: int | None = Field(None, description="End of the critical period (cp.end_epoch).")
    switch_epoch: int | None = Field(None, description="First epoch of the cheap recipe.")
    val_acc: float | None = None
    cost_usd: float | None = None
    savings_cost_pct: float | None = None


def _as_int(value: Any) -> int | None:
    try:
        return int(float(value))
    except (TypeError, ValueError):
        return None


def _probe_http(uri: str, timeout_s: float) -> None:
    import urllib.request

    with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout_s) as r:
        r.read(64)


def sweep_trials(
    mlflow_uri: str | None, job_id: str, timeout_s: float = 3.0
) -> tuple[list[SweepTrial] | None, str | None]:
    """(trials, note) from the parent run tagged cpsweep.job_id=<job_id>; never raises.

    trials is None when MLflow cannot be asked, [] when it has no run for this job yet.
    """
    if not mlflow_uri:
        return None, "no MLflow tracking URI configured (--mlflow-uri or MLFLOW_TRACKING_URI)"
    if not re.fullmatch(JOB_ID_PATTERN, job_id):
        return None, "invalid job id"
    db = mlflow_uri[len("sqlite:///") :] if mlflow_uri.startswith("sqlite:///") else None
    if db is not None and not Path(db).is_file():  # opening it would create an empty one
        return None, (
            f"no MLflow database {db} on this machine: it is on the node that ran the job "
            "(results_host); read it there, or pass a --mlflow-uri this machine reaches"
        )
    try:
        if mlflow_uri.startswith(("http://", "https://")):
            _probe_http(mlflow_uri, timeout_s)  # MLflow itself retries for minutes
        from mlflow.tracking import MlflowClient

        client = MlflowClient(tracking_uri=mlflow_uri)
        exp_ids = [e.experiment_id for e in client.search_experiments(max_results=1000)]
        parents = client.search_runs(
            exp_ids, filter_string=f"tags.`cpsweep.job_id` = '{job_id}'", max_results=5
        )
        if not parents:
            return [], f"no MLflow run tagged cpsweep.job_id={job_id} yet"
        parent = parents[0]
        children = client.search_runs(
            [parent.info.experiment_id],
            filter_string=f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'",
            max_results=1000,
        )
    except Exception as exc:  # a status page must survive any tracking failure
        log.warning("MLflow at %s: %s", mlflow_uri, exc)
        return None, f"MLflow at {mlflow_uri} unreachable or failed: {type(exc).__name__}"
    trials = []
    for run in children:
        tags, metrics = run.data.tags, run.data.metrics
        trials.append(
            SweepTrial(
                run_id=run.info.run_id,
                name=run.info.run_name,
                status=run.info.status,
                end_epoch=_as_int(tags.get("cp.end_epoch")),
                switch_epoch=_as_int(tags.get("cp.switch_epoch")),
                val_acc=metrics.get("val/acc"),
                cost_usd=metrics.get("cost/usd"),
                savings_cost_pct=metrics.get("savings/cost_pct"),
            )
        )
    trials.sort(key=lambda t: t.name or t.run_id)
    return trials, None
