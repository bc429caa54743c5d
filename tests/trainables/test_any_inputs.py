"""The built-in loop beyond images: tabular inputs, token ids, float targets, own augmentation;
and train.params for an own loop."""

from __future__ import annotations

import json
import logging
import textwrap

import pytest
import torch
from pydantic import ValidationError

from trainables.core.config import ConfigError, TrainConfig, set_dotted
from trainables.core.imports import IMPORT_PATH_ENV, FactoryError
from trainables.core.policy import Policy, PolicyError
from trainables.core.wire import VAL_ACC, VAL_LOSS
from trainables.data.datasets import Dataset
from trainables.data.sources import load_training_data
from trainables.run.engine import TrainingRun
from trainables.run.local import train_local
from trainables.run.user_loop import load_loop

USER_CODE = """
import torch
from torch import nn


def mlp(*, input_shape, num_classes, hidden=16):
    return nn.Sequential(nn.Linear(input_shape[-1], hidden), nn.ReLU(), nn.Linear(hidden, num_classes))


def bag(*, input_shape, num_classes, vocab=20):
    return nn.Sequential(nn.Embedding(vocab, 8), nn.Flatten(), nn.Linear(8 * input_shape[0], num_classes))


def jitter(x, g):
    return x + 0.01 * torch.randn(x.shape, generator=g, device=x.device)


def wrong_shape(x, g):
    return x[:, :1]


def tokens(n=64):
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 20, (n, 6), generator=g)
    y = (x[:, 0] > 9).long()
    return (x, y), (x[:16], y[:16]), 2


def values(n=64):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 5, generator=g, dtype=torch.float64)
    y = x[:, 0] * 2 - x[:, 1]
    return (x, y), (x[:16], y[:16]), (x[:8], y[:8]), 1
"""


@pytest.fixture
def mod(tmp_path, monkeypatch):
    (tmp_path / "anyin.py").write_text(textwrap.dedent(USER_CODE))
    monkeypatch.setenv(IMPORT_PATH_ENV, str(tmp_path))
    return "anyin"


def _tabular(n: int = 60, features: int = 13, classes: int = 3) -> Dataset:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, features, generator=g)
    y = torch.arange(n) % classes
    ones = (1.0,) * features
    return Dataset("wine-like", x, y, x[:20], y[:20], classes, (0.0,) * features, ones)


def _cfg(mod: str, model: str = "mlp", **kw) -> TrainConfig:
    raw = {"epochs": 2, "batch_size": 16, "model": {"factory": f"{mod}:{model}"}, **kw}
    return TrainConfig.model_validate(raw)


def test_tabular_inputs_train_with_augmentation_off_by_auto(mod, caplog):
    caplog.set_level(logging.INFO, "trainables.run.inputs")
    run = TrainingRun(_cfg(mod), dataset=_tabular())
    m = run.run_epoch()
    assert m["recipe/augment"] == 0 and VAL_ACC in m
    said = [r.getMessage() for r in caplog.records if "augmentation off" in r.getMessage()]
    assert len(said) == 1 and "(13,)" in said[0] and "augment_fn" in said[0]


def test_augmentation_turned_on_for_tabular_inputs_fails_before_training(mod):
    cfg = _cfg(mod, recipe={"critical": {"repeats": 2, "augment": True}})
    with pytest.raises(ConfigError, match=r"^recipe\.critical\.augment: true.*\(13,\).*augment_fn"):
        TrainingRun(cfg, dataset=_tabular())


def test_images_keep_the_built_in_augmentation_by_default(mod):
    run = TrainingRun(TrainConfig(epochs=2, data={"name": "digits", "train_subset": 100},
                                  model={"name": "small_cnn", "width": 4}))  # fmt: skip
    assert run.run_epoch()["recipe/augment"] == 1


def test_a_phase_takes_a_users_augmentation(mod, monkeypatch):
    cfg = _cfg(mod, recipe={"critical": {"augment_fn": f"{mod}:jitter"}})
    run = TrainingRun(cfg, dataset=_tabular())
    calls = []
    real = run._augments["critical"]
    assert real is not None and run._augments["after"] is None  # after: auto, tabular: off
    run._augments["critical"] = lambda x, g, s: calls.append(x.shape) or real(x, g, s)
    assert run.run_epoch()["recipe/augment"] == 1
    assert calls and all(shape[1:] == (13,) for shape in calls)
    bad = _cfg(mod, recipe={"critical": {"augment_fn": f"{mod}:wrong_shape"}})
    with pytest.raises(FactoryError, match=r"recipe\.critical\.augment_fn: .*wrong_shape"):
        TrainingRun(bad, dataset=_tabular()).run_epoch()


