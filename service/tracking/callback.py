"""MLflow tracking of a sweep, as a Ray Tune callback: WHAT is logged, never waiting on MLflow.

A parent run per sweep (spec as artifact and params) and a child run per trial
(tag `mlflow.parentRunId`). Every reported epoch is logged with `step=epoch`,
together with cumulative energy, CO2 and cost computed by `service.tracking.accounting`.

HOW it reaches MLflow is `service.tracking.writer`: the callback only appends each
write to the sweep's tracking log (`service.tracking.wal`, under the output
directory); a background thread sends the log to MLflow in large batches, retries
through outages and replays after a crash. A retried trial never logs an epoch twice:
the last logged epoch is kept per run in that log.
"""

from __future__ import annotations

import json
import logging
import os
import time
import uuid
from pathlib import Path
from typing import Any

from ray.tune import Callback

from service.results import MlflowIds, SweepSummary, TrialSummary, headline_tags
from service.spec import SweepSpec, runs_full_recipe
from service.tracking import accounting, schema
from service.tracking.client import configure_client, prepare_store
from service.tracking.lifecycle import TrialTracker
from service.tracking.parent_run import log_sweep_results
from service.tracking.reader import resolve_tracking_uri
from service.tracking.usage import TrialUsage, with_measured_baselines
from service.tracking.view import RUN_COLOR_TAG, trial_color
from service.tracking.wal import WAL_NAME, WriteAheadLog, log_report
from service.tracking.writer import TrackingWriter
from trainables.core.trial import train_dict_for
from trainables.core.wire import END_EPOCH, MODE, SWITCH_EPOCH, headline_of

__all__ = [
    "MLflowSweepCallback",
    "epoch_record",
    "log_final",
    "prepare_store",
    "writer_threads",
]

log = logging.getLogger(__name__)

_TAG_KEYS = {"energy/method": "energy.method", "device/name": "device.name", MODE: "cp.mode"}


def _artifact_location(uri: str) -> str | None:
    """For a sqlite store, keep artifacts beside the database (not in the driver's cwd)."""
    if uri.startswith("sqlite:///"):
        return (Path(uri[len("sqlite:///") :]).parent / "mlartifacts").resolve().as_uri()
    return None  # a tracking server decides where artifacts go


def _criterion(config: dict[str, Any]) -> str:
    return str(train_dict_for(config)["criterion"]["name"])


