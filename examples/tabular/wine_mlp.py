"""An MLP for feature vectors, written outside cpsweep: the model half of the example.

cpsweep calls `wine_mlp(input_shape=(F,), num_classes=K, **model.kwargs)` with F the
number of features of one sample.
"""

from __future__ import annotations

from torch import nn

__all__ = ["wine_mlp"]


def wine_mlp(*, input_shape: tuple[int, ...], num_classes: int, hidden: int = 64) -> nn.Module:
    """Two hidden layers of `hidden` units with ReLU; logits [B, K]."""
    (features,) = input_shape
    return nn.Sequential(
        nn.Linear(features, hidden),
        nn.ReLU(),
        nn.Linear(hidden, hidden),
        nn.ReLU(),
        nn.Linear(hidden, num_classes),
    )
