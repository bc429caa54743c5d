"""Sweeps on a real local Ray cluster: switching, distributed ranks, failures, MLflow.

The test session's shared Ray instance serves the module (`ray_local`). Every sweep
writes into tmp_path with MLflow in a sqlite file there (a copy of a migrated store).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.stores import migrated_sqlite

pytestmark = pytest.mark.integration


def _spec(tmp: Path, **changes: Any):
    from service.spec import SweepSpec

    raw: dict[str, Any] = {
        "name": "it",
        "train": {
            "epochs": 7,
            "batch_size": 64,
            "data": {"name": "digits"},
            "model": {"name": "small_cnn", "width": 8},
            "optim": {"name": "sgd", "lr": 0.05},
        },
        "tracking": {"uri": migrated_sqlite(tmp / "mlflow.db")},
        "accounting": {"measure_energy": False},
    }
    raw.update(changes)
    return SweepSpec.model_validate(raw)


def _history(out: Path, trial_id: str) -> list[dict[str, Any]]:
    """Every result Tune recorded for the trial, in order."""
    [trial_dir] = [p for p in (out / "ray" / "it").iterdir() if p.is_dir() and trial_id in p.name]
    return [json.loads(line) for line in (trial_dir / "result.json").read_text().splitlines()]


def _mlflow_steps(tmp: Path, run_id: str, key: str) -> list[int]:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{tmp / 'mlflow.db'}")
    return [m.step for m in client.get_metric_history(run_id, key)]


def test_every_trial_switches_one_epoch_after_its_end(ray_local, tmp_path):
    from mlflow.tracking import MlflowClient

    from service.sweeps.run import run_sweep
    from trainables.method.criteria import end_epoch

    spec = _spec(
        tmp_path,
        search_space={"optim.name": {"grid": ["sgd", "adam"]}},
        train={**_spec(tmp_path).train.model_dump(), "optim": {"name": "sgd", "lr": 0.01}},
    )
    summary = run_sweep(spec, output_dir=tmp_path / "out").to_json()
    assert len(summary["trials"]) == 2
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    parent = summary["mlflow"]["parent_run_id"]
    for t in summary["trials"]:
        assert t["status"] == "TERMINATED", t
        assert t["cp_end_epoch"] is not None
        assert t["switch_epoch"] == t["cp_end_epoch"] + 1
        hist = _history(tmp_path / "out", t["trial_id"])
        assert [h["epoch"] for h in hist] == list(range(1, 8))
        # The recipe changed exactly at the switch epoch, never before, never later.
        repeats = [h["recipe/repeats"] for h in hist]
        s = t["switch_epoch"]
        assert repeats == [3] * (s - 1) + [1] * (7 - s + 1)
        # The scheduler's rule on the reported curve agrees with the trial's decision.
        curve = [h["rotation/mean"] for h in hist]
        assert end_epoch("paper", curve, 7) == t["cp_end_epoch"]
        # MLflow: child run under the parent, one step per epoch, tags and plots.
        run = client.get_run(t["mlflow_run_id"])
        assert run.data.tags["mlflow.parentRunId"] == parent
        assert run.data.tags["cp.end_epoch"] == str(t["cp_end_epoch"])
        assert run.data.tags["cp.switch_epoch"] == str(s)
        assert _mlflow_steps(tmp_path, t["mlflow_run_id"], "rotation/mean") == list(range(1, 8))
        assert _mlflow_steps(tmp_path, t["mlflow_run_id"], "val/acc") == list(range(1, 8))
        arts = {a.path for a in client.list_artifacts(t["mlflow_run_id"])}
        assert arts == {"rotation.png", "accuracy_vs_cost.png"}
        assert t["cost_usd"] > 0 and "savings_pct" in t
        # Time per trial splits into epochs (train + eval + rotation) and the machinery.
        assert t["epoch_s"] > 0 and t["train_s"] + t["eval_s"] <= t["epoch_s"] + 1e-6
        assert t["outside_epochs_s"] == pytest.approx(t["wall_s"] - t["epoch_s"], abs=1e-3)


@pytest.mark.parametrize("executor", ["train", "inline"])
def test_killed_worker_resumes_from_its_checkpoint(ray_local, tmp_path, executor):
    """Two identical trials; rank 0 of one is SIGKILLed after epoch 3. Both must end alike.

    train: Ray Train restarts the worker group; inline: the trial's process is the
    worker, and Tune restarts the trial from its last checkpoint.
    """
    from service.sweeps.run import run_sweep

    marker = tmp_path / "killed"
    spec = _spec(
        tmp_path,
        num_samples=2,
        max_concurrent_trials=2,
        scaling={"num_workers": 1, "executor": executor},
    )
    summary = run_sweep(
        spec,
        output_dir=tmp_path / "out",
        trial_options={"fault_kill_epoch": 3, "fault_marker": str(marker)},
    ).to_json()
    assert marker.exists(), "the fault was never injected"
    a, b = summary["trials"]
    for t in (a, b):
        assert t["status"] == "TERMINATED"
        hist = _history(tmp_path / "out", t["trial_id"])
        # Resumed at epoch 4 from the checkpoint: no epoch repeated, none missing.
        assert [h["epoch"] for h in hist] == list(range(1, 8))
        steps = _mlflow_steps(tmp_path, t["mlflow_run_id"], "rotation/mean")
        assert steps == list(range(1, 8))
    ha, hb = (_history(tmp_path / "out", t["trial_id"]) for t in (a, b))
    # Same seed, same data order, rotation continued from the same w0 snapshot.
    for x, y in zip(ha, hb):
        assert x["rotation/mean"] == pytest.approx(y["rotation/mean"], abs=1e-4)
    assert a["switch_epoch"] == b["switch_epoch"] is not None


def test_a_reused_trial_process_gives_the_same_run_as_a_fresh_one(ray_local, tmp_path):
    """Inline trials run one after another in one reused process: no state carries over."""
    from service.sweeps.run import run_sweep

    spec = _spec(tmp_path, num_samples=2, max_concurrent_trials=1)
    summary = run_sweep(spec, output_dir=tmp_path / "out").to_json()
    a, b = summary["trials"]
    pids = set()
    for t in (a, b):
        assert t["status"] == "TERMINATED"
        pids |= {h["pid"] for h in _history(tmp_path / "out", t["trial_id"])}
    assert len(pids) == 1, "the second trial did not reuse the first one's process"
    ha, hb = (_history(tmp_path / "out", t["trial_id"]) for t in (a, b))
    assert [h["rotation/mean"] for h in ha] == [h["rotation/mean"] for h in hb]
    assert [h.get("val/acc") for h in ha] == [h.get("val/acc") for h in hb]
    assert a["switch_epoch"] == b["switch_epoch"] is not None


@pytest.mark.parametrize("executor", ["inline", "train"])
def test_nan_trial_fails_with_reason_while_others_finish(ray_local, tmp_path, executor):
    from service.sweeps.run import run_sweep

    train = {
        "epochs": 3,
        "batch_size": 64,
        "data": {"name": "mnist1d"},
        "model": {"name": "cnn1d", "width": 8},
        "optim": {"name": "sgd", "lr": 0.05, "weight_decay": 0},
    }
    spec = _spec(
        tmp_path,
        train=train,
        arms={"ok": {}, "diverge": {"optim.lr": 1.0e6}},
        scaling={"executor": executor},
    )
    summary = run_sweep(spec, output_dir=tmp_path / "out").to_json()
    by_arm = {t["arm"]: t for t in summary["trials"]}
    assert by_arm["ok"]["status"] == "TERMINATED" and by_arm["ok"]["epochs"] == 3
    bad = by_arm["diverge"]
    assert bad["status"] == "ERROR"
    assert "train/loss became nan" in bad["error"] and "optim.lr" in bad["error"]


def test_two_workers_switch_at_the_same_epoch(ray_local, tmp_path):
    from service.sweeps.run import run_sweep

    spec = _spec(tmp_path, scaling={"num_workers": 2, "cpus_per_worker": 1})
    summary = run_sweep(spec, output_dir=tmp_path / "out").to_json()
    [t] = summary["trials"]
    assert t["status"] == "TERMINATED" and t["switch_epoch"] == t["cp_end_epoch"] + 1
    [trial_dir] = [p for p in (tmp_path / "out" / "ray" / "it").iterdir() if p.is_dir()]
    ranks = [
        [json.loads(x) for x in (trial_dir / "ranks" / f"rank{r}.jsonl").read_text().splitlines()]
        for r in (0, 1)
    ]
    reported = _history(tmp_path / "out", t["trial_id"])
    assert len(ranks[0]) == len(ranks[1]) == 7
    for r0, r1, rep in zip(*ranks, reported):
        assert r0["phase"] == r1["phase"] == rep["phase"]
        assert r0["recipe/repeats"] == r1["recipe/repeats"]
        # DDP keeps replicas identical: both ranks measure the rotation that was reported.
        assert r0["rotation/mean"] == pytest.approx(rep["rotation/mean"], abs=1e-6)
        assert r1["rotation/mean"] == pytest.approx(rep["rotation/mean"], abs=1e-5)
    assert {row["phase"] for row in ranks[1]} == {"critical", "after"}


@pytest.mark.parametrize(
    ("mode", "executor"), [("sync", "inline"), ("sync", "train"), ("async", "inline")]
)
def test_sync_mode_has_zero_lag_and_async_records_its_lag(ray_local, tmp_path, mode, executor):
    from service.sweeps.run import run_sweep

    spec = _spec(tmp_path, scheduler={"mode": mode}, scaling={"executor": executor})
    summary = run_sweep(spec, output_dir=tmp_path / "out").to_json()
    [t] = summary["trials"]
    assert t["status"] == "TERMINATED" and t["cp_end_epoch"] is not None
    hist = _history(tmp_path / "out", t["trial_id"])
    lags = [h["cp/lag_epochs"] for h in hist if "cp/lag_epochs" in h]
    assert lags, "no lag recorded"
    assert all(lag == t["switch_epoch"] - t["cp_end_epoch"] - 1 for lag in lags)
    if mode == "sync":
        assert t["switch_epoch"] == t["cp_end_epoch"] + 1
        # Until the switch, every epoch boundary waited for the scheduler's verdict.
        assert all(h["cp/handshake_s"] > 0 for h in hist[: t["switch_epoch"]])
    else:
        # Async: rank 0 reads the directive at epoch e's boundary before reporting e, so
        # the scheduler's verdict that the period ended at e is first seen at e + 1's
        # boundary (trainables/method/period.py step, decide.ruling): the switch lands at
        # e + 2, one epoch late. Not later: Tune resumes the trial only after the
        # scheduler has posted the verdict, a whole epoch before that read.
        assert t["switch_epoch"] == t["cp_end_epoch"] + 2
        assert lags == [1] * len(lags)
