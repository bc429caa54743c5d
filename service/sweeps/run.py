"""Run a SweepSpec on Ray Tune: local or on a cluster, fresh or resumed, with a summary."""

from __future__ import annotations

import contextlib
import glob
import hashlib
import json
import logging
import os
import signal
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import ray
from ray import tune

from service.reporting.report import upload_report
from service.results import SweepSummary
from service.spec import ScalingSpec, SweepSpec, build_param_space
from service.sweeps.load import DriverLoad, load_meters
from service.sweeps.moved import alias_moved_modules
from service.sweeps.progress import ProgressCallback
from service.sweeps.scheduler import CriticalPeriodScheduler
from service.sweeps.summary import summarize_results
from service.tracking.lifecycle import TrialTracker
from service.usercode import runtime_env_for
from trainables.core.config import ConfigError
from trainables.core.imports import import_dirs
from trainables.core.policy import POLICY_ENV
from trainables.core.trial import TrialOptions
from trainables.core.wire import control_actor_name, headline_of
from trainables.run.pool import pool_key, remove_sweep_groups
from trainables.run.worker import TRIAL_RESOURCE, trial_main

__all__ = [
    "concurrency_plan",
    "init_ray",
    "resolve_output_dir",
    "run_sweep",
]

log = logging.getLogger(__name__)

_LOCAL_TRIAL_SLOTS = 64  # trial drivers a local cluster can host (they hold no CPU)
_PROJECT_ROOT = Path(__file__).resolve().parents[1]


# Ray Train's controller polls worker reports every 2 s by default; a report waits in a
# depth-1 queue until then, so short epochs would each cost 2 s. 0.2 s keeps that small.
_TRAIN_POLL_ENV = {"RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.2"}


def init_ray(address: str | None, user_code: dict[str, Any] | None = None) -> None:
    """Connect to `address` / $RAY_ADDRESS, or start a local cluster with trial-driver slots.

    `user_code` (service.usercode.runtime_env_for) ships a spec's factory modules to a
    remote cluster; a local cluster's trials inherit $CPSWEEP_IMPORT_PATH instead. A policy
    in this process's environment (trainables.core.policy) reaches the trials either way."""
    if ray.is_initialized():
        return
    for k, v in _TRAIN_POLL_ENV.items():
        os.environ.setdefault(k, v)
    address = address or os.environ.get("RAY_ADDRESS")
    if address:
        runtime_env: dict[str, Any] = {"env_vars": {k: os.environ[k] for k in _TRAIN_POLL_ENV}}
        # A submitted job's driver already has the job's working_dir (Ray sets
        # RAY_JOB_CONFIG_JSON_ENV_VAR for it; RAY_JOB_ID is stripped there).
        if not os.environ.get("RAY_JOB_CONFIG_JSON_ENV_VAR"):
            runtime_env["working_dir"] = str(_PROJECT_ROOT)
            runtime_env["excludes"] = [".venv", "runs", "mlruns", "mlartifacts", "*.db", ".git"]
            extra = user_code or {}
            runtime_env["env_vars"].update(extra.get("env_vars", {}))
            if POLICY_ENV in os.environ:  # a job's own env vars reach its trials already
                runtime_env["env_vars"][POLICY_ENV] = os.environ[POLICY_ENV]
            if extra.get("py_modules"):
                runtime_env["py_modules"] = extra["py_modules"]
        ray.init(address=address, runtime_env=runtime_env, log_to_driver=False)
    else:
        _init_local()


def _init_local() -> None:
    """Start a local cluster. The dashboard is required (it frees a finished trial's
    placement group); when another Ray on this host holds its ports or a loaded machine
    starts it too slowly, try once more on a free port before giving up."""
    import socket

    # Ray starts workers at nice 15; on a shared host that starved trials (an epoch took
    # many times longer next to normal-priority neighbours). The user asked for this sweep.
    os.environ.setdefault("RAY_worker_niceness", "0")
    kwargs: dict[str, Any] = {
        "resources": {TRIAL_RESOURCE: _LOCAL_TRIAL_SLOTS},
        "log_to_driver": False,
        "include_dashboard": True,
    }
    try:
        ray.init(**kwargs)
    except Exception as exc:
        ray.shutdown()
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        log.warning("Ray did not start (%s); retrying with the dashboard on port %d", exc, port)
        ray.init(**kwargs, dashboard_port=port)


