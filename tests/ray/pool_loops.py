"""`train.loop`s for the worker-pool tests (imported by the pooled ranks)."""

from __future__ import annotations

from typing import Any

__all__ = ["fit_rank1_fails"]


def fit_rank1_fails(ctx: Any) -> None:
    """Rank 1 raises while rank 0 waits for it in a collective (it would wait 30 min)."""
    import torch
    import torch.distributed as dist

    if ctx.rank == 1:
        raise RuntimeError("rank 1 failed on purpose")
    dist.all_reduce(torch.zeros(1))
