"""Final accuracy against the switch epoch, and where each criterion's detected end lands.

Runs the scaled paper setup of bench/_common.py through the product
(`run_sweep`, local Ray, MLflow sqlite under bench/results/tmp) with criterion
`fixed` at ~12 switch points across the budget (the period ends after epoch k;
repeats 3 up to k, repeats 1 afterwards), on the same seeds as paper_repro so
that its repeats1 (k = 0) and repeats3 (k = E) trials complete the curve. The
ends of the `paper`, `relative` and `fixed12.5` criteria come from two places:
the trials of bench/results/paper_repro.json (where each rule actually switched)
and `trainables.method.criteria.end_epoch` applied to that run's repeats3 rotation
curves (where each rule would fire on the full-recipe curve).

`--long` runs the long budget of `paper_repro.py --long` (E = 100, 2.5k images) at the
switch epochs given with `--switches` (a few on either side of the rules' ends: each
trial costs about as much as a paper-rule trial) and merges paper_repro_long.json.

    .venv/bin/python bench/oracle.py [--quick] [--seeds 1]
    .venv/bin/python bench/oracle.py --long --seeds 3 --switches 6,20
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import time
from pathlib import Path
from typing import Any

from _common import (
    RESULTS,
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

log = logging.getLogger("bench.oracle")

SWITCHES = {False: [1, 2, 3, 4, 5, 6, 8, 10, 13, 16, 20, 25], True: [1, 2, 3, 4, 6, 8, 11, 14]}


RULE_ARMS = (
    "paper",
    "relative",
    "fixed12.5",
    "paper+prune",
    "paper+infobatch",
    "relative+infobatch",
)


def build_spec(
    *, quick: bool, seeds: list[int], switches: list[int], tracking_uri: str, long: bool = False
) -> Any:
    from service.spec import SweepSpec

    train = long_train(quick=quick) if long else base_train(quick=quick)
    epochs = train["epochs"]
    # fixed ends the period after ceil(fraction * E) epochs: (k - 0.5) / E gives exactly k.
    arms = {
        f"switch@{k}": {"criterion.name": "fixed", "criterion.fraction": (k - 0.5) / epochs}
        for k in switches
    }
    return SweepSpec.model_validate(
        {
            "name": _stem(quick, long).replace("_", "-"),
            "description": "accuracy against a fixed switch epoch (repeats 3 -> 1)",
            "train": train,
            "search_space": {"seed": {"grid": seeds}},
            "arms": arms,
            "max_concurrent_trials": 2,
            "scaling": {"num_workers": 1, "cpus_per_worker": 1},
            "tracking": {"enabled": True, "uri": tracking_uri},
        }
    )


def _repro(path: Path, train: dict[str, Any]) -> dict[str, Any] | None:
    """paper_repro results if they were produced with the same training setup."""
    if not path.is_file():
        return None
    data = json.loads(path.read_text())
    from trainables.core.config import TrainConfig

    # Compare resolved configs: fields added later with their defaults change nothing.
    if TrainConfig.model_validate(data["spec"]["train"]).model_dump(mode="json") != train:
        log.warning("%s used a different training setup; not merging it", path)
        return None
    return data


def criterion_ends(repro: dict[str, Any]) -> dict[str, Any]:
    """Where each rule ended the period in paper_repro, and where it fires on repeats3 curves."""
    from trainables.method.criteria import end_epoch

    budget = repro["spec"]["train"]["epochs"]
    rel = repro["relative"]
    applied: dict[str, list[int | None]] = {}
    for t in repro["trials"]:
        if t["arm"] in RULE_ARMS:
            applied.setdefault(t["arm"], []).append(t["cp_end_epoch"])
    on_curves: dict[str, dict[str, int | None]] = {"paper": {}, "relative": {}, "fixed12.5": {}}
    for t in repro["trials"]:
        if t["arm"] != "repeats3":
            continue
        curve = t["curves"]["rotation/mean"]
        seed = str(t["seed"])
        on_curves["paper"][seed] = end_epoch("paper", curve, budget)
        on_curves["relative"][seed] = end_epoch(
            "relative", curve, budget, ratio=rel["ratio"], patience=rel["patience"]
        )
        on_curves["fixed12.5"][seed] = end_epoch("fixed", curve, budget, fraction=0.125)
    return {"applied_in_paper_repro": applied, "on_repeats3_curves": on_curves}


def points(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Mean ± std of final accuracy and mean samples per switch epoch."""
    by_k: dict[int, list[dict[str, Any]]] = {}
    for r in rows:
        by_k.setdefault(r["switch_after"], []).append(r)
    out = []
    for k in sorted(by_k):
        m, s = mean_std([r["final_val_acc"] for r in by_k[k]])
        w, _ = mean_std([r["wall_s"] for r in by_k[k]])
        n, _ = mean_std([r["samples"] for r in by_k[k]])
        src = sorted({r["source"] for r in by_k[k]})
        out.append(
            {
                "switch_after": k,
                "n": len(by_k[k]),
                "acc_mean": m,
                "acc_std": s,
                "wall_s": w,
                "samples": n,
                "source": src,
            }
        )
    return out


