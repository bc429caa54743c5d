"""Models: a small CNN, the CIFAR ResNet-N family, torchvision ResNets for small inputs, a 1-D CNN.

The CIFAR ResNets follow He et al. (2016, sec. 4.2) as used by Fukase et al.:
three stages of n basic blocks (16/32/64 channels), depth 6n+2. Down-sampling
shortcuts are 1x1 convolutions (option B), so they count as rotated layers.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import torch
from torch import nn

from trainables.core.config import ModelConfig
from trainables.core.imports import FactoryError, call_factory, resolve
from trainables.core.registry import MODELS

__all__ = [
    "CifarResNet",
    "Conv1dNet",
    "SmallCNN",
    "build_model",
    "cnn1d",
    "resnet18",
    "resnet20",
    "resnet32",
    "resnet44",
    "resnet50",
    "resnet56",
    "resnet110",
    "small_cnn",
]


class SmallCNN(nn.Module):
    """conv-bn-relu x4 with two poolings, global average pool, linear head."""

    def __init__(self, in_channels: int, num_classes: int, width: int = 32) -> None:
        super().__init__()

        def block(cin: int, cout: int) -> list[nn.Module]:
            return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU()]

        w = width
        self.features = nn.Sequential(
            *block(in_channels, w),
            *block(w, w),
            nn.MaxPool2d(2, ceil_mode=True),
            *block(w, 2 * w),
            nn.MaxPool2d(2, ceil_mode=True),
            *block(2 * w, 2 * w),
            nn.AdaptiveAvgPool2d(1),
        )
        self.head = nn.Linear(2 * w, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [B, C, H, W] -> [B, classes]
        return self.head(self.features(x).flatten(1))


class _BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm2d(cout)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return torch.relu(out + self.shortcut(x))


class CifarResNet(nn.Module):
    def __init__(self, depth: int, in_channels: int, num_classes: int) -> None:
        super().__init__()
        if (depth - 2) % 6:
            raise ValueError(f"CIFAR ResNet depth {depth} must be 6n+2 (20, 32, 44, 56, 110)")
        n = (depth - 2) // 6
        self.conv1 = nn.Conv2d(in_channels, 16, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        layers: list[nn.Module] = []
        cin = 16
        for stage, cout in enumerate((16, 32, 64)):
            for i in range(n):
                layers.append(_BasicBlock(cin, cout, 2 if stage > 0 and i == 0 else 1))
                cin = cout
        self.layers = nn.Sequential(*layers)
        self.fc = nn.Linear(64, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.layers(out)
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(out, 1), 1))


class Conv1dNet(nn.Module):
    """Three conv1d blocks and a linear head, for mnist1d-style signals [B, C, L]."""

    def __init__(self, in_channels: int, num_classes: int, width: int = 32) -> None:
        super().__init__()
        w = width
        self.features = nn.Sequential(
            nn.Conv1d(in_channels, w, 5, padding=2),
            nn.ReLU(),
            nn.Conv1d(w, w, 3, padding=1, stride=2),
            nn.ReLU(),
            nn.Conv1d(w, w, 3, padding=1, stride=2),
            nn.ReLU(),
            nn.AdaptiveAvgPool1d(4),
        )
        self.head = nn.Linear(4 * w, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).flatten(1))


def _torchvision_resnet(name: str, in_channels: int, num_classes: int) -> nn.Module:
    """torchvision ResNet-18/50 adapted to small inputs: 3x3 stem, stride 1, no max-pool."""
    from torchvision import models as tvm

    net = getattr(tvm, name)(weights=None, num_classes=num_classes)
    net.conv1 = nn.Conv2d(in_channels, 64, 3, stride=1, padding=1, bias=False)
    net.maxpool = nn.Identity()
    return net


# --- registered builders (names in trainables/core/registry.py) ----------------------------------
# Each is called as builder(input_shape=one sample's shape, num_classes=K, width=...);
# `width` is the config's model.width, used by small_cnn / cnn1d only.


def _channels(name: str, input_shape: Sequence[int], ndim: int) -> int:
    if len(input_shape) != ndim + 1:
        kind = "1-D signals [C, L]" if len(input_shape) == 2 else f"inputs {tuple(input_shape)}"
        fix = "use model.name=cnn1d" if len(input_shape) == 2 else "use an image model"
        raise ValueError(f"model.name={name!r} does not fit {kind}; {fix}")
    return int(input_shape[0])


def small_cnn(*, input_shape: Sequence[int], num_classes: int, width: int = 32) -> nn.Module:
    return SmallCNN(_channels("small_cnn", input_shape, 2), num_classes, width)


def cnn1d(*, input_shape: Sequence[int], num_classes: int, width: int = 32) -> nn.Module:
    if len(input_shape) != 2:
        raise ValueError("model.name='cnn1d' does not fit images; use an image model")
    return Conv1dNet(int(input_shape[0]), num_classes, width)


def _cifar_builder(depth: int) -> Callable[..., nn.Module]:
    def build(*, input_shape: Sequence[int], num_classes: int, width: int = 32) -> nn.Module:
        return CifarResNet(depth, _channels(f"resnet{depth}", input_shape, 2), num_classes)

    build.__name__ = f"resnet{depth}"
    return build


resnet20, resnet32, resnet44 = _cifar_builder(20), _cifar_builder(32), _cifar_builder(44)
resnet56, resnet110 = _cifar_builder(56), _cifar_builder(110)


def resnet18(*, input_shape: Sequence[int], num_classes: int, width: int = 32) -> nn.Module:
    return _torchvision_resnet("resnet18", _channels("resnet18", input_shape, 2), num_classes)


def resnet50(*, input_shape: Sequence[int], num_classes: int, width: int = 32) -> nn.Module:
    return _torchvision_resnet("resnet50", _channels("resnet50", input_shape, 2), num_classes)


def build_model(
    cfg: ModelConfig,
    *,
    input_shape: Sequence[int],
    num_classes: int,
    paths: Iterable[str | Path] = (),
) -> nn.Module:
    """Build `cfg.name` (a registered builder) or call `cfg.factory` for inputs of
    `input_shape` (one sample, e.g. (1, 8, 8)); factory errors name model.factory."""
    shape = tuple(int(d) for d in input_shape)
    if cfg.factory is None:
        assert cfg.name is not None  # ModelConfig fills the default
        return MODELS.load(cfg.name)(input_shape=shape, num_classes=num_classes, width=cfg.width)
    field = "model.factory"
    fn = resolve(cfg.factory, field=field, paths=paths)
    net = call_factory(
        fn, cfg.factory, field, input_shape=shape, num_classes=num_classes, **cfg.kwargs
    )
    if not isinstance(net, nn.Module):
        raise FactoryError(
            f"{field}: {cfg.factory!r} returned a {type(net).__name__}, not a torch.nn.Module"
        )
    return net
