"""Layer rotation: layer selection, values against a direct computation, wrappers, resume."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from trainables.core.config import ModelConfig
from trainables.method.rotation import LayerRotation, kernel_layers
from trainables.models.builtin import build_model


def _reference(model: nn.Module, initial: nn.Module) -> dict[str, float]:
    out = {}
    for (name, m), (_, m0) in zip(model.named_modules(), initial.named_modules()):
        if isinstance(m, nn.Conv2d | nn.Linear):
            a, b = m.weight.detach().flatten().double(), m0.weight.detach().flatten().double()
            out[name] = float(1 - a @ b / (a.norm() * b.norm()))
    return out


def test_layers_include_shortcuts_and_exclude_batchnorm():
    net = build_model(ModelConfig(name="resnet20"), input_shape=(3, 32, 32), num_classes=10)
    names = [n for n, _ in kernel_layers(net)]
    assert len(names) == 19 + 2 + 1  # 19 convs, 2 projection shortcuts, 1 fc
    assert any("shortcut" in n for n in names)
    assert not any("bn" in n for n in names)


def test_rotation_matches_direct_computation():
    torch.manual_seed(0)
    net = build_model(ModelConfig(name="small_cnn", width=8), input_shape=(1, 8, 8), num_classes=10)
    initial = copy.deepcopy(net)
    rot = LayerRotation(net)
    zero = rot.compute()
    assert zero["mean"] == pytest.approx(0.0, abs=1e-6)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    got = rot.compute()
    ref = _reference(net, initial)
    assert set(got) == set(ref) | {"mean"}
    for k, v in ref.items():
        assert got[k] == pytest.approx(v, abs=1e-5)
    assert got["mean"] == pytest.approx(sum(ref.values()) / len(ref), abs=1e-5)


def test_rotation_of_opposite_weights_is_two():
    net = nn.Sequential(nn.Linear(4, 3))
    rot = LayerRotation(net)
    with torch.no_grad():
        net[0].weight.mul_(-1)
    assert rot.compute()["0"] == pytest.approx(2.0, abs=1e-6)


def test_rotation_through_compile_wrapper_and_resume():
    torch.manual_seed(0)
    net = build_model(ModelConfig(name="small_cnn", width=4), input_shape=(1, 8, 8), num_classes=3)
    initial = copy.deepcopy(net)
    # Dynamo traces for real; the eager backend skips Inductor's C++ build (slow on CI).
    compiled = torch.compile(net, backend="eager")
    rot = LayerRotation(compiled)
    assert rot.names == [n for n, _ in kernel_layers(net)]  # no "_orig_mod." prefix
    opt = torch.optim.SGD(compiled.parameters(), lr=0.5)
    for _ in range(3):
        opt.zero_grad()
        compiled(torch.randn(8, 1, 8, 8)).square().mean().backward()
        opt.step()
    before = rot.compute()
    assert before["mean"] > 1e-4
    assert {k: v for k, v in before.items() if k != "mean"} == pytest.approx(
        _reference(net, initial), abs=1e-6
    )
    state = rot.state_dict()
    fresh = LayerRotation(net)  # snapshot of the *current* weights ...
    assert fresh.compute()["mean"] == pytest.approx(0.0, abs=1e-6)
    fresh.load_state_dict(state)  # ... replaced by the saved initial ones
    assert fresh.compute() == pytest.approx(before)


@pytest.mark.parametrize("depth", [20, 32, 44, 56, 110])
def test_every_cifar_resnet_depth_is_monitored_layer_by_layer(depth):
    net = build_model(ModelConfig(name=f"resnet{depth}"), input_shape=(3, 32, 32), num_classes=10)
    assert len(LayerRotation(net).names) == (depth - 1) + 2 + 1  # convs, 2 projections, fc


def test_snapshot_mismatch_is_an_error():
    a = LayerRotation(nn.Sequential(nn.Linear(2, 2)))
    b = LayerRotation(nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 2)))
    with pytest.raises(ValueError, match="does not match"):
        b.load_state_dict(a.state_dict())


def test_rotation_through_ddp_wrapper(tmp_path):
    """A one-rank gloo process group is enough to wrap the model in real DDP."""
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'pg'}", rank=0, world_size=1)
    try:
        torch.manual_seed(0)
        net = build_model(
            ModelConfig(name="small_cnn", width=4), input_shape=(1, 8, 8), num_classes=3
        )
        ddp = nn.parallel.DistributedDataParallel(net)
        rot = LayerRotation(ddp)
        assert rot.names == [n for n, _ in kernel_layers(net)]  # no "module." prefix
        opt = torch.optim.SGD(ddp.parameters(), lr=0.5)
        ddp(torch.randn(4, 1, 8, 8)).sum().backward()
        opt.step()
        assert rot.compute()["mean"] > 0
    finally:
        dist.destroy_process_group()
