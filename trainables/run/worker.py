"""Ray side of a trial: the Tune function trainable and the per-worker DDP loop.

A trial is a Tune *function* (Ray 2.60 runs Train V2, where `Tuner(trainer)` fails).
With the `train` executor each trial starts a Ray Train `TorchTrainer` (the default);
rank 0's reports reach Tune through the trial function's own thread
(`_ForwardReports`, `_fit_and_forward`). `scaling.worker_pool: true` runs the DDP
ranks on the trial driver's warm rank group instead (trainables/run/pool.py):
processes, process group and datasets outlive the trial, rank 0's reports and
checkpoints go to Tune from the trial's thread. Single-worker trials can skip the ranks
and run the same loop in the trial's process (`executor: inline`, the default when
`num_workers == 1`). Every epoch ends at the `CriticalPeriod` boundary
(trainables/method/period.py): rank 0 applies the rule, reads the scheduler's directive
through the control channel (trainables/run/channel.py) and broadcasts the decision
so all ranks switch recipe at the same epoch; then it reports metrics with a
checkpoint that carries the decision. A user's `train.loop` runs in the same
place with the same pieces (trainables/run/user_loop.py).
"""

from __future__ import annotations

import functools
import json
import logging
import os
import signal
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import ray
import torch
from ray.train.v2.api.callback import UserCallback

from trainables.core.config import TrainConfig
from trainables.core.trial import LoopOptions, Rendezvous, TrialOptions, options_of, train_dict_for
from trainables.core.wire import ROTATION_MEAN, SWITCH_EPOCH, control_actor_name
from trainables.run.channel import ControlChannel
from trainables.run.checkpoints import (
    checkpoint_epoch,
    checkpointed_reports,
    load_checkpoint,
    newer_checkpoints,
    replay,
    save_checkpoint,
    trial_storage_dir,
)
from trainables.run.energy import EnergyMeter
from trainables.run.engine import NonFiniteLossError, TrainingRun
from trainables.run.pool import (
    GroupSpec,
    RankSession,
    gpu_or_cpu,
    pack_dir,
    pool_key,
    release_group,
    run_on_group,
    unpack_dir,
)
from trainables.run.user_loop import run_user_loop

__all__ = [
    "EXECUTORS",
    "TRIAL_RESOURCE",
    "TrialFailed",
    "run_loop",
    "trial_main",
    "worker_loop",
]

log = logging.getLogger(__name__)

TRIAL_RESOURCE = "trial_driver"  # custom resource held by trial drivers instead of a CPU
EXECUTORS = ("auto", "train", "inline")  # where a trial's loop runs, see trial_main


class TrialFailed(RuntimeError):
    """A trial stopped for a reason retrying cannot fix (e.g. NaN loss)."""


# -- the per-worker loop ------------------------------------------------------------------


def _maybe_inject_fault(config: LoopOptions, epoch: int, rank: int) -> None:
    """Testing hook: trial option fault_kill_epoch=N SIGKILLs rank 0 once after epoch N's
    report (fault_marker names the file that makes it happen only once per sweep)."""
    at, marker = config.fault_kill_epoch, config.fault_marker
    if at and marker and rank == 0 and epoch == at and not os.path.exists(marker):
        Path(marker).write_text(str(os.getpid()))
        os.kill(os.getpid(), signal.SIGKILL)


_RANK_LOG_KEYS = ("epoch", "phase", "recipe/repeats", ROTATION_MEAN, SWITCH_EPOCH)


def _log_rank(path: Path, m: dict[str, Any]) -> None:
    """Per-rank record of what this rank trained with: shows all ranks switch together."""
    row = {k: m[k] for k in _RANK_LOG_KEYS}
    row["node_id"] = ray.get_runtime_context().get_node_id()
    row["pid"] = os.getpid()  # a pooled rank serves several trials
    with path.open("a") as fh:
        fh.write(json.dumps(row) + "\n")


