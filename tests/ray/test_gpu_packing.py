"""Fractional GPUs on a real local Ray cluster that declares one logical GPU and no CUDA.

Ray hands every trial a share of GPU 0; the trials must run at once (a rendezvous
proves it: each waits until all have started) and train on the CPU, with a
warning, because this machine has no CUDA device.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def ray_one_logical_gpu():
    import os

    from tests.local_ray import private_ray
    from trainables.run.worker import TRIAL_RESOURCE

    os.environ.setdefault("RAY_worker_niceness", "0")
    with private_ray(
        num_cpus=4,  # logical: four 1-CPU trials may be placed on this 2-core machine
        num_gpus=1,
        resources={TRIAL_RESOURCE: 16},
        include_dashboard=False,
        log_to_driver=False,
    ):
        yield


def _spec(tmp: Path, trials: int, **scaling: Any):
    from service.spec import SweepSpec

    return SweepSpec.model_validate(
        {
            "name": "packed",
            "train": {
                "epochs": 7,
                "batch_size": 64,
                "data": {"name": "digits"},
                "model": {"name": "small_cnn", "width": 8},
                "optim": {"name": "sgd", "lr": 0.05},
            },
            "search_space": {"seed": {"grid": list(range(trials))}},
            "scaling": {"use_gpu": True, **scaling},
            "tracking": {"enabled": False},
            "accounting": {"measure_energy": False},
        }
    )


def _results(tmp: Path, trial_id: str) -> list[dict[str, Any]]:
    [path] = (tmp / "out" / "ray" / "packed").glob(f"*{trial_id}*/result.json")
    return [json.loads(x) for x in path.read_text().splitlines()]


def _met(meet: Path) -> list[dict[str, Any]]:
    return [json.loads(p.read_text()) for p in sorted(meet.iterdir())]


def test_four_quarter_gpu_trials_share_one_gpu_and_fall_back_to_the_cpu(
    ray_one_logical_gpu, tmp_path, caplog
):
    from service.sweeps.run import run_sweep

    meet = tmp_path / "meet"
    spec = _spec(tmp_path, 4, gpus_per_worker=0.25, executor="inline")
    with caplog.at_level(logging.INFO, logger="service.sweeps.run"):
        summary = run_sweep(
            spec,
            output_dir=tmp_path / "out",
            trial_options={"rendezvous": {"dir": str(meet), "trials": 4, "timeout_s": 90}},
        ).to_json()
    assert "up to 4 trials at once (4 CPUs, 1 GPUs; 0.25 GPU per worker)" in caplog.text
    assert [m["gpu_ids"] for m in _met(meet)] == [["0"]] * 4  # all on the one GPU, at once
    assert len(summary["trials"]) == 4
    for t in summary["trials"]:
        assert t["status"] == "TERMINATED", t
        assert t["epochs"] == 7
        if t["cp_end_epoch"] is not None:
            assert t["switch_epoch"] == t["cp_end_epoch"] + 1
        # no CUDA here: the CPU trained
        assert {r["device/name"] for r in _results(tmp_path, t["trial_id"])} == {"cpu"}


def test_train_executor_workers_take_gpu_shares_and_use_gloo_without_cuda(
    ray_one_logical_gpu, tmp_path
):
    from service.sweeps.run import run_sweep

    meet = tmp_path / "meet"
    spec = _spec(tmp_path, 2, gpus_per_worker=0.5, executor="train")
    spec = spec.model_copy(update={"train": spec.train.model_copy(update={"epochs": 3})})
    summary = run_sweep(
        spec,
        output_dir=tmp_path / "out",
        trial_options={"rendezvous": {"dir": str(meet), "trials": 2, "timeout_s": 90}},
    ).to_json()
    assert [m["gpu_ids"] for m in _met(meet)] == [["0"]] * 2  # both ranks 0 on GPU 0, at once
    for t in summary["trials"]:
        assert t["status"] == "TERMINATED", t  # NCCL without CUDA would have failed it
        assert t["epochs"] == 3
        assert {r["device/name"] for r in _results(tmp_path, t["trial_id"])} == {"cpu"}
