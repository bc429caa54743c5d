"""DDP ranks that outlive a trial: the `train` executor's warm worker groups.

A `TorchTrainer` starts a Train controller and one fresh process per rank for every
trial, and Ray Train 2.60 has no API to run a second `fit()` on an existing worker
group (each `fit()` creates a `TrainController` actor, which creates its `WorkerGroup`
and shuts it down at the end: ray/train/v2/api/data_parallel_trainer.py, ...
/execution/controller/controller.py). Those processes cost seconds per trial
(BENCHMARKS.md, section 5). Here a trial's driver (the Tune trial process) keeps one
`RankGroup` instead: `num_workers` rank actors in one placement group, the process group
(gloo on the CPU, NCCL on CUDA) connected once, built-in datasets cached per rank.

Tune reuses trial drivers (`reuse_actors`), so a sweep holds at most
`max_concurrent_trials` groups, one per running driver; the concurrency plan counts
their CPUs and GPUs like a TorchTrainer's workers. The rank actors belong to their
driver process and die with it, but a placement group belongs to the job, not to the
actor that made it (measured: it stays CREATED after its creator is killed). So a
failing trial ends its group before it fails, each group's placement group is named
after its sweep and driver, a trial waiting for resources removes those of its sweep
whose driver is dead, and the sweep removes all of its own when it ends
(`remove_sweep_groups`). Each trial builds model, optimizer and state afresh on the ranks
(seeded as in a fresh process); only the processes, the process group and the
datasets carry over.

Failures: a rank process that dies (worker failure) takes its group down; the trial
goes on from its last checkpoint on a new group, up to `max_failures` times, as Ray
Train's FailureConfig would. An exception in the loop on any rank fails the trial
and the group is replaced (other ranks may be waiting in a collective).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import queue
import socket
import tempfile
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar

import ray
import torch
import torch.distributed as dist
from ray.util.placement_group import placement_group, remove_placement_group
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

from trainables.core.config import TrainConfig
from trainables.data.datasets import Dataset
from trainables.data.sources import load_training_data

__all__ = [
    "GroupSpec",
    "RankGroup",
    "RankSession",
    "WorkerFailed",
    "gpu_or_cpu",
    "pack_dir",
    "pool_key",
    "release_group",
    "remove_sweep_groups",
    "run_on_group",
    "unpack_dir",
]

log = logging.getLogger(__name__)

C = TypeVar("C")  # what a trial hands its ranks' loop (trainables.core.trial.LoopOptions)

_END = ("end",)  # rank 0's last event of a run
_PG_WAIT_LOG_S = 60.0  # how often a trial waiting for its group's resources says so
_PG_RECLAIM_S = 30.0  # waited this long: look for groups of dead drivers (a slow state API call)
_PG_PREFIX = "cpsweep-ranks"
_PROCESS_GROUP_TIMEOUT_S = 1800  # as Ray Train's TorchConfig.timeout_s
_DATASETS_KEPT = 2  # per rank: a sweep over two datasets alternates without reloading


class WorkerFailed(RuntimeError):
    """A rank process died more often than `max_failures` allows."""


def gpu_or_cpu(use_gpu: bool, gpu: Callable[[], torch.device]) -> torch.device:
    """`gpu()` when asked for and CUDA is visible; else the CPU. A cluster may declare
    logical GPUs without devices (`ray start --num-gpus` on a CPU node, tests): the trial
    still trains, on the CPU, and says so."""
    if not use_gpu:
        return torch.device("cpu")
    if not torch.cuda.is_available():
        log.warning(
            "scaling.use_gpu: Ray gave this process GPU(s) %s but it sees no CUDA device; "
            "training on the CPU",
            ray.get_gpu_ids(),
        )
        return torch.device("cpu")
    return gpu()


def pack_dir(directory: str | Path) -> dict[str, bytes]:
    """Every file under `directory` by relative path: a checkpoint crossing nodes."""
    root = Path(directory)
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def unpack_dir(files: dict[str, bytes], directory: str | Path) -> str:
    for rel, data in files.items():
        path = Path(directory, rel)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return str(directory)


@dataclass(frozen=True)
class GroupSpec:
    """The resources of one trial's ranks, as the sweep's scaling section asks."""

    num_workers: int
    cpus_per_worker: int
    gpus_per_worker: float  # 0 without use_gpu
    backend: str  # "gloo" or "nccl" (the same choice the TorchTrainer path makes)
    strategy: str = "PACK"  # Ray Train's default placement
    sweep: str = "sweep"  # names the placement groups, so the sweep can remove its own

    @property
    def use_gpu(self) -> bool:
        return self.gpus_per_worker > 0


# -- the rank side ------------------------------------------------------------------------


class RankSession:
    """What the loop sees on a pooled rank (the same protocol as the Train and inline
    sessions in trainables/run/worker.py): rank, world, device, the trial's checkpoint, report."""

    def __init__(
        self,
        rank: int,
        world: int,
        device: torch.device,
        checkpoint_files: dict[str, bytes] | None,
        replay_after: int | None,
        send: Callable[[tuple[Any, ...]], None],
        datasets: OrderedDict[str, Dataset],
    ) -> None:
        self.rank, self.world, self.device = rank, world, device
        self.replay_after = replay_after
        self._files, self._send, self._datasets = checkpoint_files, send, datasets
        self._tmp: tempfile.TemporaryDirectory[str] | None = None

    def checkpoint(self) -> Any:
        if self._files is None:
            return None
        from ray.train import Checkpoint

        if self._tmp is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="cpsweep-ckpt-")
            unpack_dir(self._files, self._tmp.name)
        return Checkpoint.from_directory(self._tmp.name)

    def report(self, m: dict[str, Any], directory: str | None = None) -> None:
        """Rank 0 hands the report (and the checkpoint's files) to the trial driver and
        returns once the driver has taken it; other ranks' reports are dropped, as Ray
        Train keeps rank 0's."""
        if self.rank == 0:
            self._send(("report", m, pack_dir(directory) if directory else None))

    def dataset(self, cfg: TrainConfig) -> Dataset | None:
        """The built-in in-memory dataset for `cfg`, loaded once per rank (None: the loop
        loads it itself: user factories, streamed data)."""
        if cfg.data.factory is not None:
            return None
        key = json.dumps([cfg.data.model_dump(mode="json"), cfg.seed], sort_keys=True)
        if key in self._datasets:
            self._datasets.move_to_end(key)
            return self._datasets[key]
        data = load_training_data(cfg.data, seed=cfg.seed)
        if not isinstance(data, Dataset):
            return None
        self._datasets[key] = data
        while len(self._datasets) > _DATASETS_KEPT:
            self._datasets.popitem(last=False)
        return data

    def close(self) -> None:
        if self._tmp is not None:
            self._tmp.cleanup()


