"""The GPU path's choices, checked on the CPU: torch.compile, channels-last, eval batches."""

from __future__ import annotations

import pytest
import torch

from trainables.core.config import TrainConfig
from trainables.method.rotation import LayerRotation
from trainables.models.builtin import build_model
from trainables.run.engine import TrainingRun, _eval_batch_size


def _cfg(**kw) -> TrainConfig:
    base = {
        "epochs": 3,
        "batch_size": 64,
        "data": {"name": "digits", "train_subset": 192, "val_subset": 128},  # whole batches
        "model": {"name": "small_cnn", "width": 4},
        "num_threads": 1,
    }
    return TrainConfig.model_validate(base | kw)


def test_compiled_training_matches_eager_and_its_rotation_stays_exact():
    """Through dynamo (eager backend: fast, same kernels) the run is the same run: same
    loss, same rotation per layer, and a checkpoint an uncompiled run can continue."""
    plain, compiled = TrainingRun(_cfg()), TrainingRun(_cfg(compile=True, compile_backend="eager"))
    assert hasattr(compiled.model, "_orig_mod")  # it really went through torch.compile
    assert compiled.rotation.names == plain.rotation.names
    for _ in range(1):
        a, b = plain.run_epoch(), compiled.run_epoch()
        for key in ("train/loss", "val/acc", "rotation/mean"):
            assert b[key] == pytest.approx(a[key], rel=1e-5, abs=1e-7), key
        assert b["rotation/mean"] > 0
    state = compiled.state_dict()
    assert not any(k.startswith("_orig_mod") for k in state["model"])
    resumed = TrainingRun(_cfg())
    resumed.load_state_dict(state)
    assert resumed.run_epoch()["rotation/mean"] == pytest.approx(
        plain.run_epoch()["rotation/mean"], rel=1e-5
    )


def test_rotation_is_the_same_in_channels_last_memory():
    """NHWC changes strides, not values: the cosine distances must not move."""
    torch.manual_seed(0)
    model = TrainConfig().model.model_copy(update={"width": 4})
    a = build_model(model, input_shape=(1, 8, 8), num_classes=10)
    b = build_model(model, input_shape=(1, 8, 8), num_classes=10)
    b.load_state_dict(a.state_dict())
    b = b.to(memory_format=torch.channels_last)
    ra, rb = LayerRotation(a), LayerRotation(b)
    x = torch.randn(16, 1, 8, 8)
    for net in (a, b):
        opt = torch.optim.SGD(net.parameters(), lr=0.5)
        for _ in range(3):
            opt.zero_grad()
            net(x.contiguous(memory_format=torch.channels_last)).square().mean().backward()
            opt.step()
    got, want = rb.compute(), ra.compute()
    assert got["mean"] > 0
    assert got == pytest.approx(want, rel=1e-5)


@pytest.mark.parametrize(
    ("train_batch", "device", "eval_batch"),
    [(128, "cuda", 1024), (1024, "cuda", 4096), (8192, "cuda", 8192), (128, "cpu", 256)],
)
def test_evaluation_batches_are_large_on_the_gpu(train_batch, device, eval_batch):
    assert _eval_batch_size(train_batch, torch.device(device)) == eval_batch


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA (runs where a GPU is)")
def test_the_step_loop_never_waits_for_the_gpu():
    """Host syncs per epoch must not grow with the number of steps: 2x the data, same count."""
    import warnings

    def syncs(subset: int) -> int:
        run = TrainingRun(
            _cfg(device="cuda", data={"name": "digits", "train_subset": subset, "val_subset": 128})
        )
        run.run_epoch()  # warm-up: cuDNN autotuning may sync
        torch.cuda.set_sync_debug_mode("warn")
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                run.run_epoch()
        finally:
            torch.cuda.set_sync_debug_mode("default")
        return sum("synchroniz" in str(w.message) for w in caught)

    assert syncs(384) == syncs(768)
