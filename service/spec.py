"""SweepSpec: a sweep as YAML, validated with pydantic, turned into a Tune param space.

```yaml
name: quickstart
train: {epochs: 15, data: {name: digits}, ...}     # trainables.core.config.TrainConfig
search_space:                                       # any dotted path into `train`
  optim.name: {grid: [sgd, adam]}
  optim.lr: {loguniform: [0.001, 0.1]}
arms:                                               # optional named variants (grid over them)
  baseline: {criterion.name: never}
num_samples: 1
scheduler: {scope: trial, mode: push}
```
"""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from service.limits import LIMITS_CONTEXT, SpecLimits, check_limits, non_finite
from trainables.core.config import (
    COHORT_KEYS,
    ConfigError,
    CriterionConfig,
    TrainConfig,
    format_validation_error,
    set_dotted,
)
from trainables.core.trial import OPTIONS_KEY, TrialOptions
from trainables.core.wire import TEST_PREFIX, VAL_ACC, Headline

__all__ = [
    "BASELINE_ARM",
    "NAME_PATTERN",
    "Dimension",
    "SweepSpec",
    "arms_of",
    "base_train",
    "build_param_space",
    "count_trials",
    "load_spec",
    "runs_full_recipe",
]

# Letters, digits, '_', '.', '-', starting with a letter or digit: no '.', '..' or hidden
# names, since the name becomes a directory (runs/<name>) and part of a Ray job id.
NAME_PATTERN = r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}"
_MAX_LIST = 1000  # values in one grid/choice: each is validated as a TrainConfig up front


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class Dimension(_Strict):
    """One searched value: exactly one of the keys below."""

    grid: list[Any] | None = Field(
        None, min_length=1, max_length=_MAX_LIST, description="Every value (grid search)."
    )
    choice: list[Any] | None = Field(
        None, min_length=1, max_length=_MAX_LIST, description="Sampled uniformly."
    )
    uniform: tuple[float, float] | None = Field(None, description="[low, high].")
    loguniform: tuple[float, float] | None = Field(None, description="[low, high], both > 0.")
    randint: tuple[int, int] | None = Field(None, description="[low, high) integers.")

    @model_validator(mode="after")
    def _exactly_one(self) -> Dimension:
        given = [
            k
            for k in ("grid", "choice", "uniform", "loguniform", "randint")
            if getattr(self, k) is not None
        ]
        if len(given) != 1:
            raise ValueError(
                f"give exactly one of grid, choice, uniform, loguniform, randint (got {given})"
            )
        for k in ("uniform", "loguniform", "randint"):
            bounds = getattr(self, k)
            if bounds is not None and not bounds[0] < bounds[1]:
                raise ValueError(f"{k}: low must be below high, got {list(bounds)}")
        if self.loguniform is not None and self.loguniform[0] <= 0:
            raise ValueError(f"loguniform: bounds must be > 0, got {list(self.loguniform)}")
        return self

    def values_for_check(self) -> list[Any]:
        """Representative values, used to validate the dotted path before any trial runs."""
        if self.grid is not None:
            return list(self.grid)
        if self.choice is not None:
            return list(self.choice)
        bounds = self.uniform or self.loguniform or self.randint
        assert bounds is not None
        return [bounds[0]]

    def to_tune(self) -> Any:
        from ray import tune

        if self.grid is not None:
            return tune.grid_search(self.grid)
        if self.choice is not None:
            return tune.choice(self.choice)
        if self.uniform is not None:
            return tune.uniform(*self.uniform)
        if self.loguniform is not None:
            return tune.loguniform(*self.loguniform)
        assert self.randint is not None
        return tune.randint(*self.randint)


_MAX_TRIALS_PER_GPU = 64  # finer fractions only queue kernels behind each other