class _Rank:
    """One DDP rank that outlives trials (a threaded Ray actor: `events` is served while
    `run` trains)."""

    def __init__(self, rank: int, world: int, use_gpu: bool) -> None:
        self.rank, self.world, self.use_gpu = rank, world, use_gpu
        self._events: queue.Queue[tuple[Any, ...]] = queue.Queue()
        self._datasets: OrderedDict[str, Dataset] = OrderedDict()

    def address(self) -> str:
        """Where rank 0 listens for the process group (this node, a free port)."""
        with socket.socket() as s:
            s.bind(("", 0))
            port = s.getsockname()[1]
        return f"tcp://{ray.util.get_node_ip_address()}:{port}"

    def connect(self, backend: str, url: str) -> dict[str, Any]:
        if backend == "nccl":  # Ray made this actor's GPU cuda:0
            os.environ.setdefault("TORCH_NCCL_ASYNC_ERROR_HANDLING", "1")  # as Ray Train does
            torch.cuda.set_device(0)
        if self.world > 1:
            dist.init_process_group(
                backend,
                init_method=url,
                rank=self.rank,
                world_size=self.world,
                timeout=timedelta(seconds=_PROCESS_GROUP_TIMEOUT_S),
            )
        return {"pid": os.getpid(), "node_id": ray.get_runtime_context().get_node_id()}

    def ping(self) -> int:
        return os.getpid()

    def run(
        self,
        fn: Callable[[C, RankSession], None],
        config: C,
        checkpoint_files: dict[str, bytes] | None,
        replay_after: int | None,
    ) -> None:
        device = gpu_or_cpu(self.use_gpu, lambda: torch.device("cuda", 0))
        session = RankSession(
            self.rank,
            self.world,
            device,
            checkpoint_files,
            replay_after,
            self._send,
            self._datasets,
        )
        try:
            fn(config, session)
        finally:
            session.close()
            if self.rank == 0:
                self._events.put(_END)

    def _send(self, event: tuple[Any, ...]) -> None:
        self._events.put(event)
        self._events.join()  # until the driver took it: a report is out before the next epoch

    def events(self, timeout_s: float) -> list[tuple[Any, ...]]:
        """The events queued so far, waiting up to `timeout_s` for the first."""
        out: list[tuple[Any, ...]] = []
        try:
            out.append(self._events.get(timeout=timeout_s))
            while True:
                out.append(self._events.get_nowait())
        except queue.Empty:
            pass
        for _ in out:
            self._events.task_done()
        return out


