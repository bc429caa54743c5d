"""How big a sweep may be (trials, workers, CPUs, GPUs), and numbers that must be finite.

`cpsweep run` and `submit` validate a SweepSpec with the loose `SpecLimits()` defaults;
the REST server passes `SERVER_LIMITS` (or what its operator configured) through
pydantic's validation context, `SweepSpec.model_validate(raw, context={LIMITS_CONTEXT:
limits})`, so one validator serves both and the server may accept less than the CLI.
"""

from __future__ import annotations

import math
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "LIMITS_CONTEXT",
    "SERVER_LIMITS",
    "SpecLimits",
    "check_limits",
    "non_finite",
]

LIMITS_CONTEXT = "cpsweep_limits"  # validation context key: SweepSpec.model_validate(..., context=)


class SpecLimits(BaseModel):
    """How big a sweep may be. `cpsweep run` and `submit` use these loose defaults; the
    REST server applies `SERVER_LIMITS` (or what its operator configures)."""

    model_config = ConfigDict(extra="forbid")

    max_trials: int = Field(1_000_000, ge=1, description="Trials after grids x arms x num_samples.")
    max_workers: int = Field(1024, ge=1, description="scaling.num_workers per trial.")
    max_cpus_per_trial: int = Field(65_536, ge=1, description="num_workers x cpus_per_worker.")
    max_gpus_per_trial: float = Field(1024, ge=0, description="GPUs of all workers of a trial.")
    source: str = Field("the local default", description="Named in errors: who set the limit.")


SERVER_LIMITS = SpecLimits(
    max_trials=1000,
    max_workers=32,
    max_cpus_per_trial=256,
    max_gpus_per_trial=16,
    source="this server (cpsweep serve --max-trials ...)",
)


def non_finite(tree: Any) -> tuple[str, float] | None:
    """(dotted path, value) of the first NaN/inf float in a parsed tree, else None."""
    stack: list[tuple[str, Any]] = [("", tree)]
    while stack:
        path, node = stack.pop()
        if isinstance(node, float) and not math.isfinite(node):
            return path or "<spec>", node
        if isinstance(node, dict):
            stack.extend((f"{path}.{k}" if path else str(k), v) for k, v in node.items())
        elif isinstance(node, list | tuple):
            stack.extend((f"{path}[{i}]", v) for i, v in enumerate(node))
    return None


def check_limits(
    limits: SpecLimits,
    *,
    trials: int,
    grids: dict[str, int],
    arms: int,
    num_samples: int,
    num_workers: int,
    cpus_per_worker: int,
    gpus_per_worker: float,
) -> None:
    """ValueError naming the spec's field and the limit when the sweep is too big to run."""
    by = f"the limit of {limits.source}"
    if trials > limits.max_trials:
        shown = [f"{p}: {n}" for p, n in grids.items()]
        raise ValueError(
            f"search_space x arms x num_samples: {trials:.3g} trials (grids {shown or 'none'}, "
            f"{arms} arm(s), num_samples {num_samples}), over {by}, {limits.max_trials}; "
            "shrink a grid, the arms or num_samples"
        )
    if num_workers > limits.max_workers:
        raise ValueError(
            f"scaling.num_workers: {num_workers}, over {by}, {limits.max_workers} per trial"
        )
    cpus = num_workers * cpus_per_worker
    if cpus > limits.max_cpus_per_trial:
        raise ValueError(
            f"scaling.cpus_per_worker: {num_workers} workers x {cpus_per_worker} CPUs = "
            f"{cpus} CPUs per trial, over {by}, {limits.max_cpus_per_trial}"
        )
    gpus = num_workers * gpus_per_worker
    if gpus > limits.max_gpus_per_trial:
        raise ValueError(
            f"scaling.use_gpu: {num_workers} workers x {gpus_per_worker:g} GPUs = "
            f"{gpus:g} GPUs per trial, over {by}, {limits.max_gpus_per_trial:g}"
        )