class _TrainSession:
    """The loop runs on a Ray Train worker: one DDP rank of a TorchTrainer."""

    replay_after: int | None = None  # Ray Train resumes from its own latest checkpoint

    def __init__(self, use_gpu: bool) -> None:
        ctx = ray.train.get_context()
        self.rank, self.world = ctx.get_world_rank(), ctx.get_world_size()
        self.device = gpu_or_cpu(use_gpu, ray.train.torch.get_device)

    def checkpoint(self) -> Any:
        return ray.train.get_checkpoint()

    def dataset(self, cfg: TrainConfig) -> None:
        return None  # a fresh process per trial: the loop loads it

    def report(self, m: dict[str, Any], directory: str | None = None) -> None:
        ckpt = ray.train.Checkpoint.from_directory(directory) if directory else None
        ray.train.report(m, checkpoint=ckpt)


class _InlineSession:
    """The loop runs in the Tune trial's own process (single-worker trials).

    No Train controller, worker group or placement group to start: the trial's
    process trains, and its results and checkpoints go straight to Tune, which
    also restarts it from the last checkpoint when the process dies.
    """

    rank, world = 0, 1
    replay_after: int | None = None  # set on restore: Tune's checkpoint epoch, resend after it

    def __init__(self, use_gpu: bool) -> None:
        # Ray sets CUDA_VISIBLE_DEVICES to the GPU it gave this trial (a share of it
        # under fractional packing): that GPU is cuda:0 here.
        self.device = gpu_or_cpu(use_gpu, lambda: torch.device("cuda", 0))

    def checkpoint(self) -> Any:
        ckpt, self.replay_after = _tune_checkpoint()
        return ckpt

    def dataset(self, cfg: TrainConfig) -> None:
        return None

    def report(self, m: dict[str, Any], directory: str | None = None) -> None:
        ckpt = ray.tune.Checkpoint.from_directory(directory) if directory else None
        ray.tune.report(m, checkpoint=ckpt)


def _tune_checkpoint() -> tuple[Any, int | None]:
    """Tune's checkpoint of this trial, or a newer complete one left on local disk, and
    the epoch after which results must be resent (None: Tune has them all)."""
    ckpt = ray.tune.get_checkpoint()
    known = (checkpoint_epoch(ckpt.path) or 0) if ckpt is not None else 0
    trial_dir = str(Path(ckpt.path).parent) if ckpt is not None else trial_storage_dir()
    newer = newer_checkpoints(trial_dir, known) if trial_dir else []
    if newer:
        log.info(
            "restoring from %s (epoch > %d, Tune's latest was lost at Ctrl-C)", newer[0], known
        )
        return ray.tune.Checkpoint.from_directory(str(newer[0])), known
    return ckpt, None


_Session = _TrainSession | _InlineSession | RankSession


def _rank_loop(config: LoopOptions, session: _Session) -> None:
    """One DDP rank of a trial, on a Train worker or a pooled rank."""
    if session.rank == 0:
        _maybe_rendezvous(config.rendezvous, config.trial_id)
    run_loop(config, session)


def worker_loop(config: LoopOptions) -> None:
    """Runs on every Ray Train worker (one DDP rank); bound with functools.partial, as Ray
    Train's own config argument must be a dict."""
    _rank_loop(config, _TrainSession(config.use_gpu))