# -- the driver side ----------------------------------------------------------------------


class _RankDied(Exception):
    pass


class RankGroup:
    """`spec.num_workers` rank actors in one placement group, process group connected."""

    def __init__(self, spec: GroupSpec) -> None:
        self.spec = spec
        bundle = {"CPU": float(spec.cpus_per_worker)}
        if spec.use_gpu:
            bundle["GPU"] = spec.gpus_per_worker
        t0 = time.perf_counter()
        owner = ray.get_runtime_context().get_actor_id() or "driver"
        self.pg = placement_group(
            [dict(bundle)] * spec.num_workers,
            strategy=spec.strategy,
            name=f"{_pg_prefix(spec.sweep)}{owner}",
        )
        if not self.pg.wait(timeout_seconds=_PG_RECLAIM_S):
            _remove_orphans(spec.sweep)
            while not self.pg.wait(timeout_seconds=_PG_WAIT_LOG_S):
                log.warning(
                    "waiting %.0f s for %d x %s for this trial's ranks",
                    time.perf_counter() - t0,
                    spec.num_workers,
                    bundle,
                )
        actor: Any = ray.remote(_Rank)
        self.ranks: list[Any] = [
            actor.options(
                num_cpus=spec.cpus_per_worker,
                num_gpus=spec.gpus_per_worker,
                max_concurrency=4,
                max_restarts=0,
                scheduling_strategy=PlacementGroupSchedulingStrategy(self.pg, i),
            ).remote(i, spec.num_workers, spec.use_gpu)
            for i in range(spec.num_workers)
        ]
        try:
            url = ray.get(self.ranks[0].address.remote())
            self.places = ray.get([r.connect.remote(spec.backend, url) for r in self.ranks])
        except BaseException:
            self.close()
            raise
        log.info(
            "started %d rank(s) (%s) in %.1f s: pids %s",
            spec.num_workers,
            spec.backend,
            time.perf_counter() - t0,
            [p["pid"] for p in self.places],
        )

    def alive(self) -> bool:
        try:
            ray.get([r.ping.remote() for r in self.ranks], timeout=30)
            return True
        except Exception as exc:
            log.warning("a pooled rank is gone (%s); starting a new group", exc)
            return False

    def run(
        self,
        fn: Callable[[C, RankSession], None],
        config: C,
        checkpoint_files: dict[str, bytes] | None,
        replay_after: int | None,
        forward: Callable[[dict[str, Any], dict[str, bytes] | None], None],
    ) -> None:
        """Run `fn` on every rank; forward rank 0's reports in order as they come.

        Raises _RankDied when a rank process died, the rank's own error otherwise."""
        files_ref = ray.put(checkpoint_files)
        runs = [r.run.remote(fn, config, files_ref, replay_after) for r in self.ranks]
        events = self.ranks[0].events.remote(0.5)
        pending, ended = list(runs), False
        try:
            while pending or not ended:
                waiting = ([] if ended else [events]) + pending
                ready, _ = ray.wait(waiting, num_returns=1)
                if not ended and events in ready:
                    for ev in ray.get(events):
                        if ev == _END:
                            ended = True
                        else:
                            forward(ev[1], ev[2])
                    if not ended:
                        events = self.ranks[0].events.remote(0.5)
                for ref in [r for r in ready if r in pending]:
                    pending.remove(ref)
                    ray.get(ref)  # a rank's error surfaces here
        except (ray.exceptions.RayActorError, ray.exceptions.ActorUnavailableError) as exc:
            raise _RankDied(str(exc)) from exc
        except ray.exceptions.RayTaskError as exc:
            if not self.alive():  # a peer's death broke this rank's collective
                raise _RankDied(str(exc)) from exc
            raise exc.as_instanceof_cause() from None

    def close(self) -> None:
        for r in self.ranks if hasattr(self, "ranks") else ():
            ray.kill(r, no_restart=True)
        remove_placement_group(self.pg)


