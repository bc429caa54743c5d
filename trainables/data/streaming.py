"""Where an epoch's batches come from: tensors in memory, or a DataLoader over a Dataset.

Both paths draw the epoch's sample order from one `RecipeSampler`, which is the
recipe's pure functions (`epoch_indices`: data_fraction pruning and annealing, or
the loss-aware pruning's kept indices,
`repeats` copies shuffled so each lands in its own batch; `shard_indices`: this DDP
rank's share) seeded by (seed, epoch). In memory the order indexes the tensors;
streamed, the same order feeds a `DataLoader` (worker processes, prefetch, pinned
memory on CUDA), which collates batches of exactly the same samples. Augmentation
and mixing run afterwards on the training device with the generator seeded by
(seed, epoch, rank), so each repeated copy is augmented independently and a seeded
run trains on identical batches through either path.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sized
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils.data import DataLoader, Sampler, Subset, TensorDataset
from torch.utils.data import Dataset as TorchDataset

from trainables.method.recipes import Phase, epoch_indices, shard_indices, step_bounds

__all__ = [
    "LoaderBatches",
    "RecipeSampler",
    "StreamData",
    "TensorBatches",
    "dataset_labels",
    "default_workers",
    "make_batches",
    "stream_tensors",
]

log = logging.getLogger(__name__)

_Batch = tuple[torch.Tensor, torch.Tensor]


class RecipeSampler(Sampler[int]):
    """This rank's sample order for one epoch and phase; `set_epoch` before iterating.

    The order is `shard_indices(epoch_indices(labels, phase, seed, epoch), rank, world)`:
    every entry of the epoch's global order lands on exactly one rank, no padding. Ranks
    take the same number of steps (`bounds`, from `step_bounds`): a share one longer
    than the smallest puts its extra sample in its last batch.
    """

    def __init__(self, labels: torch.Tensor, *, seed: int, rank: int = 0, world_size: int = 1):
        if not 0 <= rank < world_size:
            raise ValueError(f"rank={rank} must be in [0, world_size={world_size})")
        self.labels = labels.reshape(-1).cpu()
        self.seed, self.rank, self.world_size = seed, rank, world_size
        self._order: torch.Tensor | None = None

    def set_epoch(self, epoch: int, phase: Phase, keep: torch.Tensor | None = None) -> None:
        """`keep`: the loss-aware pruning's decision (global sample indices), same on all ranks."""
        order = epoch_indices(self.labels, phase, seed=self.seed, epoch=epoch, base=keep)
        self._order = shard_indices(order, self.rank, self.world_size)
        self._n_min = max(order.numel(), self.world_size) // self.world_size

    def indices(self) -> torch.Tensor:
        if self._order is None:
            raise RuntimeError("RecipeSampler: call set_epoch(epoch, phase) before iterating")
        return self._order

    def bounds(self, batch_size: int) -> list[tuple[int, int]]:
        """(start, stop) of each step's batch in `indices()`; the same count on every rank."""
        return step_bounds(len(self), self._n_min, batch_size)

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices().tolist())

    def __len__(self) -> int:
        return int(self.indices().numel())


@dataclass(frozen=True)
class StreamData:
    """Training and validation Datasets yielding (x, y), with the labels read once."""

    name: str
    train: TorchDataset[Any]
    val: TorchDataset[Any]
    train_y: torch.Tensor  # int64 [N], what stratified pruning needs
    val_y: torch.Tensor
    num_classes: int
    input_shape: tuple[int, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]

    @property
    def in_channels(self) -> int:
        return int(self.input_shape[0])


def dataset_labels(ds: TorchDataset[Any], where: str) -> torch.Tensor:
    """int64 labels of a Dataset: its `targets` attribute (torchvision's convention) when it
    has one of the right length, else one pass over the samples (slow for big data)."""
    n = len(ds) if isinstance(ds, Sized) else 0
    targets = getattr(ds, "targets", None)
    if targets is not None and len(targets) == n:
        return torch.as_tensor(targets).reshape(-1).to(torch.int64)
    log.warning("%s: reading %d labels by iterating; give the Dataset a `targets` list", where, n)
    return torch.tensor([int(ds[i][1]) for i in range(n)], dtype=torch.int64)


def default_workers() -> int:
    """Loader worker processes: one per torch CPU thread of this process, at most 4.

    A Ray trial sets its thread count to the CPUs it was given (cpus_per_worker);
    the host's CPU count would ignore that and oversubscribe a shared node."""
    return max(1, min(4, torch.get_num_threads()))


