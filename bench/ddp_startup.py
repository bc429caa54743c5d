"""Start-up of a 2-rank DDP trial on CPU: warm rank groups against a TorchTrainer per trial.

One sweep per executor, `scaling: {num_workers: 2, executor: train}` with
`worker_pool: true` (trainables/run/pool.py) or `false` (a Ray Train `TorchTrainer` per
trial), each of `--trials` trials (default 3, one at a time, so the pool's trials after
the first reuse its group) training digits for `--epochs` (default 1). A trial's
start-up is the time from its start to its first report less that epoch's own time
(`time_total_s - time/epoch_s`, as bench/overheads.py measures it). Prints and writes
the median and every value per executor, with the load average before and after.

    nice -n 5 .venv/bin/python bench/ddp_startup.py
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import (
    RESULTS,
    command_line,
    machine_info,
    now_iso,
    ray_worker_priority,
    setup_logging,
    write_json,
)

EXECUTORS = {"pool": True, "torchtrainer": False}  # name -> scaling.worker_pool


def _spec(pool: bool, trials: int, epochs: int) -> Any:
    from service.spec import SweepSpec

    return SweepSpec.model_validate(
        {
            "name": f"ddp-startup-{'pool' if pool else 'torchtrainer'}",
            "train": {
                "epochs": epochs,
                "data": {"name": "digits"},
                "model": {"name": "small_cnn", "width": 8},
                "num_threads": 1,
                "criterion": {"name": "never"},  # the paper rule needs 2+ epochs; not measured
            },
            "search_space": {"seed": {"grid": list(range(trials))}},
            "scaling": {"num_workers": 2, "executor": "train", "worker_pool": pool},
            "max_concurrent_trials": 1,
            "tracking": {"enabled": False},
            "accounting": {"measure_energy": False},
        }
    )


def _first_reports() -> Any:
    """A Tune callback keeping each trial's first result."""
    from ray.tune import Callback

    class FirstReports(Callback):
        def __init__(self) -> None:
            self.first: dict[str, dict[str, Any]] = {}

        def on_trial_result(
            self, iteration: int, trials: Any, trial: Any, result: dict, **info: Any
        ) -> None:
            self.first.setdefault(trial.trial_id, dict(result))

    return FirstReports()


def _measure(name: str, trials: int, epochs: int, work: Path) -> dict[str, Any]:
    from service.sweeps.run import run_sweep

    rec = _first_reports()
    load_before = os.getloadavg()
    t0 = time.perf_counter()
    summary = run_sweep(
        _spec(EXECUTORS[name], trials, epochs), output_dir=work / name, callbacks=[rec]
    )
    wall = time.perf_counter() - t0
    # In the order the trials started: the pool's first trial also starts its group.
    startup = [round(r["time_total_s"] - r["time/epoch_s"], 2) for r in rec.first.values()]
    return {
        "startup_s": startup,
        "startup_s_median": statistics.median(startup) if startup else None,
        "wall_s": round(wall, 1),
        "trials_ok": sum(t.status == "TERMINATED" for t in summary.trials),
        "load_avg_before": [round(x, 1) for x in load_before],
        "load_avg_after": [round(x, 1) for x in os.getloadavg()],
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--trials", type=int, default=3, help="trials (repetitions) per executor")
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--out", default=str(RESULTS / "ddp_startup_pool.json"))
    args = p.parse_args()
    setup_logging()
    ray_worker_priority()  # Ray's workers at this process's priority, not 15 below it
    started = now_iso()
    work = Path(tempfile.mkdtemp(prefix="ddp_startup_"))
    results = {}
    try:
        for name in EXECUTORS:
            results[name] = _measure(name, args.trials, args.epochs, work)
            r = results[name]
            print(
                f"{name:<13} start-up median {r['startup_s_median']} s  {r['startup_s']}  "
                f"(wall {r['wall_s']} s, load {r['load_avg_before'][0]} -> "
                f"{r['load_avg_after'][0]})"
            )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    write_json(
        Path(args.out),
        {
            "command": command_line(),
            "started": started,
            "machine": machine_info(),
            "trials": args.trials,
            "epochs": args.epochs,
            "results": results,
        },
    )


if __name__ == "__main__":
    main()
