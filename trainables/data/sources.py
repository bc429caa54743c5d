"""A run's training data from its config: a registered dataset or the user's data factory.

`data.factory: "module:function"` is called as `function(**data.kwargs)` and returns
`(train, val, num_classes)`, where `train` and `val` are each an `(x, y)` pair of
tensors (leading sample axis; y integer class ids) or a `torch.utils.data.Dataset`
yielding `(x, y)`. Factory data are used as returned: uint8 inputs are scaled to
[0, 1], nothing is normalised. Tensors train in memory, Datasets stream through a
DataLoader (`data.stream` overrides either way). Every error names `data.factory`.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, Subset
from torch.utils.data import Dataset as TorchDataset

from trainables.core.config import DataConfig
from trainables.core.imports import FactoryError, call_factory, resolve
from trainables.data.datasets import (
    DEFAULT_IMAGE_SIZE,
    Dataset,
    channel_stats,
    dataset_root,
    load_dataset,
    stratified_subset,
)
from trainables.data.imagetrees import TREE_ITEMS, TreeImages, read_images
from trainables.data.streaming import StreamData, dataset_labels, stream_tensors

__all__ = ["load_training_data"]

log = logging.getLogger(__name__)

_FIELD = "data.factory"
_SPLIT_SEED = 0  # validation subsets never change between trials (as in trainables.data.datasets)
_STATS_SAMPLE = 2000  # images decoded for a streamed tree's mean and std


def _bad(target: str, problem: str) -> FactoryError:
    return FactoryError(
        f"{_FIELD}: {target!r} {problem}; return (train, val, num_classes) with train and val "
        "each an (x, y) pair of tensors or a torch.utils.data.Dataset yielding (x, y)"
    )


def _check_pair(target: str, part: str, pair: Any, num_classes: int) -> tuple[Any, Any]:
    if len(pair) != 2 or not all(isinstance(t, torch.Tensor) for t in pair):
        raise _bad(target, f"returned {part} as a {type(pair).__name__} of other things")
    x, y = pair
    if x.dim() < 2 or y.dim() != 1 or len(x) != len(y) or len(y) == 0:
        raise _bad(target, f"returned {part} x {tuple(x.shape)} and y {tuple(y.shape)}")
    if y.dtype.is_floating_point or y.dtype == torch.bool:
        raise _bad(target, f"returned {part} labels of dtype {y.dtype}, not integer class ids")
    y = y.to(torch.int64)
    if int(y.min()) < 0 or int(y.max()) >= num_classes:
        raise _bad(target, f"returned {part} labels outside 0..{num_classes - 1}")
    if x.dtype != torch.uint8 and not x.dtype.is_floating_point:
        raise _bad(target, f"returned {part} inputs of dtype {x.dtype}; use uint8 or float")
    return (x if x.dtype in (torch.uint8, torch.float32) else x.float()), y


def _check_dataset(target: str, part: str, ds: Any, num_classes: int) -> torch.Tensor:
    if not hasattr(ds, "__getitem__") or not hasattr(ds, "__len__") or len(ds) == 0:
        raise _bad(target, f"returned {part} as a {type(ds).__name__} (empty or no Dataset)")
    first = ds[0]
    if not isinstance(first, tuple | list) or len(first) != 2:
        raise _bad(target, f"returned a {part} Dataset whose items are not (x, y) pairs")
    labels = dataset_labels(ds, f"{_FIELD} {part}")
    if int(labels.min()) < 0 or int(labels.max()) >= num_classes:
        raise _bad(target, f"returned {part} labels outside 0..{num_classes - 1}")
    return labels


def _materialise(ds: TorchDataset[Any]) -> tuple[torch.Tensor, torch.Tensor]:
    xs, ys = [], []
    for x, y in DataLoader(ds, batch_size=1024):
        xs.append(torch.as_tensor(x))
        ys.append(torch.as_tensor(y))
    return torch.cat(xs), torch.cat(ys).to(torch.int64)


def _subset(part: Any, labels: torch.Tensor, n: int | None, seed: int) -> tuple[Any, torch.Tensor]:
    if n is None:
        return part, labels
    keep = stratified_subset(labels, n, seed)
    if isinstance(part, tuple):
        return (part[0][keep], part[1][keep]), labels[keep]
    return Subset(part, keep.tolist()), labels[keep]


def _from_factory(cfg: DataConfig, seed: int, paths: Iterable[str | Path]) -> Dataset | StreamData:
    target = cfg.factory
    assert target is not None
    out = call_factory(resolve(target, field=_FIELD, paths=paths), target, _FIELD, **cfg.kwargs)
    if not isinstance(out, tuple | list) or len(out) != 3:
        raise _bad(target, f"returned a {type(out).__name__}")
    train, val, num_classes = out
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise _bad(target, f"returned num_classes={num_classes!r}, not a positive int")
    parts: list[Any] = []
    labels: list[torch.Tensor] = []
    for name, part in (("train", train), ("val", val)):
        if isinstance(part, torch.Tensor | tuple | list):
            pair = _check_pair(target, name, tuple(part), num_classes)
            parts.append(pair)
            labels.append(pair[1])
        else:
            labels.append(_check_dataset(target, name, part, num_classes))
            parts.append(part)
    parts[0], labels[0] = _subset(parts[0], labels[0], cfg.train_subset, seed)
    parts[1], labels[1] = _subset(parts[1], labels[1], cfg.val_subset, _SPLIT_SEED)
    is_stream = [not isinstance(p, tuple) for p in parts]
    stream = cfg.stream == "always" or (cfg.stream == "auto" and any(is_stream))
    if not stream:  # everything in memory
        pairs = [_materialise(p) if s else p for p, s in zip(parts, is_stream, strict=True)]
        (tx, ty), (vx, vy) = pairs
        ones = (1.0,) * int(tx.shape[1])
        log.info("%s: train %s, val %s, %d classes (in memory)", target, tuple(tx.shape),
                 tuple(vx.shape), num_classes)  # fmt: skip
        return Dataset(target, tx, ty, vx, vy, num_classes, (0.0,) * len(ones), ones)
    if not any(is_stream):
        (tx, ty), (vx, vy) = parts
        ones = (1.0,) * int(tx.shape[1])
        return stream_tensors(target, (tx, ty), (vx, vy), num_classes, (0.0,) * len(ones), ones)
    datasets = [
        p if s else torch.utils.data.TensorDataset(*p)
        for p, s in zip(parts, is_stream, strict=True)
    ]
    shape = tuple(torch.as_tensor(datasets[0][0][0]).shape)
    log.info("%s: streaming %d train / %d val samples of shape %s, %d classes", target,
             len(labels[0]), len(labels[1]), shape, num_classes)  # fmt: skip
    zeros, ones = (0.0,) * shape[0], (1.0,) * shape[0]
    return StreamData(
        target, datasets[0], datasets[1], labels[0], labels[1], num_classes, shape, zeros, ones
    )


def _tree_stream(cfg: DataConfig, seed: int) -> StreamData | None:
    """An image tree as lazily decoded Datasets when its pixels exceed `max_memory_mb`
    (or `stream: always`); None to load it into memory."""
    assert cfg.name is not None
    size = cfg.image_size or DEFAULT_IMAGE_SIZE[cfg.name]
    root = dataset_root(cfg.name, cfg.root)
    assert root is not None  # image trees always read a directory
    train, val, num_classes = TREE_ITEMS[cfg.name](root)
    ty = torch.tensor([y for _, y in train], dtype=torch.int64)
    vy = torch.tensor([y for _, y in val], dtype=torch.int64)
    if cfg.train_subset is not None:
        keep = stratified_subset(ty, cfg.train_subset, seed).tolist()
        train, ty = [train[i] for i in keep], ty[keep]
    if cfg.val_subset is not None:
        keep = stratified_subset(vy, cfg.val_subset, _SPLIT_SEED).tolist()
        val, vy = [val[i] for i in keep], vy[keep]
    mib = len(train) * 3 * size * size / 2**20
    if cfg.stream == "auto" and mib <= cfg.max_memory_mb:
        return None
    # Normalisation statistics from a fixed stratified sample, not a pass over everything.
    sample = stratified_subset(ty, min(len(train), _STATS_SAMPLE), _SPLIT_SEED).tolist()
    sx, _ = read_images(cfg.name, [train[i] for i in sample], size)
    mean, std = channel_stats(sx)
    log.info("%s: %.0f MiB of pixels over data.max_memory_mb=%d: streaming %d train / %d val "
             "images decoded on the fly", cfg.name, mib, cfg.max_memory_mb, len(train),
             len(val))  # fmt: skip
    return StreamData(
        cfg.name,
        TreeImages(cfg.name, train, size),
        TreeImages(cfg.name, val, size),
        ty,
        vy,
        num_classes,
        (3, size, size),
        mean,
        std,
    )


def load_training_data(
    cfg: DataConfig, *, seed: int, paths: Iterable[str | Path] = ()
) -> Dataset | StreamData:
    """In-memory `Dataset` or streamed `StreamData` for `cfg` (see the module docstring)."""
    if cfg.factory is not None:
        return _from_factory(cfg, seed, paths)
    assert cfg.name is not None
    if cfg.name in TREE_ITEMS and cfg.stream != "never":
        streamed = _tree_stream(cfg, seed)
        if streamed is not None:
            return streamed
    ds = load_dataset(
        cfg.name,
        cfg.root,
        image_size=cfg.image_size,
        train_subset=cfg.train_subset,
        val_subset=cfg.val_subset,
        seed=seed,
    )
    if cfg.stream != "always":
        return ds
    return stream_tensors(
        ds.name, (ds.train_x, ds.train_y), (ds.val_x, ds.val_y), ds.num_classes, ds.mean, ds.std
    )
