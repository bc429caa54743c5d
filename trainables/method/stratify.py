"""Class-stratified random subsets: the data-pruning fraction after the period, and the
validation and subset splits of the data layer (which imports it from here)."""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["stratified_subset"]


def stratified_subset(labels: torch.Tensor, n: int, seed: int) -> torch.Tensor:
    """Sorted int64 indices of a class-stratified random subset of `n` samples.

    Each class gets its proportional share (largest remainder), at least one
    sample whenever `n` >= the number of classes. Deterministic for `seed`;
    `n` >= len(labels) returns every index.
    """
    if n < 1:
        raise ValueError(f"stratified_subset: n={n} must be >= 1")
    labels = labels.reshape(-1).cpu()
    total = labels.numel()
    if n >= total:
        return torch.arange(total, dtype=torch.int64)
    classes, counts_t = torch.unique(labels, sorted=True, return_counts=True)
    counts = counts_t.to(torch.float64).numpy()
    exact = n * counts / total
    alloc = np.floor(exact).astype(np.int64)
    if n >= len(classes):
        alloc = np.maximum(alloc, 1)
    # Settle the rounding: add where the remainder is largest, take where the
    # allocation overshoots most (argmax: ties go to the lower class).
    while alloc.sum() < n:
        gap = np.where(alloc < counts, exact - alloc, -np.inf)
        alloc[int(np.argmax(gap))] += 1
    while alloc.sum() > n:
        over = np.where(alloc > 1, alloc - exact, -np.inf)
        alloc[int(np.argmax(over))] -= 1
    gen = torch.Generator().manual_seed(seed)
    picked = []
    for cls, k in zip(classes.tolist(), alloc.tolist(), strict=True):
        members = torch.nonzero(labels == cls).flatten()
        picked.append(members[torch.randperm(len(members), generator=gen)[:k]])
    return torch.sort(torch.cat(picked)).values.to(torch.int64)