class TensorBatches:
    """Batches sliced from tensors kept on `data_device` (the accelerator when they fit)."""

    streaming = False

    def __init__(
        self,
        train: _Batch,
        val: _Batch,
        data_device: torch.device,
        rank: int = 0,
        world_size: int = 1,
    ):
        self._x, self._y = train[0].to(data_device), train[1].to(data_device)
        val_idx = torch.arange(rank, val[1].numel(), world_size)
        self._vx, self._vy = val[0][val_idx].to(data_device), val[1][val_idx].to(data_device)
        self.data_device = data_device

    @property
    def num_val(self) -> int:
        return int(self._vy.numel())

    def train_batches(self, sampler: RecipeSampler, batch_size: int) -> Iterator[_Batch]:
        order = sampler.indices().to(self.data_device)
        for start, stop in sampler.bounds(batch_size):
            idx = order[start:stop]
            yield self._x[idx], self._y[idx]

    def val_batches(self, batch_size: int) -> Iterator[_Batch]:
        for start in range(0, self.num_val, batch_size):
            yield self._vx[start : start + batch_size], self._vy[start : start + batch_size]


class _StepBatches:
    """The sampler's batches as index lists, for a DataLoader's `batch_sampler`; read at
    iteration time in this process, so persistent workers see each epoch's order."""

    def __init__(self, sampler: RecipeSampler, batch_size: int) -> None:
        self.sampler, self.batch_size = sampler, batch_size

    def __iter__(self) -> Iterator[list[int]]:
        order = self.sampler.indices()
        for start, stop in self.sampler.bounds(self.batch_size):
            yield order[start:stop].tolist()

    def __len__(self) -> int:
        return len(self.sampler.bounds(self.batch_size))


class LoaderBatches:
    """Batches from DataLoaders over Datasets; the training loader draws from the sampler."""

    streaming = True

    def __init__(
        self,
        data: StreamData,
        sampler: RecipeSampler,
        *,
        batch_size: int,
        val_batch_size: int,
        workers: int,
        prefetch: int,
        pin_memory: bool,
        rank: int = 0,
        world_size: int = 1,
    ):
        opts: dict[str, Any] = {"num_workers": workers, "pin_memory": pin_memory}
        if workers > 0:  # workers stay up across epochs; the sampler runs in this process
            opts.update(persistent_workers=True, prefetch_factor=prefetch)
        steps = _StepBatches(sampler, batch_size)
        self._train = DataLoader(data.train, batch_sampler=steps, **opts)
        mine = list(range(rank, int(data.val_y.numel()), world_size))
        self._val = DataLoader(Subset(data.val, mine), batch_size=val_batch_size, **opts)
        self.num_val = len(mine)
        self.batch_size = batch_size

    def train_batches(self, sampler: RecipeSampler, batch_size: int) -> Iterator[_Batch]:
        if batch_size != self.batch_size:
            raise ValueError(f"loader batch size is {self.batch_size}, asked for {batch_size}")
        for x, y in self._train:
            yield x, y.to(torch.int64)

    def val_batches(self, batch_size: int) -> Iterator[_Batch]:
        for x, y in self._val:
            yield x, y.to(torch.int64)


def stream_tensors(
    name: str,
    train: _Batch,
    val: _Batch,
    num_classes: int,
    mean: tuple[float, ...],
    std: tuple[float, ...],
) -> StreamData:
    """Tensors served through the loader path (data.stream: always)."""
    return StreamData(
        name,
        TensorDataset(*train),
        TensorDataset(*val),
        train[1],
        val[1],
        num_classes,
        tuple(train[0].shape[1:]),
        mean,
        std,
    )


def make_batches(
    data: Any,
    sampler: RecipeSampler,
    *,
    device: torch.device,
    data_device: torch.device,
    batch_size: int,
    val_batch_size: int,
    workers: int | None,
    prefetch: int,
    rank: int = 0,
    world_size: int = 1,
) -> TensorBatches | LoaderBatches:
    """The batch source for `data`: a StreamData streams, an in-memory Dataset slices."""
    if isinstance(data, StreamData):
        n = default_workers() if workers is None else workers
        log.info("%s: streaming through a DataLoader with %d worker process(es)", data.name, n)
        return LoaderBatches(
            data,
            sampler,
            batch_size=batch_size,
            val_batch_size=val_batch_size,
            workers=n,
            prefetch=prefetch,
            pin_memory=device.type == "cuda",
            rank=rank,
            world_size=world_size,
        )
    return TensorBatches(
        (data.train_x, data.train_y), (data.val_x, data.val_y), data_device, rank, world_size
    )
