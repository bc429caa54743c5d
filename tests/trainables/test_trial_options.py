"""The trial boundary: options built once on the driver, frozen, typed, through Tune and pickle."""

from __future__ import annotations

import pickle
from pathlib import Path

import cloudpickle
import pytest
from pydantic import ValidationError

from service.spec import SweepSpec, build_param_space
from trainables.core.config import TrainConfig
from trainables.core.trial import (
    OPTIONS_KEY,
    LoopOptions,
    Rendezvous,
    TrialOptions,
    options_of,
    train_dict_for,
)

SPEC = SweepSpec.model_validate(
    {
        "name": "opts",
        "train": {"epochs": 2, "data": {"name": "digits"}},
        "arms": {"pruned": {"recipe.after.data_fraction": 0.5}},
        "baseline_arm": True,
        "search_space": {"optim.lr": {"grid": [0.1, 0.2]}},
        "tracking": {"enabled": False},
    }
)


def _opts() -> TrialOptions:
    return TrialOptions(
        storage_path="/runs/x/train_runs",
        control_actor="cpsweep-control-x",
        num_workers=2,
        executor="train",
        import_paths=("/spec/dir",),
        rendezvous=Rendezvous(dir="/tmp/meet", trials=2),
    )


def test_options_are_frozen_and_refuse_unknown_or_bad_fields() -> None:
    opts = _opts()
    with pytest.raises(ValidationError, match="frozen"):
        opts.num_workers = 3  # type: ignore[misc]
    with pytest.raises(ValidationError, match="fault_kill_epok"):
        TrialOptions.model_validate({"storage_path": "x", "fault_kill_epok": 3})
    with pytest.raises(ValidationError, match="executor"):
        TrialOptions.model_validate({"storage_path": "x", "executor": "threads"})


def test_options_survive_pickle_and_cloudpickle() -> None:
    opts = _opts()
    loop = LoopOptions(
        train=TrainConfig.model_validate({"epochs": 2}),
        trial_id="t1",
        control_actor="cpsweep-control-x",
        mode="sync",
        use_gpu=False,
        threads_per_worker=1,
        error_file="/runs/x/err.txt",
        rendezvous=opts.rendezvous,
    )
    for dumps in (pickle.dumps, cloudpickle.dumps):
        assert pickle.loads(dumps(opts)) == opts
        back = pickle.loads(dumps(loop))
        assert back == loop and back.train.epochs == 2


def test_tune_hands_every_trial_the_options_object_unchanged() -> None:
    """Tune resolves the space (grid over arm and lr) and leaves the frozen object whole."""
    from ray.tune.search.variant_generator import generate_variants

    opts = _opts()
    space = build_param_space(SPEC, opts)
    configs = [cfg for _, cfg in generate_variants(space)]
    assert len(configs) == 2 * 2  # arms x lr
    for cfg in configs:
        got = options_of(cfg)
        assert isinstance(got, TrialOptions)
        assert got.model_copy(update={"arms": {}}) == opts.model_copy(update={"arms": {}})
        assert set(got.arms) == {"pruned", "baseline"}
    pruned = [c for c in configs if c["arm"] == "pruned" and c["params"]["optim.lr"] == 0.2]
    train = train_dict_for(pruned[0])
    assert train["recipe"]["after"]["data_fraction"] == 0.5 and train["optim"]["lr"] == 0.2


def test_options_of_reads_an_older_sweeps_plain_mapping_once() -> None:
    legacy = {"storage_path": "/runs/y", "num_workers": 1, "mode": "push", "arms": {}}
    assert options_of({OPTIONS_KEY: legacy}).storage_path == "/runs/y"
    with pytest.raises(KeyError, match="build_param_space"):
        options_of({"train": {}})


def test_driver_builds_the_options_with_testing_hooks_validated(tmp_path: Path) -> None:
    from service.sweeps.run import _trial_opts

    opts = _trial_opts(SPEC, tmp_path, "cpsweep-control-x", {"fault_kill_epoch": 3})
    assert (opts.fault_kill_epoch, opts.storage_path) == (3, str(tmp_path / "train_runs"))
    assert opts.executor == "inline" and opts.num_workers == 1  # auto with one worker
    with pytest.raises(ValidationError, match="rendezvous"):
        _trial_opts(SPEC, tmp_path, "c", {"rendezvous": {"trials": 2}})