def plot(pts: list[dict[str, Any]], ends: dict[str, Any] | None, epochs: int, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 5), dpi=110)
    ks = [p["switch_after"] for p in pts]
    ax.errorbar(
        ks,
        [100 * p["acc_mean"] for p in pts],
        yerr=[100 * (p["acc_std"] or 0) for p in pts],
        fmt="o-",
        color="black",
        capsize=3,
        label="fixed switch after epoch k (k=0: repeats1, k=E: repeats3)",
    )
    ax2 = ax.twinx()
    ax2.plot(ks, [p["samples"] / 1e6 for p in pts], "s:", color="tab:gray", alpha=0.6)
    ax2.set_ylabel("training samples processed (millions, dotted)", color="tab:gray")
    if ends:
        colors = {"paper": "tab:red", "relative": "tab:blue", "fixed12.5": "tab:green"}
        for name, c in colors.items():
            for i, e in enumerate(
                [v for v in ends["applied_in_paper_repro"].get(name, []) if v is not None]
            ):
                ax.axvline(e, color=c, ls="--", alpha=0.6, label=f"{name} end" if i == 0 else None)
            curve_ends = [v for v in ends["on_repeats3_curves"].get(name, {}).values() if v]
            ax.scatter(
                curve_ends,
                [ax.get_ylim()[0] + 0.2] * len(curve_ends),
                marker="^",
                color=c,
                s=40,
                zorder=5,
            )
    ax.set_xlabel(f"switch epoch k (period ends after epoch k of E={epochs})")
    ax.set_ylabel("final test accuracy (%)")
    ax.set_title(
        "Accuracy vs switch epoch (lines: ends applied in paper_repro; "
        "triangles: rules on repeats3 curves)",
        fontsize=9,
    )
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="quick setup, 8 switch points, 1 seed")
    ap.add_argument("--seeds", type=int, default=1, help="number of seeds (0, 1, ...)")
    ap.add_argument("--long", action="store_true", help="the long budget of paper_repro --long")
    ap.add_argument("--switches", help="comma-separated switch epochs (default: the 30-epoch set)")
    ap.add_argument("--out", default=str(RESULTS), help="results directory")
    ap.add_argument(
        "--merge-only",
        action="store_true",
        help="no training: re-merge paper_repro into the existing result and re-plot",
    )
    args = ap.parse_args()
    setup_logging()
    out = Path(args.out).resolve()
    stem = _stem(args.quick, args.long)
    if args.merge_only:
        merge_only(out, stem, args.quick, args.long)
        return
    if args.long and not args.switches:
        ap.error("--long needs --switches (a few epochs on either side of the rules' ends)")
    seeds = list(range(args.seeds))
    work = out / "tmp" / stem
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    uri = f"sqlite:///{work / 'mlflow.db'}"
    switches = (
        sorted({int(k) for k in args.switches.split(",")})
        if args.switches
        else SWITCHES[args.quick]
    )
    spec = build_spec(
        quick=args.quick, seeds=seeds, switches=switches, tracking_uri=uri, long=args.long
    )
    machine = machine_info()
    machine["RAY_worker_niceness"] = ray_worker_priority()
    from service.sweeps.run import run_sweep

    started = now_iso()
    t0 = time.perf_counter()
    summary = run_sweep(spec, output_dir=work / "sweep").to_json()
    wall = time.perf_counter() - t0
    rows = []
    for t in summary["trials"]:
        curves = mlflow_curves(uri, t["mlflow_run_id"], ["rotation/mean", "val/acc"])
        rows.append(
            {
                "switch_after": int(str(t["arm"]).split("@")[1]),
                "seed": t["params"].get("seed"),
                "source": "oracle",
                **{
                    k: t[k]
                    for k in ("cp_end_epoch", "switch_epoch", "final_val_acc", "wall_s", "samples")
                },
                "curves": curves,
            }
        )
    record = {
        "command": command_line(),
        "date": started,
        "finished": now_iso(),
        "machine": machine,
        "sweep_wall_s": round(wall, 1),
        "spec": spec.model_dump(mode="json"),
        "seeds": seeds,
        "switches": switches,
    }
    merge_and_write(out, stem, record, rows, quick=args.quick, long=args.long)
    log.info("oracle took %.0fs; wrote %s.json and %s.png", wall, out / stem, out / stem)