def run_loop(config: LoopOptions, session: _Session) -> None:
    """The training loop of one rank: train, measure, decide, report, checkpoint."""
    rank, world, device = session.rank, session.world, session.device
    cfg = config.train
    torch.set_num_threads(config.threads_per_worker)
    if cfg.loop is not None:
        _run_user_loop(config, session, cfg)
        return
    run = TrainingRun(cfg, device=device, rank=rank, world_size=world, dataset=session.dataset(cfg))
    reports = load_checkpoint(run, session.checkpoint())  # filled on rank 0 only
    if session.replay_after is not None:  # results Tune may not have kept: resend them
        replay(reports, session.replay_after, None, session.report)
    meter = EnergyMeter(enabled=config.measure_energy, use_gpu=device.type == "cuda")
    meter.start()
    device_name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    # Rank 0 talks to the scheduler at every boundary inside run_epoch (period.step).
    channel = ControlChannel(config.trial_id, config.control_actor, config.mode, rank)
    channel.attach(run.period)
    rank_log = _rank_log(config, rank)
    while run.epoch < cfg.epochs:
        try:
            m = run.run_epoch()
        except NonFiniteLossError as exc:  # same on every rank: the loss is all-reduced
            _end_on_nonfinite_loss(config, session, run.epoch, exc)
            meter.stop()
            return
        reading = meter.read()
        (m["energy/epoch_kwh"],) = run.sum_over_ranks([reading.kwh])
        m["energy/method"], m["device/name"] = reading.method, device_name
        m["device/workers"] = world
        if rank == 0:
            m.update(channel.take_metrics())
            reports.append(m)
        if rank_log:
            _log_rank(rank_log, m)
        with tempfile.TemporaryDirectory() as tmp:
            session.report(m, save_checkpoint(run, reports, tmp) if rank == 0 else None)
        _maybe_inject_fault(config, m["epoch"], rank)
        run.period.after_report()  # sync mode: the scheduler's verdict on this epoch
    meter.stop()


def _rank_log(config: LoopOptions, rank: int) -> Path | None:
    """This rank's per-epoch JSONL log when `rank_log_dir` is set (tests and debugging)."""
    if not config.rank_log_dir:
        return None
    path = Path(config.rank_log_dir) / f"rank{rank}.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def _end_on_nonfinite_loss(
    config: LoopOptions, session: _Session, epoch: int, exc: NonFiniteLossError
) -> None:
    """Retrying cannot help: end the run cleanly and leave the reason for trial_main
    (Train's Result only carries checkpointed metrics)."""
    if session.rank == 0:
        Path(config.error_file).parent.mkdir(parents=True, exist_ok=True)
        Path(config.error_file).write_text(str(exc))
    session.report({"epoch": epoch + 1, "error": str(exc)})


def _run_user_loop(config: LoopOptions, session: _Session, cfg: TrainConfig) -> None:
    """`train.loop`: the user's fit(ctx) with the same channel, checkpoints and reports."""
    ckpt = session.checkpoint()
    if session.replay_after is not None and ckpt is not None:
        replay(checkpointed_reports(ckpt), session.replay_after, None, session.report)
    channel = ControlChannel(config.trial_id, config.control_actor, config.mode, session.rank)
    meter = EnergyMeter(enabled=config.measure_energy, use_gpu=session.device.type == "cuda")
    meter.start()
    try:
        run_user_loop(
            cfg,
            session,
            checkpoint=ckpt,
            channel=channel,
            meter=meter,
            import_paths=config.import_paths,
        )
    finally:
        meter.stop()


# -- the Tune trial -----------------------------------------------------------------------


class _ForwardReports(UserCallback):
    """Runs in the Train controller: hands rank 0's reports to the trial function.

    Ray's TuneReportCallback hands them to Tune's main thread directly; when the
    last report arrives after `fit()` has returned, Tune's final "done" marker and
    that report meet in a depth-1 queue and the trial hangs (seen on a loaded
    2-core machine). Routing reports through the trial function's own thread,
    which calls `tune.report` in order and only then returns, rules that out.
    """

    def __init__(self, queue: Any) -> None:
        self.queue = queue

    def after_report(
        self, run_context: Any, metrics: list[dict[str, Any]], checkpoint: Any
    ) -> None:
        m = dict(metrics[0])
        if checkpoint:
            m["checkpoint_path"] = checkpoint.path
        self.queue.put((m, checkpoint))


