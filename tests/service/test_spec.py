"""SweepSpec validation, param space construction and the shipped search spaces."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from service.spec import SweepSpec, arms_of, build_param_space, load_spec
from trainables.core.config import ConfigError, TrainConfig
from trainables.core.trial import TrialOptions, train_dict_for

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    "path", sorted((ROOT / "search_spaces").glob("*.yaml")), ids=lambda p: p.name
)
def test_shipped_search_spaces_validate(path):
    spec = load_spec(path)
    assert spec.name
    space = build_param_space(spec, TrialOptions(storage_path="runs"))
    assert TrainConfig.model_validate(space["train"])


def test_required_search_spaces_exist():
    names = {p.name for p in (ROOT / "search_spaces").glob("*.yaml")}
    assert {
        "quickstart.yaml",
        "paper_cifar10_resnet.yaml",
        "optimizer_agnostic.yaml",
        "dataset_agnostic.yaml",
        "fashion_mnist.yaml",
    } <= names


def _write(tmp_path, raw) -> Path:
    p = tmp_path / "s.yaml"
    p.write_text(yaml.safe_dump(raw))
    return p


@pytest.mark.parametrize(
    ("raw", "needles"),
    [
        ({"name": "x", "train": {"optim": {"lr": -1}}}, ["train.optim.lr", "greater than 0", "-1"]),
        ({"name": "x", "train": {"epochz": 3}}, ["train.epochz", "unknown field"]),
        (
            {"name": "x", "train": {"optim": {"name": "lbfgs"}}},
            ["train.optim.name", "sgd, adam", "lbfgs", "OPTIMIZERS.register"],
        ),
        (
            {"name": "x", "search_space": {"optim.lrr": {"grid": [0.1]}}},
            ["search_space.optim.lrr", "no field 'lrr'"],
        ),
        (
            {"name": "x", "search_space": {"optim.lr": {"grid": [-2]}}},
            ["search_space.optim.lr", "train.optim.lr"],
        ),
        (
            {"name": "x", "search_space": {"optim.lr": {"grid": [1], "choice": [2]}}},
            ["exactly one"],
        ),
        ({"name": "x", "search_space": {"optim.lr": {"loguniform": [0, 1]}}}, ["> 0"]),
        ({"name": "x", "arms": {"a": {"data.name": "imagenet"}}}, ["arms.a", "data.name"]),
        ({"name": "bad name!"}, ["name"]),
        ({"name": "x", "scheduler": {"scope": "global"}}, ["scheduler.scope", "'trial'"]),
        (  # ASHA decides: it may not read the test split
            {"name": "x", "scheduler": {"inner": {"metric": "test/acc"}}},
            ["scheduler.inner.metric", "test split", "val/acc"],
        ),
        ({"name": "x", "train": {"data": {"val_fraction": 0.9}}}, ["train.data.val_fraction"]),
        (
            {"name": "x", "scaling": {"num_workers": 2, "executor": "inline"}},
            ["scaling", "num_workers=2", "executor 'train'"],
        ),
    ],
)
def test_bad_specs_name_field_value_and_allowed(tmp_path, raw, needles):
    with pytest.raises(ConfigError) as err:
        load_spec(_write(tmp_path, raw))
    for n in needles:
        assert n in str(err.value), str(err.value)


def test_overrides_apply_before_validation(tmp_path):
    spec = load_spec(_write(tmp_path, {"name": "x"}), ["train.epochs=4", "train.optim.lr=0.2"])
    assert spec.train.epochs == 4 and spec.train.optim.lr == 0.2


def test_arms_and_params_resolve_into_the_trial_config():
    spec = SweepSpec.model_validate(
        {
            "name": "x",
            "baseline_arm": True,
            "arms": {"pruned": {"recipe.after.data_fraction": 0.5}},
            "search_space": {"optim.lr": {"grid": [0.1, 0.2]}},
        }
    )
    assert set(arms_of(spec)) == {"pruned", "baseline"}
    space = build_param_space(spec, TrialOptions(storage_path="runs", num_workers=1))
    cfg = {
        "train": space["train"],
        "params": {"optim.lr": 0.2},
        "arm": "pruned",
        "_cpsweep": space["_cpsweep"],
    }
    t = train_dict_for(cfg)
    assert t["recipe"]["after"]["data_fraction"] == 0.5 and t["optim"]["lr"] == 0.2
    base = train_dict_for({**cfg, "arm": "baseline"})
    assert base["criterion"]["name"] == "never" and base["recipe"]["after"]["data_fraction"] == 1.0


def test_sweep_wide_criterion_does_not_override_the_baseline_arm():
    spec = SweepSpec.model_validate(
        {"name": "x", "baseline_arm": True, "criterion": {"name": "relative"}}
    )
    space = build_param_space(spec, TrialOptions(storage_path="runs"))
    cfg = {"train": space["train"], "_cpsweep": space["_cpsweep"]}
    assert train_dict_for({**cfg, "arm": "cp"})["criterion"]["name"] == "relative"
    assert train_dict_for({**cfg, "arm": "baseline"})["criterion"]["name"] == "never"


@pytest.mark.parametrize(
    ("scaling", "executor"),
    [
        ({}, "inline"),
        ({"num_workers": 2}, "train"),
        ({"executor": "train"}, "train"),
        ({"num_workers": 1, "executor": "inline"}, "inline"),
    ],
)
def test_auto_executor_runs_single_workers_inline_and_ddp_on_ray_train(scaling, executor):
    spec = SweepSpec.model_validate({"name": "x", "scaling": scaling})
    assert spec.scaling.resolved_executor == executor
