"""What the method and the product cost on top of training, each as a ratio, in one run.

1. rotation: `time/rotation_s` / `time/epoch_s` of in-process `TrainingRun` epochs
   (Fashion-MNIST scaled setup, and ResNet-20 on 32x32 inputs), plus a
   micro-benchmark of `LayerRotation.compute()` (median of many calls).
2. scheduler: `CriticalPeriodScheduler.on_trial_result` results/second for 1,000
   simulated trials with realistic rotation curves (use_control=False).
3. ray: the quickstart spec through `run_sweep` (local Ray, as shipped: MLflow and
   CodeCarbon on; and with both off; and with `executor: train` on warm rank groups
   and on a TorchTrainer per trial) against `train_local` on the same trial
   configs with the same parallelism, with a breakdown (Ray start-up, trial
   start-up, per-epoch report latency) and train / inline wall-time ratios.
4. augment: batched `augment_batch` against a per-sample torchvision.transforms.v2
   pipeline (RandomAffine(15, translate 0.1) + RandomHorizontalFlip) in a Python loop.
5. handshake: `cp/handshake_s` per epoch in push mode, and sync against push on
   the same tiny sweep (per-epoch cost seen by Tune).

    .venv/bin/python bench/overheads.py [--only rotation,scheduler,...] [--quick]
"""

from __future__ import annotations

import argparse
import copy
import itertools
import json
import logging
import math
import random
import shutil
import statistics
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

from _common import (
    REPO,
    RESULTS,
    base_train,
    command_line,
    machine_info,
    now_iso,
    ray_worker_priority,
    setup_logging,
    write_json,
)

log = logging.getLogger("bench.overheads")

PARTS = ("rotation", "scheduler", "augment", "ray", "handshake")


# -- 1. rotation monitoring -----------------------------------------------------------------


def _synthetic_dataset(n: int, n_val: int, channels: int, size: int) -> Any:
    import torch

    from trainables.data.datasets import Dataset

    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (n + n_val, channels, size, size), dtype=torch.uint8, generator=g)
    y = torch.randint(0, 10, (n + n_val,), generator=g)
    return Dataset(
        "synthetic32", x[:n], y[:n], x[n:], y[n:], 10, (0.5,) * channels, (0.25,) * channels
    )


def _epochs(run: Any, count: int) -> list[dict[str, float]]:
    return [
        {k: m[k] for k in ("time/epoch_s", "time/train_s", "time/rotation_s", "time/eval_s")}
        | {"samples": m["samples"], "layers": sum(k.startswith("rotation/") for k in m) - 1}
        for m in (run.run_epoch() for _ in range(count))
    ]


def _compute_median_s(run: Any, calls: int) -> float:
    times = []
    for _ in range(calls):
        t0 = time.perf_counter()
        run.rotation.compute()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def bench_rotation(quick: bool) -> dict[str, Any]:
    import torch

    from trainables.core.config import TrainConfig
    from trainables.run.engine import TrainingRun

    torch.set_num_threads(1)
    out: dict[str, Any] = {}
    fm = base_train(quick=quick)
    fm["eval_every"] = 1
    fm_cases = {
        "fashion_mnist_small_cnn_repeats3": fm,
        "fashion_mnist_small_cnn_repeats1": copy.deepcopy(fm)
        | {"recipe": fm["recipe"] | {"critical": {"repeats": 1}}},
    }
    rn = {
        "epochs": 10,
        "batch_size": 128,
        "model": {"name": "resnet20"},
        "recipe": {"critical": {"repeats": 1}},
        "device": "cpu",
        "num_threads": 1,
    }
    for name, train in fm_cases.items():
        run = TrainingRun(TrainConfig.model_validate(train))
        out[name] = _summarise_rotation(_epochs(run, 2), _compute_median_s(run, 200))
        log.info("rotation %s: %s", name, out[name])
    n = 512 if quick else 2048
    run = TrainingRun(TrainConfig.model_validate(rn), dataset=_synthetic_dataset(n, 512, 3, 32))
    name = f"resnet20_32x32_{n}_samples_repeats1"
    out[name] = _summarise_rotation(_epochs(run, 2), _compute_median_s(run, 200))
    out[name]["note"] = (
        "synthetic uint8 32x32x3 images (CIFAR-10 is not on this machine); the rotation cost "
        "depends on the model, the epoch cost on the epoch size: a full CIFAR-10 epoch is "
        f"{50000 // n}x longer"
    )
    log.info("rotation %s: %s", name, out[name])
    return out


