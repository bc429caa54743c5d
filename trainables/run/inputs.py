"""What the built-in loop makes of a run's inputs and targets, and each phase's augmentation.

Inputs are images [C, H, W], 1-D signals [C, L], feature vectors [F] (tabular data) or
token ids (an integer dtype other than uint8 pixels: passed to the model as int64, never
scaled or normalised). Targets are class ids (cross-entropy) or floats [N] / [N, T]
(regression: squared error, no accuracy). The built-in augmentation
(trainables/method/augment.py) handles images and 1-D signals only; a phase's `augment`
is `auto` (on for those, off otherwise, said once in the log), `true` (an error for
other inputs, before the first epoch) or `false`, and its `augment_fn` names a user's
own, called as `fn(x, g)`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import torch

from trainables.core.config import ConfigError, RecipeConfig
from trainables.core.imports import FactoryError, resolve
from trainables.data.datasets import Dataset
from trainables.data.streaming import StreamData
from trainables.method.augment import augment_batch

__all__ = ["Augment", "input_dtype", "is_token_ids", "phase_augments", "squared_error"]

log = logging.getLogger(__name__)

# An augmentation of one phase: (batch, generator, strength) -> batch of the same shape.
Augment = Callable[[torch.Tensor, torch.Generator, float], torch.Tensor]


def input_dtype(data: Dataset | StreamData) -> torch.dtype:
    """The dtype of the training inputs (a streamed Dataset's first sample)."""
    if isinstance(data, Dataset):
        return data.train_x.dtype
    return torch.as_tensor(data.train[0][0]).dtype


def is_token_ids(dtype: torch.dtype) -> bool:
    """Integer inputs other than uint8 pixels are token ids."""
    return dtype != torch.uint8 and not dtype.is_floating_point and dtype != torch.bool


def squared_error(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-element squared error of a regression model's output against float targets y
    [B] or [B, T]; the output may carry a trailing axis of 1 ([B, 1] for y [B])."""
    pred = out.float()
    if pred.numel() != y.numel():
        outputs = 1 if y.dim() == 1 else int(y.shape[1])
        raise ValueError(
            f"the model's output of shape {tuple(pred.shape)} does not match the targets' "
            f"{tuple(y.shape)}: with float targets (regression) the model returns "
            f"[batch, {outputs}] (num_classes is the number of outputs)"
        )
    return (pred.reshape(y.shape) - y.float()) ** 2


def _user_augment(fn: Any, target: str, field: str) -> Augment:
    """A user's `fn(x, g)` with its result checked: a tensor of the batch's shape."""
    if not callable(fn):
        raise FactoryError(f"{field}: {target!r} is a {type(fn).__name__}, not a function")

    def apply(x: torch.Tensor, g: torch.Generator, strength: float) -> torch.Tensor:
        out = fn(x, g)
        if not isinstance(out, torch.Tensor) or out.shape != x.shape:
            got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise FactoryError(
                f"{field}: {target!r} returned {got} for a batch of shape {tuple(x.shape)}; "
                "return a tensor of the batch's shape"
            )
        return out

    return apply


def _check_mixing(recipe: RecipeConfig, kind: str | None) -> None:
    """Mixup and CutMix blend class labels: refused for `kind` (token ids, float targets)."""
    for name in ("critical", "after"):
        phase = getattr(recipe, name)
        for alpha in ("mixup_alpha", "cutmix_alpha"):
            if kind is not None and getattr(phase, alpha) > 0:
                raise ConfigError(
                    f"recipe.{name}.{alpha}={getattr(phase, alpha)}: Mixup and CutMix blend "
                    f"inputs and class labels, which {kind} do not allow; set it to 0"
                )


def phase_augments(
    recipe: RecipeConfig,
    shape: tuple[int, ...],
    *,
    tokens: bool,
    regression: bool,
    say: bool = True,
) -> dict[str, Augment | None]:
    """{"critical": fn or None, "after": fn or None} for inputs of one sample's `shape`;
    ConfigError for a setting these inputs cannot take (see the module docstring)."""
    kind = "token ids" if tokens else f"inputs of shape {shape}"
    _check_mixing(recipe, "float targets (regression)" if regression else kind if tokens else None)
    spatial = len(shape) in (2, 3) and not tokens  # [C, L] signals, [C, H, W] images
    out: dict[str, Augment | None] = {}
    auto_off = []
    for name in ("critical", "after"):
        phase, field = getattr(recipe, name), f"recipe.{name}"
        fn: Augment | None = None
        if phase.augment is False:
            pass
        elif phase.augment_fn is not None:
            user = resolve(phase.augment_fn, field=f"{field}.augment_fn")
            fn = _user_augment(user, phase.augment_fn, f"{field}.augment_fn")
        elif spatial:
            fn = _builtin(recipe)
        elif phase.augment is True:
            raise ConfigError(
                f"{field}.augment: true, but the built-in augmentation handles images "
                f"[C, H, W] and 1-D signals [C, L], not {kind}; set {field}.augment to "
                f"auto or false, or give {field}.augment_fn: 'module:function'"
            )
        else:
            auto_off.append(name)
        out[name] = fn
    if auto_off and say:
        log.info(
            "augmentation off (%s): the built-in one handles images and 1-D signals, "
            "not %s; recipe.<phase>.augment_fn takes your own",
            ", ".join(auto_off),
            kind,
        )
    return out


def _builtin(recipe: RecipeConfig) -> Augment:
    aug = recipe.augmentation

    def apply(x: torch.Tensor, g: torch.Generator, strength: float) -> torch.Tensor:
        return augment_batch(x, aug, strength, g)

    return apply