class ScalingSpec(_Strict):
    num_workers: int = Field(
        1, ge=1, le=1024, description="Ray Train workers (DDP ranks) per trial."
    )
    cpus_per_worker: int = Field(
        1, ge=1, le=256, description="CPUs (and torch threads) per worker."
    )
    use_gpu: bool = Field(
        False, description="Train on GPUs (gpus_per_worker each); NCCL backend, AMP."
    )
    gpus_per_worker: float | None = Field(
        None,
        gt=0,
        le=64,
        description=(
            "GPUs per worker when use_gpu: a fraction 1/n (0.5, 0.25, ...) packs n trials "
            "on one GPU, a whole number gives each worker that many; None = 1."
        ),
    )
    executor: Literal["auto", "train", "inline"] = Field(
        "auto",
        description=(
            "train: every trial runs a Ray Train TorchTrainer; inline: the loop runs in the "
            "Tune trial's process (one worker only; no per-trial Train start-up); "
            "auto: inline for num_workers=1, train otherwise."
        ),
    )
    worker_pool: bool = Field(
        False,
        description=(
            "train executor: false (default) runs each trial on a Ray Train TorchTrainer "
            "(Ray Train's worker group, failure handling and checkpoints); true runs its "
            "ranks on warm rank actors that the trial driver keeps for its next trial "
            "(processes, process group and datasets reused), which saves Train's start-up "
            "per trial in sweeps of many short DDP trials."
        ),
    )

    @model_validator(mode="after")
    def _inline_is_one_worker(self) -> ScalingSpec:
        if self.executor == "inline" and self.num_workers != 1:
            raise ValueError(
                f"executor 'inline' runs one worker but num_workers={self.num_workers}; "
                "use executor 'train' (or 'auto') for DDP trials"
            )
        return self

    @model_validator(mode="after")
    def _gpu_share_is_sensible(self) -> ScalingSpec:
        g = self.gpus_per_worker
        if g is None:
            return self
        if not self.use_gpu:
            raise ValueError(
                f"gpus_per_worker={g} is set but use_gpu is false; set use_gpu: true "
                "(or remove gpus_per_worker)"
            )
        if g > 1 and g != int(g):
            raise ValueError(
                f"gpus_per_worker={g}: above 1 it must be a whole number of GPUs "
                f"(Ray cannot split a worker over GPUs); use {int(g)} or {int(g) + 1}"
            )
        if g < 1:
            n = round(1 / g)
            if n > _MAX_TRIALS_PER_GPU or abs(n * g - 1) > 0.01:
                raise ValueError(
                    f"gpus_per_worker={g}: a fraction must split one GPU evenly, 1/n with "
                    f"n <= {_MAX_TRIALS_PER_GPU} (0.5, 0.333, 0.25, 0.2, ...); "
                    f"{g} would leave {1 - int(1 / g) * g:.3g} of every GPU unused"
                )
            if self.num_workers > 1:
                raise ValueError(
                    f"gpus_per_worker={g} with num_workers={self.num_workers}: two DDP ranks "
                    "could share one GPU, which NCCL refuses; give DDP workers whole GPUs "
                    "(gpus_per_worker: 1) or pack single-worker trials"
                )
        return self

    @property
    def gpus(self) -> float:
        """GPUs each worker holds: 0 without use_gpu, else gpus_per_worker (default 1)."""
        if not self.use_gpu:
            return 0.0
        return float(self.gpus_per_worker or 1)

    @property
    def resolved_executor(self) -> str:
        """'inline' or 'train': where this sweep's trials run their loop."""
        if self.executor == "auto":
            return "inline" if self.num_workers == 1 else "train"
        return self.executor


class InnerSchedulerSpec(_Strict):
    name: Literal["asha"] = Field(
        "asha", description="Scheduler for stop decisions after the period."
    )
    metric: str | None = Field(
        None,
        description="Reported metric ASHA compares (validation, never test/*); "
        "None: the headline, train.metric.",
    )
    mode: Literal["max", "min"] | None = Field(
        None, description="max or min; None: the headline's mode (or max for another metric)."
    )
    grace_period: int = Field(1, ge=1, description="Epochs before ASHA may stop a trial.")
    reduction_factor: float = Field(3, gt=1)

    def compared(self, headline: Headline) -> tuple[str, Literal["max", "min"]]:
        """(metric, mode) ASHA compares: these fields, else the sweep's headline."""
        metric = self.metric or headline.key
        return metric, self.mode or (headline.mode if metric == headline.key else "max")

    @field_validator("metric")
    @classmethod
    def _not_test(cls, v: str | None) -> str | None:
        if v is not None and v.startswith(TEST_PREFIX):
            raise ValueError(
                f"{v!r} is measured on the test split, which no decision may read; "
                f"compare a validation metric such as {VAL_ACC!r}"
            )
        return v


