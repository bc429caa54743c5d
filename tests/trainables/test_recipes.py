"""Recipe phases, annealing point, epoch sample plans and sharding."""

from __future__ import annotations

import torch

from trainables.config import PhaseConfig, RecipeConfig
from trainables.recipes import anneal_epoch, epoch_indices, phase_for_epoch, shard_indices


def test_phases_follow_the_switch_epoch():
    r = RecipeConfig()
    assert phase_for_epoch(r, 3, None, 30).repeats == 3
    assert phase_for_epoch(r, 7, 8, 30).name == "critical"
    p = phase_for_epoch(r, 8, 8, 30)
    assert (p.name, p.repeats, p.augment) == ("after", 1, True)


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


def test_shards_are_equal_and_cover_everything():
    idx = torch.randperm(103)
    shards = [shard_indices(idx, r, 4) for r in range(4)]
    assert {s.numel() for s in shards} == {26}
    assert set(torch.cat(shards).tolist()) == set(range(103))
