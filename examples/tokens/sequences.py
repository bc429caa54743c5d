"""Synthetic token sequences generated in code: the data half of the example.

Each sequence holds `length` token ids drawn from a vocabulary of `vocab`; its class is
the one of the first `classes` tokens that occurs most often in it (ties go to the
smaller id), a counting task that attention and pooling solve and a bag of embeddings
can too. cpsweep calls `load(**data.kwargs)` and gets (train, val, test, num_classes),
each split an (x, y) pair: x int64 token ids [N, L], y int64 class ids [N].
"""

from __future__ import annotations

import torch

__all__ = ["load"]


def _split(n: int, length: int, vocab: int, classes: int, g: torch.Generator):
    x = torch.randint(0, vocab, (n, length), generator=g)
    counts = torch.stack([(x == c).sum(dim=1) for c in range(classes)], dim=1)  # [N, K]
    return x, counts.argmax(dim=1)  # argmax takes the first of equal counts


def load(
    *, n_train: int = 2000, n_val: int = 500, length: int = 24, vocab: int = 16, classes: int = 4,
    seed: int = 0,
):  # fmt: skip
    """(train, val, test, num_classes) of token-id sequences, the same for a given seed."""
    g = torch.Generator().manual_seed(seed)
    train = _split(n_train, length, vocab, classes, g)
    val = _split(n_val, length, vocab, classes, g)
    test = _split(n_val, length, vocab, classes, g)
    return train, val, test, classes
