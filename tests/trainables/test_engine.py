"""TrainingRun: schedules, the switch, checkpoint round trips, divergence, model zoo."""

from __future__ import annotations

import copy

import pytest
import torch

from trainables.core.config import ModelConfig, OptimConfig, TrainConfig
from trainables.core.wire import TEST_ACC, TEST_LOSS, VAL_ACC, VAL_LOSS
from trainables.models.builtin import build_model
from trainables.run.engine import NonFiniteLossError, TrainingRun, lr_factor


def _cfg(**kw) -> TrainConfig:
    base = {
        "epochs": 4,
        "batch_size": 64,
        "data": {"name": "digits", "train_subset": 300},
        "model": {"name": "small_cnn", "width": 4},
    }
    base.update(kw)
    return TrainConfig.model_validate(base)


def test_step_schedule_matches_the_paper():
    cfg = OptimConfig(schedule="step", milestones=[0.5, 0.75], gamma=0.1)
    f = [lr_factor(cfg, e, 200) for e in (1, 100, 101, 150, 151, 200)]
    assert f == pytest.approx([1, 1, 0.1, 0.1, 0.01, 0.01])
    warm = OptimConfig(schedule="cosine", warmup_epochs=2)
    assert lr_factor(warm, 1, 10) == 0.5 and lr_factor(warm, 3, 10) < 1


def test_switch_changes_samples_from_the_next_epoch():
    run = TrainingRun(_cfg())
    m1 = run.run_epoch()
    assert (m1["phase"], m1["recipe/repeats"]) == ("critical", 3)
    run.end_period(1)
    assert run.switch_epoch == 2
    m2 = run.run_epoch()
    assert (m2["phase"], m2["recipe/repeats"]) == ("after", 1)
    assert m1["samples"] == 3 * m2["samples"] == 900
    for key in ("rotation/mean", "train/loss", "val/acc", "time/rotation_s", "lr"):
        assert key in m2


@pytest.mark.parametrize("stream", ["never", "always"])
def test_the_test_split_is_measured_after_the_last_epoch_only(stream):
    """val/* every epoch (decisions read it), test/* after the last epoch or every
    data.test_every epochs, on the test split of its own size, on both data paths."""
    data = {"name": "digits", "train_subset": 200, "stream": stream, "workers": 0}
    run = TrainingRun(_cfg(epochs=3, data=data))
    ms = [run.run_epoch() for _ in range(3)]
    assert all(VAL_ACC in m and VAL_LOSS in m for m in ms)
    assert [TEST_ACC in m for m in ms] == [False, False, True]
    assert TEST_LOSS in ms[-1] and all("time/test_s" in m for m in ms)
    assert run.batches.num_eval("test") == 359 and run.batches.num_eval("val") == 144
    assert ms[-1][TEST_ACC] == pytest.approx(run.evaluate("test")[TEST_ACC])
    every = TrainingRun(_cfg(epochs=3, data={**data, "test_every": 2}))
    assert [TEST_ACC in every.run_epoch() for _ in range(3)] == [False, True, True]


def test_checkpoint_round_trip_continues_identically():
    a = TrainingRun(_cfg())
    a.run_epoch()
    a.end_period(1)
    state = copy.deepcopy(a.state_dict())  # as torch.save would freeze it
    ref = a.run_epoch()
    b = TrainingRun(_cfg())
    b.load_state_dict(state)
    assert (b.epoch, b.switch_epoch, b.cp_end_epoch) == (1, 2, 1)
    got = b.run_epoch()
    assert got["rotation/mean"] == pytest.approx(ref["rotation/mean"], abs=1e-6)
    assert got["train/loss"] == pytest.approx(ref["train/loss"], abs=1e-6)


def test_divergence_raises_with_the_fix():
    cfg = _cfg(
        # Whether lr 1e6 overflows or kills every unit first depends on the data: this
        # subset overflows within the first epoch.
        data={"name": "mnist1d", "train_subset": 1000},
        model={"name": "cnn1d", "width": 4},
        optim={"name": "sgd", "lr": 1e6, "weight_decay": 0},
    )
    with pytest.raises(NonFiniteLossError, match=r"optim.lr=1000000.0.*lower optim.lr"):
        TrainingRun(cfg).run_epoch()


@pytest.mark.parametrize(
    "name", ["small_cnn", "resnet20", "resnet32", "resnet56", "resnet18", "resnet50"]
)
def test_image_models_forward(name):
    net = build_model(ModelConfig(name=name, width=8), input_shape=(3, 32, 32), num_classes=7)
    assert net(torch.randn(2, 3, 32, 32)).shape == (2, 7)


def test_model_data_mismatch_is_a_clear_error():
    with pytest.raises(ValueError, match=r"model\.name=cnn1d"):
        build_model(ModelConfig(name="small_cnn"), input_shape=(1, 40), num_classes=10)
    net = build_model(ModelConfig(name="cnn1d", width=8), input_shape=(1, 40), num_classes=10)
    assert net(torch.randn(2, 1, 40)).shape == (2, 10)


def test_a_registered_optimizer_is_built_by_name(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    from trainables.core.config import OptimConfig
    from trainables.core.registry import OPTIMIZERS
    from trainables.run.optimizers import make_optimizer

    def lion_like(params, cfg):  # any builder(params, cfg) -> Optimizer
        return torch.optim.SGD(params, lr=cfg.lr * 2)

    with pytest.raises(ValueError, match="unknown optimizer 'mine'"):
        OptimConfig(name="mine")
    monkeypatch.setitem(OPTIMIZERS._entries, "mine", lion_like)
    opt = make_optimizer(OptimConfig(name="mine", lr=0.1), [torch.nn.Parameter(torch.ones(2))])
    assert isinstance(opt, torch.optim.SGD) and opt.param_groups[0]["lr"] == pytest.approx(0.2)
    nest = make_optimizer(
        OptimConfig(name="sgd", momentum=0.0), [torch.nn.Parameter(torch.ones(1))]
    )
    assert nest.param_groups[0]["nesterov"] is False  # Nesterov needs momentum
