"""Reproduce the paper's claim at CPU scale, through the product, against honest baselines.

Runs one sweep with `service.sweeps.run.run_sweep` (local Ray, MLflow in a sqlite
file under bench/results/tmp) on real Fashion-MNIST with the scaled paper
recipe of bench/_common.py. Arms (a grid over arms x seeds):

- repeats3: repeats 3 throughout (criterion never): the paper's baseline. It is
  the spec's `baseline_arm`, so the product also reports measured savings.
- repeats1: repeats 1 throughout: the plain run the paper does not compare with.
- fixed12.5: repeats 3 for the first ceil(E/8) epochs, then 1.
- paper: the authors' rule (window 5, 45 degrees on the [0, 1]-rescaled budget).
- relative: cpsweep's budget-independent rule, ratio/patience chosen on tuning
  seeds 100/101 that are never reported (bench/tune_relative.py).
- paper+prune: the paper's rule plus pruning to 50% of the data after the period
  until the annealing point (r = 0.75).

`--long` is the paper's budget: E = 100 epochs (LR steps at 50% and 75%),
a 2.5k training subset, and loss-aware pruning arms (InfoBatch, ratio 0.5, full data
from 87.5% of the budget) instead of fixed12.5:

- infobatch: repeats 3 throughout (the baseline's recipe) with InfoBatch throughout.
- paper+infobatch / relative+infobatch: the rule ends repeats 3; InfoBatch after it.

Writes bench/results/paper_repro.json and paper_repro.png (quick: *_quick.*;
long: paper_repro_long*).

    .venv/bin/python bench/paper_repro.py [--quick] [--long] [--seeds 3]
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import time
from pathlib import Path
from typing import Any

from _common import (
    RESULTS,
    LoadSampler,
    base_train,
    command_line,
    long_train,
    machine_info,
    mean_std,
    mlflow_curves,
    now_iso,
    ray_worker_priority,
    setup_logging,
    write_json,
)

log = logging.getLogger("bench.paper_repro")

# Chosen with bench/tune_relative.py on seeds 100 and 101 only (see BENCHMARKS.md).
RELATIVE_RATIO = 0.5
RELATIVE_PATIENCE = 1

ARM_ORDER = (
    "repeats3",
    "repeats1",
    "fixed12.5",
    "paper",
    "relative",
    "infobatch",
    "paper+infobatch",
    "relative+infobatch",
    "paper+prune",
)
# InfoBatch as its paper runs it: half of the below-mean-loss samples left out, full data
# for the last 12.5% of the budget.
INFOBATCH = {"method": "infobatch", "ratio": 0.5, "anneal": 0.875}
CURVE_KEYS = [
    "rotation/mean",
    "val/acc",
    "recipe/repeats",
    "recipe/data_fraction",
    "recipe/pruned_fraction",
    "samples",
    "time/epoch_s",
    "time/train_s",
    "time/eval_s",
    "time/rotation_s",
    "energy/epoch_kwh",
    "cp/handshake_s",
]


def long_arms(ratio: float, patience: int) -> dict[str, dict[str, Any]]:
    """The long budget's arms: fixed12.5 makes way for the InfoBatch arms."""
    out = arms(ratio, patience)
    del out["fixed12.5"]
    rel = {k: v for k, v in out["relative"].items()}
    out["infobatch"] = {"criterion.name": "never", "recipe.critical.prune": INFOBATCH}
    out["paper+infobatch"] = {"criterion.name": "paper", "recipe.after.prune": INFOBATCH}
    out["relative+infobatch"] = {**rel, "recipe.after.prune": INFOBATCH}
    order = [a for a in ARM_ORDER if a in out]
    return {a: out[a] for a in order}


# Expected training passes over the data per arm at E = 100, for the cost estimate: the
# rules end the period near epoch 12 (3 x 12 + 88); InfoBatch leaves out ~35% of the data
# until epoch 88 (its quick run: 0.2-0.45); random pruning halves epochs 13-78 of 100.
LONG_PASSES = {
    "repeats3": 300.0,
    "repeats1": 100.0,
    "paper": 124.0,
    "relative": 124.0,
    "infobatch": 3 * (1 + 87 * 0.65 + 12),
    "paper+infobatch": 36 + 76 * 0.65 + 12,
    "relative+infobatch": 36 + 76 * 0.65 + 12,
    "paper+prune": 36 + 66 * 0.5 + 22,
}