def _summarise_rotation(epochs: list[dict[str, float]], compute_s: float) -> dict[str, Any]:
    epoch_s = statistics.mean(e["time/epoch_s"] for e in epochs)
    in_loop = statistics.mean(e["time/rotation_s"] for e in epochs)
    return {
        "layers": epochs[0]["layers"],
        "samples_per_epoch": epochs[0]["samples"],
        "epoch_s": epoch_s,
        "rotation_s_in_epoch": in_loop,
        "rotation_compute_median_s": compute_s,
        "ratio_in_epoch": in_loop / epoch_s,
        "ratio_median_compute": compute_s / epoch_s,
        "epochs": epochs,
    }


# -- 2. scheduler throughput ----------------------------------------------------------------


class _FakeTrial:
    def __init__(self, trial_id: str, config: dict[str, Any]) -> None:
        self.trial_id, self.config = trial_id, config
        self.experiment_dir_name = "bench"


def _curve(rng: random.Random, epochs: int) -> list[float]:
    """Mean layer rotation shaped like the measured Fashion-MNIST curves: a fast rise over the
    first epochs, a slow weight-decay drift, flattening after each x0.1 learning-rate step."""
    a, tau, drift = rng.uniform(0.25, 0.5), rng.uniform(1.5, 5.0), rng.uniform(0.05, 0.25)
    out, r, lr = [], 0.0, 1.0
    for e in range(1, epochs + 1):
        if e > 0.5 * epochs:
            lr = 0.1 if e <= 0.75 * epochs else 0.01
        target = a * (1 - math.exp(-e / tau)) + drift * e / epochs
        r = r + lr * (target - r) + rng.gauss(0, 0.002)
        out.append(max(r, 0.0))
    return out


def bench_scheduler(quick: bool) -> dict[str, Any]:
    from service.sweeps.scheduler import CriticalPeriodScheduler

    n_trials = 1000
    epochs = 30
    rng = random.Random(0)
    criteria = [
        {"name": "paper"},
        {"name": "relative", "ratio": 0.25, "patience": 2},
        {"name": "fixed", "fraction": 0.125},
        {"name": "never"},
    ]
    trials = [
        _FakeTrial(
            f"t{i:05d}",
            {"train": {"epochs": epochs, "criterion": criteria[i % len(criteria)]}},
        )
        for i in range(n_trials)
    ]
    curves = {t.trial_id: _curve(rng, epochs) for t in trials}
    out: dict[str, Any] = {"trials": n_trials, "epochs": epochs, "criteria": criteria}
    variants: dict[str, tuple[int, dict[str, Any]]] = {
        "trial_scope_no_state_file": (n_trials, {}),
        "cohort_scope_no_state_file": (n_trials, {"scope": "cohort", "cohort_keys": ["epochs"]}),
        # run_sweep always passes state_path (cp_decisions.json), so this is the product's path;
        # 100 trials too, to show how the cost of persisting grows with the sweep's size.
        "trial_scope_with_state_file": (n_trials, {"state_path": "STATE"}),
        "trial_scope_with_state_file_100_trials": (100, {"state_path": "STATE"}),
    }
    tmp = RESULTS / "tmp" / "overheads"
    tmp.mkdir(parents=True, exist_ok=True)
    for name, (n, kwargs) in variants.items():
        if kwargs.get("state_path") == "STATE":
            kwargs = kwargs | {"state_path": tmp / "cp_decisions.json"}
            (tmp / "cp_decisions.json").unlink(missing_ok=True)
        sched = CriticalPeriodScheduler(use_control=False, **kwargs)
        some = trials[:n]
        t0 = time.perf_counter()
        for t in some:
            sched.on_trial_add(None, t)
        add_s = time.perf_counter() - t0
        results = 0
        t0 = time.perf_counter()
        for e in range(1, epochs + 1):  # round-robin, as concurrent trials report
            for t in some:
                sched.on_trial_result(
                    None, t, {"epoch": e, "rotation/mean": curves[t.trial_id][e - 1]}
                )
                results += 1
        dt = time.perf_counter() - t0
        ended = sum(1 for d in sched.decisions().values() if d["end_epoch"] is not None)
        out[name] = {
            "trials": n,
            "results": results,
            "seconds": dt,
            "results_per_s": results / dt,
            "on_trial_add_per_s": n / add_s,
            "trials_with_detected_end": ended,
        }
        log.info("scheduler %s: %.0f results/s (%d ended)", name, results / dt, ended)
    return out


