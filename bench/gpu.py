"""GPU scale in one run: what one GPU trains per second and how many trials it holds.

1. throughput: `TrainingRun` in this process on the GPU, per model (small CNN w32,
   ResNet-20) and batch size (128, 512), eager and `train.compile`: the first epoch
   (warm-up: cuDNN autotuning, compilation) apart from the steady samples/s, and
   the rotation monitor's share of an epoch.
2. arms: repeats 3 throughout, the paper rule (3 -> 1) and repeats 1 throughout,
   3 seeds each, all 9 trials at once on one GPU (`gpus_per_worker: 0.1111`):
   wall time and accuracy per arm, every switch at end + 1.
3. sweep throughput: trials per hour of the arms sweep packed (9 per GPU) against
   one trial per GPU (`gpus_per_worker: 1`, one seed per arm: the same trial mix).

    .venv/bin/python bench/gpu.py            # one GPU, < 8 min -> bench/results/gpu.json
    .venv/bin/python bench/gpu.py --quick    # CPU smoke test, < 60 s -> gpu_quick.json

Without CUDA (`--quick` on a CPU machine) the local Ray cluster declares one
logical GPU: the packing is real, the training runs on the CPU, and the JSON says
`"logical_gpu": true` so its numbers are never read as GPU numbers. No network.
"""

from __future__ import annotations

import argparse
import logging
import shutil
import statistics
import time
from pathlib import Path
from typing import Any

from _common import (
    RESULTS,
    base_train,
    command_line,
    machine_info,
    now_iso,
    setup_logging,
    start_local_ray,
    write_json,
)

log = logging.getLogger("bench.gpu")

_ARMS = {
    "repeats3": {"criterion.name": "never"},
    "paper": {},
    "repeats1": {"recipe.critical.repeats": 1, "criterion.name": "never"},
}


def _train(quick: bool, data: str) -> dict[str, Any]:
    """The scaled paper recipe of bench/_common.py on the GPU (bf16), small CNN w32."""
    t = base_train(quick=quick)
    t |= {"device": "auto", "num_threads": 1, "model": {"name": "small_cnn", "width": 32}}
    t["data"] = t["data"] | {"name": data}
    if quick:  # digits: 1,797 8x8 images, a few seconds per trial on a CPU
        t |= {"epochs": 6, "batch_size": 64, "eval_every": 2}
        t["data"] = {"name": "digits"}
        t["model"] = {"name": "small_cnn", "width": 8}
    return t


def _dataset_name(quick: bool) -> str:
    """fashion-mnist when its files are on this machine, else digits (recorded)."""
    if quick:
        return "digits"
    from trainables.data.datasets import load_dataset

    try:
        load_dataset("fashion-mnist", None, train_subset=100, val_subset=100)
        return "fashion-mnist"
    except Exception as exc:  # no dataset package on the GPU machine: say so, go on
        log.warning("fashion-mnist unavailable (%s); using digits", exc)
        return "digits"


# -- 1. throughput ---------------------------------------------------------------------------


