"""Mixup and CutMix: batch-level label mixing, a recipe component that can be halted.

Mixup (Zhang et al., ICLR 2018) blends each input with a random partner of the same
batch, x' = lam * x + (1 - lam) * x[perm]; CutMix (Yun et al., ICCV 2019) pastes a
random box of the partner instead, with lam the share of the image left untouched.
Both train on lam * CE(y) + (1 - lam) * CE(y[perm]). lam ~ Beta(alpha, alpha) is drawn
once per batch on the host (its own seeded generator, no device sync); the partner
permutation is drawn on the device. With both alphas set, each batch picks one of the
two with equal probability (as timm does).

Golatkar et al. (NeurIPS 2019) found that regularisers applied only during the early
phase of training recover most of their effect: a phase's `mixup_alpha` /
`cutmix_alpha` set to 0 switches the component off after the critical period.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["Mix", "make_mix_rng", "mix_batch", "mixed_cross_entropy"]


@dataclass(frozen=True)
class Mix:
    """What one batch was trained on: targets y and partner targets y2, weighted lam / 1-lam."""

    y: torch.Tensor
    y2: torch.Tensor
    lam: float


def make_mix_rng(seed: int, epoch: int, rank: int) -> np.random.Generator:
    """Host generator for lam and the CutMix box: (seed, epoch, rank) reproduces a run."""
    return np.random.default_rng([seed, epoch, rank, 0x6D6978])


def _cut_box(size: tuple[int, ...], lam: float, rng: np.random.Generator) -> tuple[slice, ...]:
    """A box covering about (1 - lam) of the spatial area (trailing dims, 1-D or 2-D),
    centred uniformly and clipped at the borders."""
    frac = math.sqrt(1.0 - lam) if len(size) == 2 else 1.0 - lam
    box = []
    for n in size:
        cut = round(n * frac)
        centre = int(rng.integers(0, n))
        box.append(slice(max(centre - cut // 2, 0), min(centre + cut - cut // 2, n)))
    return tuple(box)


def mix_batch(
    x: torch.Tensor,
    y: torch.Tensor,
    mixup_alpha: float,
    cutmix_alpha: float,
    rng: np.random.Generator,
    g: torch.Generator,
) -> tuple[torch.Tensor, Mix]:
    """Mix a batch x [B, C, H, W] or [B, C, L] with labels y [B]; returns (x', Mix)."""
    if mixup_alpha < 0 or cutmix_alpha < 0:
        raise ValueError(f"alphas must be >= 0, got mixup {mixup_alpha}, cutmix {cutmix_alpha}")
    if (mixup_alpha == 0 and cutmix_alpha == 0) or x.shape[0] < 2:
        return x, Mix(y, y, 1.0)
    use_cutmix = cutmix_alpha > 0 and (mixup_alpha == 0 or rng.random() < 0.5)
    alpha = cutmix_alpha if use_cutmix else mixup_alpha
    lam = float(rng.beta(alpha, alpha))
    perm = torch.randperm(x.shape[0], generator=g, device=x.device)
    if use_cutmix:
        spatial = tuple(x.shape[2:])
        box = _cut_box(spatial, lam, rng)
        out = x.clone()
        out[(slice(None), slice(None), *box)] = x[perm][(slice(None), slice(None), *box)]
        cut = math.prod(s.stop - s.start for s in box)
        lam = 1.0 - cut / math.prod(spatial)  # the share actually left untouched
    else:
        out = x * lam + x[perm] * (1.0 - lam)
    return out, Mix(y, y[perm], lam)


def mixed_cross_entropy(logits: torch.Tensor, mix: Mix, reduction: str = "mean") -> torch.Tensor:
    """lam * CE(logits, y) + (1 - lam) * CE(logits, y2); plain CE when nothing was mixed.
    reduction='none' gives each sample's loss (what loss-aware pruning records)."""
    if mix.lam == 1.0:
        return F.cross_entropy(logits, mix.y, reduction=reduction)
    return mix.lam * F.cross_entropy(logits, mix.y, reduction=reduction) + (
        1.0 - mix.lam
    ) * F.cross_entropy(logits, mix.y2, reduction=reduction)
