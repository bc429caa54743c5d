"""Reading a sweep back from MLflow: the one module that asks MLflow for runs and metrics.

`cpsweep report` (service.reporting), `cpsweep detect mlflow:RUN_ID`, a job's trial list
(service.jobs.trials) and the writer's per-trial plots after a driver restart all read
through here. What comes back is plain data (`RunData`, `SweepData`, rows of numbers), so
everything above it is testable without MLflow. `check_store` fails fast and clearly
where MLflow itself would create an empty sqlite file or retry HTTP for minutes.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from service.results import headline_from_tags
from trainables.core.config import ConfigError
from trainables.core.wire import END_EPOCH, Headline

__all__ = [
    "RunData",
    "StoreError",
    "SweepData",
    "check_store",
    "child_runs",
    "client_for",
    "epoch_rows",
    "job_sweep_runs",
    "load_sweep",
    "metric_by_step",
    "open_client",
    "probe_http",
    "resolve_tracking_uri",
]

log = logging.getLogger(__name__)


class StoreError(ConfigError):
    """The experiment, sweep or store asked for does not exist; the message says what does."""


@dataclass
class RunData:
    """One MLflow run as plain data: latest metric values and the headline's history."""

    run_id: str
    status: str = "FINISHED"
    tags: dict[str, str] = field(default_factory=dict)
    params: dict[str, str] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    val_history: list[float] = field(default_factory=list)  # the headline's, by epoch


@dataclass
class SweepData:
    experiment: str
    experiment_id: str
    tracking_uri: str
    parent: RunData
    trials: list[RunData]
    headline: Headline = field(default_factory=Headline)  # the sweep run's cpsweep.metric


def resolve_tracking_uri(uri: str | None) -> str:
    """Explicit URI, else $MLFLOW_TRACKING_URI, else sqlite:///<cwd>/mlflow.db (absolute)."""
    uri = uri or os.environ.get("MLFLOW_TRACKING_URI")
    return uri or f"sqlite:///{Path.cwd() / 'mlflow.db'}"


def probe_http(uri: str, timeout_s: float) -> None:
    """GET <uri>/health; raises OSError when the server does not answer in `timeout_s`."""
    import urllib.request

    with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout_s) as r:
        r.read(64)


def check_store(uri: str) -> None:
    """Fail fast and clearly: no silently created sqlite file, no minutes of HTTP retries."""
    if uri.startswith("sqlite:///") and not Path(uri[len("sqlite:///") :]).is_file():
        raise StoreError(
            f"no MLflow database at tracking URI {uri}; pass --tracking-uri or set MLFLOW_TRACKING_URI"
        )
    if uri.startswith(("http://", "https://")):
        try:
            probe_http(uri, 5)
        except OSError as exc:
            raise StoreError(f"MLflow server at tracking URI {uri} is unreachable: {exc}") from exc


def open_client(uri: str) -> Any:
    """An MlflowClient on `uri`, unchecked (callers that check the store their own way)."""
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri)


def client_for(uri: str) -> Any:
    """An MlflowClient on a store that `check_store` found."""
    check_store(uri)
    return open_client(uri)


def metric_by_step(client: Any, run_id: str, key: str) -> list[float]:
    """A run's metric history in step order; a step logged twice keeps its last value."""
    by_step = {m.step: m.value for m in client.get_metric_history(run_id, key)}
    return [by_step[k] for k in sorted(by_step)]


def epoch_rows(client: Any, run_id: str, prefixes: tuple[str, ...]) -> list[dict[str, Any]]:
    """Per-epoch rows of a run's metrics whose keys start with `prefixes`, each with
    `epoch` and the run's `cp.end_epoch` (the writer's plots after a driver restart)."""
    run = client.get_run(run_id)
    rows: dict[int, dict[str, Any]] = {}
    for key in run.data.metrics:
        if key.startswith(prefixes):
            for m in client.get_metric_history(run_id, key):
                rows.setdefault(m.step, {"epoch": m.step})[key] = m.value
    end = run.data.tags.get("cp.end_epoch")
    out = [rows[e] for e in sorted(rows)]
    for r in out:
        r[END_EPOCH] = int(end) if end else None
    return out


