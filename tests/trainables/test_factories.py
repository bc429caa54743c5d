"""Model and data factories from a spec: resolution, every error naming its field, kwargs sweeps."""

from __future__ import annotations

import json
import textwrap
import uuid
from pathlib import Path

import pytest
import torch
from torch import nn

from service.spec import SweepSpec
from service.usercode import factory_configs, preflight, runtime_env_for
from trainables.core.config import ConfigError, DataConfig, ModelConfig, TrainConfig, set_dotted
from trainables.core.imports import IMPORT_PATH_ENV, FactoryError, check_target, resolve
from trainables.core.registry import DATASETS, MODELS
from trainables.data.datasets import Dataset
from trainables.data.sources import load_training_data
from trainables.data.streaming import StreamData
from trainables.models.builtin import build_model

USER_CODE = """
import torch
from torch import nn


def tiny(*, input_shape, num_classes, hidden=8):
    return nn.Sequential(nn.Flatten(), nn.Linear(int(torch.tensor(input_shape).prod()), hidden),
                         nn.ReLU(), nn.Linear(hidden, num_classes))


def not_a_module(*, input_shape, num_classes):
    return "a string"


def raises(*, input_shape, num_classes):
    raise RuntimeError("boom in the factory")


def pairs(n=60, classes=3):
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (n, 1, 4, 4), generator=g, dtype=torch.uint8)
    y = torch.arange(n) % classes
    return (x, y), (x[:12], y[:12]), classes


def triples(n=60, classes=3):
    (x, y), val, classes = pairs(n, classes)
    return (x, y), val, (x[12:20], y[12:20]), classes


def float_labels():
    x = torch.zeros(10, 1, 4, 4)
    return (x, torch.zeros(10)), (x, torch.zeros(10)), 2


def wrong_shape():
    return [1, 2]


NOT_CALLABLE = 3
"""


def _module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, body: str = USER_CODE) -> str:
    """Write a uniquely named user module in tmp_path and put the directory on the import path."""
    name = f"user_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{name}.py").write_text(textwrap.dedent(body))
    monkeypatch.setenv(IMPORT_PATH_ENV, str(tmp_path))
    return name


def _model(target: str, **kwargs: object) -> ModelConfig:
    return ModelConfig(factory=target, kwargs=kwargs)


def test_builtins_are_registered_and_names_have_one_home() -> None:
    assert {"small_cnn", "resnet20", "cnn1d"} <= set(MODELS.names())
    assert {"digits", "fashion-mnist", "imagenet30"} <= set(DATASETS.names())
    with pytest.raises(ValueError, match=r"model\.name") as info:
        TrainConfig.model_validate({"model": {"name": "vit"}})
    assert "small_cnn" in str(info.value) and "factory" in str(info.value)
    net = build_model(ModelConfig(name="small_cnn", width=4), input_shape=(1, 8, 8), num_classes=3)
    assert net(torch.zeros(2, 1, 8, 8)).shape == (2, 3)


def test_registering_a_callable_makes_its_name_valid() -> None:
    MODELS.register("test_linear", lambda *, input_shape, num_classes, width: nn.Linear(4, 2))
    cfg = TrainConfig.model_validate({"model": {"name": "test_linear"}})
    assert isinstance(build_model(cfg.model, input_shape=(4,), num_classes=2), nn.Linear)


@pytest.mark.parametrize(
    ("raw", "needle"),
    [
        ({"model": {"name": "small_cnn", "factory": "m:f"}}, "exactly one of name"),
        ({"data": {"factory": "m:f", "root": "/x"}}, "root apply to built-ins"),
        ({"data": {"name": "digits", "kwargs": {"a": 1}}}, "kwargs apply to a factory"),
        ({"model": {"factory": "not a path"}}, "model.factory"),
        ({"data": {"factory": "mod.only"}}, "data.factory"),
    ],
)
def test_config_checks_factories_as_text(raw: dict, needle: str) -> None:
    with pytest.raises(ValueError, match=needle):
        TrainConfig.model_validate(raw)


def test_check_target_is_text_only() -> None:
    assert check_target("a.b:c.d", "x") == "a.b:c.d"
    with pytest.raises(FactoryError, match="x: 'a:b:c'"):
        check_target("a:b:c", "x")