def estimate_long(seeds: int) -> dict[str, Any]:
    """Time one repeats-1 epoch and one evaluation of the long setup in this process and
    scale them to the whole long run (two trials at a time, as the sweep runs them)."""
    from trainables.core.config import TrainConfig
    from trainables.run.engine import TrainingRun

    train = long_train(quick=False)
    train["recipe"]["critical"]["repeats"] = 1
    run = TrainingRun(TrainConfig.model_validate(train))
    m = run.run_epoch()  # one pass over the training subset, rotation included
    t1 = time.perf_counter()
    run.evaluate()
    pass_s, eval_s = m["time/train_s"] + m["time/rotation_s"], time.perf_counter() - t1
    evals = train["epochs"] // train["eval_every"]
    per_trial = {a: p * pass_s + evals * eval_s for a, p in LONG_PASSES.items()}
    total = seeds * sum(per_trial.values()) / 2  # max_concurrent_trials = 2
    return {
        "train_samples_per_pass": m["samples"],
        "pass_s": round(pass_s, 2),
        "eval_s": round(eval_s, 2),
        "passes_per_arm": LONG_PASSES,
        "trial_s_per_arm": {a: round(v, 1) for a, v in per_trial.items()},
        "seeds": seeds,
        "estimated_sweep_s": round(total, 0),
        "estimated_sweep_h": round(total / 3600, 2),
        "loadavg": list(os.getloadavg()),
    }


def arms(ratio: float, patience: int) -> dict[str, dict[str, Any]]:
    """Arm overrides; `repeats3` comes from the spec's baseline_arm (criterion never)."""
    return {
        "repeats1": {"criterion.name": "never", "recipe.critical.repeats": 1},
        "fixed12.5": {"criterion.name": "fixed", "criterion.fraction": 0.125},
        "paper": {"criterion.name": "paper"},
        "relative": {
            "criterion.name": "relative",
            "criterion.ratio": ratio,
            "criterion.patience": patience,
        },
        "paper+prune": {
            "criterion.name": "paper",
            "recipe.after.data_fraction": 0.5,
            "recipe.anneal_ratio": 0.75,
        },
    }


def fixed_arm(name: str) -> dict[str, Any]:
    """`fixed<pct>`: repeats 3 for the first ceil(pct% of E) epochs, then 1 (`fixed12.5`)."""
    try:
        pct = float(name.removeprefix("fixed"))
    except ValueError:
        raise SystemExit(
            f"--arms: {name!r} is not fixed<percent of the budget>, e.g. fixed5"
        ) from None
    if not 0 < pct < 100:
        raise SystemExit(f"--arms: {name!r}: the percentage must be in (0, 100)")
    return {"criterion.name": "fixed", "criterion.fraction": pct / 100.0}


def select_arms(arm_set: dict[str, dict[str, Any]], names: list[str]) -> dict[str, dict[str, Any]]:
    """The arms named on the command line, in their order; `repeats3` is the baseline arm
    and is not an override, `fixed<pct>` any fixed switch."""
    out: dict[str, dict[str, Any]] = {}
    for name in names:
        if name == "repeats3":
            continue
        if name in arm_set:
            out[name] = arm_set[name]
        elif name.startswith("fixed"):
            out[name] = fixed_arm(name)
        else:
            known = ", ".join(["repeats3", *arm_set, "fixed<pct>"])
            raise SystemExit(f"--arms: unknown arm {name!r}; known: {known}")
    return out


def build_spec(
    *,
    quick: bool,
    seeds: list[int],
    ratio: float,
    patience: int,
    tracking_uri: str,
    long: bool = False,
    only: list[str] | None = None,
    stem: str | None = None,
) -> Any:
    from service.spec import SweepSpec

    arm_set = long_arms(ratio, patience) if long else arms(ratio, patience)
    if only:
        arm_set = select_arms(arm_set, only)
    baseline = not only or "repeats3" in only
    return SweepSpec.model_validate(
        {
            "name": (stem or _stem(quick, long)).replace("_", "-"),
            "description": "Fashion-MNIST, small CNN, paper recipe scaled to 2 CPU cores"
            + (", E = 100" if long and not quick else "")
            + ": "
            + " / ".join((["repeats3"] if baseline else []) + list(arm_set)),
            "train": long_train(quick=quick) if long else base_train(quick=quick),
            "search_space": {"seed": {"grid": seeds}},
            "arms": arm_set,
            "baseline_arm": baseline,
            "max_concurrent_trials": 2,
            "scaling": {"num_workers": 1, "cpus_per_worker": 1},
            "scheduler": {"scope": "trial", "mode": "push"},
            "tracking": {"enabled": True, "uri": tracking_uri},
        }
    )


