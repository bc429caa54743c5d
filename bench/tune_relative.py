"""Choose the `relative` criterion's ratio and patience on tuning seeds that are never reported.

Trains the scaled paper setup (bench/_common.py) in-process with `train_local`
(the `cpsweep train` path) on seeds 100 and 101, which `paper_repro.py` and
`oracle.py` never use: the full repeats-3 recipe throughout (for the rotation
curves), repeats 1 throughout, and fixed switches after epochs 4 and 8 (a
coarse accuracy-vs-switch curve). Then applies every (ratio, patience) pair of
a small grid to the repeats-3 rotation curves and writes where each would end
the period, next to the paper rule's end, to bench/results/tune_relative.json.

    .venv/bin/python bench/tune_relative.py [--quick]
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import math
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

from _common import (
    RESULTS,
    base_train,
    command_line,
    machine_info,
    now_iso,
    setup_logging,
    write_json,
)

log = logging.getLogger("bench.tune_relative")

TUNING_SEEDS = (100, 101)
RATIOS = (0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5)
PATIENCES = (1, 2, 3)


def _variants(train: dict[str, Any]) -> dict[str, dict[str, Any]]:
    e = train["epochs"]
    return {
        "repeats3": {"criterion.name": "never"},
        "repeats1": {"criterion.name": "never", "recipe.critical.repeats": 1},
        "switch@4": {"criterion.name": "fixed", "criterion.fraction": (4 - 0.5) / e},
        "switch@8": {"criterion.name": "fixed", "criterion.fraction": (8 - 0.5) / e},
    }


def _one(job: tuple[str, int, dict[str, Any], str]) -> dict[str, Any]:
    name, seed, train, out = job
    setup_logging()
    from trainables.core.config import TrainConfig
    from trainables.run.local import train_local

    cfg = TrainConfig.model_validate(train)
    done = Path(out) / "summary.json"
    reused = (
        done.is_file()
        and TrainConfig.model_validate_json((Path(out) / "config.json").read_text()) == cfg
    )
    t0 = time.perf_counter()
    summary = json.loads(done.read_text()) if reused else train_local(cfg, out)
    hist = [json.loads(line) for line in (Path(out) / "history.jsonl").read_text().splitlines()]
    return {
        "variant": name,
        "seed": seed,
        **{k: summary[k] for k in ("cp_end_epoch", "switch_epoch", "final_val_acc", "samples")},
        "wall_s": summary["wall_s"] if reused else round(time.perf_counter() - t0, 1),
        "reused_previous_run": reused,
        "rotation": [m["rotation/mean"] for m in hist],
        "val_acc": [[m["epoch"], m["val/acc"]] for m in hist if "val/acc" in m],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="the quick setup (16 epochs, 3k images)")
    ap.add_argument("--out", default=str(RESULTS), help="results directory")
    ap.add_argument(
        "--seeds",
        default=",".join(map(str, TUNING_SEEDS)),
        help="comma list of tuning seeds; finished runs in bench/results/tmp/tune are reused",
    )
    args = ap.parse_args()
    setup_logging()
    from trainables.core.config import TrainConfig, set_dotted
    from trainables.method.criteria import paper_end, relative_end

    base = TrainConfig.model_validate(base_train(quick=args.quick)).model_dump()
    out = Path(args.out)
    jobs = []
    seeds = [int(x) for x in args.seeds.split(",")]
    for seed in seeds:
        for name, overrides in _variants(base).items():
            train = copy.deepcopy(base)
            train["seed"] = seed
            for path, value in overrides.items():
                set_dotted(train, path, value)
            jobs.append((name, seed, train, str(out / "tmp" / "tune" / f"{name}-s{seed}")))
    t0 = time.perf_counter()
    with ProcessPoolExecutor(max_workers=2) as pool:
        rows = list(pool.map(_one, jobs))
    for r in rows:
        log.info(
            "%-9s seed %d: acc %.4f samples %d",
            r["variant"],
            r["seed"],
            r["final_val_acc"],
            r["samples"],
        )

    budget = base["epochs"]
    curves = {r["seed"]: r["rotation"] for r in rows if r["variant"] == "repeats3"}
    grid = []
    for ratio in RATIOS:
        for patience in PATIENCES:
            ends = {s: relative_end(c, 5, ratio, patience) for s, c in curves.items()}
            grid.append({"ratio": ratio, "patience": patience, "end_epoch": ends})
    paper = {s: paper_end(c, budget) for s, c in curves.items()}
    for g in grid:
        log.info(
            "relative ratio=%.2f patience=%d -> ends %s (paper %s)",
            g["ratio"],
            g["patience"],
            g["end_epoch"],
            paper,
        )
    write_json(
        out / ("tune_relative_quick.json" if args.quick else "tune_relative.json"),
        {
            "command": command_line(),
            "date": now_iso(),
            "machine": machine_info(),
            "seeds": seeds,
            "train": base,
            "runs": rows,
            "paper_end": paper,
            "fixed12.5_end": math.ceil(0.125 * budget),
            "relative_grid": grid,
            "wall_s": round(time.perf_counter() - t0, 1),
        },
    )


if __name__ == "__main__":
    main()