# -- 3. augmentation ------------------------------------------------------------------------


def bench_augment(quick: bool) -> dict[str, Any]:
    import torch
    from torchvision.transforms import v2

    from trainables.core.config import AugmentConfig
    from trainables.method.augment import augment_batch, make_generator

    torch.set_num_threads(1)
    cfg = AugmentConfig(rotation_deg=15, translate=0.1, hflip=True)
    per_sample = v2.Compose(
        [v2.RandomAffine(degrees=15, translate=(0.1, 0.1)), v2.RandomHorizontalFlip()]
    )
    out: dict[str, Any] = {"threads": 1}
    reps = 3 if quick else 10
    for shape_name, chw in (("fashion_mnist_1x28x28", (1, 28, 28)), ("cifar_3x32x32", (3, 32, 32))):
        for bs in (128, 512):
            x = torch.rand(bs, *chw)
            g = make_generator(torch.device("cpu"), 0, 1, 0)
            augment_batch(x, cfg, 1.0, g)  # warm-up
            t0 = time.perf_counter()
            for _ in range(reps):
                augment_batch(x, cfg, 1.0, g)
            batched = (time.perf_counter() - t0) / reps
            torch.stack([per_sample(s) for s in x[:8]])  # warm-up
            t0 = time.perf_counter()
            for _ in range(max(1, reps // 3)):
                torch.stack([per_sample(s) for s in x])
            looped = (time.perf_counter() - t0) / max(1, reps // 3)
            key = f"{shape_name}_batch{bs}"
            out[key] = {
                "batched_s_per_batch": batched,
                "per_sample_s_per_batch": looped,
                "speedup": looped / batched,
                "batched_samples_per_s": bs / batched,
                "per_sample_samples_per_s": bs / looped,
            }
            log.info("augment %s: batched %.4fs, per-sample %.4fs", key, batched, looped)
    return out


# -- 4. Ray Tune + Train against a plain loop -----------------------------------------------

_RAY_VARIANTS = {  # name -> where the trials' loops run
    "plain_loop": "train_local in 2 spawned processes",
    "ray_as_shipped": "inline (auto)",
    "ray_train_pool": "train, warm rank groups (scaling.worker_pool: true)",
    "ray_train_torchtrainer": "train, a TorchTrainer per trial (scaling.worker_pool: false)",
    "ray_no_mlflow_no_energy": "inline (auto), MLflow and CodeCarbon off",
}


class _Recorder:
    """Tune callback keeping every result with its arrival time, per trial."""

    def __new__(cls) -> Any:
        from ray.tune import Callback

        class Recorder(Callback):
            def __init__(self) -> None:
                self.start: dict[str, float] = {}
                self.results: dict[str, list[dict[str, Any]]] = {}

            def on_trial_start(self, iteration: int, trials: Any, trial: Any, **info: Any) -> None:
                self.start[trial.trial_id] = time.time()

            def on_trial_result(
                self, iteration: int, trials: Any, trial: Any, result: dict, **info: Any
            ) -> None:
                keep = (
                    "epoch",
                    "time_this_iter_s",
                    "time_total_s",
                    "time/epoch_s",
                    "cp/handshake_s",
                    "cp/mode",
                )
                row = {k: result.get(k) for k in keep} | {"arrived": time.time()}
                self.results.setdefault(trial.trial_id, []).append(row)

        return Recorder()


def _sweep_breakdown(rec: Any, wall_s: float) -> dict[str, Any]:
    first, later, hand = [], [], []
    for rows in rec.results.values():
        rows = sorted(rows, key=lambda r: r["epoch"])
        first.append(rows[0]["time_total_s"] - rows[0]["time/epoch_s"])
        later += [r["time_this_iter_s"] - r["time/epoch_s"] for r in rows[1:]]
        hand += [r["cp/handshake_s"] for r in rows if r.get("cp/handshake_s") is not None]
    return {
        "wall_s": wall_s,
        "trials": len(rec.results),
        "trial_startup_s_mean": statistics.mean(first) if first else None,
        "per_epoch_report_latency_s_mean": statistics.mean(later) if later else None,
        "per_epoch_report_latency_s_median": statistics.median(later) if later else None,
        "epoch_s_sum": sum(r["time/epoch_s"] for rows in rec.results.values() for r in rows),
        "handshake_s_mean": statistics.mean(hand) if hand else None,
        "handshake_s_max": max(hand) if hand else None,
        "epochs_reported": sum(len(r) for r in rec.results.values()),
    }


def _run_spec(spec: Any, out_dir: Path) -> dict[str, Any]:
    from service.sweeps.run import run_sweep

    if out_dir.exists():
        shutil.rmtree(out_dir)
    rec = _Recorder()
    t0 = time.perf_counter()
    summary = run_sweep(spec, output_dir=out_dir, callbacks=[rec]).to_json()
    res = _sweep_breakdown(rec, time.perf_counter() - t0)
    res["final_val_acc"] = [t["final_val_acc"] for t in summary["trials"]]
    return res


def _local_init() -> None:
    import os

    os.environ["OMP_NUM_THREADS"] = "1"  # what Ray sets for a 1-CPU worker


def _local_one(job: tuple[dict[str, Any], str]) -> dict[str, Any]:
    train, out = job
    from trainables.core.config import TrainConfig
    from trainables.run.local import train_local

    t0 = time.perf_counter()
    s = train_local(TrainConfig.model_validate(train), out)
    hist = [json.loads(x) for x in (Path(out) / "history.jsonl").read_text().splitlines()]
    return {
        "wall_s": time.perf_counter() - t0,
        "epoch_s_sum": sum(m["time/epoch_s"] for m in hist),
        "epochs": len(hist),
        "final_val_acc": s["final_val_acc"],
    }


def _plain_loop(configs: list[dict[str, Any]], work: Path) -> dict[str, Any]:
    """train_local on every config, 2 fresh (spawned) processes at a time, 1 thread each."""
    import multiprocessing

    jobs = [(c, str(work / "local" / f"trial{i}")) for i, c in enumerate(configs)]
    ctx = multiprocessing.get_context("spawn")
    t0 = time.perf_counter()
    with ProcessPoolExecutor(max_workers=2, mp_context=ctx, initializer=_local_init) as pool:
        local = list(pool.map(_local_one, jobs))
    return {
        "wall_s": time.perf_counter() - t0,
        "parallelism": 2,
        "trials": len(local),
        "epoch_s_sum": sum(r["epoch_s_sum"] for r in local),
        "epochs_reported": sum(r["epochs"] for r in local),
        "final_val_acc": [r["final_val_acc"] for r in local],
    }


def bench_ray(quick: bool, repeats: int = 1) -> dict[str, Any]:
    from service.spec import load_spec
    from service.sweeps.run import init_ray
    from trainables.core.trial import train_dict_for

    work = RESULTS / "tmp" / "overheads"
    spec = load_spec(REPO / "search_spaces" / "quickstart.yaml")
    if quick:
        spec = spec.model_copy(update={"train": spec.train.model_copy(update={"epochs": 6})})
    out: dict[str, Any] = {
        "spec": "search_spaces/quickstart.yaml",
        "epochs": spec.train.epochs,
        "repeats": repeats,
    }
    # Plain loop: the same trial configs, 1 torch thread each (a Ray worker gets
    # cpus_per_worker=1 thread), 2 processes at a time (what run_sweep picks on 2 CPUs).
    configs = []
    paths = list(spec.search_space)  # every grid point, as Tune's grid search makes them
    for values in itertools.product(*(spec.search_space[p].grid or [] for p in paths)):
        cfg = {"train": spec.train.model_dump(), "params": dict(zip(paths, values))}
        train = train_dict_for(cfg)
        train["num_threads"] = 1
        configs.append(train)
    t0 = time.perf_counter()
    init_ray(None)
    out["ray_start_s"] = time.perf_counter() - t0

    def shipped(i: int) -> Any:
        # A fresh sqlite file per repeat: MLflow caches its store per URI in this process,
        # so deleting and re-creating the same file under it fails with "readonly database".
        from service.tracking.callback import prepare_store

        db = work / f"quickstart-mlflow-{i}.db"
        db.unlink(missing_ok=True)
        uri = f"sqlite:///{db}"
        # Creating the database is once per machine (like starting Ray): timed apart.
        t_db = time.perf_counter()
        prepare_store(uri)
        out.setdefault("mlflow_db_create_s_all", []).append(time.perf_counter() - t_db)
        return spec.model_copy(update={"tracking": spec.tracking.model_copy(update={"uri": uri})})

    bare = spec.model_copy(
        update={
            "tracking": spec.tracking.model_copy(update={"enabled": False}),
            "accounting": spec.accounting.model_copy(update={"measure_energy": False}),
        }
    )

    def on_ray_train(i: int, pool: bool) -> Any:  # as shipped, but DDP ranks (one per trial)
        s = shipped((100 if pool else 200) + i)
        scaling = s.scaling.model_copy(update={"executor": "train", "worker_pool": pool})
        return s.model_copy(update={"scaling": scaling})

    runs: dict[str, list[dict[str, Any]]] = {k: [] for k in _RAY_VARIANTS}
    for i in range(repeats):  # interleaved, so a burst of outside load hits every variant
        runs["plain_loop"].append(_plain_loop(configs, work))
        log.info("plain loop #%d: %s", i, runs["plain_loop"][-1])
        runs["ray_as_shipped"].append(_run_spec(shipped(i), work / "quickstart-shipped"))
        log.info("ray as shipped #%d: %s", i, runs["ray_as_shipped"][-1])
        runs["ray_train_pool"].append(_run_spec(on_ray_train(i, True), work / "quickstart-pool"))
        log.info("ray train executor, worker pool #%d: %s", i, runs["ray_train_pool"][-1])
        runs["ray_train_torchtrainer"].append(
            _run_spec(on_ray_train(i, False), work / "quickstart-torchtrainer")
        )
        log.info("ray train executor, TorchTrainer #%d: %s", i, runs["ray_train_torchtrainer"][-1])
        runs["ray_no_mlflow_no_energy"].append(_run_spec(bare, work / "quickstart-bare"))
        log.info("ray bare #%d: %s", i, runs["ray_no_mlflow_no_energy"][-1])
    out["runs"] = runs
    for k, rs in runs.items():  # the run with the median wall time represents the variant
        out[k] = sorted(rs, key=lambda r: r["wall_s"])[len(rs) // 2]
        for key in ("wall_s", "epoch_s_sum"):
            out[k][f"{key}_all"] = [r[key] for r in rs]
        out[k]["epoch_s_mean"] = out[k]["epoch_s_sum"] / out[k]["epochs_reported"]
        # time not spent inside epochs, per trial slot (2 trials run at a time)
        out[k]["outside_epochs_s"] = out[k]["wall_s"] - out[k]["epoch_s_sum"] / 2
    plain = out["plain_loop"]["wall_s"]
    for k in list(_RAY_VARIANTS)[1:]:
        out[k]["executor"] = _RAY_VARIANTS[k]
        out[k]["overhead_vs_plain_pct"] = 100 * (out[k]["wall_s"] / plain - 1)
        out[k]["overhead_incl_ray_start_pct"] = 100 * (
            (out[k]["wall_s"] + out["ray_start_s"]) / plain - 1
        )
        # the same comparison with Ray's own epoch times: what start-up and reporting add
        out[k]["overhead_at_equal_compute_pct"] = (
            100
            * (out[k]["outside_epochs_s"] - out["plain_loop"]["outside_epochs_s"])
            / (out["plain_loop"]["outside_epochs_s"] + out[k]["epoch_s_sum"] / 2)
        )
    # The target: train executor <= 1.5x inline, as shipped, in this one run
    # (per repeat, so that both sides of a ratio saw the same load).
    inline_all = out["ray_as_shipped"]["wall_s_all"]
    for k in ("ray_train_pool", "ray_train_torchtrainer"):
        ratios = [t / i for t, i in zip(out[k]["wall_s_all"], inline_all)]
        out[k]["over_inline_all"] = ratios
        out[k]["over_inline_median"] = statistics.median(ratios)
    return out


# -- 5. switch handshake --------------------------------------------------------------------


def bench_handshake(quick: bool) -> dict[str, Any]:
    from service.spec import SweepSpec
    from service.sweeps.run import init_ray

    init_ray(None)
    work = RESULTS / "tmp" / "overheads"
    epochs = 6 if quick else 10
    base = {
        "name": "handshake",
        "train": {
            "epochs": epochs,
            "batch_size": 64,
            "data": {"name": "digits"},
            "model": {"name": "small_cnn", "width": 8},
            "criterion": {"name": "never"},  # keep asking: a switched trial stops reading
            "num_threads": 1,
        },
        "search_space": {"seed": {"grid": [0, 1]}},
        "max_concurrent_trials": 2,
        "tracking": {"enabled": False},
        "accounting": {"measure_energy": False},
    }
    out: dict[str, Any] = {"epochs": epochs, "trials": 2}
    for executor, sfx in (("inline", ""), ("train", "_train")):
        for mode in ("push", "sync"):
            spec = SweepSpec.model_validate(
                base
                | {
                    "name": f"handshake-{mode}{sfx.replace('_', '-')}",
                    "scheduler": {"mode": mode},
                    "scaling": {"executor": executor},
                }
            )
            out[mode + sfx] = _run_spec(spec, work / f"handshake-{mode}{sfx}")
            out[mode + sfx]["executor"] = executor
            log.info("handshake %s (%s): %s", mode, executor, out[mode + sfx])
        p, s = out["push" + sfx], out["sync" + sfx]
        out["sync_minus_push_per_epoch_s" + sfx] = (
            s["per_epoch_report_latency_s_mean"] - p["per_epoch_report_latency_s_mean"]
        )
    return out


# -- entry point ----------------------------------------------------------------------------


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", default=",".join(PARTS), help=f"comma list of {PARTS}")
    ap.add_argument("--quick", action="store_true", help="smaller sizes (smoke test)")
    ap.add_argument("--out", default=str(RESULTS), help="results directory")
    ap.add_argument(
        "--ray-repeats", type=int, help="interleaved repeats of `ray` (default 3, quick 1)"
    )
    args = ap.parse_args()
    setup_logging()
    parts = [p for p in args.only.split(",") if p]
    unknown = set(parts) - set(PARTS)
    if unknown:
        raise SystemExit(f"--only: unknown part(s) {sorted(unknown)}; choose from {PARTS}")
    out = Path(args.out)
    path = out / ("overheads_quick.json" if args.quick else "overheads.json")
    result: dict[str, Any] = json.loads(path.read_text()) if path.is_file() else {}
    result.update({"command": command_line(), "date": now_iso(), "machine": machine_info()})
    result["machine"]["RAY_worker_niceness"] = ray_worker_priority()
    benches = {
        "rotation": bench_rotation,
        "scheduler": bench_scheduler,
        "augment": bench_augment,
        "ray": bench_ray,
        "handshake": bench_handshake,
    }
    for part in parts:
        t0 = time.perf_counter()
        repeats = args.ray_repeats or (1 if args.quick else 3)
        kwargs = {"repeats": repeats} if part == "ray" else {}
        result[part] = benches[part](args.quick, **kwargs) | {
            "measured_at": now_iso(),
            "command": command_line(),
            "bench_s": round(time.perf_counter() - t0, 1),
        }
        write_json(path, result)  # keep what is done if a later part fails
    result["loadavg_at_end"] = list(__import__("os").getloadavg())
    write_json(path, result)
    log.info("wrote %s", path)


if __name__ == "__main__":
    main()
