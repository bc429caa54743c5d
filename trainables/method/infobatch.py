"""Loss-aware pruning (InfoBatch, Qin et al., ICLR 2024): the pure decision and the loss table.

Each epoch, every sample whose last recorded loss is below the mean of the recorded
losses is "well learned"; a random fraction `ratio` of those is left out of the epoch
(one Bernoulli draw per sample, seeded by (seed, epoch)), and the kept well-learned
samples have their loss scaled by 1 / (1 - ratio), so the expected epoch gradient is
that of the full data. Samples never seen yet (no loss recorded) are always kept.
From the annealing point (`anneal_epoch`) the full data are used again.

`LossTable` keeps the last loss of every sample index across epochs. Under DDP each
rank records the losses of its shard of the epoch's order (the forward pass the step
already does, reduction='none'); at the end of the epoch the shards are gathered
(their lengths, then the (index, loss) pairs padded to the longest share) so every
rank holds the same table and takes the same decision.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

__all__ = ["LossTable", "PrunePlan", "all_gather_cat", "anneal_epoch", "prune_plan"]


def anneal_epoch(budget: int, anneal: float) -> int:
    """First 1-based epoch on full data again: ceil(anneal * E) + 1 (anneal = 1: never)."""
    if not 0 < anneal <= 1:
        raise ValueError(f"prune.anneal={anneal} must be in (0, 1]")
    return math.ceil(anneal * budget) + 1


@dataclass(frozen=True)
class PrunePlan:
    """One epoch's decision: which sample indices train, and the loss weight of each sample."""

    keep: torch.Tensor  # int64 sorted indices of the samples trained on this epoch
    weights: torch.Tensor  # float32 [N]: 1, or 1 / (1 - ratio) for kept well-learned samples
    total: int  # N

    @property
    def pruned_fraction(self) -> float:
        return 1.0 - self.keep.numel() / self.total if self.total else 0.0


def prune_plan(losses: torch.Tensor, *, ratio: float, seed: int, epoch: int) -> PrunePlan:
    """InfoBatch's keep set and weights from the last loss of every sample (NaN: not seen).

    Deterministic in (losses, ratio, seed, epoch): the uniform draw of sample i does not
    depend on which other samples are well learned.
    """
    if not 0 <= ratio < 1:
        raise ValueError(f"prune.ratio={ratio} must be in [0, 1)")
    table = losses.detach().double().cpu().reshape(-1)
    n = table.numel()
    seen = ~torch.isnan(table)
    well = torch.zeros(n, dtype=torch.bool)
    if seen.any():
        well = seen & (table < table[seen].mean())
    u = torch.from_numpy(np.random.default_rng([seed, epoch, 0x1F0BA7C]).random(n))
    drop = well & (u < ratio)
    weights = torch.ones(n, dtype=torch.float32)
    weights[well & ~drop] = 1.0 / (1.0 - ratio)
    return PrunePlan(torch.nonzero(~drop).reshape(-1), weights, n)


Gather = Callable[[torch.Tensor], torch.Tensor]


def all_gather_cat(t: torch.Tensor) -> torch.Tensor:
    """1-D `t` of every rank concatenated in rank order; the ranks' lengths may differ
    (shares of an epoch differ by one): padded to the longest for the all_gather."""
    import torch.distributed as dist

    world = dist.get_world_size()
    size = torch.tensor([t.numel()], device=t.device)
    sizes = [torch.empty_like(size) for _ in range(world)]
    dist.all_gather(sizes, size)
    counts = [int(s) for s in sizes]
    padded = torch.zeros(max(counts), dtype=t.dtype, device=t.device)
    padded[: t.numel()] = t
    parts = [torch.empty_like(padded) for _ in range(world)]
    dist.all_gather(parts, padded)
    return torch.cat([p[:c] for p, c in zip(parts, counts, strict=True)])


class LossTable:
    """Last training loss of every sample index (NaN until seen), on the training device."""

    def __init__(self, n: int, device: torch.device) -> None:
        self.losses = torch.full((n,), float("nan"), device=device)

    def update(
        self, order: torch.Tensor, losses: torch.Tensor, gather: Gather | None = None
    ) -> None:
        """Record one epoch: `losses[j]` is the loss of sample `order[j]` on this rank.

        `gather` concatenates a 1-D tensor over ranks (DDP); a sample seen several times in
        the epoch (repeats) gets the mean of its losses.
        """
        idx, val = order.to(self.losses.device), losses.to(self.losses.device).float()
        if gather is not None:  # one gather: indices are exact in float64
            both = gather(torch.cat([idx.double(), val.double()]).reshape(2, -1).T.reshape(-1))
            idx, val = both[0::2].long(), both[1::2].float()
        n = self.losses.numel()
        sums = torch.zeros(n, device=val.device).index_add_(0, idx, val)
        counts = torch.zeros(n, device=val.device).index_add_(0, idx, torch.ones_like(val))
        seen = counts > 0
        self.losses = torch.where(seen, sums / counts.clamp(min=1), self.losses)

    def plan(self, *, ratio: float, seed: int, epoch: int) -> PrunePlan:
        return prune_plan(self.losses, ratio=ratio, seed=seed, epoch=epoch)

    def state_dict(self) -> dict[str, Any]:
        return {"losses": self.losses.detach().cpu().clone()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        losses = state["losses"]
        if losses.numel() != self.losses.numel():
            raise ValueError(
                f"checkpoint loss table has {losses.numel()} samples, the data have "
                f"{self.losses.numel()}; resume with the same data settings"
            )
        self.losses = losses.to(self.losses.device).float()
