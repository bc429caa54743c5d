"""RepeatSampler, the public sampler: repeats and pruning changed between epochs."""

from __future__ import annotations

from collections import Counter

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from cpsweep import RepeatSampler
from trainables.method.recipes import sample_order, shard_indices


def test_repeats_changed_between_epochs_change_the_next_epoch_only():
    labels = torch.arange(40) % 4
    sampler = RepeatSampler(labels, repeats=3, seed=5)
    loader = DataLoader(TensorDataset(torch.arange(40)), batch_size=8, sampler=sampler)
    sampler.set_epoch(0)
    first = [int(i) for (b,) in loader for i in b]
    assert len(loader) == 15 and Counter(first) == {i: 3 for i in range(40)}
    sampler.repeats = 1  # what a callback does at the switch
    sampler.set_epoch(1)
    assert len(loader) == 5 and sorted(int(i) for (b,) in loader for i in b) == list(range(40))
    sampler.data_fraction = 0.5  # stratified: half of each class
    kept = list(sampler)
    assert len(kept) == 20 and Counter(int(labels[i]) for i in kept) == {c: 5 for c in range(4)}


def test_order_is_the_recipes_pure_function_sharded_by_rank():
    labels = torch.arange(30) % 3
    for rank in range(3):
        s = RepeatSampler(labels, repeats=2, seed=1, rank=rank, world_size=3)
        s.set_epoch(4)
        whole = sample_order(labels, repeats=2, data_fraction=1.0, seed=1, epoch=4)
        assert torch.equal(s.indices(), shard_indices(whole, rank, 3))
    alone = RepeatSampler(labels, repeats=2, seed=1)  # no process group: rank 0 of 1
    alone.set_epoch(4)
    assert (alone.rank, alone.world_size) == (0, 1) and len(alone) == 60
    assert list(alone) != list(RepeatSampler(labels, repeats=2, seed=2))


def test_data_can_be_a_dataset_with_targets_or_a_count_and_bad_values_name_the_field():
    ds = TensorDataset(torch.zeros(10))
    ds.targets = [0] * 5 + [1] * 5  # type: ignore[attr-defined]
    assert RepeatSampler(ds).labels.tolist() == ds.targets  # type: ignore[attr-defined]
    assert len(RepeatSampler(7, repeats=2)) == 14
    with pytest.raises(ValueError, match="repeats=0"):
        RepeatSampler(7, repeats=0)
    with pytest.raises(ValueError, match=r"data_fraction=1\.5"):
        RepeatSampler(7).data_fraction = 1.5
    with pytest.raises(ValueError, match="rank=2"):
        RepeatSampler(7, rank=2, world_size=2)
