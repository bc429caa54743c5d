"""Recipe phases, annealing point, epoch sample plans and sharding."""

from __future__ import annotations

import torch

from trainables.core.config import PhaseConfig, RecipeConfig
from trainables.method.recipes import (
    anneal_epoch,
    epoch_indices,
    phase_for_epoch,
    shard_indices,
    step_bounds,
)


def test_phases_follow_the_switch_epoch():
    r = RecipeConfig()
    assert phase_for_epoch(r, 3, None, 30).repeats == 3
    assert phase_for_epoch(r, 7, 8, 30).name == "critical"
    p = phase_for_epoch(r, 8, 8, 30)
    assert (p.name, p.repeats, p.augment) == ("after", 1, "auto")


def test_pruning_then_annealing():
    r = RecipeConfig(after=PhaseConfig(repeats=1, data_fraction=0.5), anneal_ratio=0.5)
    assert anneal_epoch(10, 30, 0.5) == 20  # 10 + ceil(20 * 0.5)
    assert anneal_epoch(7, 30, 0.8) == 7 + 19  # ceil(18.4) = 19
    assert phase_for_epoch(r, 19, 10, 30).data_fraction == 0.5
    a = phase_for_epoch(r, 20, 10, 30)
    assert (a.name, a.data_fraction) == ("anneal", 1.0)


def test_augmentation_can_be_switched_off_after_the_period():
    r = RecipeConfig(after=PhaseConfig(repeats=1, augment=False))
    assert phase_for_epoch(r, 2, 5, 10).augment
    assert not phase_for_epoch(r, 5, 5, 10).augment


def test_epoch_indices_repeat_and_prune():
    labels = torch.arange(100) % 5
    p3 = phase_for_epoch(RecipeConfig(), 1, None, 10)
    idx = epoch_indices(labels, p3, seed=0, epoch=1)
    assert idx.numel() == 300
    assert torch.equal(torch.bincount(idx, minlength=100), torch.full((100,), 3))
    assert torch.equal(idx, epoch_indices(labels, p3, seed=0, epoch=1))  # reproducible
    assert not torch.equal(idx, epoch_indices(labels, p3, seed=0, epoch=2))
    pruned = phase_for_epoch(RecipeConfig(after=PhaseConfig(data_fraction=0.4)), 5, 2, 10)
    sub = epoch_indices(labels, pruned, seed=0, epoch=5)
    assert sub.numel() == 40 and sub.unique().numel() == 40
    assert torch.equal(torch.bincount(labels[sub], minlength=5), torch.full((5,), 8))


def test_shards_deal_everything_once_and_take_equal_steps():
    idx = torch.randperm(103)
    shards = [shard_indices(idx, r, 4) for r in range(4)]
    assert sorted(s.numel() for s in shards) == [25, 26, 26, 26]
    assert sorted(torch.cat(shards).tolist()) == list(range(103))  # no duplicates, no gaps
    # 25 // 8: four steps on every rank; the 26-sample shares carry one extra in the last.
    assert step_bounds(25, 25, 8) == [(0, 8), (8, 16), (16, 24), (24, 25)]
    assert step_bounds(26, 25, 8) == [(0, 8), (8, 16), (16, 24), (24, 26)]
    assert step_bounds(25, 24, 8) == [(0, 8), (8, 16), (16, 25)]  # 24 divides: 3 steps
    assert step_bounds(10, 10, 4) == [(0, 4), (4, 8), (8, 10)]  # one rank: plain batching
    assert [s.tolist() for s in (shard_indices(torch.tensor([7]), r, 3) for r in range(3))] == [
        [7],
        [7],
        [7],
    ]  # fewer samples than ranks: repeated so that every rank steps
