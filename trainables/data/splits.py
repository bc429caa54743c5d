"""What every dataset loader shares: the split it returns, stratified hold-outs and subsets,
and errors that name the path, the layout expected and the fix.

Three splits, each with one job: `train` is trained on, `val` drives every decision (the
critical period's tuning, ASHA, the best epoch), `test` only measures what a user gets and
is never read by a decision. A loader returns its training pool and its test split (the
published one, or `TEST_FRACTION` held out when the dataset has none); the validation
split is carved out of the training pool by `holdout` (`data.val_fraction`).

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
    "TEST_FRACTION",
    "DatasetError",
    "Split",
    "dataset_error",
    "holdout",
    "split_off_test",
    "stratified_subset",
]

logger = logging.getLogger("trainables.data.datasets")  # one logger for every loader

# (train_x, train_y, test_x, test_y, num_classes), what every loader returns: the training
# pool (validation is carved out of it later) and the test split.
Split = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, int]

IMAGE_EXTS = frozenset({".jpg", ".jpeg", ".png", ".tif", ".tiff"})
SPLIT_SEED = 0  # fixed: validation and test sets never change between trials
TEST_FRACTION = 0.2  # held out as test by datasets that publish no test split
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


def holdout(
    labels: torch.Tensor, fraction: float, seed: int = SPLIT_SEED
) -> tuple[torch.Tensor, torch.Tensor]:
    """Sorted int64 indices (rest, held): a stratified `fraction` of `labels` held out.

    Deterministic for `seed`; at least one sample is held out and at least one kept.
    """
    if not 0 < fraction < 1:
        raise ValueError(f"holdout: fraction={fraction} must be in (0, 1)")
    n = int(labels.numel())
    if n < 2:
        raise ValueError(f"holdout: {n} sample(s) cannot be split in two")
    held = stratified_subset(labels, min(n - 1, max(1, round(fraction * n))), seed)
    keep = torch.ones(n, dtype=torch.bool)
    keep[held] = False
    return torch.nonzero(keep).flatten(), held


def split_off_test(y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(train pool, test) indices for a dataset without a published test split:
    a stratified `TEST_FRACTION` with the fixed seed."""
    return holdout(y, TEST_FRACTION, SPLIT_SEED)
