"""A run's training data from its config: a registered dataset or the user's data factory.

`data.factory: "module:function"` is called as `function(**data.kwargs)` and returns
`(train, val, test, num_classes)` or `(train, val, num_classes)` (no test split: no
test/* metrics), where `train`, `val` and `test` are each an `(x, y)` pair of
tensors (leading sample axis; y integer class ids, or float targets [N] / [N, T] for
regression, num_classes then being the number of outputs) or a `torch.utils.data.Dataset`
yielding `(x, y)` with class ids. Inputs are uint8 pixels, floats, or integer token ids. `val` drives every decision; `test` is only measured. Factory data
are used as returned: uint8 inputs are scaled to [0, 1], nothing is normalised. Tensors train in memory, Datasets stream through a
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
from trainables.data.splits import SPLIT_SEED, holdout
from trainables.data.streaming import StreamData, dataset_labels, stream_tensors

__all__ = ["load_training_data"]

log = logging.getLogger(__name__)

_FIELD = "data.factory"
_STATS_SAMPLE = 2000  # images decoded for a streamed tree's mean and std


def _bad(target: str, problem: str) -> FactoryError:
    return FactoryError(
        f"{_FIELD}: {target!r} {problem}; return (train, val, test, num_classes) or (train, "
        "val, num_classes) with each split an (x, y) pair of tensors or a "
        "torch.utils.data.Dataset yielding (x, y)"
    )


def _check_targets(target: str, part: str, y: torch.Tensor, num_classes: int) -> torch.Tensor:
    """int64 class ids in 0..num_classes-1, or float32 regression targets [N] / [N, T]
    whose number of outputs (1 or T) the factory returned as num_classes."""
    if y.dtype == torch.bool or y.is_complex():
        raise _bad(target, f"returned {part} labels of dtype {y.dtype}; use integer class ids "
                   "or float targets (regression)")  # fmt: skip
    if y.dtype.is_floating_point:
        outputs = 1 if y.dim() == 1 else int(y.shape[1])
        if num_classes != outputs:
            raise _bad(target, f"returned float {part} targets of shape {tuple(y.shape)} "
                       f"(regression) with num_classes={num_classes}; with float targets it is "
                       f"the number of outputs the model predicts, here {outputs}")  # fmt: skip
        return y.to(torch.float32)
    y = y.to(torch.int64)
    if int(y.min()) < 0 or int(y.max()) >= num_classes:
        raise _bad(target, f"returned {part} labels outside 0..{num_classes - 1}")
    return y


def _check_pair(target: str, part: str, pair: Any, num_classes: int) -> tuple[Any, Any]:
    if len(pair) != 2 or not all(isinstance(t, torch.Tensor) for t in pair):
        raise _bad(target, f"returned {part} as a {type(pair).__name__} of other things")
    x, y = pair
    y_dims = (1, 2) if y.dtype.is_floating_point else (1,)
    if x.dim() < 2 or y.dim() not in y_dims or len(x) != len(y) or len(y) == 0:
        raise _bad(target, f"returned {part} x {tuple(x.shape)} and y {tuple(y.shape)}")
    y = _check_targets(target, part, y, num_classes)
    if x.dtype == torch.bool or x.is_complex():
        raise _bad(target, f"returned {part} inputs of dtype {x.dtype}; use uint8 pixels, "
                   "float values or integer token ids")  # fmt: skip
    if x.dtype.is_floating_point:
        return (x if x.dtype == torch.float32 else x.float()), y
    return (x if x.dtype in (torch.uint8, torch.int64) else x.long()), y  # pixels or token ids


def _check_dataset(target: str, part: str, ds: Any, num_classes: int) -> torch.Tensor:
    if not hasattr(ds, "__getitem__") or not hasattr(ds, "__len__") or len(ds) == 0:
        raise _bad(target, f"returned {part} as a {type(ds).__name__} (empty or no Dataset)")
    first = ds[0]
    if not isinstance(first, tuple | list) or len(first) != 2:
        raise _bad(target, f"returned a {part} Dataset whose items are not (x, y) pairs")
    if torch.as_tensor(first[1]).is_floating_point():
        raise _bad(target, f"returned a {part} Dataset with float targets; float targets "
                   "(regression) need (x, y) tensors")  # fmt: skip
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
    # Float targets (regression) have no classes: a plain random subset.
    strata = torch.zeros(len(labels), dtype=torch.int64) if labels.is_floating_point() else labels
    keep = stratified_subset(strata, n, seed)
    if isinstance(part, tuple):
        return (part[0][keep], part[1][keep]), labels[keep]
    return Subset(part, keep.tolist()), labels[keep]


def _checked_parts(
    target: str, given: list[Any], num_classes: int
) -> tuple[list[Any], list[torch.Tensor]]:
    """The factory's train, val[, test] parts, each an (x, y) pair or a dataset, checked,
    and each part's labels."""
    parts: list[Any] = []
    labels: list[torch.Tensor] = []
    for name, part in zip(("train", "val", "test"), given, strict=False):
        if isinstance(part, torch.Tensor | tuple | list):
            pair = _check_pair(target, name, tuple(part), num_classes)
            parts.append(pair)
            labels.append(pair[1])
        else:
            labels.append(_check_dataset(target, name, part, num_classes))
            parts.append(part)
    if len({bool(y.is_floating_point()) for y in labels}) > 1:
        raise _bad(target, "returned float targets in some splits and class ids in others")
    return parts, labels