def _stem(quick: bool, long: bool) -> str:
    return "paper_repro" + ("_long" if long else "") + ("_quick" if quick else "")


def _arm_name(arm: str | None) -> str:
    return "repeats3" if arm == "baseline" else str(arm)


def _run_times(tracking_uri: str, run_id: str | None) -> dict[str, Any]:
    """The trial's MLflow run start and end (unix seconds): when it held its CPU."""
    if not run_id:
        return {"started": None, "ended": None}
    from mlflow.tracking import MlflowClient

    info = MlflowClient(tracking_uri=tracking_uri).get_run(run_id).info
    end = info.end_time / 1000.0 if info.end_time else None
    return {"started": info.start_time / 1000.0, "ended": end}


def trial_rows(
    summary: dict[str, Any], tracking_uri: str, load: LoadSampler | None = None
) -> list[dict[str, Any]]:
    rows = []
    for t in summary["trials"]:
        curves = mlflow_curves(tracking_uri, t["mlflow_run_id"], CURVE_KEYS)
        times = _run_times(tracking_uri, t.get("mlflow_run_id"))
        busy = load.between(times["started"], times["ended"]) if load and times["ended"] else {}
        rows.append(
            {
                "arm": _arm_name(t["arm"]),
                "seed": t["params"].get("seed"),
                "trial_id": t["trial_id"],
                "status": t["status"],
                "epochs": t["epochs"],
                "cp_end_epoch": t["cp_end_epoch"],
                "switch_epoch": t["switch_epoch"],
                "final_val_acc": t["final_val_acc"],
                "best_val_acc": t["best_val_acc"],
                "final_test_acc": t.get("final_test_acc"),
                "wall_s": t["wall_s"],
                "train_s": t["train_s"],
                "eval_s": sum(curves.get("time/eval_s", [])),
                "rotation_s": sum(curves.get("time/rotation_s", [])),
                "handshake_s": sum(curves.get("cp/handshake_s", [])),
                "billed_s": t.get("billed_s"),
                "samples": t["samples"],
                "energy_kwh": t.get("energy_kwh"),
                "co2_kg": t.get("co2_kg"),
                "cost_usd": t.get("cost_usd"),
                "savings_pct_estimated": t.get("savings_pct"),
                "savings_pct_measured": t.get("savings_measured_pct"),
                "mlflow_run_id": t.get("mlflow_run_id"),
                **times,
                **busy,
                "curves": curves,
            }
        )
    return rows


_METRICS = ("wall_s", "train_s", "eval_s", "samples", "energy_kwh", "co2_kg", "cost_usd")


def _reduction(value: float | None, base: float | None) -> float | None:
    if value is None or not base:
        return None
    return round(100.0 * (1.0 - value / base), 2)


