"""The built-in optimizers, registered by name in `OPTIMIZERS` (trainables/core/registry.py).

A builder takes the parameters and the `OptimConfig` and returns a torch optimizer; the
learning-rate schedule is applied by the engine on top (`lr_factor`). Your own:
`OPTIMIZERS.register("mine", build)` in the module a trial imports (a factory's module or
your `train.loop`), with `build(params, cfg) -> torch.optim.Optimizer`.
"""

from __future__ import annotations

from typing import Any

import torch

from trainables.core.config import OptimConfig
from trainables.core.imports import FactoryError
from trainables.core.registry import OPTIMIZERS

__all__ = ["adam", "adamw", "make_optimizer", "rmsprop", "sgd"]


def sgd(params: Any, cfg: OptimConfig) -> torch.optim.Optimizer:
    # Nesterov needs momentum; with momentum 0 it is plain SGD (the paper uses 0.9).
    return torch.optim.SGD(
        params,
        lr=cfg.lr,
        momentum=cfg.momentum,
        nesterov=cfg.nesterov and cfg.momentum > 0,
        weight_decay=cfg.weight_decay,
    )


def adam(params: Any, cfg: OptimConfig) -> torch.optim.Optimizer:
    return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


def adamw(params: Any, cfg: OptimConfig) -> torch.optim.Optimizer:
    return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


def rmsprop(params: Any, cfg: OptimConfig) -> torch.optim.Optimizer:
    return torch.optim.RMSprop(
        params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay
    )


def make_optimizer(cfg: OptimConfig, params: Any) -> torch.optim.Optimizer:
    """The registered optimizer `cfg.name` over `params`; FactoryError names optim.name."""
    opt = OPTIMIZERS.load(cfg.name)(params, cfg)
    if not isinstance(opt, torch.optim.Optimizer):
        raise FactoryError(
            f"optim.name={cfg.name!r}: its builder returned {type(opt).__name__}, "
            "not a torch.optim.Optimizer"
        )
    return opt
