"""What every dataset loader shares: the split it returns, stratified subsets, and errors
that name the path, the layout expected and the fix.

Below both loader modules (trainables.data.datasets for files and generated data,
trainables.data.imagetrees for class-per-folder trees), which the dataset registry
(trainables.core.registry) names by import path.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from trainables.method.stratify import stratified_subset

__all__ = [
    "IMAGE_EXTS",
    "PROGRESS_EVERY",
    "SPLIT_SEED",
    "DatasetError",
    "Split",
    "dataset_error",
    "fixed_split",
    "stratified_subset",
]

logger = logging.getLogger("trainables.data.datasets")  # one logger for every loader

# (train_x, train_y, val_x, val_y, num_classes), what every loader returns
Split = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, int]

IMAGE_EXTS = frozenset({".jpg", ".jpeg", ".png", ".tif", ".tiff"})
SPLIT_SEED = 0  # fixed: validation sets never change between trials
PROGRESS_EVERY = 5000
_LAYOUTS = {
    "fashion-mnist": "IDX files train-images-idx3-ubyte, train-labels-idx1-ubyte, "
    "t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte (each plain or .gz) in <root> or <root>/raw",
    "cifar10": "the CIFAR-10 python pickles data_batch_1 ... data_batch_5 and test_batch "
    "(dicts with b'data' uint8 [N, 3072] and b'labels') in <root> or <root>/cifar-10-batches-py",
    "cifar100": "the CIFAR-100 python pickles train and test (dicts with b'data' uint8 "
    "[N, 3072] and b'fine_labels') in <root> or <root>/cifar-100-python",
    "eurosat": "the RGB EuroSAT release as one folder per class, <root>/<ClassName>/*.jpg|png|tif "
    "(<root>/2750 and <root>/EuroSAT_RGB are accepted too)",
    "tiny-imagenet": "the tiny-imagenet-200 layout: <root>/wnids.txt, "
    "<root>/train/<wnid>/images/*.JPEG, <root>/val/images/*.JPEG and "
    "<root>/val/val_annotations.txt (tab-separated: filename, wnid, bbox); "
    "<root>/tiny-imagenet-200 is accepted too",
    "imagenet30": "class-per-folder trees <root>/train/<class>/**/*.JPEG|jpg|png and "
    "<root>/test/<class>/... (or val/ instead of test/)",
}


class DatasetError(ValueError):
    """A dataset is missing or malformed; the message names the path, the layout and the fix."""


def dataset_error(name: str, path: Path | str, problem: str) -> DatasetError:
    fix = (
        "install Debian package dataset-fashion-mnist or set data.root"
        if name == "fashion-mnist"
        else "set data.root to the extracted dataset directory"
    )
    layout = _LAYOUTS.get(name, "a dataset generated locally")
    return DatasetError(f"{name}: {path} {problem}; expected {layout} ({fix})")


def fixed_split(y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Stratified 80/20 (train, val) indices with the fixed seed, for datasets without a split."""
    val = stratified_subset(y, max(1, round(0.2 * len(y))), SPLIT_SEED)
    keep = torch.ones(len(y), dtype=torch.bool)
    keep[val] = False
    return torch.nonzero(keep).flatten(), val
