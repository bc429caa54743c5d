"""InfoBatch at its promised cost: a pruned epoch's training part against a full one.

InfoBatch (Qin et al., ICLR 2024) promises that leaving out a share of the low-loss
samples saves that share of the training time. The target here: the training part
of a pruned epoch (evaluation and rotation excluded) takes at most (kept fraction
+ 5 points) of the same trial's full epoch, on both data paths (tensors in memory;
a DataLoader over the same tensors, `data.stream: always`).

One `TrainingRun` per (path, seed) with InfoBatch (ratio 0.5, never annealed) trains a
warm-up epoch (nothing recorded yet: full data), then pairs of one pruned and one full
epoch in ABBA order, switching `recipe.critical.prune` off and on between epochs, so
that a shared machine's changing load hits both kinds alike. A plain run of the same
config (no pruning, no loss table) trains an epoch after each of them: the cost of no
pruning at all. Evaluation never runs (the budget is never reached), so an epoch's
`time/train_s` and its process CPU time (one torch thread, the loader in this process:
`data.workers: 0`) are its training part. Wall time follows the load on a shared
machine; CPU time follows the work, so the verdict is given on both.

    .venv/bin/python bench/infobatch_cost.py            # Fashion-MNIST 4k, 3 seeds
    .venv/bin/python bench/infobatch_cost.py --quick    # digits, 1 seed, about a minute idle

Writes bench/results/infobatch_cost.json (`--quick`: infobatch_cost_quick.json).
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from _common import RESULTS, command_line, machine_info, now_iso, setup_logging, write_json

log = logging.getLogger("bench.infobatch_cost")

PATHS = {"memory": "never", "stream": "always"}  # data.stream of each data path
PRUNE = {"method": "infobatch", "ratio": 0.5, "anneal": 1.0}  # prune to the end
MARGIN = 0.05  # the target: pruned train time <= (kept fraction + MARGIN) x full


def _train(args: argparse.Namespace, seed: int, stream: str) -> dict[str, Any]:
    data: dict[str, Any] = {"name": args.dataset, "stream": stream, "workers": 0}
    if args.train_subset:
        data["train_subset"] = args.train_subset
    return {
        "seed": seed,
        # Never reached: no evaluation (every eval_every epochs and after the last), no test
        # split, no LR step inside the measurement.
        "epochs": 10_000,
        "eval_every": 10_000,
        "batch_size": args.batch_size,
        "data": data,
        "model": {"name": "small_cnn", "width": args.width},
        "recipe": {"critical": {"repeats": 1, "prune": PRUNE}},
        "criterion": {"name": "never"},
        "num_threads": 1,
        "device": "cpu",
    }


def _epoch(run: Any, kind: str) -> dict[str, Any]:
    """One epoch of `run`; its training part's wall time (the engine's) and CPU time."""
    c0 = time.process_time()
    m = run.run_epoch()
    cpu = time.process_time() - c0 - m["time/rotation_s"]
    assert m["time/eval_s"] < 0.01 and "val/acc" not in m, "evaluation ran inside the measurement"
    n = int(run.data.train_y.numel())
    return {
        "kind": kind,
        "epoch": m["epoch"],
        "samples": m["samples"],
        "kept": m["samples"] / n,
        "train_s": m["time/train_s"],
        "cpu_s": cpu,
        "load1": os.getloadavg()[0],
    }


def _bookkeeping(run: Any, reps: int = 20) -> dict[str, float]:
    """CPU ms of the per-epoch loss-table work alone: the plan and the update."""
    import torch

    table, n = run.loss_table, int(run.data.train_y.numel())
    order = torch.randperm(n)
    losses = table.losses[order].clone()
    c0 = time.process_time()
    for i in range(reps):
        table.plan(ratio=PRUNE["ratio"], seed=0, epoch=i)
    plan_ms = (time.process_time() - c0) / reps * 1e3
    c0 = time.process_time()
    for _ in range(reps):
        table.update(order, losses)
    return {"plan_ms": plan_ms, "update_ms": (time.process_time() - c0) / reps * 1e3}


def measure(args: argparse.Namespace, path: str, seed: int) -> dict[str, Any]:
    """The epochs of one pruning run and its plain twin, and the verdict on them."""
    from trainables.core.config import PruneConfig, TrainConfig
    from trainables.run.engine import TrainingRun

    raw = _train(args, seed, PATHS[path])
    run = TrainingRun(TrainConfig.model_validate(raw))
    plain_raw = {**raw, "recipe": {"critical": {"repeats": 1}}}
    plain = TrainingRun(TrainConfig.model_validate(plain_raw))
    prune = PruneConfig.model_validate(PRUNE)
    run.run_epoch()  # warm-up: the first losses (nothing pruned yet)
    plain.run_epoch()
    epochs: list[dict[str, Any]] = []
    order = [k for i in range(args.pairs) for k in (("pruned", "full"), ("full", "pruned"))[i % 2]]
    for kind in order:  # ABBA
        run.cfg.recipe.critical.prune = prune if kind == "pruned" else None
        epochs.append(_epoch(run, kind))
        epochs.append(_epoch(plain, "plain"))
        e = epochs[-2]
        log.info("%s seed %d epoch %d %-6s kept %.3f train %.2fs cpu %.2fs (load %.1f)",
                 path, seed, e["epoch"], kind, e["kept"], e["train_s"], e["cpu_s"], e["load1"])  # fmt: skip
    run.cfg.recipe.critical.prune = prune
    pairs = []
    pruned = [e for e in epochs if e["kind"] == "pruned"]
    full = [e for e in epochs if e["kind"] == "full"]
    for p, f in zip(pruned, full, strict=True):  # each pruned epoch with its ABBA partner
        pairs.append(
            {
                "kept": p["kept"],
                "wall_ratio": p["train_s"] / f["train_s"],
                "cpu_ratio": p["cpu_s"] / f["cpu_s"],
            }
        )
    out = {"path": path, "seed": seed, "epochs": epochs, "pairs": pairs}
    out.update(_summary(epochs, pairs))
    out["bookkeeping"] = _bookkeeping(run)
    return out


def _ms_per_sample(epochs: list[dict[str, Any]], kind: str, key: str) -> float:
    return statistics.median(e[key] / e["samples"] * 1e3 for e in epochs if e["kind"] == kind)


def _summary(epochs: list[dict[str, Any]], pairs: list[dict[str, Any]]) -> dict[str, Any]:
    kept = statistics.median(p["kept"] for p in pairs)
    wall = statistics.median(p["wall_ratio"] for p in pairs)
    cpu = statistics.median(p["cpu_ratio"] for p in pairs)
    return {
        "kept_fraction": kept,
        "pruned_over_full_wall": wall,
        "pruned_over_full_cpu": cpu,
        "target": kept + MARGIN,
        "met_wall": wall <= kept + MARGIN,
        "met_cpu": cpu <= kept + MARGIN,
        "ms_per_sample": {
            key: {k: _ms_per_sample(epochs, k, f"{key}_s") for k in ("plain", "full", "pruned")}
            for key in ("train", "cpu")
        },
    }


def _table(results: list[dict[str, Any]]) -> str:
    head = (
        "| path | seed | kept | pruned/full wall | pruned/full CPU | target | "
        "CPU ms/sample plain / full / pruned |"
    )
    lines = [head, "|---|---|---|---|---|---|---|"]
    for r in results:
        ms = r["ms_per_sample"]["cpu"]
        lines.append(
            f"| {r['path']} | {r['seed']} | {r['kept_fraction']:.3f} | "
            f"{r['pruned_over_full_wall']:.3f} | {r['pruned_over_full_cpu']:.3f} | "
            f"<= {r['target']:.3f} | {ms['plain']:.3f} / {ms['full']:.3f} / {ms['pruned']:.3f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="digits, width 8, 1 seed")
    parser.add_argument("--seeds", type=int, default=None, help="seeds 0..n-1 (default 3)")
    parser.add_argument("--pairs", type=int, default=None, help="pruned/full pairs per run")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    setup_logging()
    quick = args.quick
    args.dataset = "digits" if quick else "fashion-mnist"
    args.train_subset = None if quick else 4000
    args.width, args.batch_size = (8, 64) if quick else (16, 128)
    args.seeds = args.seeds or (1 if quick else 3)
    args.pairs = args.pairs or 3
    out = args.out or RESULTS / ("infobatch_cost_quick.json" if quick else "infobatch_cost.json")
    started, t0, machine = now_iso(), time.perf_counter(), machine_info()
    results = [measure(args, p, s) for s in range(args.seeds) for p in PATHS]
    by_path = {
        p: {
            k: statistics.median(r[k] for r in results if r["path"] == p)
            for k in ("kept_fraction", "pruned_over_full_wall", "pruned_over_full_cpu")
        }
        for p in PATHS
    }
    doc = {
        "command": command_line(),
        "date": started,
        "wall_s": round(time.perf_counter() - t0, 1),
        "machine": machine,
        "loadavg_at_end": list(os.getloadavg()),
        "settings": {
            "dataset": args.dataset,
            "train_subset": args.train_subset,
            "width": args.width,
            "batch_size": args.batch_size,
            "seeds": args.seeds,
            "pairs": args.pairs,
            "prune": PRUNE,
            "margin": MARGIN,
            "threads": 1,
            "loader_workers": 0,
        },
        "by_path": by_path,
        "met_cpu": all(r["met_cpu"] for r in results),
        "met_wall": all(r["met_wall"] for r in results),
        "runs": results,
        "table": _table(results),
    }
    write_json(out, doc)
    print(doc["table"])
    print(f"wrote {out}; load average {doc['machine']['loadavg_at_start']} -> "
          f"{doc['loadavg_at_end']}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