class _GapFiller:
    """Forwards reports to Tune in order and fills gaps from the checkpoint.

    A report that Tune never saw (the driver was interrupted between Train's
    checkpoint and Tune's result) leaves a gap when the trial resumes from that
    checkpoint: Train restarts at the next epoch. The first report after a gap
    carries every earlier report in its checkpoint, so the missing epochs are
    sent first, marked `cp/replayed`; MLflow and the scheduler then see the
    whole curve. A rewind after a worker retry (epoch <= last) passes through.
    """

    def __init__(self, report: Any) -> None:
        self.report = report
        self.last_epoch = 0

    def __call__(self, m: dict[str, Any], checkpoint: Any) -> None:
        epoch = int(m.get("epoch", self.last_epoch + 1))
        if epoch > self.last_epoch + 1 and checkpoint is not None:
            reports = checkpointed_reports(checkpoint)
            missing = replay(reports, self.last_epoch, epoch, self.report)
            if missing:
                log.info(
                    "replayed epochs %d..%d from the checkpoint", missing[0]["epoch"], epoch - 1
                )
        self.report(m)
        self.last_epoch = epoch


def _fit_and_forward(trainer: Any, reports: Any) -> None:
    """`trainer.fit()` in a thread; forward every report to Tune from this thread, in order."""
    from ray.util.queue import Empty

    failure: list[BaseException] = []
    forward = _GapFiller(ray.tune.report)

    def fit() -> None:
        try:
            trainer.fit()
        except BaseException as exc:  # re-raised in the trial thread below
            failure.append(exc)

    thread = threading.Thread(target=fit, name="cpsweep-fit", daemon=True)
    thread.start()
    while True:
        try:
            forward(*reports.get(timeout=0.5))
        except Empty:
            if not thread.is_alive() and reports.empty():
                break
    thread.join()
    if failure:
        raise failure[0]


def trial_main(config: dict[str, Any]) -> None:
    """Tune function trainable: one trial on a TorchTrainer (resuming by trial id).

    With the `inline` executor (single-worker trials, the default there) the loop runs
    in this process instead; with `worker_pool: true` its ranks run on this driver's
    warm rank group.
    """
    opts = options_of(config)
    loop = _loop_options(config, opts)
    error_file = Path(loop.error_file)
    error_file.unlink(missing_ok=True)
    if opts.executor == "inline":
        _maybe_rendezvous(opts.rendezvous, loop.trial_id)
        run_loop(loop, _InlineSession(opts.use_gpu))
    elif opts.worker_pool:
        error = _run_on_pool(loop, opts)
        if error:
            release_group()  # Tune ends a failed trial's process; Ray would keep its group
            raise TrialFailed(error)
    else:
        from ray.util.queue import Queue

        reports = Queue(actor_options={"num_cpus": 0})
        _fit_and_forward(_trainer(loop, opts, reports), reports)
    if error_file.is_file():
        raise TrialFailed(error_file.read_text())


def _loop_options(config: dict[str, Any], opts: TrialOptions) -> LoopOptions:
    """What this trial hands each rank: its validated train config, ids and paths."""
    ctx = ray.tune.get_context()
    trial_id = ctx.get_trial_id()
    return LoopOptions(
        train=TrainConfig.model_validate(train_dict_for(config)),
        trial_id=trial_id,
        control_actor=opts.control_actor or control_actor_name(ctx.get_experiment_name()),
        mode=opts.mode,
        use_gpu=opts.use_gpu,
        threads_per_worker=opts.cpus_per_worker,
        # In the trial's storage directory: a reused trial process's working directory
        # (get_trial_dir) is not synced there after its first trial.
        rank_log_dir=str(Path(trial_storage_dir() or ctx.get_trial_dir()) / "ranks"),
        measure_energy=opts.measure_energy,
        error_file=str(Path(opts.storage_path) / f"train-{trial_id}" / "cpsweep_error.txt"),
        fault_kill_epoch=opts.fault_kill_epoch,
        fault_marker=opts.fault_marker,
        import_paths=opts.import_paths,  # where train.loop's module lies
        rendezvous=opts.rendezvous,
    )


