"""Streaming vs in-memory training throughput on the same data (trainables/data/streaming.py).

Fashion-MNIST, a stratified 10k training subset, the small CNN at width 16, batch 128,
augmentation on, repeats 1, one torch thread: the in-memory path (tensors sliced by
the recipe sampler's order) against the DataLoader path (`data.stream: always`, the
same sampler feeding a DataLoader over a TensorDataset) with 0, 1 and 2 worker
processes. Both paths train on identical batches, so the difference is the loader's
cost: per-sample indexing, collation and inter-process transfer. Each configuration
trains `--epochs` epochs; the first is a warm-up and not counted. Rounds interleave
the configurations so that a change in the machine's load hits all of them.

    .venv/bin/python bench/streaming.py [--epochs 3] [--rounds 2]
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any

from _common import RESULTS, command_line, machine_info, now_iso, setup_logging, write_json

CONFIGS: dict[str, dict[str, Any]] = {
    "memory": {"stream": "never"},
    "loader, 0 workers": {"stream": "always", "workers": 0},
    "loader, 1 worker": {"stream": "always", "workers": 1},
    "loader, 2 workers": {"stream": "always", "workers": 2},
}


def _train_config(data: dict[str, Any], epochs: int) -> Any:
    from trainables.core.config import TrainConfig

    return TrainConfig.model_validate(
        {
            "seed": 0,
            "epochs": epochs,
            "batch_size": 128,
            "data": {"name": "fashion-mnist", "train_subset": 10000, "val_subset": 2000, **data},
            "model": {"name": "small_cnn", "width": 16},
            "recipe": {"critical": {"repeats": 1}, "after": {"repeats": 1}},
            "criterion": {"name": "never"},
            "device": "cpu",
            "num_threads": 1,
        }
    )


def _measure(name: str, epochs: int) -> dict[str, Any]:
    from trainables.run.engine import TrainingRun

    t0 = time.perf_counter()
    run = TrainingRun(_train_config(CONFIGS[name], epochs))
    setup_s = time.perf_counter() - t0
    rows = [run.run_epoch() for _ in range(epochs)]
    counted = rows[1:]  # epoch 1 warms caches and starts the loader's workers
    rates = [m["samples"] / m["time/train_s"] for m in counted]
    return {
        "setup_s": round(setup_s, 2),
        "train_samples_per_s": [round(r) for r in rates],
        "eval_s": [round(m["time/eval_s"], 3) for m in counted],
        "train_loss": [m["train/loss"] for m in rows],
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--rounds", type=int, default=2)
    args = p.parse_args()
    setup_logging()
    started = now_iso()
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in CONFIGS}
    for _ in range(args.rounds):
        for name in CONFIGS:
            runs[name].append(_measure(name, args.epochs))
    summary = {}
    base = statistics.median(r for x in runs["memory"] for r in x["train_samples_per_s"])
    for name, results in runs.items():
        rates = [r for x in results for r in x["train_samples_per_s"]]
        med = statistics.median(rates)
        summary[name] = {
            "median_samples_per_s": round(med),
            "vs_memory": round(med / base, 3),
            "median_eval_s": statistics.median(e for x in results for e in x["eval_s"]),
            "same_losses_as_memory": all(
                x["train_loss"] == m["train_loss"]
                for x, m in zip(results, runs["memory"], strict=True)
            ),
        }
        print(f"{name:<20} {med:8.0f} samples/s  x{med / base:.3f} of in-memory")
    write_json(
        RESULTS / "streaming.json",
        {
            "command": command_line(),
            "started": started,
            "machine": machine_info(),
            "summary": summary,
            "runs": runs,
        },
    )


if __name__ == "__main__":
    main()