class SchedulerSpec(_Strict):
    scope: Literal["trial", "cohort"] = Field(
        "trial", description="trial: each trial on its own (paper); cohort: share the median end."
    )
    cohort_keys: list[str] = Field(
        default_factory=lambda: list(COHORT_KEYS),
        description="Dotted train paths whose values define a cohort.",
    )
    cohort_min_trials: int = Field(2, ge=1, description="Detections before the median applies.")
    mode: Literal["push", "sync", "async"] = Field(
        "push", description="How decisions reach trials; push and sync switch with zero lag."
    )
    inner: InnerSchedulerSpec | None = Field(None, description="Optional stop scheduler (ASHA).")


class FailureSpec(_Strict):
    worker_failures: int = Field(
        2, ge=-1, description="Worker-group restarts per trial (from checkpoint)."
    )
    trial_failures: int = Field(0, ge=-1, description="Tune retries of a whole trial.")


class TrackingSpec(_Strict):
    enabled: bool = Field(True, description="Log the sweep to MLflow.")
    uri: str | None = Field(
        None, description="MLflow tracking URI; None: $MLFLOW_TRACKING_URI or sqlite:///mlflow.db."
    )
    experiment: str | None = Field(None, description="MLflow experiment; None uses the sweep name.")
    request_timeout_s: int = Field(
        10, ge=1, le=600, description="Per-request MLflow client timeout (the writer retries)."
    )
    drain_timeout_s: float = Field(
        30.0,
        ge=0,
        description="At the end of a sweep, wait this long for MLflow to take what is queued; "
        "the rest stays in the tracking log for `cpsweep sync`.",
    )
    plots: bool = Field(True, description="Log each trial's rotation and accuracy charts.")
    writer_threads: int = Field(
        8, ge=1, le=64, description="Runs written to an MLflow server side by side."
    )
    wal_max_mb: int = Field(
        4096,
        ge=1,
        description="Bound of the tracking log while MLflow is unreachable (warnings from 256 MB).",
    )


class AccountingSpec(_Strict):
    country_iso_code: str = Field("USA", description="Grid carbon intensity of this country.")
    carbon_g_per_kwh: float | None = Field(None, gt=0, description="Explicit intensity; wins.")
    device: str | None = Field(None, description="Price-table device; None: cpu-core or the GPU.")
    energy_usd_per_kwh: float | None = Field(None, ge=0, description="Add energy at this price.")
    measure_energy: bool = Field(True, description="Run CodeCarbon on every worker.")


class SweepSpec(_Strict):
    name: str = Field(
        ...,
        description="Sweep name: letters, digits, '_', '.', '-', starting with a letter or "
        "digit (at most 100); names the output directory.",
    )
    description: str = ""
    train: TrainConfig = Field(default_factory=TrainConfig)
    search_space: dict[str, Dimension] = Field(default_factory=dict)
    arms: dict[str, dict[str, Any]] = Field(
        default_factory=dict,
        description="Named variants: {arm: {dotted.path: value}}, grid over arms.",
    )
    baseline_arm: bool = Field(
        False,
        description="Also run every configuration with criterion `never` (the full recipe "
        "throughout) and report measured savings beside the estimate.",
    )
    num_samples: int = Field(1, ge=1, le=100_000, description="Repeats of the whole grid.")
    max_concurrent_trials: int | None = Field(None, ge=1, description="None: fit to the CPUs.")
    scaling: ScalingSpec = Field(default_factory=ScalingSpec)
    criterion: CriterionConfig | None = Field(
        None, description="Scheduler-wide rule; None uses each trial's train.criterion."
    )
    scheduler: SchedulerSpec = Field(default_factory=SchedulerSpec)
    failures: FailureSpec = Field(default_factory=FailureSpec)
    tracking: TrackingSpec = Field(default_factory=TrackingSpec)
    accounting: AccountingSpec = Field(default_factory=AccountingSpec)

    @field_validator("name")
    @classmethod
    def _name_ok(cls, v: str) -> str:
        if not re.fullmatch(NAME_PATTERN, v):
            raise ValueError(
                f"name {v[:120]!r} may only hold letters, digits, '_', '.', '-' (at most 100), "
                "starting with a letter or digit"
            )
        return v

    @model_validator(mode="before")
    @classmethod
    def _finite(cls, data: Any) -> Any:
        """NaN and infinities are refused anywhere, also inside `train` and grids."""
        where = non_finite(data)
        if where is not None:
            path, value = where
            raise ValueError(f"{path}: {value} is not a finite number; give a finite value")
        return data

    @model_validator(mode="after")
    def _within_limits(self, info: ValidationInfo) -> SweepSpec:
        """Before `_paths_exist` (pydantic runs after-validators in order): cheap first."""
        limits = (info.context or {}).get(LIMITS_CONTEXT) or SpecLimits()
        _check_limits(self, limits)
        return self

    @model_validator(mode="after")
    def _paths_exist(self) -> SweepSpec:
        """Every searched path and arm override must yield a valid TrainConfig."""
        base = self.train.model_dump()
        for path, dim in self.search_space.items():
            for value in dim.values_for_check():
                _check_train(base, {path: value}, f"search_space.{path}")
        for arm, overrides in self.arms.items():
            _check_train(base, overrides, f"arms.{arm}")
        return self


