"""MLflow tracking of a sweep: one writer on the driver, as a Ray Tune callback.

A parent run per sweep (spec as artifact and params) and a child run per trial
(tag `mlflow.parentRunId`). Every reported epoch is logged with `step=epoch` in
one `log_batch` call, together with cumulative energy, CO2 and cost computed by
`service.accounting`. What is logged (names, keys, units) comes from
`service.mlflow_schema`; this module only writes it. A retried trial never logs an epoch twice: the last
logged epoch is kept per run (and recovered from MLflow after a restart).
"""

from __future__ import annotations

import json
import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from ray.tune import Callback

from service import accounting
from service import mlflow_schema as schema
from service.progress import unfinished_trials
from service.spec import SweepSpec
from service.usage import TrialUsage
from trainables.config import train_dict_for

__all__ = ["MLflowSweepCallback", "prepare_store", "resolve_tracking_uri"]

log = logging.getLogger(__name__)

_TAG_KEYS = {"energy/method": "energy.method", "device/name": "device.name", "cp/mode": "cp.mode"}


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


def _criterion(config: dict[str, Any]) -> str:
    return str(train_dict_for(config)["criterion"]["name"])


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
            else self.client.create_experiment(
                name, artifact_location=_artifact_location(self.uri), tags=schema.EXPERIMENT_TAGS
            )
        )
        if exp is not None:  # made by an older cpsweep or by hand: say what it holds
            for k, v in schema.EXPERIMENT_TAGS.items():
                if exp.tags.get(k) != v:
                    self.client.set_experiment_tag(self.experiment_id, k, v)
        view = schema.shared_view(sorted(self.spec.search_space))
        self.client.set_experiment_tag(self.experiment_id, schema.SHARED_VIEW_TAG, json.dumps(view))
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
        items = [Param(k, v) for k, v in schema.parent_params(self.spec).items()]
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
        run = self.client.create_run(
            self.experiment_id,
            run_name=schema.trial_run_name(trial.config, seed=train.get("seed")),
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

        params = [Param(k, v) for k, v in schema.trial_params(train).items()]
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
        usage.add_epoch(result)
        ts = int(time.time() * 1000)
        values = schema.epoch_metrics(result) | schema.state_metrics(usage.state())
        if not _full_recipe_throughout(trial.config.get("arm"), _criterion(trial.config)):
            values |= schema.estimate_metrics(usage.baseline_estimate(), usage.estimated_savings())
        metrics = [Metric(k, v, ts, epoch) for k, v in values.items()]
        tags = [RunTag(schema.LAST_EPOCH_TAG, str(epoch))]
        if usage.acc.device:
            tags.append(RunTag(schema.PRICE_DEVICE_TAG, usage.acc.device))
        tags += [RunTag(t, str(result[k])) for k, t in _TAG_KEYS.items() if k in result]
        if result.get("cp/end_epoch") is not None:
            tags.append(RunTag("cp.end_epoch", str(result["cp/end_epoch"])))
        if result.get("cp/switch_epoch") is not None:
            tags.append(RunTag("cp.switch_epoch", str(result["cp/switch_epoch"])))
        for i in range(0, len(metrics), 900):
            self._submit(
                f"epoch {epoch} of {trial.trial_id}",
                self.client.log_batch,
                run_id,
                metrics=metrics[i : i + 900],
                tags=tags if i == 0 else [],
            )
        self.history.setdefault(trial.trial_id, []).append({**result, **values})

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

        # The savings and the full-recipe estimate were logged with every epoch; the full
        # recipe throughout saves nothing by definition (no estimate logged).
        usage = self._usage(trial)
        if usage.estimated_savings() and not _full_recipe_throughout(
            trial.config.get("arm"), _criterion(trial.config)
        ):
            self.client.set_tag(run_id, "savings.kind", "estimated")
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