def bench_throughput(quick: bool, data: str, cuda: bool) -> dict[str, Any]:
    from trainables.core.config import TrainConfig
    from trainables.run.engine import TrainingRun

    base = _train(quick, data) | {"eval_every": 1}
    models = {"small_cnn_w32": {"name": "small_cnn", "width": 32}, "resnet20": {"name": "resnet20"}}
    batches, compiles, epochs = [128, 512], [False, True], 3
    if quick:
        models, batches, compiles, epochs = {"small_cnn_w8": base["model"]}, [64], [False], 2
    out: dict[str, Any] = {}
    for mname, model in models.items():
        for bs in batches:
            for comp in compiles:
                if comp and bs != max(batches):
                    continue  # compile once per model, at the larger batch: bounded run time
                cfg = TrainConfig.model_validate(
                    base | {"model": model, "batch_size": bs, "epochs": epochs, "compile": comp}
                )
                t0 = time.perf_counter()
                run = TrainingRun(cfg)
                setup_s = time.perf_counter() - t0
                ms = [run.run_epoch() for _ in range(epochs)]
                steady = ms[1:]
                train_s = sum(m["time/train_s"] for m in steady)
                key = f"{mname}_batch{bs}" + ("_compiled" if comp else "")
                out[key] = {
                    "model": mname,
                    "batch_size": bs,
                    "compile": comp,
                    "device": str(run.device),
                    "setup_s": setup_s,
                    "first_epoch_s": ms[0]["time/epoch_s"],
                    "later_epoch_s_mean": statistics.mean(m["time/epoch_s"] for m in steady),
                    "samples_per_epoch": ms[0]["samples"],
                    "train_samples_per_s": sum(m["samples"] for m in steady) / train_s,
                    "eval_s_mean": statistics.mean(m["time/eval_s"] for m in steady),
                    "rotation_pct_of_epoch": 100
                    * sum(m["time/rotation_s"] for m in steady)
                    / sum(m["time/epoch_s"] for m in steady),
                }
                log.info("throughput %s: %s", key, out[key])
                del run
                if cuda:
                    import torch

                    torch.cuda.empty_cache()
    return out


# -- 2. + 3. the arms, packed and one per GPU -------------------------------------------------


class _Recorder:
    """Tune callback keeping every trial's results (times, rotation, accuracy)."""

    def __new__(cls) -> Any:
        from ray.tune import Callback

        class Recorder(Callback):
            def __init__(self) -> None:
                self.rows: dict[str, list[dict[str, Any]]] = {}

            def on_trial_result(
                self, iteration: int, trials: Any, trial: Any, result: dict, **info: Any
            ) -> None:
                keep = ("epoch", "samples", "time/train_s", "time/rotation_s", "time/epoch_s")
                self.rows.setdefault(trial.trial_id, []).append({k: result.get(k) for k in keep})

        return Recorder()


def _sweep(quick: bool, data: str, seeds: int, share: float, work: Path) -> dict[str, Any]:
    from service.spec import SweepSpec
    from service.sweeps.run import run_sweep

    spec = SweepSpec.model_validate(
        {
            "name": "gpu-arms",
            "train": _train(quick, data),
            "search_space": {"seed": {"grid": list(range(seeds))}},
            "arms": _ARMS,
            "scaling": {"use_gpu": True, "gpus_per_worker": share, "executor": "inline"},
            "tracking": {"enabled": False},
            "accounting": {"measure_energy": False},
        }
    )
    shutil.rmtree(work, ignore_errors=True)
    rec = _Recorder()
    t0 = time.perf_counter()
    summary = run_sweep(spec, output_dir=work, callbacks=[rec]).to_json()
    wall = time.perf_counter() - t0
    trials = summary["trials"]
    rows = [r for rs in rec.rows.values() for r in rs]
    arms: dict[str, Any] = {}
    for arm in _ARMS:
        mine = [t for t in trials if t["arm"] == arm]
        accs = [t["final_val_acc"] for t in mine if t["final_val_acc"] is not None]
        walls = [t["wall_s"] for t in mine if t["wall_s"] is not None]
        arms[arm] = {
            "trials": len(mine),
            "val_acc_mean": statistics.mean(accs) if accs else None,
            "val_acc_std": statistics.stdev(accs) if len(accs) > 1 else None,
            "wall_s_mean": statistics.mean(walls) if walls else None,
            "samples_mean": statistics.mean(t["samples"] for t in mine) if mine else None,
            "cp_end_epochs": [t["cp_end_epoch"] for t in mine],
            "switch_epochs": [t["switch_epoch"] for t in mine],
        }
    train_s = sum(r["time/train_s"] or 0 for r in rows)
    return {
        "gpus_per_worker": share,
        "trials": len(trials),
        "statuses": sorted({t["status"] for t in trials}),
        "wall_s": wall,
        "trials_per_hour": 3600 * len(trials) / wall,
        "switch_at_end_plus_1": all(
            t["switch_epoch"] == t["cp_end_epoch"] + 1
            for t in trials
            if t["cp_end_epoch"] is not None
        ),
        "train_samples_per_s_per_trial": sum(r["samples"] or 0 for r in rows) / max(train_s, 1e-9),
        "rotation_pct_of_epoch": 100
        * sum(r["time/rotation_s"] or 0 for r in rows)
        / max(sum(r["time/epoch_s"] or 0 for r in rows), 1e-9),
        "arms": arms,
        "per_trial": trials,
    }


