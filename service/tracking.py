"""MLflow tracking of a sweep: one writer on the driver, as a Ray Tune callback.

A parent run per sweep (spec as artifact and params) and a child run per trial
(tag `mlflow.parentRunId`). Every reported epoch is logged with `step=epoch` in
one `log_batch` call, together with cumulative energy, CO2 and cost computed by
`service.accounting`. A retried trial never logs an epoch twice: the last
logged epoch is kept per run (and recovered from MLflow after a restart).
"""

from __future__ import annotations

import logging
import math
import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from ray.tune import Callback

from service import accounting
from service.progress import unfinished_trials
from service.spec import SweepSpec
from service.usage import TrialUsage
from trainables.config import train_dict_for
from trainables.wire import (
    ANGLE,
    END_EPOCH,
    HANDSHAKE_S,
    LAG_EPOCHS,
    MODE,
    RATE_RATIO,
    SWITCH_EPOCH,
)

__all__ = ["MLflowSweepCallback", "prepare_store", "resolve_tracking_uri"]

log = logging.getLogger(__name__)

_SKIP = {
    "epoch",
    "phase",
    "trial_id",
    "date",
    "hostname",
    "node_ip",
    "pid",
    "done",
    "training_iteration",
    "timestamp",
    "time_since_restore",
    "iterations_since_restore",
    "checkpoint_dir_name",
    "checkpoint_path",
    "config",
    "should_checkpoint",
}
_TAG_KEYS = {"energy/method": "energy.method", "device/name": "device.name", MODE: "cp.mode"}


def resolve_tracking_uri(uri: str | None) -> str:
    """Explicit URI, else $MLFLOW_TRACKING_URI, else sqlite:///<cwd>/mlflow.db (absolute)."""
    uri = uri or os.environ.get("MLFLOW_TRACKING_URI")
    return uri or f"sqlite:///{Path.cwd() / 'mlflow.db'}"


def prepare_store(uri: str) -> Any:
    """Create and migrate the store once, before any trial starts (sqlite migrations race)."""
    import mlflow
    from mlflow.tracking import MlflowClient

    mlflow.set_tracking_uri(uri)
    client = MlflowClient(tracking_uri=uri)
    client.search_experiments(max_results=1)  # creates + migrates a fresh database
    return client


def _artifact_location(uri: str) -> str | None:
    """For a sqlite store, keep artifacts beside the database (not in the driver's cwd)."""
    if uri.startswith("sqlite:///"):
        return (Path(uri[len("sqlite:///") :]).parent / "mlartifacts").resolve().as_uri()
    return None  # a tracking server decides where artifacts go


def _flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, str]:
    out: dict[str, str] = {}
    for k, v in tree.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flatten(v, key + "."))
        else:
            out[key] = str(v)[:6000]
    return out


def _full_recipe_throughout(arm: str | None, criterion: str | None) -> bool:
    """A baseline arm or a `never` trial: an estimated saving has no meaning (n/a)."""
    return arm == "baseline" or criterion == "never"


