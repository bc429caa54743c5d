"""Where an epoch's batches come from: tensors in memory, or a DataLoader over a Dataset.

Both paths draw the epoch's sample order from one `RepeatSampler`
(trainables/data/sampler.py, public as `cpsweep.RepeatSampler`), which is the
recipe's pure functions (`epoch_indices`: data_fraction pruning and annealing, or
the loss-aware pruning's kept indices,
`repeats` copies shuffled so each lands in its own batch; `shard_indices`: this DDP
rank's share) seeded by (seed, epoch). In memory the order indexes the tensors;
streamed, the same order feeds a `DataLoader` (worker processes, prefetch, pinned
memory on CUDA), which collates batches of exactly the same samples. Augmentation
and mixing run afterwards on the training device with the generator seeded by
(seed, epoch, rank), so each repeated copy is augmented independently and a seeded
run trains on identical batches through either path. Evaluation reads a named split
(`val` every epoch it is due, `test` when the run measures it): each rank takes every
world-th sample of it, in order.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sized
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils.data import DataLoader, Subset, TensorDataset
from torch.utils.data import Dataset as TorchDataset

from trainables.data.sampler import RepeatSampler

__all__ = [
    "LoaderBatches",
    "StreamData",
    "TensorBatches",
    "dataset_labels",
    "default_workers",
    "make_batches",
    "stream_tensors",
]

log = logging.getLogger(__name__)

_Batch = tuple[torch.Tensor, torch.Tensor]


@dataclass(frozen=True)
class StreamData:
    """Training, validation and (optional) test Datasets yielding (x, y), labels read once."""

    name: str
    train: TorchDataset[Any]
    val: TorchDataset[Any]
    train_y: torch.Tensor  # int64 [N], what stratified pruning needs
    val_y: torch.Tensor
    num_classes: int
    input_shape: tuple[int, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    test: TorchDataset[Any] | None = None  # None: no test split
    test_y: torch.Tensor | None = None

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


def _shard(pair: _Batch, rank: int, world_size: int, device: torch.device) -> _Batch:
    """Every world-th sample from `rank` on, moved to `device` (no copy for one rank)."""
    x, y = pair
    if world_size > 1:
        idx = torch.arange(rank, y.shape[0], world_size)
        x, y = x[idx], y[idx]
    return x.to(device), y.to(device)


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
        test: _Batch | None = None,
    ):
        self._x, self._y = train[0].to(data_device), train[1].to(data_device)
        self._eval = {"val": _shard(val, rank, world_size, data_device)}
        if test is not None:
            self._eval["test"] = _shard(test, rank, world_size, data_device)
        self.data_device = data_device

    def has_split(self, split: str) -> bool:
        return split in self._eval

    def num_eval(self, split: str) -> int:
        """Samples of `split` on this rank."""
        return int(self._eval[split][1].numel())

    @property
    def num_val(self) -> int:
        return self.num_eval("val")

    def train_batches(self, sampler: RepeatSampler, batch_size: int) -> Iterator[_Batch]:
        order = sampler.indices().to(self.data_device)
        for start, stop in sampler.bounds(batch_size):
            idx = order[start:stop]
            yield self._x[idx], self._y[idx]

    def eval_batches(self, split: str, batch_size: int) -> Iterator[_Batch]:
        x, y = self._eval[split]
        for start in range(0, int(y.numel()), batch_size):
            yield x[start : start + batch_size], y[start : start + batch_size]

    def val_batches(self, batch_size: int) -> Iterator[_Batch]:
        return self.eval_batches("val", batch_size)


class _StepBatches:
    """The sampler's batches as index lists, for a DataLoader's `batch_sampler`; read at
    iteration time in this process, so persistent workers see each epoch's order."""

    def __init__(self, sampler: RepeatSampler, batch_size: int) -> None:
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
        sampler: RepeatSampler,
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
        if workers > 0:
            opts["prefetch_factor"] = prefetch
        # Training and validation workers stay up across epochs (the sampler runs in this
        # process); the test loader's start only when it is read, usually once.
        kept = {**opts, "persistent_workers": workers > 0}
        steps = _StepBatches(sampler, batch_size)
        self._train = DataLoader(data.train, batch_sampler=steps, **kept)
        splits = {"val": (data.val, data.val_y, kept)}
        if data.test is not None and data.test_y is not None:
            splits["test"] = (data.test, data.test_y, opts)
        self._eval: dict[str, DataLoader[Any]] = {}
        self._counts: dict[str, int] = {}
        for split, (ds, labels, o) in splits.items():
            mine = list(range(rank, int(labels.numel()), world_size))
            self._eval[split] = DataLoader(Subset(ds, mine), batch_size=val_batch_size, **o)
            self._counts[split] = len(mine)
        self.batch_size = batch_size

    def has_split(self, split: str) -> bool:
        return split in self._eval

    def num_eval(self, split: str) -> int:
        return self._counts[split]

    @property
    def num_val(self) -> int:
        return self.num_eval("val")

    def train_batches(self, sampler: RepeatSampler, batch_size: int) -> Iterator[_Batch]:
        if batch_size != self.batch_size:
            raise ValueError(f"loader batch size is {self.batch_size}, asked for {batch_size}")
        for x, y in self._train:
            yield x, y.to(torch.int64)

    def eval_batches(self, split: str, batch_size: int) -> Iterator[_Batch]:
        for x, y in self._eval[split]:
            yield x, y.to(torch.int64)

    def val_batches(self, batch_size: int) -> Iterator[_Batch]:
        return self.eval_batches("val", batch_size)


def stream_tensors(
    name: str,
    train: _Batch,
    val: _Batch,
    num_classes: int,
    mean: tuple[float, ...],
    std: tuple[float, ...],
    test: _Batch | None = None,
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
        None if test is None else TensorDataset(*test),
        None if test is None else test[1],
    )


def make_batches(
    data: Any,
    sampler: RepeatSampler,
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
    test = None if data.test_x is None else (data.test_x, data.test_y)
    return TensorBatches(
        (data.train_x, data.train_y),
        (data.val_x, data.val_y),
        data_device,
        rank,
        world_size,
        test,
    )
