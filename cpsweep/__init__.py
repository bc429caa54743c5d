"""cpsweep as a library: the public names, re-exported from `trainables` and `service`.

    from cpsweep import CriticalPeriod                # a plain PyTorch loop, no Ray
    from cpsweep import CriticalPeriodScheduler       # a user's own Ray Tune Tuner
    from cpsweep import CriticalPeriodCallback        # Lightning (cpsweep[lightning])
    from cpsweep import CriticalPeriodTrainerCallback # Hugging Face Trainer (cpsweep[hf])
    from cpsweep import RepeatSampler                 # repeats / pruning for any DataLoader

The folders `trainables/` (data plane, runs in trials) and `service/` (driver) stay
the implementation; this package only names what users may rely on. Names resolve
on first use, so `import cpsweep` imports neither torch nor Ray.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__all__ = [
    "DATASETS",
    "MODELS",
    "ControlChannel",
    "CriterionConfig",
    "CriticalPeriod",
    "CriticalPeriodCallback",
    "CriticalPeriodScheduler",
    "CriticalPeriodTrainerCallback",
    "Decision",
    "LoopContext",
    "RepeatSampler",
    "TrainConfig",
    "tune_channel",
]

# public name -> module that defines it; a new public name goes here and in __all__.
_HOMES = {
    "MODELS": "trainables.core.registry",  # MODELS.register("mine", build): a name, not a factory
    "DATASETS": "trainables.core.registry",
    "CriticalPeriod": "trainables.method.period",
    "Decision": "trainables.method.period",
    "CriterionConfig": "trainables.core.config",
    "TrainConfig": "trainables.core.config",
    "ControlChannel": "trainables.run.channel",
    "tune_channel": "trainables.run.channel",
    "LoopContext": "trainables.run.user_loop",
    "CriticalPeriodScheduler": "service.sweeps.scheduler",
    "RepeatSampler": "trainables.data.sampler",
    # the trainers' callbacks: their optional extras, cpsweep[lightning] and cpsweep[hf]
    "CriticalPeriodCallback": "trainables.run.integrations.lightning_callback",
    "CriticalPeriodTrainerCallback": "trainables.run.integrations.hf_callback",
}

if TYPE_CHECKING:
    from service.sweeps.scheduler import CriticalPeriodScheduler
    from trainables.core.config import CriterionConfig, TrainConfig
    from trainables.core.registry import DATASETS, MODELS
    from trainables.data.sampler import RepeatSampler
    from trainables.method.period import CriticalPeriod, Decision
    from trainables.run.channel import ControlChannel, tune_channel
    from trainables.run.integrations.hf_callback import CriticalPeriodTrainerCallback
    from trainables.run.integrations.lightning_callback import CriticalPeriodCallback
    from trainables.run.user_loop import LoopContext


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'cpsweep' has no attribute {name!r}")
    return getattr(importlib.import_module(home), name)


def __dir__() -> list[str]:
    return sorted(__all__)
