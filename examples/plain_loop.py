"""The critical period in a plain PyTorch loop: no Ray, no cpsweep config, CPU, seconds.

A small CNN learns scikit-learn's 8x8 digits (shipped with scikit-learn, nothing is
downloaded). While the critical period lasts every sample is seen 3 times per epoch,
each copy shifted at random; `CriticalPeriod` measures layer rotation after every
epoch, applies the paper's rule and says when to drop to one pass.

    python examples/plain_loop.py [--epochs 15] [--criterion paper|relative|fixed]
"""

from __future__ import annotations

import argparse
import json

import torch
from sklearn.datasets import load_digits
from torch import nn

from cpsweep import CriticalPeriod


def shifted(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Each image moved by up to one pixel: the augmentation repeated copies differ by."""
    dx, dy = (int(v) for v in torch.randint(-1, 2, (2,), generator=gen))
    return torch.roll(x, shifts=(dy, dx), dims=(2, 3))


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=15)
    ap.add_argument("--criterion", default="paper")
    args = ap.parse_args(argv)
    torch.manual_seed(0)
    torch.set_num_threads(1)
    digits = load_digits()
    x = torch.tensor(digits.images, dtype=torch.float32)[:, None] / 16.0
    y = torch.tensor(digits.target)
    xtr, ytr, xva, yva = x[:1400], y[:1400], x[1400:], y[1400:]
    model = nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 16, 3, padding=1), nn.ReLU(),
        nn.Flatten(), nn.Linear(16 * 64, 10),
    )  # fmt: skip
    opt = torch.optim.SGD(model.parameters(), lr=0.02, momentum=0.9)
    cp = CriticalPeriod(model, args.criterion, budget=args.epochs)  # snapshots the weights now
    gen = torch.Generator().manual_seed(0)
    for epoch in range(1, args.epochs + 1):
        repeats = 3 if cp.critical else 1  # the expensive recipe, only while critical
        for _ in range(repeats):
            order = torch.randperm(len(xtr), generator=gen)
            for i in range(0, len(order), 64):
                idx = order[i : i + 64]
                loss = nn.functional.cross_entropy(model(shifted(xtr[idx], gen)), ytr[idx])
                opt.zero_grad()
                loss.backward()
                opt.step()
        d = cp.step()
        with torch.no_grad():
            acc = (model(xva).argmax(1) == yva).float().mean().item()
        value = "-" if d.value is None else f"{d.value:6.2f}"
        print(
            f"epoch {epoch:2d} x{repeats} rotation {d.rotation:.4f} rule {value} val_acc {acc:.3f}"
        )
    result = {"end_epoch": cp.end_epoch, "switch_epoch": cp.switch_epoch, "val_acc": acc}
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
