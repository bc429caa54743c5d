"""The Lightning example under `tune.Tuner` with `CriticalPeriodScheduler` (a real local Ray).

The callback finds the Tune trial, reports every epoch and takes the scheduler's rule
through the control channel: a scheduler-wide fixed rule (half of 6 epochs) overrides
the callback's own "paper", and the sampler drops to one pass from epoch 4.
"""

from __future__ import annotations

import pytest

from tests.trainables.test_trainer_callbacks import _example

pytestmark = pytest.mark.integration

pytest.importorskip("lightning", reason="pip install -e '.[lightning]' (make venv does)")


def test_lightning_callback_in_a_tuner_is_switched_by_the_scheduler(ray_local, tmp_path):
    import ray.cloudpickle

    from service.sweeps.scheduler import CriticalPeriodScheduler

    ex = _example("lightning_example")
    ray.cloudpickle.register_pickle_by_value(ex)  # the trial processes cannot import it
    try:
        scheduler = CriticalPeriodScheduler(criterion={"name": "fixed", "fraction": 0.5}, budget=6)
        grid = ex.tune_main(6, str(tmp_path / "ray"), scheduler, lrs=(0.05,))
    finally:
        ray.cloudpickle.unregister_pickle_by_value(ex)
    assert not grid.errors
    [result] = grid
    df = result.metrics_dataframe.sort_values("epoch")
    assert df["epoch"].tolist() == [1, 2, 3, 4, 5, 6]
    assert (result.metrics["cp/end_epoch"], result.metrics["cp/switch_epoch"]) == (3, 4)
    assert df["recipe/repeats"].tolist() == [3, 3, 3, 1, 1, 1]
    assert df["train/loss"].notna().all()  # the trainer's own metrics travel with them