# -- report ----------------------------------------------------------------------------------


def markdown(res: dict[str, Any]) -> str:
    """The BENCHMARKS.md tables of one result file."""
    kind = "a logical GPU, training on the CPU" if res["logical_gpu"] else "CUDA"
    lines = [
        f"Device: {res['device_name']} ({kind}), data {res['data']}, measured {res['date']}.",
        "",
        "| case | first epoch s | later epoch s | train samples/s | eval s | rotation % of epoch |",
        "|---|---|---|---|---|---|",
    ]
    for k, v in res["throughput"].items():
        lines.append(
            f"| {k} | {v['first_epoch_s']:.2f} | {v['later_epoch_s_mean']:.2f} | "
            f"{v['train_samples_per_s']:,.0f} | {v['eval_s_mean']:.3f} | "
            f"{v['rotation_pct_of_epoch']:.3f} |"
        )
    packed, single = res["packed"], res["one_per_gpu"]
    lines += [
        "",
        f"| arm ({packed['trials']} trials, {packed['gpus_per_worker']} GPU each, all at once) "
        "| val acc (mean ± sd) | wall s per trial | samples | end epochs |",
        "|---|---|---|---|---|",
    ]
    for arm, a in packed["arms"].items():
        sd = f" ± {a['val_acc_std']:.3f}" if a["val_acc_std"] is not None else ""
        acc = f"{a['val_acc_mean']:.3f}{sd}" if a["val_acc_mean"] is not None else "-"
        lines.append(
            f"| {arm} | {acc} | {a['wall_s_mean']:.1f} | {a['samples_mean']:,.0f} | "
            f"{a['cp_end_epochs']} |"
        )
    lines += [
        "",
        "| sweep | trials | GPU per trial | wall s | trials per hour | rotation % of epoch |",
        "|---|---|---|---|---|---|",
    ]
    for name, s in (("packed", packed), ("one trial per GPU", single)):
        lines.append(
            f"| {name} | {s['trials']} | {s['gpus_per_worker']} | {s['wall_s']:.1f} | "
            f"{s['trials_per_hour']:.0f} | {s['rotation_pct_of_epoch']:.3f} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="CPU smoke test (< 60 s)")
    ap.add_argument("--out", default=str(RESULTS), help="results directory")
    args = ap.parse_args()
    setup_logging()
    import torch

    cuda = torch.cuda.is_available()
    data = _dataset_name(args.quick)
    out = Path(args.out)
    name = "gpu_quick" if args.quick else "gpu"
    work = out / "tmp" / name
    res: dict[str, Any] = {
        "command": command_line(),
        "date": now_iso(),
        "machine": machine_info(),
        "device_name": torch.cuda.get_device_name(0) if cuda else "cpu",
        "data": data,
    }
    t0 = time.perf_counter()
    res["throughput"] = bench_throughput(args.quick, data, cuda)
    res["logical_gpu"] = start_local_ray(cuda)
    seeds = 1 if args.quick else 3
    n = seeds * len(_ARMS)
    res["packed"] = _sweep(args.quick, data, seeds, round(1 / n, 4), work / "packed")
    res["one_per_gpu"] = _sweep(args.quick, data, 1, 1.0, work / "one")
    res["packed_vs_one_per_gpu_throughput"] = (
        res["packed"]["trials_per_hour"] / res["one_per_gpu"]["trials_per_hour"]
    )
    res["bench_s"] = time.perf_counter() - t0
    write_json(out / f"{name}.json", res)
    (out / f"{name}.md").write_text(markdown(res))
    log.info("wrote %s (%.0f s)", out / f"{name}.json", res["bench_s"])


if __name__ == "__main__":
    main()