def _stem(quick: bool, long: bool) -> str:
    return "oracle" + ("_long" if long else "") + ("_quick" if quick else "")


def merge_and_write(
    out: Path,
    stem: str,
    record: dict[str, Any],
    rows: list[dict[str, Any]],
    *,
    quick: bool,
    long: bool = False,
) -> None:
    """Add paper_repro's k = 0 and k = E trials and the rules' ends; write the JSON and plot."""
    from trainables.core.config import TrainConfig

    train = TrainConfig.model_validate(record["spec"]["train"])
    epochs, seeds = train.epochs, record["seeds"]
    repro_name = "paper_repro" + ("_long" if long else "") + ("_quick" if quick else "")
    repro = _repro(out / f"{repro_name}.json", train.model_dump(mode="json"))
    rows = [r for r in rows if r["source"] == "oracle"]
    ends = None
    if repro is not None:
        for t in repro["trials"]:
            if t["arm"] in ("repeats1", "repeats3") and t["seed"] in seeds:
                k = 0 if t["arm"] == "repeats1" else epochs
                keys = ("cp_end_epoch", "switch_epoch", "final_val_acc", "wall_s", "samples")
                rows.append(
                    {
                        "switch_after": k,
                        "seed": t["seed"],
                        "source": f"paper_repro:{t['arm']}",
                        **{key: t[key] for key in keys},
                    }
                )
        ends = criterion_ends(repro)
    pts = points(rows)
    write_json(
        out / f"{stem}.json",
        {
            **record,
            "points": pts,
            "criterion_ends": ends,
            "paper_repro_merged": repro is not None,
            "trials": rows,
        },
    )
    plot(pts, ends, epochs, out / f"{stem}.png")
    for p in pts:
        print(
            f"switch after {p['switch_after']:>3}: acc {100 * p['acc_mean']:.2f} ± "
            f"{100 * (p['acc_std'] or 0):.2f} (n={p['n']}), samples {p['samples']:.0f}"
        )
    if ends:
        print("criterion ends:", json.dumps(ends))


def merge_only(out: Path, stem: str, quick: bool, long: bool = False) -> None:
    """Redo the merge, the points and the plot from an existing result (no training)."""
    data = json.loads((out / f"{stem}.json").read_text())
    record = {k: v for k, v in data.items() if k not in ("points", "criterion_ends", "trials")}
    record["merged_by"] = command_line()
    merge_and_write(out, stem, record, data["trials"], quick=quick, long=long)


if __name__ == "__main__":
    main()
