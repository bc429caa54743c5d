"""The critical period in a Lightning Trainer: one callback, CPU, seconds.

A small MLP learns scikit-learn's 8x8 digits (shipped with scikit-learn, nothing is
downloaded). While the critical period lasts, `RepeatSampler` shows every sample 3
times per epoch, each copy shifted at random; `CriticalPeriodCallback` measures layer
rotation after every epoch, applies the paper's rule and, from the next epoch on,
drops the sampler to one pass and the shifts off. The metrics land in Lightning's
logger (a CSV file here). `--tune` runs two learning rates under `tune.Tuner` with
`CriticalPeriodScheduler`, which the callback reports to.

    pip install 'cpsweep[lightning]'
    python examples/lightning_example.py [--epochs 8] [--criterion paper] [--tune]
"""

from __future__ import annotations

import argparse
import json
import tempfile
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.loggers import CSVLogger
from sklearn.datasets import load_digits
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from cpsweep import CriticalPeriodCallback, RepeatSampler


class Digits(pl.LightningModule):
    def __init__(self, lr: float = 0.05, samples: int = 512) -> None:
        super().__init__()
        digits = load_digits()
        x = torch.tensor(digits.images[:samples], dtype=torch.float32)[:, None] / 16.0
        self.data = TensorDataset(x, torch.tensor(digits.target[:samples]))
        self.sampler = RepeatSampler(self.data.tensors[1], repeats=3, seed=0)
        self.augment = True  # random one-pixel shifts, switched off after the period
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))
        self.lr, self.seen = lr, [0]  # samples trained per epoch, for the printout

    def training_step(self, batch: Any, i: int) -> torch.Tensor:
        x, y = batch
        if self.augment:
            dx, dy = (int(v) for v in torch.randint(-1, 2, (2,)))
            x = torch.roll(x, shifts=(dy, dx), dims=(2, 3))
        self.seen[-1] += len(y)
        loss = nn.functional.cross_entropy(self.net(x), y)
        self.log("train/loss", loss, on_epoch=True, on_step=False)
        return loss

    def on_train_epoch_end(self) -> None:
        self.seen.append(0)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=self.lr, momentum=0.9)

    def train_dataloader(self) -> DataLoader:
        return DataLoader(self.data, batch_size=64, sampler=self.sampler)


def fit(epochs: int, criterion: str = "paper", lr: float = 0.05, log_dir: str | None = None):
    """Train; returns the module and the callback (its `period` and `decisions`)."""
    torch.manual_seed(0)
    model = Digits(lr)

    def augment_off(decision: Any) -> None:
        model.augment = False

    cp = CriticalPeriodCallback(criterion, sampler=model.sampler, on_switch=augment_off)
    trainer = pl.Trainer(
        max_epochs=epochs,
        callbacks=[cp],  # the one line
        logger=CSVLogger(log_dir or tempfile.mkdtemp(), name="digits"),
        accelerator="cpu",
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        log_every_n_steps=1,
    )
    trainer.fit(model)
    return model, cp


def trainable(config: dict[str, Any]) -> None:
    """A Tune trial: the callback finds the trial and reports to Tune and its scheduler."""
    torch.set_num_threads(1)
    fit(config["epochs"], lr=config["lr"])


def tune_main(
    epochs: int = 8,
    storage_path: str | None = None,
    scheduler: Any = None,
    lrs: tuple[float, ...] = (0.03, 0.05),
):
    from ray import tune

    from cpsweep import CriticalPeriodScheduler

    return tune.Tuner(
        trainable,
        param_space={"epochs": epochs, "lr": tune.grid_search(list(lrs))},
        tune_config=tune.TuneConfig(
            scheduler=scheduler or CriticalPeriodScheduler(criterion="paper", budget=epochs)
        ),
        run_config=tune.RunConfig(storage_path=storage_path),
    ).fit()


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--criterion", default="paper")
    ap.add_argument("--tune", action="store_true")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    if args.tune:
        results = tune_main(args.epochs)
        out = {r.config["lr"]: r.metrics["cp/switch_epoch"] for r in results}
        print(json.dumps({"switch_epoch_by_lr": out}))
        return out
    model, cp = fit(args.epochs, args.criterion)
    n = len(model.data)
    for d, seen in zip(cp.decisions, model.seen):
        print(f"epoch {d.epoch:3d} x{seen // n} rotation {d.rotation:.6f}")
    result = {"end_epoch": cp.period.end_epoch, "switch_epoch": cp.period.switch_epoch}
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