def per_arm(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Means and std per arm, reductions against repeats3 and repeats1, paired accuracy deltas."""
    out: dict[str, dict[str, Any]] = {}
    by_arm: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        if r["status"] != "ERROR":
            by_arm.setdefault(r["arm"], []).append(r)
    for arm in [a for a in ARM_ORDER if a in by_arm] + sorted(set(by_arm) - set(ARM_ORDER)):
        rs = by_arm[arm]
        a: dict[str, Any] = {"n": len(rs), "seeds": [r["seed"] for r in rs]}
        for key in ("final_val_acc", "best_val_acc", "final_test_acc", *_METRICS):
            m, s = mean_std([r[key] for r in rs])
            a[key] = {"mean": m, "std": s}
        a["cp_end_epochs"] = [r["cp_end_epoch"] for r in rs]
        a["switch_epochs"] = [r["switch_epoch"] for r in rs]
        out[arm] = a
    for ref in ("repeats3", "repeats1"):
        if ref not in out:
            continue
        ref_seed = {r["seed"]: r for r in by_arm[ref]}
        for arm, a in out.items():
            a[f"reduction_vs_{ref}_pct"] = {
                k: _reduction(a[k]["mean"], out[ref][k]["mean"]) for k in _METRICS
            }
            for key, label in (("final_val_acc", "acc"), ("final_test_acc", "test_acc")):
                deltas = [
                    100.0 * (r[key] - ref_seed[r["seed"]][key])
                    for r in by_arm[arm]
                    if r["seed"] in ref_seed
                    and r[key] is not None
                    and ref_seed[r["seed"]][key] is not None
                ]
                m, s = mean_std(deltas)
                a[f"{label}_delta_vs_{ref}_pts"] = {"mean": m, "std": s, "paired": deltas}
    return out


def plot(arms_stats: dict[str, dict[str, Any]], rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.8), dpi=110)
    colors = plt.get_cmap("tab10")
    for i, (arm, a) in enumerate(arms_stats.items()):
        if a["final_test_acc"]["mean"] is None or a["wall_s"]["mean"] is None:
            continue  # an interrupted arm has no final accuracy
        c = colors(i)
        done = [r for r in rows if r["arm"] == arm and r["final_test_acc"] is not None]
        acc = [100 * r["final_test_acc"] for r in done]
        for ax, key, scale in ((axes[0], "wall_s", 1.0), (axes[1], "samples", 1e-6)):
            xs = [r[key] * scale for r in done]
            ax.scatter(xs, acc, color=c, alpha=0.35, s=14)
            ax.errorbar(
                a[key]["mean"] * scale,
                100 * a["final_test_acc"]["mean"],
                xerr=(a[key]["std"] or 0) * scale,
                yerr=100 * (a["final_test_acc"]["std"] or 0),
                fmt="o",
                color=c,
                capsize=4,
                ms=7,
                label=f"{arm} (n={a['n']})",
            )
    axes[0].set_xlabel("wall time per trial (s), Ray trial incl. start-up")
    axes[1].set_xlabel("training samples processed (millions)")
    for ax in axes:
        ax.set_ylabel("final test accuracy (%)")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8, loc="lower right")
    fig.suptitle(
        "Fashion-MNIST, small CNN, paper recipe at CPU scale: accuracy vs cost (mean ± std)"
    )
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _print_table(arms_stats: dict[str, dict[str, Any]]) -> None:
    head = f"{'arm':<12} {'test acc %':>13} {'wall s':>12} {'train s':>9} {'samples':>10} {'kWh':>9} {'USD':>8} {'-wall% r3':>9} {'-wall% r1':>9} {'dAcc r3':>8}"
    print(head)
    for arm, a in arms_stats.items():
        acc, wall = a["final_test_acc"], a["wall_s"]
        if acc["mean"] is None or wall["mean"] is None:
            print(f"{arm:<12} (no finished trial)")
            continue
        r3 = a.get("reduction_vs_repeats3_pct", {})
        r1 = a.get("reduction_vs_repeats1_pct", {})
        d3 = a.get("test_acc_delta_vs_repeats3_pts", {}).get("mean")
        print(
            f"{arm:<12} {100 * acc['mean']:6.2f}±{100 * (acc['std'] or 0):4.2f} "
            f"{wall['mean']:7.1f}±{wall['std'] or 0:4.1f} {a['train_s']['mean']:9.1f} "
            f"{a['samples']['mean']:10.0f} {a['energy_kwh']['mean'] or 0:9.5f} "
            f"{a['cost_usd']['mean'] or 0:8.5f} {r3.get('wall_s') or 0:9.1f} "
            f"{r1.get('wall_s') or 0:9.1f} {d3 if d3 is not None else float('nan'):8.2f}"
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="short: 16 epochs, 3k images, 1 seed")
    ap.add_argument(
        "--long",
        action="store_true",
        help="the paper's budget: E = 100 on 2.5k images with the InfoBatch arms "
        "(with --quick: 12 epochs on 400 images, width 4, about a minute)",
    )
    ap.add_argument(
        "--estimate",
        action="store_true",
        help="with --long: time one epoch and one evaluation, estimate the full run, exit",
    )
    ap.add_argument("--seeds", type=int, help="number of seeds (default 3, quick 1)")
    ap.add_argument(
        "--first-seed",
        type=int,
        default=0,
        help="seeds run from here (more seeds of an arm another run has: --first-seed 3)",
    )
    ap.add_argument(
        "--arms",
        help="comma-separated arms to run (default: all of the mode's arms); repeats3 is the "
        "baseline arm, fixed<pct> a fixed switch after pct%% of the budget, e.g. fixed5",
    )
    ap.add_argument("--tag", help="suffix of the output files, e.g. headline -> *_headline.json")
    ap.add_argument("--out", default=str(RESULTS), help="results directory")
    ap.add_argument("--ratio", type=float, default=RELATIVE_RATIO, help="relative: ratio")
    ap.add_argument("--patience", type=int, default=RELATIVE_PATIENCE, help="relative: patience")
    args = ap.parse_args()
    setup_logging()
    n_seeds = args.seeds or (1 if args.quick else 3)
    seeds = list(range(args.first_seed, args.first_seed + n_seeds))
    out = Path(args.out).resolve()
    stem = _stem(args.quick, args.long) + (f"_{args.tag}" if args.tag else "")
    only = [a.strip() for a in args.arms.split(",") if a.strip()] if args.arms else None
    if args.estimate:
        est = {"command": command_line(), "date": now_iso(), "machine": machine_info()}
        est.update(estimate_long(len(seeds)))
        write_json(Path(args.out).resolve() / "paper_repro_long_estimate.json", est)
        log.info("long run estimate: %s", {k: v for k, v in est.items() if k != "machine"})
        return
    work = out / "tmp" / stem
    if work.exists():  # a fresh sweep every time: run_sweep refuses an existing experiment
        shutil.rmtree(work)
    work.mkdir(parents=True)
    uri = f"sqlite:///{work / 'mlflow.db'}"
    spec = build_spec(
        quick=args.quick,
        seeds=seeds,
        ratio=args.ratio,
        patience=args.patience,
        tracking_uri=uri,
        long=args.long,
        only=only,
        stem=stem,
    )
    machine = machine_info()
    machine["RAY_worker_niceness"] = ray_worker_priority()
    log.info(
        "%s: %d arms x %d seeds = %d trials, 2 at a time; MLflow %s",
        spec.name,
        len(spec.arms) + int(spec.baseline_arm),
        len(seeds),
        (len(spec.arms) + int(spec.baseline_arm)) * len(seeds),
        uri,
    )
    from service.sweeps.run import run_sweep

    started = now_iso()
    t0 = time.perf_counter()
    with LoadSampler() as load:
        summary = run_sweep(spec, output_dir=work / "sweep").to_json()
    sweep_wall = time.perf_counter() - t0
    rows = trial_rows(summary, uri, load)
    stats = per_arm(rows)
    result = {
        "command": command_line(),
        "date": started,
        "finished": now_iso(),
        "machine": machine,
        "loadavg_at_end": list(os.getloadavg()),
        "note": "wall_s is Tune's measured time per trial (start-up included); load1_mean / "
        "load1_max: the 1-minute load average sampled every 5 s while the trial ran (the "
        "sweep's own two trials make about 2 on this machine); samples are exact; accuracy "
        "is final_test_acc (the test split, measured once after the last epoch, never "
        "decided on); final_val_acc is the validation split the rules and schedulers read",
        "load_samples": load.samples,
        "sweep_wall_s": round(sweep_wall, 1),
        "spec": spec.model_dump(mode="json"),
        "arms": list(stats),
        "seeds": seeds,
        "relative": {"ratio": args.ratio, "patience": args.patience},
        "per_arm": stats,
        "trials": rows,
        "mlflow": summary.get("mlflow"),
    }
    write_json(out / f"{stem}.json", result)
    plot(stats, rows, out / f"{stem}.png")
    _print_table(stats)
    log.info("sweep took %.0fs; wrote %s.json and %s.png", sweep_wall, out / stem, out / stem)
    if not any(r["status"] == "TERMINATED" for r in rows):
        raise SystemExit("no trial finished: see the trials' errors in the JSON and MLflow")


if __name__ == "__main__":
    main()
