"""Layer rotation: cosine distance of each layer's weights to their initial values.

Follows Carbonnelle & De Vleeschouwer (2019), as used by Fukase et al. (arXiv
2506.15954): every Conv/Linear kernel (shortcut projections included) is
compared with its value at initialisation; BatchNorm weights and biases are
excluded. The paper's signal is the plain mean over layers. Attention's packed
input projection (`nn.MultiheadAttention.in_proj_weight`, or its separate
q/k/v projections) is a Linear kernel too; its output projection already is an
`nn.Linear`. A `layers(name, parameter) -> bool` predicate selects other
parameters instead (names as `named_parameters()` gives them).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import nn

__all__ = ["LayerPredicate", "LayerRotation", "cosine_distance", "kernel_layers", "unwrap_model"]

_KERNEL_TYPES = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)
_ATTENTION_KERNELS = ("in_proj_weight", "q_proj_weight", "k_proj_weight", "v_proj_weight")

LayerPredicate = Callable[[str, torch.Tensor], bool]


def unwrap_model(model: nn.Module) -> nn.Module:
    """Strip DistributedDataParallel (`.module`) and torch.compile (`._orig_mod`) wrappers."""
    while True:
        if isinstance(model, nn.parallel.DistributedDataParallel):
            model = model.module
        elif hasattr(model, "_orig_mod") and isinstance(model._orig_mod, nn.Module):
            model = model._orig_mod
        else:
            return model


def _is_kernel(module: nn.Module, param_name: str) -> bool:
    if isinstance(module, _KERNEL_TYPES):
        return param_name == "weight"
    return isinstance(module, nn.MultiheadAttention) and param_name in _ATTENTION_KERNELS


def _layer_name(param_path: str) -> str:
    """`conv1.weight` -> `conv1`, `attn.in_proj_weight` -> `attn.in_proj`."""
    for suffix in (".weight", "_weight"):
        if param_path.endswith(suffix):
            return param_path[: -len(suffix)]
    return param_path


def kernel_layers(
    model: nn.Module, layers: LayerPredicate | None = None
) -> Iterator[tuple[str, torch.Tensor]]:
    """(layer name, kernel) for every monitored parameter, in registration order.

    Default: Conv/Linear weights and attention input projections, named by module
    path. With `layers`, every parameter for which `layers(name, p)` is true.
    """
    for path, module in unwrap_model(model).named_modules():
        for pname, p in module.named_parameters(recurse=False):
            full = f"{path}.{pname}" if path else pname
            if p is not None and (layers(full, p) if layers else _is_kernel(module, pname)):
                yield _layer_name(full), p


def cosine_distance(w: torch.Tensor, w0: torch.Tensor) -> torch.Tensor:
    """1 - cos(w, w0) of the flattened tensors, as a 0-d tensor on their device (no sync)."""
    a = w.detach().reshape(-1).float()
    b = w0.reshape(-1).float()
    return 1.0 - torch.nn.functional.cosine_similarity(a, b, dim=0, eps=1e-12)


class LayerRotation:
    """Keeps the initial kernels on the training device and measures rotation from them.

    `compute()` evaluates every layer on the device and moves the results to the
    host in a single transfer, so monitoring costs one sync per epoch.
    """

    def __init__(self, model: nn.Module, layers: LayerPredicate | None = None) -> None:
        self._model, self._layers = model, layers
        self.names: list[str] = []
        self._initial: list[torch.Tensor] = []
        for name, w in kernel_layers(model, layers):
            self.names.append(name)
            self._initial.append(w.detach().clone())
        if not self.names:
            what = "parameter selected by layers=" if layers else "Conv/Linear kernel"
            raise ValueError(f"{type(unwrap_model(model)).__name__} has no {what} to monitor")

    @property
    def device(self) -> torch.device:
        return self._initial[0].device

    def compute(self) -> dict[str, float]:
        """`{layer path: 1 - cos(w, w0)}` plus `"mean"` (the paper's signal)."""
        kernels = [w for _, w in kernel_layers(self._model, self._layers)]
        if len(kernels) != len(self._initial):
            raise RuntimeError(
                f"model now has {len(kernels)} kernels, the snapshot has {len(self._initial)}"
            )
        with torch.no_grad():
            dists = torch.stack([cosine_distance(w, w0) for w, w0 in zip(kernels, self._initial)])
            values = torch.cat([dists, dists.mean().reshape(1)]).cpu().tolist()
        out = dict(zip(self.names, values[:-1]))
        out["mean"] = values[-1]
        return out

    def state_dict(self) -> dict[str, Any]:
        return {"names": list(self.names), "initial": [t.cpu() for t in self._initial]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if list(state["names"]) != self.names:
            raise ValueError(
                "rotation snapshot does not match the model's layers: "
                f"snapshot {state['names'][:3]}..., model {self.names[:3]}..."
            )
        device = self._initial[0].device
        self._initial = [t.to(device) for t in state["initial"]]