def _maybe_rendezvous(meet: Rendezvous | None, trial_id: str) -> None:
    """Testing hook: trial option rendezvous={"dir": d, "trials": n} holds each trial's
    GPU-holding process (the inline trial, or rank 0) until n trials have started, proving
    they run at once (packing); each leaves the GPU ids Ray gave it in d/<trial_id>. Fails
    the trial if the others never come."""
    if not meet:
        return
    where = Path(meet.dir)
    where.mkdir(parents=True, exist_ok=True)
    (where / trial_id).write_text(json.dumps({"gpu_ids": [str(i) for i in ray.get_gpu_ids()]}))
    deadline = time.monotonic() + meet.timeout_s
    while len(list(where.iterdir())) < meet.trials:
        if time.monotonic() > deadline:
            raise TrialFailed(
                f"rendezvous: {len(list(where.iterdir()))} of {meet.trials} trials ran at once"
            )
        time.sleep(0.05)


def _backend(opts: TrialOptions) -> str:
    """NCCL for CUDA ranks; gloo on the CPU and for logical GPUs without a device."""
    return "nccl" if opts.use_gpu and opts.cuda_on_workers else "gloo"


def _run_on_pool(loop: LoopOptions, opts: TrialOptions) -> str | None:
    """The trial's ranks on this driver's warm group (trainables/run/pool.py); rank 0's
    reports and checkpoints go to Tune from here, as an inline trial's do. Returns the
    reason a run ended early (NaN loss), if any."""
    ckpt, replay_after = _tune_checkpoint()
    files = None
    if ckpt is not None:
        with ckpt.as_directory() as d:
            files = pack_dir(d)
    errors: list[str] = []

    def forward(m: dict[str, Any], ckpt_files: dict[str, bytes] | None) -> None:
        if "error" in m:
            errors.append(str(m["error"]))
        if ckpt_files is None:
            ray.tune.report(m)
            return
        with tempfile.TemporaryDirectory() as d:  # Tune copies it to the trial's storage
            unpack_dir(ckpt_files, d)
            ray.tune.report(m, checkpoint=ray.tune.Checkpoint.from_directory(d))

    spec = GroupSpec(
        num_workers=opts.num_workers,
        cpus_per_worker=opts.cpus_per_worker,
        gpus_per_worker=opts.gpus_per_worker if opts.use_gpu else 0.0,
        backend=_backend(opts),
        sweep=pool_key(loop.control_actor),
    )
    run_on_group(
        _rank_loop,
        loop,
        spec,
        forward=forward,
        checkpoint_files=files,
        replay_after=replay_after,
        max_failures=opts.worker_failures,
    )
    return errors[-1] if errors else None


def _trainer(loop: LoopOptions, opts: TrialOptions, reports: Any) -> Any:
    """A TorchTrainer running `worker_loop` on `num_workers` DDP ranks."""
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    use_gpu, threads = opts.use_gpu, opts.cpus_per_worker
    gpus = opts.gpus_per_worker if use_gpu else 0.0
    return TorchTrainer(
        functools.partial(worker_loop, loop),  # no train_loop_config: the loop takes none
        scaling_config=ScalingConfig(
            num_workers=opts.num_workers,
            use_gpu=use_gpu,
            resources_per_worker={"CPU": threads, **({"GPU": gpus} if use_gpu else {})},
        ),
        torch_config=TorchConfig(backend=_backend(opts)),
        run_config=RunConfig(
            name=f"train-{loop.trial_id}",
            storage_path=opts.storage_path,
            callbacks=[_ForwardReports(reports)],  # type: ignore[list-item]
            failure_config=FailureConfig(max_failures=opts.worker_failures),
            checkpoint_config=CheckpointConfig(num_to_keep=2),
        ),
    )