def test_augment_fn_is_checked_as_text_and_by_the_policy(mod, monkeypatch):
    with pytest.raises(ValidationError, match="augment_fn"):
        TrainConfig.model_validate({"recipe": {"after": {"augment_fn": "not a path"}}})
    monkeypatch.setenv(*Policy(("allowed_pkg",)).to_env().popitem())
    with pytest.raises(PolicyError, match=r"recipe\.critical\.augment_fn: .*'anyin'"):
        TrainingRun(_cfg("allowed_pkg", recipe={"critical": {"augment_fn": f"{mod}:jitter"}}),
                    dataset=_tabular())  # fmt: skip


def test_token_ids_reach_an_embedding_model(mod):
    cfg = _cfg(mod, "bag", data={"factory": f"{mod}:tokens"})
    data = load_training_data(cfg.data, seed=0)
    assert isinstance(data, Dataset) and data.train_x.dtype == torch.int64
    run = TrainingRun(cfg, dataset=data)
    m = run.run_epoch()
    assert m["recipe/augment"] == 0 and 0 <= m[VAL_ACC] <= 1
    mixed = _cfg(mod, "bag", recipe={"critical": {"mixup_alpha": 0.2}})
    with pytest.raises(ConfigError, match=r"recipe\.critical\.mixup_alpha=0\.2: .*token ids"):
        TrainingRun(mixed, dataset=data)


def test_float_targets_train_as_regression(mod):
    cfg = _cfg(mod, data={"factory": f"{mod}:values", "train_subset": 40})
    data = load_training_data(cfg.data, seed=0)
    assert data.train_y.dtype == torch.float32 and len(data.train_y) == 40
    run = TrainingRun(cfg, dataset=data)
    first, second = run.run_epoch(), run.run_epoch()
    assert VAL_LOSS in second and VAL_ACC not in second and "train/acc" not in second
    assert second["train/loss"] < first["train/loss"]  # it learns the linear target
    assert "test/loss" in second
    reference = torch.nn.functional.mse_loss(run.model(data.val_x).reshape(-1), data.val_y).item()
    assert run.evaluate("val")[VAL_LOSS] == pytest.approx(reference, rel=1e-4)


def test_float_targets_need_num_classes_as_outputs(mod, tmp_path):
    (tmp_path / "badreg.py").write_text(
        "import torch\n"
        "def load():\n"
        "    x, y = torch.randn(20, 3), torch.randn(20, 2)\n"
        "    return (x, y), (x, y), 1\n"
    )
    with pytest.raises(FactoryError, match=r"number of outputs the model predicts, here 2"):
        load_training_data(TrainConfig(data={"factory": "badreg:load"}).data, seed=0)


def test_params_are_plain_data_and_sweep_like_kwargs():
    cfg = TrainConfig.model_validate(
        {"params": {"hidden": 64, "layers": [1, 2], "opt": {"b": None}}}
    )
    assert cfg.params["hidden"] == 64
    with pytest.raises(ValidationError, match=r"params\.bad: a set is not plain data"):
        TrainConfig.model_validate({"params": {"bad": {1, 2}}})
    tree = TrainConfig().model_dump()
    set_dotted(tree, "params.hidden", 32)
    set_dotted(tree, "params.deep.width", 8)
    assert TrainConfig.model_validate(tree).params == {"hidden": 32, "deep": {"width": 8}}
    with pytest.raises(ConfigError, match="did you mean 'epochs'"):
        set_dotted(tree, "epoch", 3)


_PARAMS_LOOP = """
import json, pathlib
import torch
from torch import nn


def fit(ctx):
    model = nn.Linear(2, ctx.params["hidden"])
    cp = ctx.period(model)
    pathlib.Path(ctx.params["out"]).write_text(json.dumps(ctx.params))
    for _ in range(ctx.config.epochs):
        cp.step()
        ctx.report({"loss": 1.0})


def no_ctx():
    pass


def two(ctx, other):
    pass
"""


def test_an_own_loop_reads_its_params(tmp_path, monkeypatch):
    (tmp_path / "ploop.py").write_text(textwrap.dedent(_PARAMS_LOOP))
    monkeypatch.setenv(IMPORT_PATH_ENV, str(tmp_path))
    out = tmp_path / "params.json"
    cfg = TrainConfig(loop="ploop:fit", epochs=2, params={"hidden": 3, "out": str(out)})
    train_local(cfg, tmp_path / "run")
    assert json.loads(out.read_text()) == {"hidden": 3, "out": str(out)}


@pytest.mark.parametrize("name", ["no_ctx", "two"])
def test_a_loop_that_cannot_take_ctx_is_refused_on_import(tmp_path, monkeypatch, name):
    (tmp_path / "ploop.py").write_text(textwrap.dedent(_PARAMS_LOOP))
    monkeypatch.setenv(IMPORT_PATH_ENV, str(tmp_path))
    with pytest.raises(
        FactoryError, match=r"^train\.loop: .*one argument, ctx: cpsweep\.LoopContext"
    ):
        load_loop(f"ploop:{name}")
