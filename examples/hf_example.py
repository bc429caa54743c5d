"""The critical period in a Hugging Face Trainer: one callback, CPU, under a minute.

A tiny BERT, built from a `BertConfig` (nothing is downloaded), learns whether a
generated token sequence's first token is even. While the critical period lasts,
`RepeatSampler` shows every sequence 3 times per epoch and the collator replaces 10%
of the tokens at random (the augmentation); `CriticalPeriodTrainerCallback` measures
layer rotation after every epoch, applies the paper's rule and, from the next epoch
on, drops the sampler to one pass and the replacement off. With `--step-interval N`
the budget is the Trainer's steps instead: a check every N optimizer steps, and the
replacement stops with the next step window (the sampler's repeats at the next epoch).

    pip install 'cpsweep[hf]'
    python examples/hf_example.py [--epochs 8] [--step-interval 4]
"""

from __future__ import annotations

import argparse
import json
import tempfile
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset
from transformers import (
    BertConfig,
    BertForSequenceClassification,
    PrinterCallback,
    Trainer,
    TrainingArguments,
)

from cpsweep import CriticalPeriodTrainerCallback, RepeatSampler

VOCAB, LENGTH = 40, 8


class Tokens(Dataset):
    """Generated sequences; label: the first token is even."""

    def __init__(self, n: int, seed: int = 0) -> None:
        g = torch.Generator().manual_seed(seed)
        self.ids = torch.randint(1, VOCAB, (n, LENGTH), generator=g)
        self.targets = (self.ids[:, 0] % 2).tolist()

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return {"input_ids": self.ids[i], "labels": self.targets[i]}


class Collate:
    """Stacks a batch; while `augment` is on, replaces 10% of the tokens at random."""

    def __init__(self) -> None:
        self.augment, self.log = True, []  # log: augment per batch, for the printout

    def __call__(self, rows: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        ids = torch.stack([r["input_ids"] for r in rows])
        if self.augment:
            swap = torch.rand(ids.shape) < 0.1
            ids = torch.where(swap, torch.randint(1, VOCAB, ids.shape), ids)
        self.log.append(self.augment)
        return {"input_ids": ids, "labels": torch.tensor([r["labels"] for r in rows])}


class RepeatTrainer(Trainer):
    """The Trainer's documented override: its training loader draws from our sampler."""

    def __init__(self, *args: Any, sampler: RepeatSampler, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.sampler = sampler

    def get_train_dataloader(self) -> DataLoader:
        return DataLoader(
            self.train_dataset,
            batch_size=self.args.train_batch_size,
            sampler=self.sampler,
            collate_fn=self.data_collator,
        )


def fit(epochs: int, step_interval: int | None = None, samples: int = 32, **rule: Any):
    """Train; returns the data, the collator and the callback."""
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=VOCAB,
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=LENGTH,
        num_labels=2,
    )
    data, collate = Tokens(samples), Collate()
    sampler = RepeatSampler(data, repeats=3, seed=0)  # stratified by `targets`
    with tempfile.TemporaryDirectory() as out:
        args = TrainingArguments(
            output_dir=out,
            num_train_epochs=epochs,
            per_device_train_batch_size=16,
            learning_rate=3e-3,
            save_strategy="no",
            report_to="none",
            use_cpu=True,
            disable_tqdm=True,
        )
        trainer = RepeatTrainer(
            model=BertForSequenceClassification(config),
            args=args,
            train_dataset=data,
            data_collator=collate,
            sampler=sampler,
        )
        trainer.remove_callback(PrinterCallback)  # the log dicts: our printout follows
        cb = CriticalPeriodTrainerCallback(
            "paper",
            step_interval=step_interval,
            sampler=sampler,
            on_switch=lambda d: setattr(collate, "augment", False),
            **rule,
        ).attach(trainer)  # the one line
        trainer.train()
    return data, collate, cb, trainer


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--step-interval", type=int, default=None)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    _, collate, cb, _ = fit(args.epochs, args.step_interval)
    for d in cb.decisions:
        at = f"step {d.step:4d}" if d.step is not None else f"epoch {d.epoch:3d}"
        print(f"{at} rotation {d.rotation:.6f}")
    p = cb.period
    result = {"end_epoch": p.end_epoch, "switch_epoch": p.switch_epoch}
    if args.step_interval:
        result.update(end_step=p.end_step, switch_step=p.switch_step)
        result["augmented_steps"] = sum(collate.log)
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
