"""Recipe schedules: which training components run in which phase of a run.

A recipe has a critical-period phase and a post-period phase, each a set of
component settings (`PhaseConfig`: repeats, augmentation on/off and strength,
data fraction, Mixup/CutMix alphas). Fukase et al. (arXiv 2506.15954) see the training set 3 times
per epoch, independently augmented, during the period and once afterwards. With
pruning, a stratified random fraction of the data is used after the period
until the annealing point `switch + ceil((E - switch) * r)`, then the full set.
A phase's `prune` (loss-aware, InfoBatch: trainables/method/infobatch.py) instead chooses the
epoch's samples from their last losses, until epoch ceil(anneal * E); the engine hands
that choice to `epoch_indices` as the epoch's base set.
New components (RandAugment, SAM, ...) become fields of `PhaseConfig`, as Mixup and
CutMix did; the scheduler only ever moves the switch epoch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from trainables.core.config import PhaseConfig, PruneConfig, RecipeConfig
from trainables.method.infobatch import anneal_epoch as prune_anneal_epoch
from trainables.method.stratify import stratified_subset

__all__ = [
    "Phase",
    "anneal_epoch",
    "epoch_indices",
    "phase_for_epoch",
    "sample_order",
    "shard_indices",
    "step_bounds",
]


@dataclass(frozen=True)
class Phase:
    name: str  # "critical", "after" or "anneal"
    repeats: int
    augment: bool | str  # True, False or "auto" (the engine decides from the input shape)
    augment_strength: float
    data_fraction: float
    mixup_alpha: float = 0.0
    cutmix_alpha: float = 0.0
    prune: PruneConfig | None = None  # loss-aware pruning this epoch (None: off or annealed)

    @classmethod
    def of(
        cls,
        name: str,
        cfg: PhaseConfig,
        data_fraction: float | None = None,
        epoch: int = 0,
        budget: int = 0,
    ) -> Phase:
        frac = cfg.data_fraction if data_fraction is None else data_fraction
        prune = cfg.prune
        if prune is not None and epoch >= prune_anneal_epoch(budget, prune.anneal):
            prune = None  # InfoBatch's annealing: the last epochs see the full data
        return cls(
            name,
            cfg.repeats,
            cfg.augment,
            cfg.augment_strength,
            frac,
            cfg.mixup_alpha,
            cfg.cutmix_alpha,
            prune,
        )


def anneal_epoch(switch_epoch: int, budget: int, ratio: float) -> int:
    """First epoch back on full data: switch + ceil((E - switch) * ratio)."""
    if not 0 < ratio < 1:
        raise ValueError(f"anneal_ratio={ratio} must be in (0, 1)")
    return switch_epoch + math.ceil((budget - switch_epoch) * ratio)


def phase_for_epoch(
    recipe: RecipeConfig, epoch: int, switch_epoch: int | None, budget: int
) -> Phase:
    """Component settings for 1-based `epoch`, given the first post-period epoch (or None)."""
    if switch_epoch is None or epoch < switch_epoch:
        return Phase.of("critical", recipe.critical, epoch=epoch, budget=budget)
    after = recipe.after
    if (
        after.data_fraction < 1
        and recipe.anneal_ratio is not None
        and epoch >= anneal_epoch(switch_epoch, budget, recipe.anneal_ratio)
    ):
        return Phase.of("anneal", after, data_fraction=1.0)
    return Phase.of("after", after, epoch=epoch, budget=budget)


def epoch_indices(
    labels: torch.Tensor,
    phase: Phase,
    *,
    seed: int,
    epoch: int,
    base: torch.Tensor | None = None,
) -> torch.Tensor:
    """Global sample order of one epoch of `phase` (`sample_order` with its components)."""
    return sample_order(
        labels,
        repeats=phase.repeats,
        data_fraction=phase.data_fraction,
        seed=seed,
        epoch=epoch,
        base=base,
    )


def sample_order(
    labels: torch.Tensor,
    *,
    repeats: int,
    data_fraction: float,
    seed: int,
    epoch: int,
    base: torch.Tensor | None = None,
) -> torch.Tensor:
    """Global sample order of one epoch: a stratified fraction, `repeats` times, shuffled.

    Each repeat of a sample lands in a different batch and is augmented with its
    own random parameters. The subset is drawn afresh every epoch (seeded), so
    pruning visits all of the data over time. `base` (the loss-aware pruning's kept
    indices) replaces the epoch's set of samples.
    """
    n = labels.numel()
    if base is not None:
        base = base.reshape(-1).to(torch.int64).cpu()
    elif data_fraction < 1:
        keep = max(int(labels.unique().numel()), round(n * data_fraction))
        base = stratified_subset(labels, keep, seed=seed * 100_003 + epoch)
    else:
        base = torch.arange(n)
    g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    order = base.repeat(repeats)
    return order[torch.randperm(order.numel(), generator=g)]


def shard_indices(indices: torch.Tensor, rank: int, world_size: int) -> torch.Tensor:
    """This rank's share, dealt round-robin: every entry lands on exactly one rank and the
    shares differ by at most one (no padding, no gaps). Only an order shorter than the
    number of ranks is repeated, so that every rank holds at least one sample."""
    if world_size == 1:
        return indices
    if indices.numel() < world_size:
        indices = indices.repeat(math.ceil(world_size / max(1, indices.numel())))[:world_size]
    return indices[rank::world_size]


def step_bounds(n_local: int, n_min: int, batch_size: int) -> list[tuple[int, int]]:
    """(start, stop) of each step's batch within a rank's share of `n_local` samples.

    DDP needs every rank to take the same number of steps: each takes
    ceil(n_min / batch_size), where `n_min` is the smallest share; a larger share's
    extra sample joins its last batch. With one rank this is plain batching.
    """
    steps = max(1, math.ceil(n_min / batch_size))
    bounds = [(i * batch_size, min((i + 1) * batch_size, n_local)) for i in range(steps)]
    bounds[-1] = (bounds[-1][0], n_local)
    return bounds
