"""The repeat/prune sampler: one epoch's sample order on this rank, for any DataLoader.

The built-in loop (trainables/run/engine.py) draws every epoch from it, and so can a
user's own loop, a Lightning `DataLoader` or a Hugging Face `Trainer`:

    sampler = RepeatSampler(train_set, repeats=3, seed=0)   # rank/world from torch.distributed
    loader = DataLoader(train_set, batch_size=64, sampler=sampler)
    ...
    sampler.repeats = 1        # between epochs: the next epoch is one pass again

The order is `shard_indices(sample_order(...), rank, world)`
(trainables/method/recipes.py): a stratified `data_fraction` of the samples (or the
loss-aware pruning's kept ones), each `repeats` times, shuffled with a seed per
(seed, epoch), then dealt round-robin to the ranks, every entry to exactly one rank and
no padding. It is computed when first read after `set_epoch` or a change of `repeats`,
`data_fraction` or `keep`, so a change between epochs takes effect at the next epoch.
"""

from __future__ import annotations

from collections.abc import Iterator, Sized
from typing import Any

import torch
import torch.distributed as dist
from torch.utils.data import Sampler

from trainables.method.recipes import Phase, sample_order, shard_indices, step_bounds

__all__ = ["RepeatSampler"]


class RepeatSampler(Sampler[int]):
    """This rank's sample order for one epoch: `repeats` shuffled copies of a fraction.

    Args:
        data: the labels (a tensor of class ids, used to stratify `data_fraction`), a
            Dataset (its `targets` when it has them, else unstratified) or a sample count.
        repeats: copies of each sample per epoch (the paper's 3 during the period).
        data_fraction: share of the samples drawn each epoch, stratified by label.
        seed: with the epoch, seeds the order; the same on every rank.
        rank, world_size: this process's DDP share; None reads torch.distributed
            (rank 0 of 1 without a process group) when the order is first drawn.
    """

    def __init__(
        self,
        data: torch.Tensor | Sized | int,
        *,
        repeats: int = 1,
        data_fraction: float = 1.0,
        seed: int = 0,
        rank: int | None = None,
        world_size: int | None = None,
    ) -> None:
        self.labels = _labels(data)
        self.seed = seed
        self._rank, self._world = rank, world_size
        if rank is not None and world_size is not None and not 0 <= rank < world_size:
            raise ValueError(f"rank={rank} must be in [0, world_size={world_size})")
        self.epoch = 0
        self.repeats, self.data_fraction = repeats, data_fraction
        self.keep: torch.Tensor | None = None  # the loss-aware pruning's kept samples
        self._drawn: tuple[Any, ...] | None = None
        self._order = torch.empty(0, dtype=torch.int64)
        self._n_min = 0

    @property
    def repeats(self) -> int:
        return self._repeats

    @repeats.setter
    def repeats(self, value: int) -> None:
        if int(value) != value or value < 1:
            raise ValueError(f"repeats={value!r}: need a whole number >= 1")
        self._repeats = int(value)

    @property
    def data_fraction(self) -> float:
        return self._fraction

    @data_fraction.setter
    def data_fraction(self, value: float) -> None:
        if not 0 < value <= 1:
            raise ValueError(f"data_fraction={value!r}: need a value in (0, 1]")
        self._fraction = float(value)

    @property
    def rank(self) -> int:
        return _dist()[0] if self._rank is None else self._rank

    @property
    def world_size(self) -> int:
        return _dist()[1] if self._world is None else self._world

    def set_epoch(
        self, epoch: int, phase: Phase | None = None, keep: torch.Tensor | None = None
    ) -> None:
        """The epoch to draw next; `phase` sets repeats and data_fraction from a recipe
        phase, `keep` the loss-aware pruning's kept samples (global indices, every rank)."""
        self.epoch = epoch
        if phase is not None:
            self.repeats, self.data_fraction = phase.repeats, phase.data_fraction
        self.keep = keep

    def indices(self) -> torch.Tensor:
        """This rank's order for the current epoch and settings."""
        key = (self.epoch, self.repeats, self.data_fraction, id(self.keep), self.rank)
        if key != self._drawn:
            order = sample_order(
                self.labels,
                repeats=self.repeats,
                data_fraction=self.data_fraction,
                seed=self.seed,
                epoch=self.epoch,
                base=self.keep,
            )
            world = self.world_size
            self._order = shard_indices(order, self.rank, world)
            self._n_min = max(order.numel(), world) // world
            self._drawn = key
        return self._order

    def bounds(self, batch_size: int) -> list[tuple[int, int]]:
        """(start, stop) of each step's batch in `indices()`; the same count on every rank."""
        n = len(self)
        return step_bounds(n, self._n_min, batch_size)

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices().tolist())

    def __len__(self) -> int:
        return int(self.indices().numel())


def _labels(data: torch.Tensor | Sized | int) -> torch.Tensor:
    if isinstance(data, torch.Tensor):
        return data.reshape(-1).cpu()
    if isinstance(data, int):
        n = data
    elif isinstance(data, Sized):
        n = len(data)
        targets = getattr(data, "targets", None)
        if targets is not None and len(targets) == n:
            return torch.as_tensor(targets).reshape(-1).to(torch.int64)
    else:
        raise TypeError(f"data={data!r}: pass labels (a tensor), a sized Dataset or a count")
    if n < 1:
        raise ValueError(f"data has {n} samples; need at least one")
    return torch.zeros(n, dtype=torch.int64)  # one class: the fraction is a plain subset


def _dist() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1
