"""Fractional GPUs: the spec's validation, the trial's resources and the packing plan."""

from __future__ import annotations

import pytest

from service.spec import ScalingSpec, SweepSpec, load_spec
from service.sweeps.run import _trial_resources, concurrency_plan
from trainables.core.config import ConfigError


def _scaling(**kw) -> ScalingSpec:
    return ScalingSpec.model_validate(kw)


@pytest.mark.parametrize(
    ("scaling", "needles"),
    [
        ({"gpus_per_worker": 0.25}, ["gpus_per_worker=0.25", "use_gpu is false"]),
        ({"use_gpu": True, "gpus_per_worker": 0}, ["gpus_per_worker", "greater than 0"]),
        ({"use_gpu": True, "gpus_per_worker": 1.5}, ["gpus_per_worker=1.5", "whole", "1 or 2"]),
        ({"use_gpu": True, "gpus_per_worker": 0.3}, ["gpus_per_worker=0.3", "1/n", "0.1"]),
        ({"use_gpu": True, "gpus_per_worker": 0.001}, ["gpus_per_worker=0.001", "n <= 64"]),
        (
            {"use_gpu": True, "gpus_per_worker": 0.5, "num_workers": 2},
            ["gpus_per_worker=0.5", "num_workers=2", "NCCL"],
        ),
    ],
)
def test_bad_gpu_shares_name_the_field_the_value_and_the_fix(tmp_path, scaling, needles):
    path = tmp_path / "s.yaml"
    path.write_text(f"name: x\nscaling: {scaling}\n")
    with pytest.raises(ConfigError) as err:
        load_spec(path)
    text = str(err.value)
    assert "scaling" in text
    for n in needles:
        assert n in text, text


@pytest.mark.parametrize(
    ("scaling", "gpus"),
    [
        ({}, 0.0),
        ({"use_gpu": True}, 1.0),
        ({"use_gpu": True, "gpus_per_worker": 0.25}, 0.25),
        ({"use_gpu": True, "gpus_per_worker": 0.333}, 0.333),
        ({"use_gpu": True, "gpus_per_worker": 2}, 2.0),
    ],
)
def test_a_worker_holds_its_share_of_a_gpu(scaling, gpus):
    s = _scaling(**scaling)
    assert s.gpus == gpus
    spec = SweepSpec.model_validate({"name": "x", "scaling": {**scaling, "executor": "inline"}})
    assert _trial_resources(spec) == {"CPU": 1, "GPU": gpus}


@pytest.mark.parametrize(
    ("scaling", "cpus", "gpus", "trials"),
    [
        ({}, 16, 0, 16),  # CPU-only: one trial per CPU
        ({"cpus_per_worker": 3}, 16, 0, 5),
        ({"use_gpu": True}, 16, 2, 2),  # one trial per GPU
        ({"use_gpu": True, "gpus_per_worker": 0.25}, 16, 1, 4),  # four share one GPU
        ({"use_gpu": True, "gpus_per_worker": 0.25}, 16, 2, 8),
        ({"use_gpu": True, "gpus_per_worker": 0.333}, 16, 1, 3),  # not 0.999 / 0.333 = 3.0
        ({"use_gpu": True, "gpus_per_worker": 0.125}, 4, 1, 4),  # the CPUs bound it
        ({"use_gpu": True, "gpus_per_worker": 0.5}, 16, 0.5, 0),  # no whole GPU anywhere
        ({"use_gpu": True, "num_workers": 2}, 16, 5, 2),  # DDP: whole GPUs per rank
        ({"use_gpu": True, "num_workers": 2, "gpus_per_worker": 2}, 16, 8, 2),
    ],
)
def test_the_packing_plan_counts_fractions_per_gpu(scaling, cpus, gpus, trials):
    s = _scaling(**scaling)
    if trials == 0:
        with pytest.raises(ConfigError, match=r"scaling\.gpus_per_worker: a trial needs 0\.5 GPU"):
            concurrency_plan(s, cpus, gpus)
    else:
        assert concurrency_plan(s, cpus, gpus) == trials


def test_a_trial_larger_than_the_cluster_names_the_fields_to_lower():
    with pytest.raises(ConfigError, match=r"needs 4 GPUs \(2 workers x 2\), the cluster has 2"):
        concurrency_plan(_scaling(use_gpu=True, num_workers=2, gpus_per_worker=2), 16, 2)
    with pytest.raises(ConfigError, match=r"needs 4 CPUs .* lower scaling\.num_workers"):
        concurrency_plan(_scaling(num_workers=2, cpus_per_worker=2), 2, 0)
