"""Wall time of a recorded paper_repro sweep as an idle machine would have taken it.

A sweep's measured wall times are only as good as the machine was quiet: on a
shared 2-core machine the same trial can take twice as long in one run as in the next.
The work each trial did is exact in its MLflow curves (training samples per epoch, evaluations),
so this script times the unit costs once, in one process, at the sweep's own
settings (model, data, batch, threads), and prices every recorded trial with them:

    wall_model = sum over epochs of samples_e * c_sample + evaluations * c_eval
                 + epochs * c_epoch

c_sample is the training time per sample (augmentation, forward, backward, step),
measured on a repeats-1 epoch and on a pruned (InfoBatch) epoch, whichever costs
more per sample (InfoBatch's per-sample loss bookkeeping is then included); c_eval one
pass over the validation set; c_epoch the rotation plus the median per-epoch remainder
the sweep itself recorded (report, handshake). It is a model: the per-arm reductions
against repeats3 are what it is for, not the absolute seconds.

    .venv/bin/python bench/wall_model.py [bench/results/paper_repro_long.json]
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from _common import (
    RESULTS,
    command_line,
    machine_info,
    mean_std,
    now_iso,
    setup_logging,
    write_json,
)

log = logging.getLogger("bench.wall_model")


def _epoch_cost(train: dict[str, Any], prune: dict[str, Any] | None) -> dict[str, float]:
    """Seconds per training sample of one epoch (after a warm-up epoch) and one evaluation."""
    from trainables.core.config import TrainConfig
    from trainables.run.engine import TrainingRun

    cfg = json.loads(json.dumps(train))
    cfg["recipe"]["critical"].update({"repeats": 1, "prune": prune})
    cfg["criterion"] = {"name": "never"}
    run = TrainingRun(TrainConfig.model_validate(cfg))
    run.run_epoch()  # warm-up; with InfoBatch also the first loss table (nothing pruned yet)
    m = run.run_epoch()
    t0 = time.perf_counter()
    run.evaluate()
    eval_s = time.perf_counter() - t0
    return {
        "sample_s": m["time/train_s"] / m["samples"],
        "rotation_s": m["time/rotation_s"],
        "eval_s": eval_s,
        "samples": m["samples"],
    }


def calibrate(train: dict[str, Any], prune: dict[str, Any] | None) -> dict[str, float]:
    plain = _epoch_cost(train, None)
    pruned = _epoch_cost(train, prune) if prune else plain
    return {
        "sample_s": max(plain["sample_s"], pruned["sample_s"]),
        "sample_s_plain": plain["sample_s"],
        "sample_s_pruned": pruned["sample_s"],
        "pruned_epoch_samples": pruned["samples"],
        "eval_s": min(plain["eval_s"], pruned["eval_s"]),
        "rotation_s": plain["rotation_s"],
    }


def remainder_s(trials: list[dict[str, Any]]) -> float:
    """Median per-epoch time outside training, evaluation and rotation, as recorded."""
    rest = []
    for t in trials:
        c = t["curves"]
        for ep, tr, ev, rot in zip(
            c["time/epoch_s"], c["time/train_s"], c["time/eval_s"], c["time/rotation_s"]
        ):
            rest.append(max(0.0, ep - tr - ev - rot))
    return statistics.median(rest) if rest else 0.0


def model_trial(t: dict[str, Any], unit: dict[str, float]) -> float:
    c = t["curves"]
    return (
        sum(c["samples"]) * unit["sample_s"]
        + len(c["val/acc"]) * unit["eval_s"]
        + len(c["samples"]) * (unit["rotation_s"] + unit["remainder_s"])
    )


def per_arm(trials: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    by_arm: dict[str, list[dict[str, Any]]] = {}
    for t in trials:
        by_arm.setdefault(t["arm"], []).append(t)
    base = {t["seed"]: t for t in by_arm.get("repeats3", [])}
    out = {}
    for arm, ts in by_arm.items():
        m, s = mean_std([t["wall_model_s"] for t in ts])
        measured, _ = mean_std([t["wall_s"] for t in ts])
        paired = [
            100.0 * (1 - t["wall_model_s"] / base[t["seed"]]["wall_model_s"])
            for t in ts
            if t["seed"] in base
        ]
        samples = [
            100.0 * (1 - t["samples"] / base[t["seed"]]["samples"]) for t in ts if t["seed"] in base
        ]
        acc = [
            100.0 * (t["final_val_acc"] - base[t["seed"]]["final_val_acc"])
            for t in ts
            if t["seed"] in base
        ]
        out[arm] = {
            "n": len(ts),
            "wall_model_s": {"mean": m, "std": s},
            "wall_measured_s_mean": measured,
            "wall_model_saved_pct_vs_repeats3": mean_std(paired)[0],
            "samples_saved_pct_vs_repeats3": mean_std(samples)[0],
            "acc_delta_pts_vs_repeats3": {"mean": mean_std(acc)[0], "paired": acc},
        }
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("result", nargs="?", default=str(RESULTS / "paper_repro_long.json"))
    args = ap.parse_args()
    setup_logging()
    path = Path(args.result).resolve()
    if not path.is_file():
        sys.exit(f"{path}: no such result; run bench/paper_repro.py --long first")
    data = json.loads(path.read_text())
    train = data["spec"]["train"]
    prune = next(
        (
            a[k]
            for a in data["spec"]["arms"].values()
            for k in ("recipe.after.prune", "recipe.critical.prune")
            if a.get(k)
        ),
        None,
    )
    log.info("timing the unit costs of %s (prune %s)", path.name, prune)
    unit = calibrate(train, prune)
    unit["remainder_s"] = remainder_s(data["trials"])
    for t in data["trials"]:
        t["wall_model_s"] = round(model_trial(t, unit), 1)
    arms = per_arm(data["trials"])
    out = path.with_name(path.stem + "_wall_model.json")
    write_json(
        out,
        {
            "command": command_line(),
            "date": now_iso(),
            "machine": machine_info(),
            "source": path.name,
            "unit_costs": unit,
            "per_arm": arms,
            "trials": [
                {
                    k: t[k]
                    for k in ("arm", "seed", "samples", "wall_s", "wall_model_s", "final_val_acc")
                }
                for t in data["trials"]
            ],
        },
    )
    print(
        f"{'arm':<20} {'model wall s':>12} {'measured s':>10} {'-wall% r3':>9} {'-samples%':>9} {'dAcc':>6}"
    )
    for arm, a in arms.items():
        print(
            f"{arm:<20} {a['wall_model_s']['mean']:12.1f} {a['wall_measured_s_mean']:10.1f} "
            f"{a['wall_model_saved_pct_vs_repeats3']:9.1f} {a['samples_saved_pct_vs_repeats3']:9.1f} "
            f"{a['acc_delta_pts_vs_repeats3']['mean']:6.2f}"
        )
    log.info("unit costs %s; wrote %s", unit, out)


if __name__ == "__main__":
    main()