def pool_key(sweep_name: str) -> str:
    """A short name for a sweep's rank groups (from a unique per-sweep name)."""
    return hashlib.sha1(sweep_name.encode()).hexdigest()[:12]


def _pg_prefix(sweep: str) -> str:
    return f"{_PG_PREFIX}-{sweep}-"


def _sweep_groups(sweep: str) -> list[tuple[str, str]]:
    """(placement group name, owner actor id) of this sweep's live groups."""
    from ray.util import placement_group_table

    prefix = _pg_prefix(sweep)
    return [
        (pg["name"], pg["name"][len(prefix) :])
        for pg in placement_group_table().values()
        if pg.get("name", "").startswith(prefix) and pg.get("state") != "REMOVED"
    ]


def _remove(name: str) -> None:
    from ray.util import get_placement_group

    try:
        remove_placement_group(get_placement_group(name))
    except Exception as exc:  # removed meanwhile
        log.debug("removing placement group %s: %s", name, exc)


def _remove_orphans(sweep: str) -> None:
    """Remove this sweep's groups whose trial driver has died (Ray keeps them)."""
    from ray.util.state import get_actor

    for name, owner in _sweep_groups(sweep):
        try:
            state = get_actor(owner)
        except Exception as exc:  # no dashboard to ask: keep it
            log.debug("cannot look up %s: %s", owner, exc)
            continue
        if state is None or state.state == "DEAD":
            log.warning("removing placement group %s: its trial driver is gone", name)
            _remove(name)


def remove_sweep_groups(sweep: str) -> int:
    """Remove every rank group's placement group of `sweep` (at its end); returns how many."""
    groups = _sweep_groups(sweep)
    for name, _ in groups:
        _remove(name)
    return len(groups)


_held: RankGroup | None = None  # this trial driver's group, kept for its next trial


def _group(spec: GroupSpec) -> RankGroup:
    global _held
    if _held is not None and (_held.spec != spec or not _held.alive()):
        release_group()
    if _held is None:
        _held = RankGroup(spec)
    return _held


def release_group() -> None:
    """End this process's group (the next trial starts a new one)."""
    global _held
    if _held is not None:
        group, _held = _held, None
        try:
            group.close()
        except Exception as exc:  # already gone with its node
            log.debug("closing a rank group: %s", exc)


def run_on_group(
    fn: Callable[[C, RankSession], None],
    config: C,
    spec: GroupSpec,
    *,
    forward: Callable[[dict[str, Any], dict[str, bytes] | None], None],
    checkpoint_files: dict[str, bytes] | None = None,
    replay_after: int | None = None,
    max_failures: int = 0,
) -> None:
    """One trial on this driver's warm group: `fn(config, session)` on every rank.

    `forward(metrics, checkpoint_files)` gets rank 0's reports in order. When a rank
    process dies, the trial continues from the last forwarded checkpoint on a new group,
    up to `max_failures` times (-1: always); any other error ends the group and is raised.
    """
    failures = 0
    files = checkpoint_files

    def keep(m: dict[str, Any], ckpt: dict[str, bytes] | None) -> None:
        nonlocal files
        forward(m, ckpt)
        if ckpt is not None:
            files = ckpt

    while True:
        group = _group(spec)
        try:
            group.run(fn, config, files, replay_after, keep)
            return
        except _RankDied as exc:
            release_group()
            failures += 1
            if max_failures != -1 and failures > max_failures:
                raise WorkerFailed(
                    f"a rank process died {failures} time(s) (failures.worker_failures="
                    f"{max_failures}): {exc}"
                ) from exc
            log.warning("a rank died (%s); resuming from the last checkpoint on new ranks", exc)
            replay_after = None  # Tune has every report up to that checkpoint
        except BaseException:
            release_group()  # a rank may be waiting in a collective: start clean next time
            raise