class MLflowSweepCallback(Callback):
    """Logs the sweep to MLflow from the Tune driver; `finish` adds ids and totals to the summary.

    Every hook only computes what to log and appends it to the tracking log (a few
    tens of microseconds); nothing here waits for MLflow."""

    def __init__(
        self,
        spec: SweepSpec,
        out_dir: Path,
        resume: bool = False,
        tracker: TrialTracker | None = None,
    ) -> None:
        self.spec, self.out_dir, self.resume = spec, out_dir, resume
        self.uri = resolve_tracking_uri(spec.tracking.uri)
        self.tracker = tracker or TrialTracker()
        self.usage: dict[str, TrialUsage] = {}
        self._full: dict[str, bool] = {}  # trial id -> runs the full recipe throughout
        self._report: dict[str, Any] = {}
        self._prices = accounting.load_price_table()
        a = spec.accounting
        self._intensity = accounting.carbon_intensity_g_per_kwh(
            a.country_iso_code, a.carbon_g_per_kwh
        )
        configure_client(spec.tracking.request_timeout_s)
        self.wal = WriteAheadLog(out_dir / WAL_NAME, max_bytes=spec.tracking.wal_max_mb * 2**20)
        self.writer = TrackingWriter(
            self.wal, self.uri, final=log_final, threads=writer_threads(spec, self.uri)
        )
        if self.uri.startswith("sqlite:"):
            # A local file: create and migrate it before any trial starts (cheap, and
            # nothing else may race its first migration); a server's store is its own.
            self.writer.client = prepare_store(self.uri)
        self._start()
        self.writer.start()

    def __getstate__(self) -> dict[str, Any]:
        # Tune pickles its callbacks into tuner.pkl; threads and files do not pickle and
        # a resumed sweep builds a fresh callback anyway.
        state = self.__dict__.copy()
        state["wal"] = state["writer"] = None
        return state

    @property
    def state(self) -> Any:
        return self.wal.state

    def backlog(self) -> int:
        """Writes in the tracking log that MLflow has not acknowledged yet."""
        return int(self.wal.last_seq - self.state.acked)

    def flush(self, timeout_s: float | None = None) -> bool:
        """Wait until every write so far is in MLflow (at most tracking.drain_timeout_s)."""
        if timeout_s is None:
            timeout_s = self.spec.tracking.drain_timeout_s
        return self.writer.drain(timeout_s)

    # -- runs ------------------------------------------------------------------------------

    def _start(self) -> None:
        sweep = self.state.refs.get("sweep")
        if sweep is not None and sweep.created:
            if self.resume:  # a resumed sweep continues its parent run and child runs
                self.wal.append({"op": "status", "ref": "sweep", "status": "RUNNING"})
                if sweep.run_id:  # service/jobs/trials.py finds a job's run by this line
                    log.info("MLflow: resuming parent run %s (%s)", sweep.run_id, self.wal.path)
            return
        name = self.spec.tracking.experiment or self.spec.name
        tags = {
            "cpsweep.kind": "sweep",
            "cpsweep.sweep": self.spec.name,
            "cpsweep.output_dir": str(self.out_dir),
            "cpsweep.tracking_uri": self.uri,
            "mlflow.runName": self.spec.name,
            "mlflow.note.content": self.spec.description or f"cpsweep sweep {self.spec.name}",
            **headline_tags(headline_of(self.spec.train.model_dump())),
        }
        if os.environ.get("RAY_JOB_SUBMISSION_ID"):
            tags["cpsweep.job_id"] = os.environ["RAY_JOB_SUBMISSION_ID"]
        params = schema.parent_params(self.spec)
        self.state.uid = uuid.uuid4().hex[:12]
        self._run_op(
            "sweep",
            tags,
            params,
            experiment=name,
            artifact_location=_artifact_location(self.uri),
            dicts={"spec.json": self.spec.model_dump(mode="json")},
        )
        log.info("MLflow: experiment %r at %s (via %s)", name, self.uri, self.wal.path)

    def _run_op(self, ref: str, tags: dict[str, str], params: dict[str, str], **extra: Any) -> None:
        # A key unique to this sweep and run: finds a run whose creation MLflow did but
        # whose answer was lost, so a retry does not create it twice.
        tags = {**tags, "cpsweep.wal_key": f"{self.state.uid}/{ref}"}
        self.wal.append({"op": "run", "ref": ref, "tags": tags, "params": params, **extra})
        self.state.ref(ref).created = True

    def _child(self, trial: Any) -> str:
        ref = f"trial:{trial.trial_id}"
        st = self.state.refs.get(ref)
        if st is not None and st.created:
            if st.status == "KILLED":  # interrupted: it continues now
                self.wal.append({"op": "status", "ref": ref, "status": "RUNNING"})
                st.status = "RUNNING"
            return ref
        tid = trial.trial_id
        train = train_dict_for(trial.config)
        arm = trial.config.get("arm")
        # Trials in start order (a resumed sweep counts the ones its log already holds).
        index = sum(n.startswith("trial:") and rs.created for n, rs in self.state.refs.items())
        tags = {
            "mlflow.runName": schema.trial_run_name(trial.config, seed=train.get("seed")),
            RUN_COLOR_TAG: trial_color(index),
            "cpsweep.kind": "trial",
            "cpsweep.trial_id": tid,
            "cpsweep.arm": str(arm),
            "cp.criterion": train["criterion"]["name"],
        }
        params = schema.trial_params(train)
        self._run_op(ref, tags, params, parent="sweep")
        return ref

    def _usage(self, trial: Any) -> TrialUsage:
        if trial.trial_id not in self.usage:
            self.usage[trial.trial_id] = self._recover_usage(trial.trial_id)
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

    def _recover_usage(self, trial_id: str) -> TrialUsage:
        """After a driver restart, continue cumulative values from the tracking log."""
        u = self._new_usage()
        st = self.state.refs.get(f"trial:{trial_id}")
        if st is not None and st.usage:
            u.restore({}, {"cpsweep.usage": st.usage})
        return u

    # -- Tune hooks ------------------------------------------------------------------------

    def on_trial_start(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        self.tracker.start(trial.trial_id)
        self._child(trial)

    def on_trial_result(
        self, iteration: int, trials: list[Any], trial: Any, result: dict, **info: Any
    ) -> None:
        self.tracker.start(trial.trial_id)
        ref = self._child(trial)
        if "error" in result:
            return
        epoch = int(result["epoch"])
        usage = self._usage(trial)
        if epoch <= max(usage.last_epoch, self.state.ref(ref).last_step):
            return  # replayed after a retry or a resume: already logged
        usage.add_epoch(result)
        if trial.trial_id not in self._full:  # the config is fixed: resolve it once
            arm, rule = trial.config.get("arm"), _criterion(trial.config)
            self._full[trial.trial_id] = runs_full_recipe(arm, rule)
        metrics, tags = epoch_record(result, usage, estimate=not self._full[trial.trial_id])
        ts = int(time.time() * 1000)
        self.wal.append(
            {
                "op": "log",
                "ref": ref,
                "step": epoch,
                "epoch": epoch,
                "ts": ts,
                "m": metrics,
                "t": tags,
                # The accounting state, for a restarted driver (the log's, not MLflow's).
                "usage": json.dumps(usage.state()),
            }
        )
        self.state.ref(ref).last_step = epoch

    def on_trial_complete(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        self._finish_trial(trial, "FINISHED")

    def on_trial_error(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        self._finish_trial(trial, "FAILED")

    def _finish_trial(self, trial: Any, status: str) -> None:
        self.tracker.conclude(trial.trial_id)
        ref = self._child(trial)
        usage = self._usage(trial)
        metrics: dict[str, float] = {}  # the estimate and savings went with every epoch
        tags: dict[str, str] = {}
        never = runs_full_recipe(trial.config.get("arm"), _criterion(trial.config))
        if usage.estimated_savings() and not never:  # the full recipe saves nothing
            tags = {"savings.kind": "estimated"}
        self.wal.append(
            {
                "op": "close",
                "ref": ref,
                "status": status,
                "step": usage.last_epoch,
                "ts": int(time.time() * 1000),
                "m": metrics,
                "t": tags,
                "plots": self.spec.tracking.plots,
            }
        )
        self.state.ref(ref).status = status

    def on_experiment_end(self, trials: list[Any], **info: Any) -> None:
        # After Ctrl-C, running trials end without on_trial_complete/error (see
        # TrialTracker.unfinished): their runs and the sweep's become KILLED instead of
        # staying RUNNING in the UI; --resume reopens them.
        unfinished = self.tracker.unfinished(trials)
        for tid in unfinished:
            st = self.state.refs.get(f"trial:{tid}")
            if st is not None and st.created:
                self.wal.append({"op": "status", "ref": f"trial:{tid}", "status": "KILLED"})
                st.status = "KILLED"
        failed = any(getattr(t, "status", "") == "ERROR" for t in trials)
        status = "KILLED" if unfinished else "FAILED" if failed else "FINISHED"
        self.wal.append({"op": "status", "ref": "sweep", "status": status})
        self.writer.notify()

    # -- summary ---------------------------------------------------------------------------

    def finish(self, summary: SweepSummary) -> SweepSummary:
        """Add MLflow ids, totals and savings to the sweep summary (and measured baselines),
        queue the sweep's totals and summary for its run, and say what reached MLflow."""
        deadline = time.monotonic() + self.spec.tracking.drain_timeout_s
        self.flush(deadline - time.monotonic())
        refs = self.state.refs
        ids = MlflowIds(
            tracking_uri=self.uri,
            experiment=self.spec.tracking.experiment or self.spec.name,
            experiment_id=refs["sweep"].experiment_id if "sweep" in refs else None,
            parent_run_id=refs["sweep"].run_id if "sweep" in refs else None,
        )
        trials = with_measured_baselines([self._with_usage(t) for t in summary.trials])
        ts = int(time.time() * 1000)
        for t in trials:
            if t.savings_measured_pct is not None:
                measured = {
                    f"savings_measured/{k}_pct": v for k, v in t.savings_measured_pct.items()
                }
                self.wal.append(
                    {
                        "op": "log",
                        "ref": f"trial:{t.trial_id}",
                        "step": t.epochs,
                        "ts": ts,
                        "m": measured,
                        "t": {"cpsweep.baseline_trial_id": str(t.baseline_trial_id)},
                    }
                )
        summary = summary.model_copy(
            update={"mlflow": ids, "trials": tuple(trials), "tracking": self.report()}
        )
        self.wal.append({"op": "final", "summary": summary.to_json()})
        self.flush(max(0.0, deadline - time.monotonic()))
        return summary.model_copy(update={"tracking": self.close()})

    def _with_usage(self, t: TrialSummary) -> TrialSummary:
        """`t` with its MLflow run, what it consumed and its estimated savings."""
        st = self.state.refs.get(f"trial:{t.trial_id}")
        u = self.usage.get(t.trial_id)
        if u is None and st is not None and st.usage:
            u = self._recover_usage(t.trial_id)
        never = runs_full_recipe(t.arm, (t.config.get("criterion") or {}).get("name"))
        return t.model_copy(
            update={
                "mlflow_run_id": st.run_id if st else None,
                **(u.totals() if u else {}),
                "savings_pct": u.estimated_savings() if u and not never else {},
            }
        )

    def close(self, timeout_s: float = 0.0) -> dict[str, Any]:
        """Stop the writer (after at most `timeout_s` more of draining); warn about what is
        left for `cpsweep sync`. Idempotent: the sweep calls it on every way out."""
        if self.writer.running:
            self.flush(timeout_s)
            self.writer.stop()
            self._report = self.report()
            self._warn_pending(self._report)
        return self._report or self.report()

    def report(self) -> dict[str, Any]:
        """What reached MLflow: results delayed by an outage, and what is still pending."""
        return log_report(self.wal, delayed=len(self.writer.stats.delayed))

    def _warn_pending(self, report: dict[str, Any]) -> None:
        if report["all_in_mlflow"]:
            return
        log.warning(
            "MLflow at %s did not take everything: %d results (and the sweep's closing writes) "
            "are kept in %s; upload them when MLflow is back with:  cpsweep sync %s",
            self.uri,
            report["pending_results"],
            self.wal.path,
            self.out_dir,
        )


def writer_threads(spec: SweepSpec, uri: str) -> int:
    """Connections the writer uses side by side: a server takes several, a sqlite file one."""
    return 1 if uri.startswith("sqlite:") else spec.tracking.writer_threads


def epoch_record(
    result: dict[str, Any], usage: TrialUsage, estimate: bool = True
) -> tuple[dict[str, float], dict[str, str]]:
    """The metrics and tags one reported epoch logs to its trial's run
    (`service.tracking.schema` names and scales them)."""
    metrics = schema.epoch_metrics(result) | schema.state_metrics(usage.state())
    if estimate:
        metrics |= schema.estimate_metrics(usage.baseline_estimate(), usage.estimated_savings())
    tags = {schema.LAST_EPOCH_TAG: str(result["epoch"])}
    if usage.acc.device:
        tags[schema.PRICE_DEVICE_TAG] = usage.acc.device
    tags.update({t: str(result[k]) for k, t in _TAG_KEYS.items() if k in result})
    if result.get(END_EPOCH) is not None:
        tags["cp.end_epoch"] = str(result[END_EPOCH])
    if result.get(SWITCH_EPOCH) is not None:
        tags["cp.switch_epoch"] = str(result[SWITCH_EPOCH])
    return metrics, tags


def log_final(client: Any, summary: dict[str, Any], runs: dict[str, str]) -> None:
    """The writer's last op (`summary`: the log's JSON of a SweepSummary): the sweep's
    totals and summary on its parent run, with the run ids MLflow gave."""
    s = SweepSummary.model_validate(summary)
    if s.mlflow is None or not runs.get("sweep"):
        return
    trials = tuple(
        t.model_copy(update={"mlflow_run_id": runs.get(f"trial:{t.trial_id}")}) for t in s.trials
    )
    ids = s.mlflow.model_copy(update={"parent_run_id": runs["sweep"]})
    log_sweep_results(client, s.model_copy(update={"mlflow": ids, "trials": trials}), strict=True)
