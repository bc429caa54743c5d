"""A small Vision Transformer, written outside cpsweep: the model half of the example.

cpsweep calls `tiny_vit(input_shape=(C, H, W), num_classes=K, **model.kwargs)`.
Images are cut into `patch` x `patch` patches by a strided convolution, a class
token and learned position embeddings are added, `depth` pre-norm encoder blocks
(multi-head self-attention, then an MLP) follow, and a linear head reads the class
token (Dosovitskiy et al., ICLR 2021, at toy scale).

Layer rotation covers every weight kernel here: the patch convolution, each block's
attention input projection (`nn.MultiheadAttention.in_proj_weight`) and output
projection, both MLP layers and the head.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["EncoderBlock", "TinyViT", "tiny_vit"]


class EncoderBlock(nn.Module):
    """x + attention(norm(x)), then x + mlp(norm(x)), on tokens [B, T, D]."""

    def __init__(self, dim: int, heads: int, mlp_ratio: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(
            nn.Linear(dim, mlp_ratio * dim), nn.GELU(), nn.Linear(mlp_ratio * dim, dim)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.norm1(x)
        x = x + self.attn(h, h, h, need_weights=False)[0]
        return x + self.mlp(self.norm2(x))


class TinyViT(nn.Module):
    def __init__(
        self,
        in_channels: int,
        image_size: int,
        num_classes: int,
        patch: int,
        dim: int,
        depth: int,
        heads: int,
        mlp_ratio: int,
    ) -> None:
        super().__init__()
        if image_size % patch:
            raise ValueError(f"patch={patch} must divide the image size {image_size}")
        tokens = (image_size // patch) ** 2
        self.embed = nn.Conv2d(in_channels, dim, patch, stride=patch)  # [B, D, H/p, W/p]
        self.cls = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos = nn.Parameter(torch.randn(1, tokens + 1, dim) * 0.02)
        self.blocks = nn.Sequential(*(EncoderBlock(dim, heads, mlp_ratio) for _ in range(depth)))
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [B, C, H, W] -> [B, classes]
        t = self.embed(x).flatten(2).transpose(1, 2)  # [B, T, D]
        t = torch.cat([self.cls.expand(len(t), -1, -1), t], dim=1) + self.pos
        return self.head(self.norm(self.blocks(t))[:, 0])


def tiny_vit(
    *,
    input_shape: tuple[int, ...],
    num_classes: int,
    patch: int = 2,
    dim: int = 32,
    depth: int = 2,
    heads: int = 4,
    mlp_ratio: int = 2,
) -> nn.Module:
    """The factory named in spec.yaml: `model: {factory: "tiny_vit:tiny_vit"}`."""
    channels, height, width = input_shape
    if height != width:
        raise ValueError(f"tiny_vit expects square images, got {height}x{width}")
    return TinyViT(channels, height, num_classes, patch, dim, depth, heads, mlp_ratio)
