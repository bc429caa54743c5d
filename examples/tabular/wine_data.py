"""Tabular data: scikit-learn's wine recognition set (bundled with the package, no
download), and an augmentation for feature vectors.

`load(**data.kwargs)` returns (train, val, test, num_classes): 178 samples of 13
features in 3 classes, split 60/20/20 stratified with a fixed seed, standardised with
the training split's mean and std; x float32 [N, 13], y int64 [N]. Without scikit-learn
it generates three Gaussian clusters of the same shape instead.

`jitter(x, g)` is a phase's `augment_fn`: the built-in augmentation handles images and
1-D signals, so for feature vectors the spec names this one. It adds Gaussian noise of
0.1 standard deviations (the features are standardised), drawn from cpsweep's seeded
generator so a (seed, epoch, rank) reproduces it.
"""

from __future__ import annotations

import torch

__all__ = ["jitter", "load"]


def _features(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    try:
        from sklearn.datasets import load_wine
    except ImportError:  # the same shape, generated: 3 clusters in 13 dimensions
        g = torch.Generator().manual_seed(seed)
        y = torch.arange(180) % 3
        centres = torch.randn(3, 13, generator=g) * 2
        return centres[y] + torch.randn(180, 13, generator=g), y
    data = load_wine()
    return torch.tensor(data.data, dtype=torch.float32), torch.tensor(data.target)


def _stratified(y: torch.Tensor, shares: tuple[float, ...], seed: int) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    parts: list[list[torch.Tensor]] = [[] for _ in shares]
    for c in y.unique():
        idx = (y == c).nonzero().flatten()
        idx = idx[torch.randperm(len(idx), generator=g)]
        start = 0
        for i, share in enumerate(shares):
            stop = len(idx) if i == len(shares) - 1 else start + round(share * len(idx))
            parts[i].append(idx[start:stop])
            start = stop
    return [torch.cat(p) for p in parts]


def load(*, seed: int = 0):
    """(train, val, test, 3): standardised features, stratified 60/20/20."""
    x, y = _features(seed)
    train, val, test = _stratified(y, (0.6, 0.2, 0.2), seed)
    mean, std = x[train].mean(0), x[train].std(0).clamp_min(1e-6)
    x = ((x - mean) / std).float()
    return (x[train], y[train]), (x[val], y[val]), (x[test], y[test]), 3


def jitter(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """x + N(0, 0.1^2) per feature, from cpsweep's seeded generator."""
    return x + 0.1 * torch.randn(x.shape, generator=g, device=x.device, dtype=x.dtype)
