"""Batched, on-device data augmentation with per-sample random parameters.

One `affine_grid` + `grid_sample` call applies rotation, translation and the
random-crop shift to the whole batch on the training device; flips are a
masked `torch.where`. No Python loop over samples. Randomness comes from a
seeded `torch.Generator`, so a (seed, epoch, rank) triple reproduces a run.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from trainables.core.config import AugmentConfig

__all__ = ["augment_batch", "make_generator"]


def make_generator(device: torch.device, seed: int, epoch: int, rank: int) -> torch.Generator:
    g = torch.Generator(device=device)
    g.manual_seed((seed * 1_000_003 + epoch) * 1_009 + rank)
    return g


def _uniform(
    n: int, lo: float, hi: float, g: torch.Generator, device: torch.device
) -> torch.Tensor:
    return torch.rand(n, generator=g, device=device) * (hi - lo) + lo


def augment_batch(
    x: torch.Tensor, cfg: AugmentConfig, strength: float, g: torch.Generator
) -> torch.Tensor:
    """Augment images [B, C, H, W] or 1-D signals [B, C, L] (shift only); returns a new tensor."""
    if x.dim() == 3:  # 1-D signals: random circular-free shift along L
        return augment_batch(
            x.unsqueeze(2),
            cfg.model_copy(update={"rotation_deg": 0.0, "hflip": False}),
            strength,
            g,
        ).squeeze(2)
    if x.dim() != 4:
        raise ValueError(f"expected [B, C, H, W] or [B, C, L], got shape {tuple(x.shape)}")
    b, _, h, w = x.shape
    dev = x.device
    angle = _uniform(b, -1.0, 1.0, g, dev) * math.radians(cfg.rotation_deg * strength)
    # affine_grid works in normalised coordinates: a shift of d pixels is 2*d/size.
    tx = _uniform(b, -1.0, 1.0, g, dev) * 2 * cfg.translate * strength
    ty = _uniform(b, -1.0, 1.0, g, dev) * 2 * cfg.translate * strength if h > 1 else 0 * tx
    if cfg.crop_padding > 0:  # random crop of a zero-padded image == integer shift, zero fill
        p = cfg.crop_padding
        tx = tx + torch.randint(-p, p + 1, (b,), generator=g, device=dev) * 2.0 / w
        if h > 1:
            ty = ty + torch.randint(-p, p + 1, (b,), generator=g, device=dev) * 2.0 / h
    cos, sin = torch.cos(angle), torch.sin(angle)
    theta = torch.stack(
        [torch.stack([cos, -sin, tx], dim=1), torch.stack([sin, cos, ty], dim=1)], dim=1
    ).to(x.dtype)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    out = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    if cfg.hflip:
        flip = torch.rand(b, generator=g, device=dev) < 0.5
        out = torch.where(flip[:, None, None, None], out.flip(-1), out)
    return out
