"""What crosses into a trial besides its train config: `TrialOptions` and `LoopOptions`.

`TrialOptions` is built once by the driver (service.sweeps.run) from the sweep spec and
rides in Tune's param space under the one key `OPTIONS_KEY` as the frozen object itself.
Tune resolves search spaces only inside dicts and lists, so an object there reaches every
trial as it was built (copied and pickled, never walked or flattened into
`config/_cpsweep/...` result columns); the rest of the space (`train`, `params`, `arm`)
stays plain data for Tune. A trial reads it with `options_of(config)`, which also
accepts the plain mapping an older sweep's saved state holds, validated once there.

`LoopOptions` is what the trial hands each rank's loop (a TorchTrainer worker, a pooled
rank or the trial's own process): the validated train config and this trial's ids and
paths. Both are frozen pydantic models: checked when built, picklable for Ray, read
with attributes (trainables/run/worker.py).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from trainables.core.config import TrainConfig, set_dotted

__all__ = [
    "OPTIONS_KEY",
    "LoopOptions",
    "Rendezvous",
    "TrialOptions",
    "options_of",
    "train_dict_for",
]

OPTIONS_KEY = "_cpsweep"  # the param-space key that carries TrialOptions


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Rendezvous(_Frozen):
    """Testing hook: hold each trial's GPU-holding process until `trials` have started."""

    dir: str = Field(description="Each trial leaves a file named by its id here.")
    trials: int = Field(ge=1, description="How many trials must run at once.")
    timeout_s: float = Field(120.0, gt=0, description="Fail the trial after waiting this long.")


class TrialOptions(_Frozen):
    """Every trial of a sweep gets these; built once on the driver (service.sweeps.run)."""

    storage_path: str = Field(description="Train runs and each trial's error file go here.")
    control_actor: str | None = Field(
        None, description="The scheduler's control actor; None: named from the experiment."
    )
    num_workers: int = Field(1, ge=1, description="DDP ranks per trial.")
    cpus_per_worker: int = Field(1, ge=1, description="CPUs (and torch threads) per rank.")
    use_gpu: bool = Field(False, description="Ranks train on a GPU.")
    gpus_per_worker: float = Field(1.0, ge=0, description="GPU share per rank with use_gpu.")
    executor: Literal["train", "inline"] = Field(
        "train", description="inline: the loop runs in the trial's process (one worker)."
    )
    worker_pool: bool = Field(False, description="Ranks on the trial driver's warm group.")
    worker_failures: int = Field(2, ge=-1, description="Rank restarts per trial; -1: always.")
    mode: Literal["push", "sync", "async"] = Field(
        "push",
        description="How rank 0 reads the scheduler's directive (trainables/run/channel.py).",
    )
    cuda_on_workers: bool = Field(
        True, description="GPUs have a CUDA device on the workers: NCCL, else gloo."
    )
    measure_energy: bool = Field(True, description="Read energy counters every epoch.")
    import_paths: tuple[str, ...] = Field(
        (), description="Directories train.loop's and the factories' modules are imported from."
    )
    arms: Mapping[str, Mapping[str, Any]] = Field(
        default_factory=dict, description="Arm name -> dotted train paths and their values."
    )
    fault_kill_epoch: int | None = Field(
        None, ge=1, description="Testing hook: SIGKILL rank 0 once after this epoch's report."
    )
    fault_marker: str | None = Field(
        None, description="Testing hook: the file that makes fault_kill_epoch happen once."
    )
    rendezvous: Rendezvous | None = Field(None, description="Testing hook, see Rendezvous.")


class LoopOptions(_Frozen):
    """What one trial hands the loop of each of its ranks (trainables/run/worker.py)."""

    train: TrainConfig = Field(description="The trial's train config: base, arm, sampled.")
    trial_id: str = Field(description="Tune's id of the trial.")
    control_actor: str = Field(description="The scheduler's control actor.")
    mode: Literal["push", "sync", "async"] = Field(description="See TrialOptions.mode.")
    use_gpu: bool = Field(description="Ranks train on a GPU.")
    threads_per_worker: int = Field(ge=1, description="torch threads per rank.")
    rank_log_dir: str | None = Field(None, description="Per-rank JSONL logs go here.")
    measure_energy: bool = Field(True, description="Read energy counters every epoch.")
    error_file: str = Field(description="Rank 0 leaves why the run ended early here.")
    import_paths: tuple[str, ...] = Field((), description="See TrialOptions.import_paths.")
    fault_kill_epoch: int | None = Field(None, description="See TrialOptions.")
    fault_marker: str | None = Field(None, description="See TrialOptions.")
    rendezvous: Rendezvous | None = Field(None, description="See TrialOptions.")


def options_of(config: Mapping[str, Any]) -> TrialOptions:
    """The trial's options from its Tune config: the object the driver put there, or the
    plain mapping an older sweep's state holds, validated here (the one place)."""
    if OPTIONS_KEY not in config:
        raise KeyError(
            f"trial config has no {OPTIONS_KEY!r}: build the param space with "
            "service.spec.build_param_space"
        )
    return TrialOptions.model_validate(config[OPTIONS_KEY])


def train_dict_for(
    config: Mapping[str, Any], arms: Mapping[str, Mapping[str, Any]] | None = None
) -> dict[str, Any]:
    """The trial's full TrainConfig dict: base, then its arm's overrides, then sampled values.
    `arms`: the sweep's arms; None: those its options carry, if any. Values are copied in,
    so a later path never writes into the arm's or grid's own dict."""
    if arms is None:
        arms = options_of(config).arms if OPTIONS_KEY in config else {}
    trial = copy.deepcopy(config["train"])
    for path, value in (arms.get(config.get("arm") or "") or {}).items():
        set_dotted(trial, path, copy.deepcopy(value))
    for path, value in (config.get("params") or {}).items():
        set_dotted(trial, path, copy.deepcopy(value))
    return trial
