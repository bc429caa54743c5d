"""scikit-learn's 8x8 digits as torch Datasets: the data half of the example.

cpsweep calls `load(**data.kwargs)` and gets `(train, val, test, num_classes)`: `val`
drives every decision (ASHA, the best epoch), `test` is measured after the last epoch
and never decided on (`(train, val, num_classes)` works too, without test/*). Returning
Datasets (rather than tensors) makes cpsweep stream them through a DataLoader with
its recipe sampler; `targets` spares it a pass over the samples to read the labels.
Pixels are scaled to [0, 1] and standardised here: cpsweep uses factory data as given.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset

__all__ = ["Digits", "load"]


class Digits(Dataset[tuple[torch.Tensor, int]]):
    """Images [N, 1, 8, 8] float32 and int labels; `targets` lists the labels."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor) -> None:
        self.images, self.targets = images, labels.tolist()

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.images[i], self.targets[i]


def load(
    val_fraction: float = 0.1, test_fraction: float = 0.2, seed: int = 0
) -> tuple[Digits, Digits, Digits, int]:
    """A fixed random three-way split of the 1,797 digits; statistics from the training part."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = torch.from_numpy(bunch.images.astype(np.float32) / 16.0).unsqueeze(1)
    y = torch.from_numpy(bunch.target.astype(np.int64))
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))
    n_test, n_val = round(len(y) * test_fraction), round(len(y) * val_fraction)
    test, val, train = order[:n_test], order[n_test : n_test + n_val], order[n_test + n_val :]
    mean, std = x[train].mean(), x[train].std()
    x = (x - mean) / std
    return Digits(x[train], y[train]), Digits(x[val], y[val]), Digits(x[test], y[test]), 10
