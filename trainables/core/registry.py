"""Registries of the open sets a config names: models, datasets, end-of-period rules
(criteria) and optimizers. The one home of their names.

An entry maps a name to a builder given as an import path (loaded on first use,
so validating a config imports neither torch nor the builders) or a callable.
The built-ins register below; a library user adds one with
`MODELS.register("mine", my_builder)` before building a config that names it,
and a spec adds one by import path (`model.factory` / `data.factory`, see config.py).

Builder signatures:
- model: `builder(input_shape=(C, H, W) or (C, L), num_classes=K, **kwargs) -> nn.Module`
- dataset: `loader(root: Path | None, image_size: int | None) -> (train_x, train_y,
  test_x, test_y, num_classes)`: the training pool (the validation split is carved out
  of it) and the test split; root and image sizes are checked by trainables.data.datasets.
- criterion: a subclass of `trainables.method.criteria.EndRule` (one instance per run).
- optimizer: `builder(params, cfg: OptimConfig) -> torch.optim.Optimizer`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from trainables.core.imports import FactoryError, resolve

__all__ = ["CRITERIA", "DATASETS", "MODELS", "OPTIMIZERS", "Registry"]


class Registry:
    """Names -> builders, kept in registration order; `field` names the config field."""

    def __init__(self, kind: str, field: str, own: str) -> None:
        self.kind, self.field, self.own = kind, field, own
        self._entries: dict[str, str | Callable[..., Any]] = {}

    def register(self, name: str, builder: str | Callable[..., Any]) -> None:
        """Add `name`; `builder` is "module:attr" (imported on first use) or a callable."""
        if name in self._entries and self._entries[name] is not builder:
            raise ValueError(f"{self.kind} {name!r} is already registered; pick another name")
        self._entries[name] = builder

    def names(self) -> tuple[str, ...]:
        return tuple(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def check(self, name: str) -> str:
        """`name` if registered, else a ValueError listing the choices and the factory option."""
        if name not in self._entries:
            raise ValueError(
                f"unknown {self.kind} {name!r}; choose one of {', '.join(self._entries)}, "
                f"or {self.own}"
            )
        return name

    def load(self, name: str) -> Callable[..., Any]:
        """The builder of `name`, importing it on first use."""
        builder = self._entries[self.check(name)]
        if isinstance(builder, str):
            builder = resolve(builder, field=self.field, builtin=True)
            if not callable(builder):
                raise FactoryError(f"{self.field}: {name!r} is registered to a non-callable")
            self._entries[name] = builder
        return builder


_FACTORY = "give `factory: 'module:function'` instead of `name` for your own"
MODELS = Registry("model", "model.name", _FACTORY)
for _name in ("small_cnn", "cnn1d", "resnet18", "resnet50"):
    MODELS.register(_name, f"trainables.models.builtin:{_name}")
for _depth in (20, 32, 44, 56, 110):  # CIFAR ResNet-(6n+2), He et al. 2016 sec. 4.2
    MODELS.register(f"resnet{_depth}", f"trainables.models.builtin:resnet{_depth}")

DATASETS = Registry("dataset", "data.name", _FACTORY)
for _name, _attr in (
    ("digits", "load_digits"),
    ("fashion-mnist", "load_fashion_mnist"),
    ("mnist1d", "load_mnist1d"),
    ("cifar10", "load_cifar10"),
    ("cifar100", "load_cifar100"),
):
    DATASETS.register(_name, f"trainables.data.datasets:{_attr}")
for _name, _attr in (
    ("eurosat", "load_eurosat"),
    ("tiny-imagenet", "load_tiny_imagenet"),
    ("imagenet30", "load_imagenet30"),
):
    DATASETS.register(_name, f"trainables.data.imagetrees:{_attr}")

CRITERIA = Registry(
    "criterion", "criterion.name", "register your own: CRITERIA.register('mine', MyEndRule)"
)
for _name in ("paper", "relative", "fixed", "never"):
    CRITERIA.register(_name, f"trainables.method.criteria:{_name.capitalize()}Rule")

OPTIMIZERS = Registry(
    "optimizer", "optim.name", "register your own: OPTIMIZERS.register('mine', build)"
)
for _name in ("sgd", "adam", "adamw", "rmsprop"):
    OPTIMIZERS.register(_name, f"trainables.run.optimizers:{_name}")
