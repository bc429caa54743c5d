"""Shared pieces of the benchmark scripts: the scaled paper setup, machine info, JSON output.

The scaled recipe follows Fukase et al. (arXiv 2506.15954) with the sizes cut so
that a 2-core CPU box trains all 18 trials in one sitting: real Fashion-MNIST
(a stratified 10k training subset, the full 10k test set), the repository's
small CNN at width 16, SGD + Nesterov with x0.1 steps at 50% and 75% of a
30-epoch budget, batched affine + flip augmentation, repeats 3 during the
critical period. Evaluation runs every 5 epochs (and after the last) so that
its fixed per-epoch cost, which would otherwise eat the wall-time savings, is
small; final accuracy is always measured on the full test set.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

__all__ = [
    "REPO",
    "RESULTS",
    "LoadSampler",
    "base_train",
    "command_line",
    "machine_info",
    "mean_std",
    "mlflow_curves",
    "now_iso",
    "ray_worker_priority",
    "setup_logging",
    "write_json",
]

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"


def base_train(*, quick: bool = False) -> dict[str, Any]:
    """The scaled paper recipe as a TrainConfig dict (the sweep's `train` section)."""
    return {
        "seed": 0,
        "epochs": 16 if quick else 30,
        "batch_size": 128,
        "data": {
            "name": "fashion-mnist",
            "train_subset": 3000 if quick else 10000,
            "val_subset": 2000 if quick else None,  # None: the full 10k test set
        },
        "model": {"name": "small_cnn", "width": 16},
        "optim": {
            "name": "sgd",
            "lr": 0.05,
            "momentum": 0.9,
            "nesterov": True,
            "weight_decay": 5e-4,
            "schedule": "step",
            "milestones": [0.5, 0.75],
        },
        "recipe": {
            "critical": {"repeats": 3, "augment": True},
            "after": {"repeats": 1, "augment": True},
            "augmentation": {"rotation_deg": 15.0, "translate": 0.1, "hflip": True},
        },
        "criterion": {"name": "paper", "window": 5, "threshold_deg": 45.0},
        "device": "cpu",
        "eval_every": 4 if quick else 5,
        "num_threads": 1,
    }


def long_train(*, quick: bool) -> dict[str, Any]:
    """The long budget: E = 100 on a 2k-image subset, width 16, validated every 10 epochs on
    1,000 held-out training images; the full test set once, after the last epoch (quick: a
    CI-sized smoke test)."""
    train = base_train(quick=False)
    train["epochs"] = 12 if quick else 100
    train["data"].update(
        {"train_subset": 400 if quick else 2000, "val_subset": 300 if quick else 1000}
    )
    train["model"]["width"] = 4 if quick else 16
    train["eval_every"] = 6 if quick else 10
    return train


def ray_worker_priority() -> str:
    """Run Ray workers at the driver's priority unless the caller chose otherwise.

    Ray starts worker processes with `nice 15` (RAY_worker_niceness). On this shared
    2-core machine every normal-priority process then gets ~28x the CPU share of a
    trial, so Ray timings would measure the neighbours, and a Ray-vs-plain-loop
    comparison would be unfair to Ray. Must run before `ray.init`; returns the value.
    """
    return os.environ.setdefault("RAY_worker_niceness", "0")


def start_local_ray(cuda: bool, *, dashboard: bool = False) -> bool:
    """A local cluster as `init_ray` starts it on CUDA; without CUDA one that declares one
    logical GPU (the packing is real, the trials train on the CPU). True if logical."""
    import ray

    from service.sweeps.run import init_ray
    from trainables.run.worker import TRIAL_RESOURCE

    if cuda:
        init_ray(None)
        return False
    ray_worker_priority()
    ray.init(
        num_cpus=max(4, os.cpu_count() or 1),  # logical: 3 packed 1-CPU trials on 2 cores
        num_gpus=1,
        resources={TRIAL_RESOURCE: 16},
        include_dashboard=dashboard,
        log_to_driver=False,
    )
    return True


class LoadSampler:
    """The 1-minute load average every `every_s` seconds on a daemon thread, so that each
    trial's wall time can be read next to how busy the machine was while it ran."""

    def __init__(self, every_s: float = 5.0) -> None:
        import threading

        self.samples: list[tuple[float, float]] = []  # (unix time, load1)
        self._every = every_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="load-sampler", daemon=True)

    def _run(self) -> None:
        import time

        while not self._stop.is_set():
            self.samples.append((time.time(), os.getloadavg()[0]))
            self._stop.wait(self._every)

    def __enter__(self) -> LoadSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=self._every + 1)

    def between(self, start: float, end: float) -> dict[str, float | int | None]:
        """Mean and max load1 of the samples taken in [start, end] (unix seconds)."""
        xs = [v for t, v in self.samples if start <= t <= end]
        if not xs:
            return {"load1_mean": None, "load1_max": None, "load_samples": 0}
        return {
            "load1_mean": round(sum(xs) / len(xs), 2),
            "load1_max": round(max(xs), 2),
            "load_samples": len(xs),
        }


def setup_logging() -> None:
    import logging

    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname).1s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
        stream=sys.stdout,
    )
    for noisy in ("urllib3", "matplotlib", "PIL", "filelock", "codecarbon", "alembic"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def command_line() -> str:
    """The command that produced a result, relative to the repository root."""
    script = Path(sys.argv[0]).resolve()
    try:
        shown = str(script.relative_to(REPO))
    except ValueError:
        shown = str(script)
    return " ".join([".venv/bin/python", shlex.quote(shown), *map(shlex.quote, sys.argv[1:])])


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine_info() -> dict[str, Any]:
    """nproc, CPU model, memory, library versions, the load when the run started."""
    import torch

    info: dict[str, Any] = {
        "nproc": os.cpu_count(),
        "cpu_model": _cpu_model(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_threads_default": torch.get_num_threads(),
        "platform": platform.platform(),
        "loadavg_at_start": list(os.getloadavg()),
    }
    for mod in ("ray", "mlflow", "torchvision", "codecarbon"):
        try:
            info[mod] = __import__(mod).__version__
        except Exception:  # a missing optional package must not fail the benchmark
            info[mod] = None
    try:
        mem_kb = int(Path("/proc/meminfo").read_text().split()[1])
        info["mem_gib"] = round(mem_kb / 1024**2, 1)
    except (OSError, ValueError, IndexError):
        pass
    try:
        info["git_commit"] = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True, check=False
        ).stdout.strip()
    except OSError:
        info["git_commit"] = None
    return info


def now_iso() -> str:
    return _dt.datetime.now().astimezone().isoformat(timespec="seconds")


def mean_std(values: list[float]) -> tuple[float | None, float | None]:
    """Mean and sample standard deviation (0 for a single value; None for none)."""
    xs = [float(v) for v in values if v is not None]
    if not xs:
        return None, None
    m = sum(xs) / len(xs)
    if len(xs) == 1:
        return m, 0.0
    return m, (sum((x - m) ** 2 for x in xs) / (len(xs) - 1)) ** 0.5


def mlflow_curves(tracking_uri: str, run_id: str, keys: list[str]) -> dict[str, list[float]]:
    """Per-epoch values of `keys` from an MLflow run, ordered by step (epoch)."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri)
    out: dict[str, list[float]] = {}
    for key in keys:
        hist = sorted(client.get_metric_history(run_id, key), key=lambda m: m.step)
        out[key] = [m.value for m in hist]
        if key.startswith("val/"):
            out[key + "@epoch"] = [m.step for m in hist]
    return out


def write_json(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str) + "\n")
    tmp.replace(path)
