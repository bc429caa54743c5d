"""The train executor's warm rank groups (trainables/run/pool.py) on a real local cluster.

CPU, gloo, two DDP ranks per trial on 2 CPUs: one trial at a time, so every trial
after the first runs on the group the first one started.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.integration

_EPOCHS = 7


def _spec(tmp: Path, **changes: Any):
    from service.spec import SweepSpec

    raw: dict[str, Any] = {
        "name": "it",
        "train": {
            "epochs": _EPOCHS,
            "batch_size": 64,
            "data": {"name": "digits"},
            "model": {"name": "small_cnn", "width": 8},
            "optim": {"name": "sgd", "lr": 0.05},
        },
        "max_concurrent_trials": 1,
        "scaling": {
            "num_workers": 2,
            "cpus_per_worker": 1,
            "executor": "train",
            "worker_pool": True,
        },
        "tracking": {"enabled": False},
        "accounting": {"measure_energy": False},
    }
    raw.update(changes)
    return SweepSpec.model_validate(raw)


def _trial_dir(out: Path, trial_id: str) -> Path:
    [d] = [p for p in (out / "ray" / "it").iterdir() if p.is_dir() and trial_id in p.name]
    return d


def _history(out: Path, trial_id: str) -> list[dict[str, Any]]:
    lines = (_trial_dir(out, trial_id) / "result.json").read_text().splitlines()
    return [json.loads(line) for line in lines]


def _rank_rows(out: Path, trial_id: str, rank: int) -> list[dict[str, Any]]:
    path = _trial_dir(out, trial_id) / "ranks" / f"rank{rank}.jsonl"
    return [json.loads(x) for x in path.read_text().splitlines()]


_SAME = ("rotation/mean", "train/loss", "val/acc", "recipe/repeats")


def test_trials_on_a_reused_group_match_a_fresh_group_and_a_torchtrainer(ray_local, tmp_path):
    from service.sweeps.run import run_sweep
    from trainables.method.criteria import end_epoch

    out = tmp_path / "pool"
    summary = run_sweep(_spec(tmp_path, num_samples=3), output_dir=out).to_json()
    trials = summary["trials"]
    assert len(trials) == 3
    pids = []
    for t in trials:
        assert t["status"] == "TERMINATED", t
        assert t["switch_epoch"] == t["cp_end_epoch"] + 1
        hist = _history(out, t["trial_id"])
        assert [h["epoch"] for h in hist] == list(range(1, _EPOCHS + 1))
        s = t["switch_epoch"]
        assert [h["recipe/repeats"] for h in hist] == [3] * (s - 1) + [1] * (_EPOCHS - s + 1)
        assert end_epoch("paper", [h["rotation/mean"] for h in hist], _EPOCHS) == t["cp_end_epoch"]
        ranks = [_rank_rows(out, t["trial_id"], r) for r in (0, 1)]
        assert [r["phase"] for r in ranks[0]] == [r["phase"] for r in ranks[1]]
        pids.append({r: {row["pid"] for row in ranks[r]} for r in (0, 1)})
    # One group served all three trials: the same two rank processes ...
    assert pids[0] == pids[1] == pids[2] and len(pids[0][0] | pids[0][1]) == 2
    # ... and the trials after the first (reused ranks, cached dataset) trained exactly
    # as the first one did on freshly started ranks.
    first = _history(out, trials[0]["trial_id"])
    for t in trials[1:]:
        for a, b in zip(first, _history(out, t["trial_id"])):
            assert {k: a.get(k) for k in _SAME} == {k: b.get(k) for k in _SAME}

    # The same trial on a TorchTrainer (fresh processes): the same run.
    ref = tmp_path / "torchtrainer"
    scaling = {"num_workers": 2, "cpus_per_worker": 1, "executor": "train", "worker_pool": False}
    [tt] = run_sweep(_spec(tmp_path, scaling=scaling), output_dir=ref).to_json()["trials"]
    assert tt["status"] == "TERMINATED" and tt["switch_epoch"] == trials[0]["switch_epoch"]
    for a, b in zip(first, _history(ref, tt["trial_id"])):
        assert a["rotation/mean"] == pytest.approx(b["rotation/mean"], abs=1e-6)
        assert a["val/acc"] == pytest.approx(b["val/acc"], abs=1e-6)


def test_a_failing_trial_does_not_poison_the_next(ray_local, tmp_path):
    """Rank 1 raises while rank 0 waits in a collective: that trial fails with the
    rank's error; the group is replaced and the next trial trains normally."""
    from service.sweeps.run import run_sweep

    spec = _spec(
        tmp_path,
        arms={"a_fails": {"loop": "tests.ray.pool_loops:fit_rank1_fails"}, "b_ok": {}},
    )
    out = tmp_path / "out"
    summary = run_sweep(spec, output_dir=out).to_json()
    by_arm = {t["arm"]: t for t in summary["trials"]}
    bad, ok = by_arm["a_fails"], by_arm["b_ok"]
    assert bad["status"] == "ERROR" and "rank 1 failed on purpose" in bad["error"]
    assert ok["status"] == "TERMINATED" and ok["epochs"] == _EPOCHS
    assert ok["switch_epoch"] == ok["cp_end_epoch"] + 1
    # One trial at a time, in order: it ran after the failure, on ranks in step.
    assert bad["trial_id"] < ok["trial_id"]
    ranks = [_rank_rows(out, ok["trial_id"], r) for r in (0, 1)]
    assert [r["phase"] for r in ranks[0]] == [r["phase"] for r in ranks[1]]