def count_trials(spec: SweepSpec) -> int:
    """Trials Tune will create: num_samples x every grid's length x the arms."""
    n = spec.num_samples * max(1, len(arms_of(spec)))
    for dim in spec.search_space.values():
        n *= len(dim.grid) if dim.grid is not None else 1
    return n


def _check_limits(spec: SweepSpec, limits: SpecLimits) -> None:
    sc = spec.scaling
    grids = {p: len(d.grid) for p, d in spec.search_space.items() if d.grid}
    check_limits(
        limits,
        trials=count_trials(spec),
        grids=grids,
        arms=max(1, len(arms_of(spec))),
        num_samples=spec.num_samples,
        num_workers=sc.num_workers,
        cpus_per_worker=sc.cpus_per_worker,
        gpus_per_worker=sc.gpus,
    )


def _check_train(base: dict[str, Any], overrides: dict[str, Any], where: str) -> None:
    trial = copy.deepcopy(base)
    try:
        for path, value in overrides.items():
            set_dotted(trial, path, value)
        TrainConfig.model_validate(trial)
    except ConfigError as exc:
        raise ValueError(f"{where}: {exc}") from None
    except ValidationError as exc:
        raise ValueError(f"{where}: {format_validation_error(exc, 'train', TrainConfig)}") from None


BASELINE_ARM = "baseline"  # the arm `baseline_arm: true` adds; measured savings compare to it


def arms_of(spec: SweepSpec) -> dict[str, dict[str, Any]]:
    """The spec's arms, plus `baseline` (criterion never) when `baseline_arm` is set."""
    arms = dict(spec.arms)
    if spec.baseline_arm:
        arms = arms or {"cp": {}}
        arms[BASELINE_ARM] = {"criterion.name": "never"}
    return arms


def runs_full_recipe(arm: str | None, criterion: str | None) -> bool:
    """Whether a trial runs the full recipe throughout: the baseline arm, or any trial whose
    rule is `never`. Its estimated saving means nothing (n/a); the report lists it last."""
    return arm == BASELINE_ARM or criterion == "never"


def base_train(spec: SweepSpec) -> dict[str, Any]:
    """Every trial's train config before its arm and sampled values are applied."""
    train = spec.train.model_dump()
    if spec.criterion is not None:  # the sweep-wide rule is every trial's default; arms win
        train["criterion"] = spec.criterion.model_dump()
    return train


def build_param_space(spec: SweepSpec, opts: TrialOptions) -> dict[str, Any]:
    """Tune param space: `train` (base), `params` (sampled dotted paths), `arm`, and the
    trial options with the spec's arms under OPTIONS_KEY, as the frozen object itself
    (trainables/core/trial.py says why). A trial resolves its train config from it with
    trainables.core.trial.train_dict_for."""
    space: dict[str, Any] = {
        "train": base_train(spec),
        "params": {path: dim.to_tune() for path, dim in spec.search_space.items()},
        OPTIONS_KEY: opts.model_copy(update={"arms": arms_of(spec)}),
    }
    if arms_of(spec):
        from ray import tune

        space["arm"] = tune.grid_search(list(arms_of(spec)))
    return space


def load_spec(path: str | Path, overrides: list[str] | None = None) -> SweepSpec:
    """Read and validate a YAML sweep spec; ConfigError names every bad field."""
    from service.configio import load_model, read_yaml

    return load_model(SweepSpec, read_yaml(path), overrides, source=str(path))