def child_runs(client: Any, experiment_id: str, parent_id: str, max_results: int) -> list[Any]:
    """The trial runs of a sweep run (tag `mlflow.parentRunId`)."""
    return list(
        client.search_runs(
            [experiment_id],
            filter_string=f"tags.`mlflow.parentRunId` = '{parent_id}'",
            max_results=max_results,
        )
    )


def job_sweep_runs(client: Any, job_id: str, parent_run_id: str | None = None) -> list[Any]:
    """Sweep runs tagged `cpsweep.job_id=<job_id>`: the run `parent_run_id` names, if it
    carries the tag, else (no id) up to 5 found by the tag (see service.jobs.trials)."""
    if parent_run_id is not None:
        run = client.get_run(parent_run_id)
        return [run] if run.data.tags.get("cpsweep.job_id") == job_id else []
    exp_ids = [e.experiment_id for e in client.search_experiments(max_results=1000)]
    return list(
        client.search_runs(
            exp_ids, filter_string=f"tags.`cpsweep.job_id` = '{job_id}'", max_results=5
        )
    )


def _run_data(client: Any, run: Any, history: str | None) -> RunData:
    """`run` as plain data, with the history of metric `history` (None: none)."""
    i, d = run.info, run.data
    values = metric_by_step(client, i.run_id, history) if history else []
    return RunData(i.run_id, i.status, dict(d.tags), dict(d.params), dict(d.metrics), values)


def _sweep_run(client: Any, exp: Any, where: str, parent_id: str | None) -> Any:
    """The sweep's parent run: `parent_id` (checked to be one of exp's sweeps) or the latest."""
    from mlflow.exceptions import MlflowException

    if parent_id:
        try:
            parent = client.get_run(parent_id)
        except MlflowException as exc:
            raise StoreError(f"{where}: no run {parent_id!r} ({exc.message})") from exc
        if (
            parent.info.experiment_id != exp.experiment_id
            or parent.data.tags.get("cpsweep.kind") != "sweep"
        ):
            raise StoreError(
                f"{where}: run {parent_id} is not a sweep run of it (tag cpsweep.kind=sweep)"
            )
        return parent
    found = client.search_runs(
        [exp.experiment_id],
        "tags.`cpsweep.kind` = 'sweep'",
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )
    if not found:
        raise StoreError(
            f"{where}: no sweep run (tag cpsweep.kind=sweep); run one with `cpsweep run`"
        )
    return found[0]


def load_sweep(experiment: str, tracking_uri: str, parent_id: str | None = None) -> SweepData:
    """Read the sweep's parent run (latest, or `parent_id`) and its trial runs from MLflow."""
    client = client_for(tracking_uri)
    where = f"experiment {experiment!r} at tracking URI {tracking_uri}"
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        names = sorted(e.name for e in client.search_experiments(max_results=1000))
        raise StoreError(
            f"{where}: no such experiment; available: {', '.join(map(repr, names)) or 'none'}"
        )
    parent = _sweep_run(client, exp, where, parent_id)
    pid = parent.info.run_id
    children = child_runs(client, exp.experiment_id, pid, max_results=10_000)
    if not children:
        raise StoreError(f"{where}: sweep run {pid} has no trial runs yet")
    log.debug("%s: sweep run %s with %d trials", where, pid, len(children))
    headline = headline_from_tags(parent.data.tags)
    trials = [_run_data(client, c, history=headline.key) for c in children]
    sweep_run = _run_data(client, parent, history=None)
    return SweepData(experiment, exp.experiment_id, tracking_uri, sweep_run, trials, headline)
