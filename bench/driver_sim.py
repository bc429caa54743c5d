"""Simulated trials for the driver's callbacks: what Tune hands them, without Ray.

`bench/driver_scale.py` and the tracking fault tests drive the real
`MLflowSweepCallback`, `ProgressCallback` and `CriticalPeriodScheduler` with
these: trials shaped like Tune's (`trial_id`, `config`, `status`, `last_result`)
and results shaped like a ResNet trial's report (per-layer rotation: ~113 metrics).
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from typing import Any

__all__ = ["SimTrial", "drive", "make_result", "sim_spec", "sim_trials"]

LAYERS = 96  # per-layer rotation keys; with the other metrics ~113 per result


@dataclass
class SimTrial:
    trial_id: str
    config: dict[str, Any]
    status: str = "PENDING"
    last_result: dict[str, Any] = field(default_factory=dict)
    error_file: str | None = None
    experiment_dir_name: str = "sim"


def sim_spec(name: str, uri: str, epochs: int, **tracking: Any) -> Any:
    from service.spec import SweepSpec

    return SweepSpec.model_validate(
        {
            "name": name,
            "train": {"epochs": epochs, "data": {"name": "digits"}},
            "tracking": {"uri": uri, "experiment": name, **tracking},
            "accounting": {"measure_energy": False},
        }
    )


def sim_trials(spec: Any, n: int, prefix: str = "sim") -> list[SimTrial]:
    """`n` trials with the spec's base config and one searched learning rate each."""
    from service.spec import build_param_space
    from trainables.core.trial import TrialOptions

    space = build_param_space(spec, TrialOptions(storage_path="sim"))
    out = []
    for i in range(n):
        config = {**space, "params": {"optim.lr": round(0.01 + 0.001 * i, 4)}}
        out.append(SimTrial(f"{prefix}_{i:05d}", config))
    return out


def make_result(trial: SimTrial, epoch: int, epochs: int, rng: random.Random) -> dict[str, Any]:
    """One epoch's report as rank 0 sends it (keys as `trainables.run.worker` reports them)."""
    rot = [(1 - math.exp(-epoch / (2 + j % 5))) * 0.4 + rng.random() * 1e-3 for j in range(LAYERS)]
    crit = epoch <= max(1, epochs // 4)
    r: dict[str, Any] = {f"rotation/layer{j:02d}": v for j, v in enumerate(rot)}
    r.update(
        {
            "epoch": epoch,
            "trial_id": trial.trial_id,
            "phase": "critical" if crit else "after",
            "rotation/mean": sum(rot) / len(rot),
            "train/loss": 2.0 / epoch + rng.random() * 0.01,
            "train/acc": 1 - 1.0 / (epoch + 1),
            "val/loss": 2.1 / epoch,
            "val/acc": 1 - 1.1 / (epoch + 1),
            "lr": 0.05,
            "samples": 3000 if crit else 1000,
            "samples_total": 3000 * epoch,
            "recipe/repeats": 3 if crit else 1,
            "time/train_s": 0.8,
            "time/eval_s": 0.1,
            "time/epoch_s": 1.0,
            "time/rotation_s": 0.001,
            "time_this_iter_s": 1.0,
            "device/name": "cpu",
            "device/workers": 1,
            "energy/epoch_kwh": 1e-5,
            "cp/angle_deg": 40.0,
            "cp/lag_epochs": 0,
            "cp/handshake_s": 0.0,
            "training_iteration": epoch,
            "done": False,
        }
    )
    if not crit:
        r["cp/end_epoch"], r["cp/switch_epoch"] = max(1, epochs // 4), max(1, epochs // 4) + 1
    return r


def drive(
    callbacks: list[Any],
    trials: list[SimTrial],
    epochs: int,
    seed: int = 0,
    on_result: Any = None,
) -> int:
    """Tune's calls for `trials` running concurrently: start, results round-robin, complete.
    Returns the number of results delivered; `on_result(n)` runs after each."""
    rng = random.Random(seed)
    n = 0
    for t in trials:
        t.status = "RUNNING"
        for cb in callbacks:
            cb.on_trial_start(0, trials, t)
    for epoch in range(1, epochs + 1):
        for t in trials:
            r = make_result(t, epoch, epochs, rng)
            t.last_result = r
            for cb in callbacks:
                cb.on_trial_result(0, trials, t, r)
            n += 1
            if on_result is not None:
                on_result(n)
    for t in trials:
        t.status = "TERMINATED"
        for cb in callbacks:
            cb.on_trial_complete(0, trials, t)
    for cb in callbacks:
        cb.on_experiment_end(trials)
    return n