def _from_factory(cfg: DataConfig, seed: int, paths: Iterable[str | Path]) -> Dataset | StreamData:
    target = cfg.factory
    assert target is not None
    out = call_factory(resolve(target, field=_FIELD, paths=paths), target, _FIELD, **cfg.kwargs)
    if not isinstance(out, tuple | list) or len(out) not in (3, 4):
        raise _bad(target, f"returned a {type(out).__name__}")
    *given, num_classes = out  # train, val[, test]
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise _bad(target, f"returned num_classes={num_classes!r}, not a positive int")
    parts, labels = _checked_parts(target, given, num_classes)
    parts[0], labels[0] = _subset(parts[0], labels[0], cfg.train_subset, seed)
    parts[1], labels[1] = _subset(parts[1], labels[1], cfg.val_subset, SPLIT_SEED)
    is_stream = [not isinstance(p, tuple) for p in parts]
    stream = cfg.stream == "always" or (cfg.stream == "auto" and any(is_stream))
    if not stream:  # everything in memory
        pairs = [_materialise(p) if s else p for p, s in zip(parts, is_stream, strict=True)]
        (tx, ty), (vx, vy), *rest = pairs
        test_x, test_y = rest[0] if rest else (None, None)
        ones = (1.0,) * int(tx.shape[1])
        log.info("%s: train / val / test %s samples, %d classes (in memory)", target,
                 [len(y) for _, y in pairs], num_classes)  # fmt: skip
        zeros = (0.0,) * len(ones)
        return Dataset(target, tx, ty, vx, vy, num_classes, zeros, ones, test_x, test_y)
    if not any(is_stream):
        ones = (1.0,) * int(parts[0][0].shape[1])
        test_pair = parts[2] if len(parts) > 2 else None
        return stream_tensors(
            target, parts[0], parts[1], num_classes, (0.0,) * len(ones), ones, test_pair
        )
    datasets = [
        p if s else torch.utils.data.TensorDataset(*p)
        for p, s in zip(parts, is_stream, strict=True)
    ]
    shape = tuple(torch.as_tensor(datasets[0][0][0]).shape)
    log.info("%s: streaming %s train / val / test samples of shape %s, %d classes", target,
             [len(y) for y in labels], shape, num_classes)  # fmt: skip
    zeros, ones = (0.0,) * shape[0], (1.0,) * shape[0]
    test_ds, test_y = (datasets[2], labels[2]) if len(datasets) > 2 else (None, None)
    return StreamData(
        target, datasets[0], datasets[1], labels[0], labels[1], num_classes, shape, zeros, ones,
        test_ds, test_y,
    )  # fmt: skip


def _tree_stream(cfg: DataConfig, seed: int) -> StreamData | None:
    """An image tree as lazily decoded Datasets when its pixels exceed `max_memory_mb`
    (or `stream: always`); None to load it into memory."""
    assert cfg.name is not None
    size = cfg.image_size or DEFAULT_IMAGE_SIZE[cfg.name]
    root = dataset_root(cfg.name, cfg.root)
    assert root is not None  # image trees always read a directory
    pool, test, num_classes = TREE_ITEMS[cfg.name](root)
    # Validation out of the training pool, as load_dataset does for trees in memory.
    rest, held = holdout(torch.tensor([y for _, y in pool]), cfg.val_fraction, SPLIT_SEED)
    train, val = [pool[i] for i in rest.tolist()], [pool[i] for i in held.tolist()]
    ty = torch.tensor([y for _, y in train], dtype=torch.int64)
    vy = torch.tensor([y for _, y in val], dtype=torch.int64)
    if cfg.train_subset is not None:
        keep = stratified_subset(ty, cfg.train_subset, seed).tolist()
        train, ty = [train[i] for i in keep], ty[keep]
    if cfg.val_subset is not None:
        keep = stratified_subset(vy, cfg.val_subset, SPLIT_SEED).tolist()
        val, vy = [val[i] for i in keep], vy[keep]
    mib = len(train) * 3 * size * size / 2**20
    if cfg.stream == "auto" and mib <= cfg.max_memory_mb:
        return None
    # Normalisation statistics from a fixed stratified sample, not a pass over everything.
    sample = stratified_subset(ty, min(len(train), _STATS_SAMPLE), SPLIT_SEED).tolist()
    sx, _ = read_images(cfg.name, [train[i] for i in sample], size)
    mean, std = channel_stats(sx)
    log.info("%s: %.0f MiB of pixels over data.max_memory_mb=%d: streaming %d train / %d val / "
             "%d test images decoded on the fly", cfg.name, mib, cfg.max_memory_mb, len(train),
             len(val), len(test))  # fmt: skip
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
        TreeImages(cfg.name, test, size),
        torch.tensor([y for _, y in test], dtype=torch.int64),
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
        val_fraction=cfg.val_fraction,
        seed=seed,
    )
    if cfg.stream != "always":
        return ds
    test = None if ds.test_x is None or ds.test_y is None else (ds.test_x, ds.test_y)
    return stream_tensors(
        ds.name, (ds.train_x, ds.train_y), (ds.val_x, ds.val_y), ds.num_classes, ds.mean,
        ds.std, test,
    )  # fmt: skip