def test_missing_module_names_the_field(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(IMPORT_PATH_ENV, str(tmp_path))
    with pytest.raises(FactoryError) as info:
        build_model(_model("no_such_module_xyz:f"), input_shape=(1, 4, 4), num_classes=2)
    msg = str(info.value)
    assert msg.startswith("model.factory:") and "no_such_module_xyz" in msg
    assert str(tmp_path) in msg and "PYTHONPATH" in msg


def test_module_failing_to_import_names_the_field(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    broken = _module(tmp_path, monkeypatch, "import not_installed_dep_xyz\n")
    with pytest.raises(FactoryError, match=r"^data.factory: importing .*not_installed_dep_xyz"):
        load_training_data(DataConfig(factory=f"{broken}:load"), seed=0)
    raising = _module(tmp_path, monkeypatch, "raise ValueError('bad module')\n")
    with pytest.raises(FactoryError, match=r"^model.factory: importing .*ValueError: bad module"):
        build_model(_model(f"{raising}:f"), input_shape=(1,), num_classes=2)


def test_missing_attribute_names_the_field(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    mod = _module(tmp_path, monkeypatch)
    with pytest.raises(FactoryError) as info:
        build_model(_model(f"{mod}:tinny"), input_shape=(1, 4, 4), num_classes=2)
    assert str(info.value).startswith("model.factory:") and "no attribute 'tinny'" in str(
        info.value
    )
    assert "tiny" in str(info.value)  # what it does define
    with pytest.raises(FactoryError, match=r"^model\.factory: .*not a function"):
        build_model(_model(f"{mod}:NOT_CALLABLE"), input_shape=(1,), num_classes=2)


def test_factory_raising_names_the_field(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    mod = _module(tmp_path, monkeypatch)
    with pytest.raises(FactoryError, match=r"^model.factory: .*raised RuntimeError: boom"):
        build_model(_model(f"{mod}:raises"), input_shape=(1, 4, 4), num_classes=2)
    with pytest.raises(FactoryError, match=r"^data.factory: .*raised TypeError"):
        load_training_data(DataConfig(factory=f"{mod}:pairs", kwargs={"nope": 1}), seed=0)


@pytest.mark.parametrize(
    ("attr", "needle"),
    [("float_labels", "float train targets .* num_classes=2"), ("wrong_shape", "returned a list")],
)
def test_wrong_return_types_name_the_field(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, attr: str, needle: str
) -> None:
    mod = _module(tmp_path, monkeypatch)
    with pytest.raises(FactoryError, match=f"^data.factory: .*{needle}"):
        load_training_data(DataConfig(factory=f"{mod}:{attr}"), seed=0)
    with pytest.raises(FactoryError, match=r"^model\.factory: .*not a torch\.nn\.Module"):
        build_model(_model(f"{mod}:not_a_module"), input_shape=(1,), num_classes=2)


def test_factories_get_shape_classes_and_kwargs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    mod = _module(tmp_path, monkeypatch)
    data = load_training_data(DataConfig(factory=f"{mod}:pairs", kwargs={"classes": 4}), seed=0)
    assert isinstance(data, Dataset) and data.num_classes == 4
    assert data.input_shape == (1, 4, 4) and data.mean == (0.0,) and data.std == (1.0,)
    net = build_model(_model(f"{mod}:tiny", hidden=5), input_shape=(1, 4, 4), num_classes=4)
    assert net[1].out_features == 5 and net(torch.zeros(2, 1, 4, 4)).shape == (2, 4)
    assert resolve(f"{mod}:tiny", field="f") is resolve(f"{mod}:tiny", field="f")


@pytest.mark.parametrize("stream", ["never", "always"])
def test_a_factory_may_return_a_test_split(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, stream: str
) -> None:
    """(train, val, test, num_classes) brings a test split; (train, val, num_classes) none."""
    mod = _module(tmp_path, monkeypatch)
    data = load_training_data(DataConfig(factory=f"{mod}:triples", stream=stream), seed=0)
    test_y = data.test_y
    assert test_y is not None and len(test_y) == 8 and len(data.val_y) == 12
    assert (data.test_x if isinstance(data, Dataset) else data.test) is not None
    old = load_training_data(DataConfig(factory=f"{mod}:pairs", stream=stream), seed=0)
    assert old.test_y is None and len(old.val_y) == 12


def test_factory_kwargs_are_sweepable_paths() -> None:
    tree = TrainConfig.model_validate({"model": {"factory": "m:f"}}).model_dump()
    set_dotted(tree, "model.kwargs.depth", 4)
    set_dotted(tree, "model.kwargs.opt.beta", 0.5)
    assert tree["model"]["kwargs"] == {"depth": 4, "opt": {"beta": 0.5}}
    with pytest.raises(ConfigError, match="no field 'depthh'"):
        set_dotted(tree, "model.depthh", 4)
    spec = SweepSpec.model_validate(
        {
            "name": "s",
            "train": {"model": {"factory": "m:f", "kwargs": {"depth": 1}}},
            "search_space": {"model.kwargs.depth": {"grid": [2, 4]}},
        }
    )
    depths = sorted(c.model.kwargs["depth"] for c in factory_configs(spec))
    assert depths == [1, 2, 2, 4]


def test_preflight_imports_and_checks_kwargs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    mod = _module(tmp_path, monkeypatch)
    spec = SweepSpec.model_validate(
        {
            "name": "s",
            "train": {"model": {"factory": f"{mod}:tiny"}, "data": {"factory": f"{mod}:pairs"}},
            "search_space": {"model.kwargs.hidden": {"grid": [4, 8]}},
        }
    )
    assert preflight(spec) == 3  # data; model without and with `hidden`
    bad = spec.model_copy(
        update={"search_space": {"model.kwargs.depth": spec.search_space["model.kwargs.hidden"]}}
    )
    with pytest.raises(FactoryError, match=r"^model.factory: .*depth"):
        preflight(bad)
    # Inside the working directory a module travels as a relative import path; outside as
    # a py_modules entry.
    assert runtime_env_for(spec, tmp_path) == {"env_vars": {IMPORT_PATH_ENV: "."}}
    shipped = runtime_env_for(spec, tmp_path / "elsewhere")
    assert shipped == {"py_modules": [str((tmp_path / f"{mod}.py").resolve())]}


def test_stream_setting_picks_the_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    mod = _module(tmp_path, monkeypatch)
    streamed = load_training_data(DataConfig(factory=f"{mod}:pairs", stream="always"), seed=0)
    assert isinstance(streamed, StreamData) and streamed.input_shape == (1, 4, 4)
    builtin = load_training_data(DataConfig(name="digits", stream="always"), seed=0)
    assert isinstance(builtin, StreamData) and builtin.mean != (0.0,)


def test_submission_ships_modules_outside_the_project(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from service.jobs.client import build_submission

    mod = _module(tmp_path, monkeypatch)
    spec = SweepSpec.model_validate(
        {
            "name": "s",
            "train": {"model": {"factory": f"{mod}:tiny"}},
            "tracking": {"enabled": False},
        }
    )
    job = build_submission(
        spec, submission_id="cpsweep-s-1", mlflow_uri=None, user_code=runtime_env_for(spec, "/app")
    )
    assert job["runtime_env"]["py_modules"] == [str((tmp_path / f"{mod}.py").resolve())]
    assert job["runtime_env"]["working_dir"]  # the project still travels as the working_dir


def test_cpsweep_train_finds_the_example_modules_beside_its_spec(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from service.cli import main

    monkeypatch.setenv(IMPORT_PATH_ENV, "")  # restored after the test; cli adds the spec dir
    monkeypatch.chdir(tmp_path)
    spec = Path(__file__).resolve().parents[2] / "examples" / "vit" / "spec.yaml"
    out = tmp_path / "out"
    sets = ["train.epochs=6", "train.data.train_subset=300", "train.data.workers=0"]
    sets += ["train.model.kwargs.dim=16", "train.num_threads=1"]
    args = ["train", str(spec), "--output-dir", str(out)]
    assert main([*args, *(a for kv in sets for a in ("--set", kv))]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["epochs"] == 6 and summary["cp_end_epoch"] is not None
    assert summary["switch_epoch"] == summary["cp_end_epoch"] + 1
    assert summary["final_test_acc"] is not None  # the example's factory returns a test split
    history = [json.loads(r) for r in (out / "history.jsonl").read_text().splitlines()]
    assert "rotation/blocks.1.attn.in_proj" in history[0]
