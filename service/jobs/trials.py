"""The trials of one submitted sweep, read back from MLflow (for `cpsweep status` and the API).

A job's parent run carries the tag `cpsweep.job_id`; its trials are the child runs
(`mlflow.parentRunId`). A tag is something anyone who can write to MLflow can set,
so the API does not search by it: it takes the parent run id from the job's own driver
log (readable only with the Ray token; `cpsweep run` logs "parent run <id>"), checks
that this run carries the job's id, and lists only that run's children. Without a
parent id (the CLI), exactly one run may carry the job's tag, else nothing is shown.
Reading never raises: a status page must survive a missing or failing tracking
server, so failures come back as a note.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from service.jobs.client import JOB_ID_PATTERN
from service.results import headline_from_tags
from service.tracking.reader import child_runs, job_sweep_runs, open_client, probe_http
from trainables.core.wire import TEST_ACC, VAL_ACC, Headline

__all__ = ["SweepTrial", "parent_run_from_logs", "sweep_trials"]

log = logging.getLogger(__name__)


class SweepTrial(BaseModel):
    """One trial's outcome from its MLflow child run."""

    run_id: str
    name: str | None = None
    status: str | None = None
    end_epoch: int | None = Field(None, description="End of the critical period (cp.end_epoch).")
    switch_epoch: int | None = Field(None, description="First epoch of the cheap recipe.")
    metric: str | None = Field(None, description="The sweep's headline metric, e.g. val/loss.")
    mode: str | None = Field(None, description="max or min: the headline's better direction.")
    val: float | None = Field(None, description="The headline's last value: what decisions read.")
    test: float | None = Field(None, description="Its test value; never read by a decision.")
    val_acc: float | None = Field(None, description="Validation accuracy: what decisions read.")
    test_acc: float | None = Field(
        None, description="Test accuracy after the last epoch; never read by a decision."
    )
    cost_usd: float | None = None
    savings_cost_pct: float | None = None


def _as_int(value: Any) -> int | None:
    try:
        return int(float(value))
    except (TypeError, ValueError):
        return None


# service.tracking.writer logs "MLflow: parent run <32 hex> in experiment <id>" once it
# has created the sweep's run (older versions: "MLflow: experiment 'x', parent run ...").
_PARENT_LINE = re.compile(r"MLflow: (?:experiment .*, )?(?:resuming )?parent run ([0-9a-f]{32})\b")


def _trial(run: Any, headline: Headline) -> SweepTrial:
    tags, metrics = run.data.tags, run.data.metrics
    return SweepTrial(
        metric=headline.key,
        mode=headline.mode,
        val=metrics.get(headline.key),
        test=metrics.get(headline.test_key),
        run_id=run.info.run_id,
        name=run.info.run_name,
        status=run.info.status,
        end_epoch=_as_int(tags.get("cp.end_epoch")),
        switch_epoch=_as_int(tags.get("cp.switch_epoch")),
        val_acc=metrics.get(VAL_ACC),
        test_acc=metrics.get(TEST_ACC),
        cost_usd=metrics.get("cost/usd"),
        savings_cost_pct=metrics.get("savings/cost_pct"),
    )


def parent_run_from_logs(text: str) -> str | None:
    """The MLflow parent run id a job's driver log names first, or None."""
    m = _PARENT_LINE.search(text)
    return m.group(1) if m else None


def sweep_trials(
    mlflow_uri: str | None,
    job_id: str,
    parent_run_id: str | None = None,
    timeout_s: float = 3.0,
) -> tuple[list[SweepTrial] | None, str | None]:
    """(trials, note) of the job's parent run; never raises.

    `parent_run_id`: the run the job's own log names (verified to carry the job id);
    None: the one run tagged cpsweep.job_id=<job_id>. trials is None when MLflow cannot
    be asked or the parent is in doubt, [] when the job has no run yet.
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
            probe_http(mlflow_uri, timeout_s)  # MLflow itself retries for minutes
        client = open_client(mlflow_uri)
        parents = job_sweep_runs(client, job_id, parent_run_id)
        if parent_run_id is not None and not parents:
            return None, f"the run {parent_run_id} named by the job's log is not this job's"
        if not parents:
            return [], f"no MLflow run tagged cpsweep.job_id={job_id} yet"
        if len(parents) > 1:
            return None, (
                f"{len(parents)} MLflow runs carry cpsweep.job_id={job_id}; showing none "
                "(the API reads the job's own run from its log)"
            )
        parent = parents[0]
        children = child_runs(client, parent.info.experiment_id, parent.info.run_id, 1000)
    except Exception as exc:  # a status page must survive any tracking failure
        log.warning("MLflow at %s: %s", mlflow_uri, exc)
        return None, f"MLflow at {mlflow_uri} unreachable or failed: {type(exc).__name__}"
    # A child made before the job's run is not its (a tag anyone could have set).
    headline = headline_from_tags(parent.data.tags)
    trials = [_trial(r, headline) for r in children if r.info.start_time >= parent.info.start_time]
    trials.sort(key=lambda t: t.name or t.run_id)
    return trials, None
