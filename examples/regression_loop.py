"""Your own training loop in a cpsweep sweep: regression, which cpsweep's built-in loop cannot do.

Point a spec at it with `train.loop: "regression_loop:fit"` (see regression.yaml beside
this file); cpsweep imports it inside every trial and calls `fit(ctx)` there. The data is
scikit-learn's Friedman #1 problem (generated, nothing is downloaded): 10 inputs, 5 of
them relevant, a smooth non-linear target. The critical-period recipe here is the spec's
`recipe.critical.repeats` passes over the data per epoch, `recipe.after.repeats` after.
Runs on CPU in seconds; with the train executor each DDP rank trains on its own shard.

It reports `val/loss` (the spec's headline, `train.metric: {name: val/loss, mode: min}`),
`test/loss` after the last epoch (shown beside it, never decided on) and `samples`, the
training samples of the epoch over all ranks: the savings against the full recipe are
computed from them.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch
from torch import nn

__all__ = ["fit", "make_data", "make_model"]


def make_data(seed: int, n: int = 1200) -> tuple[torch.Tensor, ...]:
    """(train x, y, validation x, y, test x, y): 4/6, 1/6 and 1/6 of `n` samples."""
    from sklearn.datasets import make_friedman1

    x, y = make_friedman1(n_samples=n, noise=0.5, random_state=seed)
    x, y = torch.tensor(x, dtype=torch.float32), torch.tensor(y, dtype=torch.float32)[:, None]
    y = (y - y.mean()) / y.std()
    a, b = n * 4 // 6, n * 5 // 6
    return x[:a], y[:a], x[a:b], y[a:b], x[b:], y[b:]


def make_model(width: int) -> nn.Module:
    return nn.Sequential(
        nn.Linear(10, width), nn.ReLU(), nn.Linear(width, width), nn.ReLU(), nn.Linear(width, 1)
    )


def fit(ctx) -> None:  # ctx: cpsweep.LoopContext
    cfg = ctx.config  # the trial's TrainConfig: epochs, batch_size, optim, recipe, seed, ...
    torch.manual_seed(cfg.seed)
    xtr, ytr, xva, yva, xte, yte = make_data(cfg.seed)
    xtr, ytr = xtr[ctx.rank :: ctx.world_size], ytr[ctx.rank :: ctx.world_size]  # this rank's shard
    model = make_model(ctx.params.get("hidden", 32)).to(ctx.device)  # train.params
    net = nn.parallel.DistributedDataParallel(model) if ctx.world_size > 1 else model
    cp = ctx.period(net)  # snapshots the initial weights; restored on a restart
    opt = torch.optim.SGD(net.parameters(), lr=cfg.optim.lr, momentum=cfg.optim.momentum)
    if ctx.checkpoint:  # a restarted trial: continue from the checkpoint it reported
        state = torch.load(Path(ctx.checkpoint, "loop.pt"))
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
    gen = torch.Generator().manual_seed(cfg.seed + ctx.rank)
    bs = max(1, cfg.batch_size // ctx.world_size)
    for epoch in range(cp.epoch + 1, cfg.epochs + 1):
        repeats = cfg.recipe.critical.repeats if cp.critical else cfg.recipe.after.repeats
        net.train()
        total, count = 0.0, 0
        for _ in range(repeats):
            order = torch.randperm(len(xtr), generator=gen)
            for i in range(0, len(order), bs):
                idx = order[i : i + bs]
                loss = nn.functional.mse_loss(net(xtr[idx]), ytr[idx])
                opt.zero_grad()
                loss.backward()
                opt.step()
                total, count = total + loss.item() * len(idx), count + len(idx)
        cp.step()  # rotation, the rule, the scheduler's directives
        metrics = {
            "train/loss": total / count,
            "recipe/repeats": repeats,
            "samples": count * ctx.world_size,  # all ranks: what the savings are computed from
        }
        with torch.no_grad():
            metrics["val/loss"] = nn.functional.mse_loss(model(xva), yva).item()
            if epoch == cfg.epochs:  # the test split once, after the last epoch
                metrics["test/loss"] = nn.functional.mse_loss(model(xte), yte).item()
        with tempfile.TemporaryDirectory() as tmp:
            torch.save({"model": model.state_dict(), "opt": opt.state_dict()}, Path(tmp, "loop.pt"))
            ctx.report(metrics, checkpoint_dir=tmp)
