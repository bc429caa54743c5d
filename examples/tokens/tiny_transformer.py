"""A tiny Transformer over token ids, written outside cpsweep: the model half of the example.

cpsweep calls `tiny_transformer(input_shape=(L,), num_classes=K, **model.kwargs)`; the
batches it feeds are int64 token ids [B, L] (integer inputs other than uint8 pixels
reach the model as they are: not scaled, not normalised, not augmented by default).
Token and position embeddings, `depth` pre-norm encoder blocks
(`nn.TransformerEncoderLayer`), mean pooling over positions and a linear head.

Layer rotation covers every block's attention input and output projections, both
feed-forward layers and the head (the embeddings are lookups, not kernels: not counted).
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["TinyTransformer", "tiny_transformer"]


class TinyTransformer(nn.Module):
    """ids [B, L] -> logits [B, K]."""

    def __init__(
        self, vocab: int, length: int, num_classes: int, dim: int, depth: int, heads: int
    ) -> None:
        super().__init__()
        self.tokens = nn.Embedding(vocab, dim)
        self.positions = nn.Parameter(torch.zeros(1, length, dim))
        block = nn.TransformerEncoderLayer(
            dim, heads, dim_feedforward=2 * dim, dropout=0.0, batch_first=True, norm_first=True
        )
        self.encoder = nn.TransformerEncoder(block, depth, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_classes)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        h = self.tokens(ids) + self.positions  # [B, L, D]
        h = self.encoder(h)
        return self.head(self.norm(h).mean(dim=1))  # [B, K]


def tiny_transformer(
    *,
    input_shape: tuple[int, ...],
    num_classes: int,
    vocab: int = 16,
    dim: int = 32,
    depth: int = 2,
    heads: int = 4,
) -> TinyTransformer:
    """The factory cpsweep calls; `input_shape` is one sequence's shape (L,)."""
    (length,) = input_shape
    return TinyTransformer(vocab, length, num_classes, dim, depth, heads)
