"""Pure parts of service.sweep: retries and resources per executor."""

from __future__ import annotations

import pytest

from service.spec import SweepSpec
from service.sweep import _trial_resources, _trial_retries


def _spec(scaling: dict, failures: dict | None = None) -> SweepSpec:
    return SweepSpec.model_validate({"name": "x", "scaling": scaling, "failures": failures or {}})


@pytest.mark.parametrize(
    ("scaling", "failures", "retries"),
    [
        ({"executor": "train"}, {"worker_failures": 2, "trial_failures": 0}, 0),
        ({"executor": "inline"}, {"worker_failures": 2, "trial_failures": 0}, 2),
        ({"executor": "inline"}, {"worker_failures": 2, "trial_failures": 1}, 3),
        ({"executor": "inline"}, {"worker_failures": -1, "trial_failures": 1}, -1),
        ({"num_workers": 2}, {"worker_failures": -1, "trial_failures": 1}, 1),
    ],
)
def test_inline_trials_count_worker_failures_as_trial_retries(scaling, failures, retries):
    assert _trial_retries(_spec(scaling, failures)) == retries


def test_inline_trials_hold_their_workers_resources():
    spec = _spec({"executor": "inline", "cpus_per_worker": 2})
    assert _trial_resources(spec) == {"CPU": 2, "GPU": 0}
    gpu = _spec({"executor": "inline", "use_gpu": True})
    assert _trial_resources(gpu) == {"CPU": 1, "GPU": 1}