class MLflowSweepCallback(Callback):
    """Logs the sweep to MLflow from the Tune driver; `finish` adds ids and totals to the summary."""

    def __init__(self, spec: SweepSpec, out_dir: Path, resume: bool = False) -> None:
        self.spec, self.out_dir, self.resume = spec, out_dir, resume
        self.uri = resolve_tracking_uri(spec.tracking.uri)
        self.client: Any = None
        self.parent_id: str | None = None
        self.runs: dict[str, str] = {}  # trial id -> child run id
        self.started: set[str] = set()  # trials this session started or heard from
        self.closed: set[str] = set()  # trials whose run this session closed
        self.usage: dict[str, TrialUsage] = {}
        self.history: dict[str, list[dict[str, Any]]] = {}
        # One background writer: Tune's event loop never waits on MLflow I/O, and a single
        # thread keeps every run's writes in order.
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mlflow-writer")
        self._prices = accounting.load_price_table()
        a = spec.accounting
        self._intensity = accounting.carbon_intensity_g_per_kwh(
            a.country_iso_code, a.carbon_g_per_kwh
        )
        self._start()

    def __getstate__(self) -> dict[str, Any]:
        # Tune pickles its callbacks into tuner.pkl; threads and clients do not pickle and
        # a resumed sweep builds a fresh callback anyway.
        state = self.__dict__.copy()
        state["_writer"] = state["client"] = None
        return state

    def _submit(
        self, what: str, fn: Any, *args: Any, background: bool = False, **kwargs: Any
    ) -> None:
        """Run one MLflow write; never let it stop the sweep.

        Per-epoch writes are synchronous, so an interrupted sweep has logged every
        result Tune delivered. A finished trial's closing work (plots, ~0.3 s) goes
        to the writer thread, off Tune's event loop, where inline trials wait for
        their reports to be taken; `flush()` (end of sweep, Ctrl-C included) drains it.
        """

        def run() -> None:
            try:
                fn(*args, **kwargs)
            except Exception as exc:  # tracking must never stop the sweep
                log.warning("MLflow: %s failed: %s", what, exc)

        if background:
            self._writer.submit(run)
        else:
            run()

    def flush(self) -> None:
        """Wait until every queued write has reached MLflow."""
        self._writer.shutdown(wait=True)
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mlflow-writer")

    # -- runs ------------------------------------------------------------------------------

    def _start(self) -> None:
        from mlflow.entities import Param, RunTag

        self.client = prepare_store(self.uri)
        name = self.spec.tracking.experiment or self.spec.name
        exp = self.client.get_experiment_by_name(name)
        self.experiment_id = (
            exp.experiment_id
            if exp
            else self.client.create_experiment(name, artifact_location=_artifact_location(self.uri))
        )
        sweeps = self.client.search_runs(
            [self.experiment_id], filter_string="tags.`cpsweep.kind` = 'sweep'"
        )
        # Only --resume continues a parent run: a fresh sweep in a directory whose results
        # were deleted is a new sweep (search_runs lists the latest first).
        existing = [r for r in sweeps if r.data.tags.get("cpsweep.output_dir") == str(self.out_dir)]
        if existing and self.resume:  # a resumed sweep continues its parent run and child runs
            self.parent_id = existing[0].info.run_id
            self.client.update_run(self.parent_id, status="RUNNING")
            for r in self.client.search_runs(
                [self.experiment_id],
                filter_string=f"tags.`mlflow.parentRunId` = '{self.parent_id}'",
            ):
                self.runs[r.data.tags["cpsweep.trial_id"]] = r.info.run_id
                if r.info.status == "KILLED":  # interrupted: it continues now
                    self.client.update_run(r.info.run_id, status="RUNNING")
            log.info("MLflow: resuming parent run %s", self.parent_id)
            return
        tags = {
            "cpsweep.kind": "sweep",
            "cpsweep.sweep": self.spec.name,
            "cpsweep.output_dir": str(self.out_dir),
            "mlflow.runName": self.spec.name,
            "mlflow.note.content": self.spec.description or f"cpsweep sweep {self.spec.name}",
        }
        if os.environ.get("RAY_JOB_SUBMISSION_ID"):
            tags["cpsweep.job_id"] = os.environ["RAY_JOB_SUBMISSION_ID"]
        run = self.client.create_run(self.experiment_id, tags=tags)
        self.parent_id = run.info.run_id
        params = {f"train.{k}": v for k, v in _flatten(self.spec.train.model_dump()).items()}
        params.update(
            {
                f"search.{k}": str(v.model_dump(exclude_none=True))
                for k, v in self.spec.search_space.items()
            }
        )
        params.update(
            {
                "num_samples": str(self.spec.num_samples),
                "scheduler.scope": self.spec.scheduler.scope,
                "scheduler.mode": self.spec.scheduler.mode,
            }
        )
        items = [Param(k, v[:6000]) for k, v in params.items()]
        for i in range(0, len(items), 100):
            self.client.log_batch(self.parent_id, params=items[i : i + 100])
        self.client.log_dict(self.parent_id, self.spec.model_dump(mode="json"), "spec.json")
        self.client.log_batch(self.parent_id, tags=[RunTag("cpsweep.tracking_uri", self.uri)])
        log.info("MLflow: experiment %r, parent run %s (%s)", name, self.parent_id, self.uri)

    def _child(self, trial: Any) -> str:
        tid = trial.trial_id
        if tid in self.runs:
            return self.runs[tid]
        train = train_dict_for(trial.config)
        arm = trial.config.get("arm")
        label = arm or ",".join(
            f"{k.split('.')[-1]}={v}" for k, v in trial.config.get("params", {}).items()
        )
        run = self.client.create_run(
            self.experiment_id,
            run_name=f"{tid} {label}".strip(),
            tags={
                "mlflow.parentRunId": self.parent_id,
                "cpsweep.kind": "trial",
                "cpsweep.trial_id": tid,
                "cpsweep.arm": str(arm),
                "cp.criterion": train["criterion"]["name"],
            },
        )
        self.runs[tid] = run.info.run_id
        from mlflow.entities import Param

        params = [Param(k, v) for k, v in _flatten(train).items()]
        params += [Param(f"search.{k}", str(v)) for k, v in trial.config.get("params", {}).items()]
        for i in range(0, len(params), 100):
            self.client.log_batch(run.info.run_id, params=params[i : i + 100])
        return run.info.run_id

    def _usage(self, trial: Any) -> TrialUsage:
        if trial.trial_id not in self.usage:
            self.usage[trial.trial_id] = self._recover_usage(trial)
        return self.usage[trial.trial_id]

    def _new_usage(self) -> TrialUsage:
        a = self.spec.accounting
        return TrialUsage(
            intensity_g_per_kwh=self._intensity,
            prices=self._prices,
            device=a.device,
            energy_usd_per_kwh=a.energy_usd_per_kwh,
            cpus_per_worker=self.spec.scaling.cpus_per_worker,
        )

    def _recover_usage(self, trial: Any) -> TrialUsage:
        """After a driver restart, continue cumulative values from the run's latest metrics."""
        u = self._new_usage()
        run_id = self.runs.get(trial.trial_id)
        if run_id:
            latest = self.client.get_run(run_id).data
            u.restore(latest.metrics, latest.tags)
        return u

    # -- Tune hooks ------------------------------------------------------------------------

    def on_trial_start(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        self.started.add(trial.trial_id)
        self._child(trial)

    def on_trial_result(
        self, iteration: int, trials: list[Any], trial: Any, result: dict, **info: Any
    ) -> None:
        from mlflow.entities import Metric, RunTag

        run_id = self._child(trial)
        if "error" in result:
            return
        epoch = int(result["epoch"])
        usage = self._usage(trial)
        if epoch <= usage.last_epoch:  # replayed after a retry: already logged
            return
        cum = usage.add_epoch(result)
        ts = int(time.time() * 1000)
        metrics = [
            Metric(k, float(v), ts, epoch)
            for k, v in result.items()
            if k not in _SKIP
            and isinstance(v, int | float)
            and not isinstance(v, bool)
            and v is not None
            and math.isfinite(float(v))
            and not k.startswith("cp/")
        ]
        stat = [k for k in (ANGLE, RATE_RATIO, HANDSHAKE_S, LAG_EPOCHS) if k in result]
        metrics += [Metric(k, float(result[k]), ts, epoch) for k in stat]
        metrics += [Metric(k, v, ts, epoch) for k, v in cum.items()]
        tags = [
            RunTag("cpsweep.last_epoch", str(epoch)),
            RunTag("cpsweep.usage", usage.state_tag()),
        ]
        tags += [RunTag(t, str(result[k])) for k, t in _TAG_KEYS.items() if k in result]
        if result.get(END_EPOCH) is not None:
            tags.append(RunTag("cp.end_epoch", str(result[END_EPOCH])))
        if result.get(SWITCH_EPOCH) is not None:
            tags.append(RunTag("cp.switch_epoch", str(result[SWITCH_EPOCH])))
        for i in range(0, len(metrics), 900):
            self._submit(
                f"epoch {epoch} of {trial.trial_id}",
                self.client.log_batch,
                run_id,
                metrics=metrics[i : i + 900],
                tags=tags if i == 0 else [],
            )
        self.history.setdefault(trial.trial_id, []).append({**result, **cum})

    def on_trial_complete(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        self._finish_trial(trial, "FINISHED")

    def on_trial_error(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        self._finish_trial(trial, "FAILED")

    def _finish_trial(self, trial: Any, status: str) -> None:
        self.closed.add(trial.trial_id)
        run_id = self._child(trial)
        history = list(self.history.get(trial.trial_id, []))
        self._submit(
            f"closing {trial.trial_id}",
            self._close_run,
            trial,
            run_id,
            status,
            history,
            background=True,
        )

    def _close_run(
        self, trial: Any, run_id: str, status: str, history: list[dict[str, Any]]
    ) -> None:
        from service.plots import log_trial_plots

        usage = self._usage(trial)
        saving = usage.estimated_savings()
        never = _full_recipe_throughout(
            trial.config.get("arm"), train_dict_for(trial.config)["criterion"]["name"]
        )
        if saving and not never:  # the full recipe throughout saves nothing by definition
            from mlflow.entities import Metric, RunTag

            ts = int(time.time() * 1000)
            self.client.log_batch(
                run_id,
                metrics=[
                    Metric(f"savings/{k}_pct", v, ts, usage.last_epoch) for k, v in saving.items()
                ]
                + [
                    Metric(f"baseline_est/{k}", v, ts, usage.last_epoch)
                    for k, v in usage.baseline_estimate().items()
                ],
                tags=[RunTag("savings.kind", "estimated")],
            )
        try:
            log_trial_plots(self.client, run_id, self._plot_history(history, run_id))
        except Exception as exc:  # plots must never lose the run
            log.warning("trial %s: plots failed: %s", trial.trial_id, exc)
        self.client.set_terminated(run_id, status=status)

    def _plot_history(self, hist: list[dict[str, Any]], run_id: str) -> list[dict[str, Any]]:
        if hist and hist[0].get("epoch") == 1:
            return hist
        from service.plots import history_from_mlflow

        return history_from_mlflow(self.client, run_id)

    def on_experiment_end(self, trials: list[Any], **info: Any) -> None:
        # After Ctrl-C, running trials end without on_trial_complete/error (see
        # unfinished_trials): their runs and the sweep's become KILLED instead of staying
        # RUNNING in the UI; --resume reopens them.
        unfinished = unfinished_trials(trials, self.started | set(self.history), self.closed)
        for tid in unfinished:
            if tid in self.runs:
                self._submit(
                    f"marking {tid} interrupted",
                    self.client.set_terminated,
                    self.runs[tid],
                    status="KILLED",
                )
        if self.parent_id:
            failed = any(getattr(t, "status", "") == "ERROR" for t in trials)
            status = "KILLED" if unfinished else "FAILED" if failed else "FINISHED"
            self._submit(
                "closing the sweep run", self.client.set_terminated, self.parent_id, status=status
            )
        self.flush()

    # -- summary ---------------------------------------------------------------------------

    def finish(self, summary: dict[str, Any]) -> dict[str, Any]:
        """Add MLflow ids, totals and savings to the sweep summary (and measured baselines)."""
        from service.usage import attach_measured_baselines

        self.flush()
        summary["mlflow"] = {
            "tracking_uri": self.uri,
            "experiment_id": self.experiment_id,
            "parent_run_id": self.parent_id,
        }
        for t in summary["trials"]:
            t["mlflow_run_id"] = self.runs.get(t["trial_id"])
            u = self.usage.get(t["trial_id"])
            if u is None and t["mlflow_run_id"]:
                latest = self.client.get_run(t["mlflow_run_id"]).data
                u = self._new_usage()
                u.restore(latest.metrics, latest.tags)
            t.update(u.totals() if u else {})
            criterion = (t.get("config") or {}).get("criterion", {}).get("name")
            never = _full_recipe_throughout(t.get("arm"), criterion)
            t["savings_pct"] = u.estimated_savings() if u and not never else {}
        attach_measured_baselines(summary, self.client)
        if self.parent_id:
            from service.sweep_run import log_sweep_results

            experiment = self.spec.tracking.experiment or self.spec.name
            log_sweep_results(self.client, summary, experiment, self.uri)
        return summary