def _trial_resources(spec: SweepSpec) -> dict[str, float]:
    if spec.scaling.resolved_executor == "inline":  # the trial's process is the worker
        return {"CPU": spec.scaling.cpus_per_worker, "GPU": spec.scaling.gpus}
    if ray.cluster_resources().get(TRIAL_RESOURCE, 0) >= 1:
        return {"CPU": 0, TRIAL_RESOURCE: 1}
    log.warning(
        "the cluster declares no %r resource; trial drivers run with 0 CPUs. Start the head "
        "with --resources='{\"%s\": 64}' to bound and place them.",
        TRIAL_RESOURCE,
        TRIAL_RESOURCE,
    )
    return {"CPU": 0}


def _trial_retries(spec: SweepSpec) -> int:
    """Tune retries per trial. Inline trials are their own worker: a worker failure is a
    trial failure there, restarted by Tune from the trial's last checkpoint."""
    f = spec.failures
    if spec.scaling.resolved_executor != "inline":
        return f.trial_failures
    if -1 in (f.trial_failures, f.worker_failures):
        return -1
    return f.trial_failures + f.worker_failures


def concurrency_plan(scaling: ScalingSpec, cpus: float, gpus: float) -> int:
    """How many trials run at once on a cluster with `cpus` CPUs and `gpus` whole GPUs.

    Ray places a fractional GPU request on one GPU, so a GPU holds floor(1 / fraction)
    workers; whole-GPU workers take `gpus_per_worker` GPUs each. Raises ConfigError,
    naming the field to change, when not even one trial fits.
    """
    per_trial = scaling.num_workers * scaling.cpus_per_worker
    if per_trial > cpus:
        raise ConfigError(
            f"scaling: a trial needs {per_trial} CPUs ({scaling.num_workers} workers x "
            f"{scaling.cpus_per_worker}) but the cluster has {cpus:g}; lower "
            "scaling.num_workers or scaling.cpus_per_worker"
        )
    by_cpu = int(cpus // per_trial)
    if not scaling.use_gpu:
        return max(1, by_cpu)
    share = scaling.gpus
    if share < 1:  # single-worker trials (spec validation): n per GPU
        slots = int(gpus) * round(1 / share)
        need = f"{share:g} GPU"
    else:
        slots = int(gpus // (share * scaling.num_workers))
        need = f"{share * scaling.num_workers:g} GPUs ({scaling.num_workers} workers x {share:g})"
    if slots < 1:
        raise ConfigError(
            f"scaling.gpus_per_worker: a trial needs {need}, the cluster has {gpus:g}; lower "
            "scaling.gpus_per_worker or scaling.num_workers, add GPU nodes, or set "
            "scaling.use_gpu=false"
        )
    return min(by_cpu, slots)


def _cuda_on_workers(gpus: float) -> bool:
    """Whether a process holding `gpus` GPUs sees CUDA. A cluster may declare logical GPUs
    (`ray start --num-gpus`) without a device: DDP then needs gloo, not NCCL."""

    @ray.remote(num_cpus=0, num_gpus=gpus)
    def probe() -> bool:
        import torch

        return bool(torch.cuda.is_available())

    ref = probe.remote()
    try:
        seen = bool(ray.get(ref, timeout=300))
    except ray.exceptions.GetTimeoutError:  # every GPU busy: assume real ones (NCCL)
        ray.cancel(ref, force=True)
        log.warning("scaling.use_gpu: no GPU free for 300 s to probe CUDA; assuming NCCL")
        return True
    if not seen:
        log.warning(
            "scaling.use_gpu: Ray gave a GPU but the process sees no CUDA device; "
            "DDP trials use gloo and train on the CPU"
        )
    return seen


def _max_concurrent(spec: SweepSpec) -> int:
    if spec.max_concurrent_trials:
        return spec.max_concurrent_trials
    res = ray.cluster_resources()
    n = concurrency_plan(spec.scaling, float(res.get("CPU", 1)), float(res.get("GPU", 0)))
    log.info(
        "up to %d trials at once (%g CPUs, %g GPUs; %g GPU per worker)",
        n,
        res.get("CPU", 1),
        res.get("GPU", 0),
        spec.scaling.gpus,
    )
    return n


def _scheduler(spec: SweepSpec, out: Path, control_name: str) -> CriticalPeriodScheduler:
    inner = None
    if spec.scheduler.inner is not None:
        from ray.tune.schedulers import ASHAScheduler

        metric, mode = spec.scheduler.inner.compared(headline_of(spec.train.model_dump()))
        i = spec.scheduler.inner
        inner = ASHAScheduler(
            time_attr="epoch",
            metric=metric,
            mode=mode,
            max_t=spec.train.epochs,
            grace_period=i.grace_period,
            reduction_factor=i.reduction_factor,
        )
    return CriticalPeriodScheduler(
        criterion=None,  # spec.criterion is already each trial's default (build_param_space)
        scope=spec.scheduler.scope,
        cohort_keys=spec.scheduler.cohort_keys,
        cohort_min_trials=spec.scheduler.cohort_min_trials,
        inner=inner,
        mode=spec.scheduler.mode,
        state_path=out / "cp_decisions.jsonl",
        control_actor=control_name,
    )


def _tracking_callbacks(
    spec: SweepSpec, out: Path, resume: bool, tracker: TrialTracker
) -> list[Any]:
    if not spec.tracking.enabled:
        return []
    from service.tracking.callback import MLflowSweepCallback

    return [MLflowSweepCallback(spec, out, resume=resume, tracker=tracker)]


def _holds_sweep(out: Path, name: str) -> bool:
    return (out / "ray" / name).is_dir()


def resolve_output_dir(name: str, output_dir: str | Path | None, resume: bool) -> Path:
    """Where a sweep writes. An explicit directory is used as given; by default a fresh
    sweep never touches an earlier one: runs/<name>, else runs/<name>-2, -3, ... And
    `--resume` alone continues the latest of those."""
    if output_dir is not None:
        return Path(output_dir).resolve()
    base = Path("runs") / name

    def numbered(n: int) -> Path:  # runs/<name> is number 1
        return base if n == 1 else base.with_name(f"{name}-{n}")

    suffixes = (d.name[len(name) + 1 :] for d in base.parent.glob(f"{glob.escape(name)}-*"))
    candidates = [1] + [int(x) for x in suffixes if x.isdigit() and int(x) >= 2]
    held = sorted(n for n in candidates if _holds_sweep(numbered(n), name))
    if resume:
        return numbered(held[-1] if held else 1).resolve()
    # After the highest one held, so that the latest sweep is always the highest number.
    out = numbered(held[-1] + 1) if held else base
    if held:
        held_dir = numbered(held[-1])
        log.warning(
            "%s already holds an earlier sweep %s (kept; continue it with --resume --output-dir "
            "%s); this one writes to %s",
            held_dir,
            name,
            held_dir,
            out,
        )
    return out.resolve()


def run_sweep(
    spec: SweepSpec,
    *,
    address: str | None = None,
    output_dir: str | Path | None = None,
    resume: bool = False,
    callbacks: Sequence[Any] = (),
    trial_options: dict[str, Any] | None = None,
) -> SweepSummary:
    """Run (or resume) the sweep; writes `<output_dir>/summary.json` and returns it.

    `trial_options` are merged into every trial's options (testing hooks such as
    `fault_kill_epoch` / `fault_marker`).
    """
    out = resolve_output_dir(spec.name, output_dir, resume)
    exp_dir = _prepare_output(spec, out, resume)
    init_ray(address, runtime_env_for(spec, _PROJECT_ROOT))
    # Inline trials checkpoint every epoch with num_to_keep=2, which makes Tune snapshot its
    # experiment state after every other checkpoint (a small local write) and warn each time.
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    t0 = time.perf_counter()
    # Stable per output directory, so a resumed sweep's trials find their actor again.
    control_name = control_actor_name(
        f"{spec.name}:{hashlib.sha1(str(out).encode()).hexdigest()[:10]}"
    )
    scheduler = _scheduler(spec, out, control_name)
    all_callbacks, tracking, progress = _sweep_callbacks(spec, out, resume, callbacks)
    trainable = tune.with_resources(trial_main, _trial_resources(spec))
    space = build_param_space(spec, _trial_opts(spec, out, control_name, trial_options))
    if resume:
        tuner = _restored_tuner(exp_dir, trainable, space, all_callbacks, scheduler)
    else:
        tuner = _new_tuner(spec, out, trainable, space, all_callbacks, scheduler)
    grid = _fit(tuner, tracking, control_name)
    summary = summarize_results(
        spec, grid, scheduler, time.perf_counter() - t0, unfinished=progress.unfinished
    )
    summary = summary.model_copy(update={"output_dir": str(out)})
    for cb in tracking:
        summary = cb.finish(summary)
    _upload_report(summary)
    (out / "summary.json").write_text(json.dumps(summary.to_json(), indent=2))
    log.info("summary: %s", out / "summary.json")
    return summary


def _sweep_callbacks(
    spec: SweepSpec, out: Path, resume: bool, extra: Sequence[Any]
) -> tuple[list[Any], list[Any], ProgressCallback]:
    """Every callback of the sweep's Tuner, the tracking ones and the progress one."""
    tracker = TrialTracker()
    tracking = _tracking_callbacks(spec, out, resume, tracker)
    progress = ProgressCallback(spec.train.epochs, tracker, headline_of(spec.train.model_dump()))
    # Warns once, with numbers, when results or Tune's own steps approach the loop's
    # ceiling or MLflow falls behind (service/sweeps/load.py); first and last in the list.
    backlog = tracking[0].backlog if tracking else (lambda: None)
    begin, end = load_meters(DriverLoad(), backlog)
    return [begin, progress, *tracking, *extra, end], tracking, progress


def _fit(tuner: tune.Tuner, tracking: list[Any], control_name: str) -> tune.ResultGrid:
    """tuner.fit() (SIGTERM as Ctrl-C); on the way out, the sweep's rank groups go."""
    try:
        with _sigterm_as_sigint():
            return tuner.fit()
    except BaseException:  # the writes stay in the tracking log: `cpsweep sync` or --resume
        for cb in tracking:
            cb.close(timeout_s=5.0)
        raise
    finally:  # the train executor's rank groups: Ray keeps their resources until removed
        remove_sweep_groups(pool_key(control_name))


def _prepare_output(spec: SweepSpec, out: Path, resume: bool) -> Path:
    """Check that `out` holds a sweep to resume (or none to overwrite), create it and write
    spec.json; returns Tune's experiment directory under it."""
    exp_dir = out / "ray" / spec.name
    if resume and not exp_dir.is_dir():
        raise ConfigError(f"--resume: nothing to resume in {exp_dir}; run without --resume first")
    if not resume and exp_dir.is_dir():
        raise ConfigError(
            f"{exp_dir} already holds a sweep {spec.name}; pass --resume to continue it, or "
            "another --output-dir (or none: runs/<name>-2, -3, ... are picked for you)"
        )
    out.mkdir(parents=True, exist_ok=True)
    (out / "spec.json").write_text(spec.model_dump_json(indent=2))
    return exp_dir


def _trial_opts(
    spec: SweepSpec, out: Path, control_name: str, hooks: dict[str, Any] | None
) -> TrialOptions:
    """What every trial's function gets besides its train config (trainables.core.trial);
    `hooks`: testing hooks such as fault_kill_epoch, validated with the rest."""
    scaling = spec.scaling
    executor = scaling.resolved_executor
    return TrialOptions.model_validate(
        {
            "num_workers": scaling.num_workers,
            "cpus_per_worker": scaling.cpus_per_worker,
            "use_gpu": scaling.use_gpu,
            "gpus_per_worker": scaling.gpus,
            "executor": executor,
            "worker_pool": scaling.worker_pool,
            "worker_failures": spec.failures.worker_failures,
            "mode": spec.scheduler.mode,
            "control_actor": control_name,
            "storage_path": str(out / "train_runs"),
            "measure_energy": spec.accounting.measure_energy,
            "import_paths": import_dirs(),  # spec directory ($CPSWEEP_IMPORT_PATH), working dir
            "cuda_on_workers": (
                _cuda_on_workers(scaling.gpus) if scaling.use_gpu and executor == "train" else True
            ),
            **(hooks or {}),
        }
    )


def _new_tuner(
    spec: SweepSpec,
    out: Path,
    trainable: Any,
    space: dict[str, Any],
    callbacks: list[Any],
    scheduler: CriticalPeriodScheduler,
) -> tune.Tuner:
    run_config = tune.RunConfig(
        name=spec.name,
        storage_path=str(out / "ray"),
        callbacks=callbacks,
        failure_config=tune.FailureConfig(max_failures=_trial_retries(spec)),
        # Inline trials checkpoint every epoch; 2 kept bounds the disk. Tune then forces an
        # experiment-state snapshot whenever a trial has checkpointed twice since the last
        # one, and a snapshot serialises every trial that reported, with the metric
        # statistics of each (bench/driver_scale.py `tune_state` measures their size,
        # BENCHMARKS.md section 6). Its periodic snapshot stays on "auto"
        # (TUNE_GLOBAL_CHECKPOINT_S: Tune keeps it under 5% of the loop); the forced ones
        # are what `DriverLoad` reports as stalls at a thousand trials.
        checkpoint_config=tune.CheckpointConfig(num_to_keep=2),
        verbose=0,
    )
    return tune.Tuner(
        trainable,
        param_space=space,
        tune_config=tune.TuneConfig(
            scheduler=scheduler,
            num_samples=spec.num_samples,
            max_concurrent_trials=_max_concurrent(spec),
            # A trial's process stays warm for the next one (torch imported, threads
            # set): inline trials train in it; Train trials' drivers skip a process
            # start per trial (bench/overheads.py measures it).
            reuse_actors=True,
        ),
        run_config=run_config,
    )


def _restored_tuner(
    exp_dir: Path,
    trainable: Any,
    space: dict[str, Any],
    callbacks: list[Any],
    scheduler: CriticalPeriodScheduler,
) -> tune.Tuner:
    """The interrupted sweep in `exp_dir`, with this session's callbacks and scheduler."""
    log.info("resuming %s: finished trials are kept, unfinished ones continue", exp_dir)
    alias_moved_modules()  # tuner.pkl of a sweep begun before service/ moved: old names
    tuner = tune.Tuner.restore(
        str(exp_dir), trainable, resume_unfinished=True, resume_errored=True, param_space=space
    )
    # tuner.pkl holds the old callbacks and scheduler (whose state Tune does not save):
    # put in fresh ones; the scheduler reloads its decisions from cp_decisions.jsonl.
    # Private attributes, on purpose: Tuner.restore (Ray 2.60, pinned <2.61 in pyproject)
    # takes no callbacks or scheduler, and the public way that does, the legacy
    # tune.run(resume=...), returns another result type. tests/ray/test_cluster.py's
    # interrupt-and-resume test fails if these names change.
    internal = tuner._local_tuner
    assert internal is not None
    internal._run_config.callbacks = callbacks
    internal._tune_config.scheduler = scheduler
    return tuner


def _upload_report(summary: SweepSummary) -> None:
    """The report on the sweep's own run, built from what MLflow holds once tracking has
    finished; while MLflow still lacks writes, `cpsweep sync` uploads it after them."""
    m, t = summary.mlflow, summary.tracking
    if m and t and t["all_in_mlflow"] and m.parent_run_id:
        upload_report(m.tracking_uri, m.experiment, m.parent_run_id)


@contextlib.contextmanager
def _sigterm_as_sigint() -> Iterator[None]:
    """SIGTERM (Kubernetes stopping the driver's pod, `kill`) ends the sweep as Ctrl-C does:
    Tune saves its state, queued MLflow writes drain; by default it would die at once."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, lambda *_: os.kill(os.getpid(), signal.SIGINT))
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
