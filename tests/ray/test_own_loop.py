"""A user's own loop (`train.loop`) in a real sweep, and a user's own Tuner with the scheduler.

Both on a real local Ray cluster with MLflow in a sqlite file; the switch must land one
epoch after the end the paper rule gives on the trial's own reported rotation curve.
"""

from __future__ import annotations

import importlib.util
import json
import re
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.reference import REPO, reference_paper_end
from tests.stores import migrated_sqlite

pytestmark = pytest.mark.integration


def _history(out: Path, name: str, trial_id: str) -> list[dict[str, Any]]:
    [trial_dir] = [p for p in (out / "ray" / name).iterdir() if p.is_dir() and trial_id in p.name]
    return [json.loads(line) for line in (trial_dir / "result.json").read_text().splitlines()]


def _check_switch(curve: list[float], repeats: list[int], end: int, switch: int, budget: int):
    assert end == reference_paper_end(curve, budget)
    assert switch == end + 1
    assert repeats == [3 if e <= end else 1 for e in range(1, budget + 1)]


@pytest.mark.parametrize("executor", ["inline", "train"])
def test_a_users_loop_runs_in_a_sweep_and_switches_after_its_end(
    ray_local, tmp_path, monkeypatch, executor
):
    from mlflow.tracking import MlflowClient

    from service.spec import SweepSpec
    from service.sweeps.run import run_sweep

    monkeypatch.setenv("CPSWEEP_IMPORT_PATH", str(REPO / "examples"))  # the spec's directory
    workers = 2 if executor == "train" else 1
    spec = SweepSpec.model_validate(
        {
            "name": "own",
            "train": {
                "loop": "regression_loop:fit",
                "epochs": 10,
                "batch_size": 32,
                "params": {"hidden": 16},
                "optim": {"name": "sgd", "lr": 0.01},
            },
            "scaling": {"num_workers": workers, "executor": executor},
            "tracking": {"uri": migrated_sqlite(tmp_path / "mlflow.db")},
            "accounting": {"measure_energy": False},
        }
    )
    summary = run_sweep(spec, output_dir=tmp_path / "out").to_json()
    [t] = summary["trials"]
    assert t["status"] == "TERMINATED", t
    hist = [r for r in _history(tmp_path / "out", "own", t["trial_id"]) if "epoch" in r]
    assert [r["epoch"] for r in hist] == list(range(1, 11))
    assert all(r["device/workers"] == workers for r in hist)
    curve = [r["rotation/mean"] for r in hist]
    repeats = [r["recipe/repeats"] for r in hist]
    _check_switch(curve, repeats, t["cp_end_epoch"], t["switch_epoch"], 10)
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    [run] = client.search_runs(
        [client.get_experiment_by_name("own").experiment_id],
        f"tags.mlflow.parentRunId = '{summary['mlflow']['parent_run_id']}'",
    )
    steps = [m.step for m in client.get_metric_history(run.info.run_id, "val/loss")]
    assert steps == list(range(1, 11))  # the loop's own metric, no accuracy anywhere
    # With the train executor both ranks ran fit(): its DDP all-reduce would hang otherwise.
    assert run.data.tags["cp.switch_epoch"] == str(t["switch_epoch"])


def _docs_block(heading: str) -> str:
    text = (REPO / "docs" / "own-code.md").read_text()
    section = text.split(heading, 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_a_users_own_tuner_with_the_scheduler_from_the_docs(ray_local, tmp_path):
    import ray.cloudpickle
    from ray import tune

    from service.sweeps.scheduler import CriticalPeriodScheduler

    code = _docs_block("## Your own Tune trainable")
    assert len([ln for ln in code.splitlines() if ln.strip()]) < 30
    path = tmp_path / "docs_tuner.py"
    path.write_text(code)
    spec = importlib.util.spec_from_file_location("docs_tuner", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules["docs_tuner"] = module
    spec.loader.exec_module(module)
    ray.cloudpickle.register_pickle_by_value(module)  # the trial processes cannot import it
    try:
        grid = module.main(str(tmp_path / "ray"))
        # The scheduler's rule reaches the trial through the channel: a scheduler-wide
        # fixed rule overrides the trainable's own "paper" (switch after 3 of 10 epochs).
        override = tune.Tuner(
            module.trainable,
            param_space={"lr": 0.01},
            tune_config=tune.TuneConfig(
                scheduler=CriticalPeriodScheduler(
                    criterion={"name": "fixed", "fraction": 0.3}, budget=module.EPOCHS
                )
            ),
            run_config=tune.RunConfig(storage_path=str(tmp_path / "ray2")),
        ).fit()
    finally:
        ray.cloudpickle.unregister_pickle_by_value(module)
        del sys.modules["docs_tuner"]
    assert len(grid) == 2 and not grid.errors
    for result in grid:
        df = result.metrics_dataframe.sort_values("epoch")
        m = result.metrics
        _check_switch(
            df["rotation/mean"].tolist(),
            df["repeats"].tolist(),
            m["cp/end_epoch"],
            m["cp/switch_epoch"],
            module.EPOCHS,
        )
    [forced] = override
    df = forced.metrics_dataframe.sort_values("epoch")
    assert (forced.metrics["cp/end_epoch"], forced.metrics["cp/switch_epoch"]) == (3, 4)
    assert df["repeats"].tolist() == [3, 3, 3] + [1] * (module.EPOCHS - 3)
