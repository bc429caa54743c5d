"""Training configuration: one pydantic model shared by `cpsweep train` and sweeps.

Every component owns a nested config; `TrainConfig` composes them. All models
forbid unknown fields, so a typo fails with the field path instead of being
silently ignored. Presets are plain functions returning configs (see `paper_preset`).
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from trainables.core.fields import check_plain_data, closest, closest_field
from trainables.core.imports import check_target
from trainables.core.registry import CRITERIA, DATASETS, MODELS, OPTIMIZERS, Registry
from trainables.core.specdata import SpecDataError, load_yaml
from trainables.core.wire import Headline

__all__ = [
    "COHORT_KEYS",
    "FREE_PARAMS",
    "VAL_FRACTION",
    "AugmentConfig",
    "ConfigError",
    "CriterionConfig",
    "DataConfig",
    "MetricConfig",
    "ModelConfig",
    "OptimConfig",
    "PhaseConfig",
    "PruneConfig",
    "RecipeConfig",
    "TrainConfig",
    "apply_overrides",
    "format_validation_error",
    "paper_preset",
    "set_dotted",
]


# The train paths that say which model, data and optimizer a trial uses: the scheduler's
# default cohort (trials that share an end of the period). A factory names its model or
# data as much as a registered name does.
COHORT_KEYS: tuple[str, ...] = (
    "model.name",
    "model.factory",
    "data.name",
    "data.factory",
    "optim.name",
)

FREE_PARAMS = "params"  # TrainConfig's free-form section for a user's own loop (ctx.params)

VAL_FRACTION = 0.1  # default share of the training data held out for validation


class ConfigError(ValueError):
    """A configuration value is wrong; the message names the field path and the fix."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class _Buildable(_Strict):
    """Exactly one of a registered `name` and a user's `factory`, plus `kwargs` for it."""

    name: str | None = Field(
        None, description="A registered name (see trainables/core/registry.py)."
    )
    factory: str | None = Field(
        None, description="Your own builder as 'module:function' instead of a name."
    )
    kwargs: dict[str, Any] = Field(
        default_factory=dict,
        description="Keyword arguments for the factory; sweep them as e.g. model.kwargs.depth.",
    )

    _registry: ClassVar[Registry]

    @field_validator("name")
    @classmethod
    def _name_is_registered(cls, v: str | None) -> str | None:
        return None if v is None else cls._registry.check(v)

    @field_validator("factory")
    @classmethod
    def _factory_is_text(cls, v: str | None) -> str | None:
        # Text only: a server validating a spec must never import user code.
        return None if v is None else check_target(v, "factory")

    @property
    def label(self) -> str:
        """The name, or the factory's import path."""
        return self.name or self.factory or ""

    def _one_source(self, default: str, fixed: set[str]) -> None:
        if self.name is not None and self.factory is not None:
            raise ValueError(
                f"give exactly one of name ({self.name!r}) and factory ({self.factory!r})"
            )
        if self.factory is None:
            if self.name is None:
                self.name = default
            if self.kwargs:
                raise ValueError(f"kwargs apply to a factory; built-in {self.name!r} takes none")
        elif any(getattr(self, f) is not None for f in fixed):
            raise ValueError(
                f"{', '.join(sorted(fixed))} apply to built-ins; pass such values in kwargs"
            )


class DataConfig(_Buildable):
    """`name` is a registered dataset; `factory(**kwargs)` returns (train, val, num_classes)
    or (train, val, test, num_classes). Validation drives every decision, test is only
    measured (trainables/data/splits.py)."""

    _registry: ClassVar[Registry] = DATASETS

    root: str | None = Field(
        None, description="Directory holding the dataset files; None uses the dataset's default."
    )
    train_subset: int | None = Field(
        None, ge=10, description="Use a stratified random subset of this many training samples."
    )
    val_subset: int | None = Field(
        None,
        ge=10,
        description="Validate on a stratified random subset of this many validation samples.",
    )
    val_fraction: float = Field(
        VAL_FRACTION,
        ge=0.01,
        le=0.5,
        description="Built-ins: stratified share of the training data held out (fixed seed) "
        "as the validation split that every decision reads; the test split stays apart.",
    )
    test_every: int | None = Field(
        None,
        ge=1,
        description="Also evaluate the test split every N epochs; None: after the last epoch "
        "only. test/* metrics are reported, never read by a decision.",
    )
    image_size: int | None = Field(
        None, ge=8, le=512, description="Resize image-tree datasets to this square size."
    )
    stream: Literal["auto", "never", "always"] = Field(
        "auto",
        description="Train through a DataLoader. auto: when the data are Datasets (a factory's, "
        "or an image tree over max_memory_mb); never: load them into memory; always: tensors too.",
    )
    max_memory_mb: int = Field(
        4096, ge=1, description="auto streams built-in image trees whose pixels exceed this."
    )
    workers: int | None = Field(
        None,
        ge=0,
        le=64,
        description="DataLoader worker processes; None: torch CPU threads, at most 4.",
    )
    prefetch: int = Field(2, ge=1, le=64, description="Batches each loader worker prefetches.")

    @model_validator(mode="after")
    def _check_source(self) -> DataConfig:
        self._one_source("digits", {"root", "image_size"})
        # Compared with the default, not model_fields_set: a dumped config carries it.
        if self.factory is not None and self.val_fraction != VAL_FRACTION:
            raise ValueError(
                f"val_fraction={self.val_fraction} applies to built-in datasets; a factory "
                "returns its own validation split: return (train, val, test, num_classes)"
            )
        return self


class ModelConfig(_Buildable):
    """`name` is a registered model; `factory(input_shape=, num_classes=, **kwargs)` is yours."""

    _registry: ClassVar[Registry] = MODELS

    width: int = Field(
        32, ge=4, le=512, description="Base channel width of small_cnn / cnn1d (not factories)."
    )

    @model_validator(mode="after")
    def _check_source(self) -> ModelConfig:
        self._one_source("small_cnn", set())  # width: built-ins only
        return self


class OptimConfig(_Strict):
    name: str = Field(
        "sgd", description=f"Optimizer, a registered name ({', '.join(OPTIMIZERS.names())})."
    )
    lr: float = Field(0.05, gt=0, le=1e6, description="Peak learning rate.")
    momentum: float = Field(0.9, ge=0, lt=1, description="Momentum (SGD, RMSprop).")
    nesterov: bool = Field(True, description="Nesterov momentum (SGD only).")
    weight_decay: float = Field(5e-4, ge=0, le=1, description="L2 / decoupled weight decay.")
    schedule: Literal["step", "cosine", "constant"] = Field(
        "step", description="step: x gamma at each milestone (paper); cosine; constant."
    )
    milestones: list[float] = Field(
        default_factory=lambda: [0.5, 0.75],
        description="Step milestones as fractions of the epoch budget (paper: 50% and 75%).",
    )
    gamma: float = Field(0.1, gt=0, le=1, description="Step decay factor.")
    warmup_epochs: int = Field(0, ge=0, description="Linear warm-up epochs.")

    @field_validator("name")
    @classmethod
    def _registered(cls, v: str) -> str:
        return OPTIMIZERS.check(v)

    @model_validator(mode="after")
    def _check_milestones(self) -> OptimConfig:
        if any(not 0 < m < 1 for m in self.milestones) or self.milestones != sorted(
            self.milestones
        ):
            raise ValueError(
                f"milestones={self.milestones} must be increasing fractions in (0, 1), "
                "e.g. [0.5, 0.75]"
            )
        return self


class AugmentConfig(_Strict):
    rotation_deg: float = Field(15.0, ge=0, le=180, description="Max random rotation (paper 15).")
    translate: float = Field(0.1, ge=0, le=0.5, description="Max shift as a fraction of size.")
    hflip: bool = Field(True, description="Random horizontal flip (images only).")
    crop_padding: int = Field(0, ge=0, le=16, description="Random crop after zero padding.")


class PruneConfig(_Strict):
    """Loss-aware pruning of one phase (InfoBatch, trainables/method/infobatch.py)."""

    method: Literal["infobatch"] = Field(
        "infobatch", description="infobatch: drop a share of the samples with below-mean loss."
    )
    ratio: float = Field(
        0.5, gt=0, lt=1, description="Share of the below-mean-loss samples left out each epoch."
    )
    anneal: float = Field(
        0.875,
        gt=0,
        le=1,
        description="Full data again from epoch ceil(anneal * E) + 1 (1: prune to the end).",
    )


class PhaseConfig(_Strict):
    """Settings of every halting-capable training component during one phase."""

    repeats: int = Field(1, ge=1, le=16, description="Times each sample is seen per epoch.")
    augment: bool | Literal["auto"] = Field(
        "auto",
        description="Apply data augmentation. auto: on for images [C, H, W] and 1-D signals "
        "[C, L] (or with augment_fn), off for other inputs; true on other inputs is an error.",
    )
    augment_fn: str | None = Field(
        None,
        description="Your own augmentation 'module:function', called as fn(x, g) on each "
        "training batch (x: float [B, ...] before normalisation, g: a seeded torch.Generator) "
        "and returning a tensor of x's shape; replaces the built-in one in this phase.",
    )
    augment_strength: float = Field(
        1.0, ge=0, le=2, description="Scales rotation and translation ranges."
    )
    data_fraction: float = Field(
        1.0, gt=0, le=1, description="Stratified random fraction of the training set."
    )
    mixup_alpha: float = Field(
        0.0, ge=0, le=10, description="Mixup with lam ~ Beta(alpha, alpha) per batch; 0 = off."
    )
    cutmix_alpha: float = Field(
        0.0, ge=0, le=10, description="CutMix with lam ~ Beta(alpha, alpha) per batch; 0 = off."
    )
    prune: PruneConfig | None = Field(
        None, description="Loss-aware pruning (InfoBatch) in this phase; None = off."
    )

    @field_validator("augment_fn")
    @classmethod
    def _augment_fn_is_text(cls, v: str | None) -> str | None:
        return None if v is None else check_target(v, "augment_fn")

    @model_validator(mode="after")
    def _one_pruning(self) -> PhaseConfig:
        if self.prune is not None and self.data_fraction < 1:
            raise ValueError(
                f"prune (method {self.prune.method!r}) and data_fraction={self.data_fraction} "
                "both prune the data; set data_fraction to 1 or prune to null"
            )
        return self


class RecipeConfig(_Strict):
    critical: PhaseConfig = Field(
        default_factory=lambda: PhaseConfig(repeats=3),
        description="Recipe during the critical period (paper: repeats 3, augmented).",
    )
    after: PhaseConfig = Field(
        default_factory=lambda: PhaseConfig(repeats=1),
        description="Recipe after the period (paper: repeats 1, still augmented).",
    )
    anneal_ratio: float | None = Field(
        None,
        ge=0.5,
        le=0.99,
        description="With after.data_fraction < 1: full data again from "
        "switch + ceil((E - switch) * anneal_ratio).",
    )
    augmentation: AugmentConfig = Field(default_factory=AugmentConfig)

    @property
    def prunes(self) -> bool:
        """Some phase prunes by loss: the run keeps a per-sample loss table."""
        return self.critical.prune is not None or self.after.prune is not None


class CriterionConfig(_Strict):
    name: str = Field(
        "paper",
        description=f"Rule that ends the critical period ({', '.join(CRITERIA.names())}).",
    )
    window: int = Field(5, ge=2, le=50, description="Epochs in the fitted window (paper 5).")
    threshold_deg: float = Field(45.0, gt=0, lt=90, description="paper: end when angle < this.")
    ratio: float = Field(
        0.25, gt=0, lt=1, description="relative: end when rate / peak rate < ratio."
    )
    patience: int = Field(2, ge=1, le=20, description="relative: consecutive epochs below ratio.")
    fraction: float = Field(
        0.125, gt=0, le=1, description="fixed: period ends after this fraction of the budget."
    )

    @field_validator("name")
    @classmethod
    def _registered(cls, v: str) -> str:
        return CRITERIA.check(v)


class MetricConfig(_Strict):
    """The headline metric: what decisions (an inner ASHA) read and results rank by."""

    name: str = Field(
        ..., description="A validation key the loop reports, e.g. val/acc or val/loss."
    )
    mode: Literal["max", "min"] = Field(..., description="max: higher is better; min: lower.")

    @model_validator(mode="after")
    def _validation_key(self) -> MetricConfig:
        Headline(self.name, self.mode)  # raises ValueError naming the fix
        return self


class TrainConfig(_Strict):
    seed: int = Field(0, ge=0, description="Seeds model init, sampling and augmentation.")
    epochs: int = Field(15, ge=1, le=10_000, description="Planned epoch budget E.")
    batch_size: int = Field(128, ge=1, le=65_536, description="Global batch size.")
    data: DataConfig = Field(default_factory=DataConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    optim: OptimConfig = Field(default_factory=OptimConfig)
    recipe: RecipeConfig = Field(default_factory=RecipeConfig)
    criterion: CriterionConfig = Field(default_factory=CriterionConfig)
    device: Literal["auto", "cpu", "cuda"] = Field(
        "auto", description="auto picks CUDA if present."
    )
    amp: bool = Field(True, description="Mixed precision on CUDA (ignored on CPU).")
    compile: bool = Field(
        False, description="torch.compile the model (rotation still reads the raw weights)."
    )
    compile_backend: Literal["inductor", "aot_eager", "eager"] = Field(
        "inductor", description="torch.compile backend; eager/aot_eager only trace (tests)."
    )
    eval_every: int = Field(1, ge=1, description="Evaluate every N epochs (and the last).")
    num_threads: int | None = Field(None, ge=1, description="torch CPU threads; None = default.")
    loop: str | None = Field(
        None,
        description="Your own training loop, 'package.module:function', called as fn(ctx) "
        "in every trial (trainables/run/user_loop.py); None runs the built-in loop.",
    )
    metric: MetricConfig | None = Field(
        None,
        description="Headline metric and mode; None: val/acc (max) for the built-in "
        "loop, val/loss (min) for your own loop.",
    )

    params: dict[str, Any] = Field(
        default_factory=dict,
        description="Your own loop's hyperparameters (ctx.params): plain data (numbers, "
        "strings, booleans, null, lists, mappings); sweep them as e.g. params.hidden.",
    )

    @field_validator("loop")
    @classmethod
    def _check_loop(cls, v: str | None) -> str | None:
        return None if v is None else check_target(v, "loop")

    @field_validator("params")
    @classmethod
    def _params_are_data(cls, v: dict[str, Any]) -> dict[str, Any]:
        check_plain_data(v, "params")
        return v


def format_validation_error(
    err: ValidationError, prefix: str = "", model: type[BaseModel] | None = None
) -> str:
    """One line per problem: `path: value=... -> what is allowed`; an unknown field of
    `model` (the validated class) names the closest known field path."""
    lines = []
    for e in err.errors():
        path = ".".join(str(p) for p in (*([prefix] if prefix else []), *e["loc"]))
        value = e.get("input")
        shown = repr(value) if not isinstance(value, dict) else "{...}"
        msg = e["msg"]
        if e["type"] == "extra_forbidden":
            near = closest_field(model, e["loc"]) if model is not None else ""
            msg = f"unknown field{near}; remove it or check the spelling"
        lines.append(f"{path or '<root>'}: {msg} (got {shown})")
    return "\n".join(lines)


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply `a.b.c=value` overrides (values read as YAML plain data) to a dict, in place."""
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} must look like key.path=value")
        key, text = item.split("=", 1)
        node = raw
        parts = key.strip().split(".")
        for p in parts[:-1]:
            nxt = node.setdefault(p, {})
            if not isinstance(nxt, dict):
                raise ConfigError(f"override {item!r}: {p!r} is not a section")
            node = nxt
        try:
            node[parts[-1]] = load_yaml(text)
        except SpecDataError as exc:
            raise ConfigError(f"override {item!r}: {exc}") from None
    return raw


def paper_preset(**changes: Any) -> TrainConfig:
    """The authors' setup: SGD 0.01 Nesterov, steps at 50%/75%, repeats 3 -> 1, paper rule."""
    base = TrainConfig(
        epochs=200,
        batch_size=128,
        data=DataConfig(name="cifar10"),
        model=ModelConfig(name="resnet20"),
        optim=OptimConfig(name="sgd", lr=0.01, momentum=0.9, nesterov=True, weight_decay=0.0),
        recipe=RecipeConfig(),
        criterion=CriterionConfig(name="paper"),
    )
    return base.model_copy(update=changes)


def set_dotted(tree: dict[str, Any], path: str, value: Any) -> None:
    """Set `a.b.c` in a TrainConfig dict. Known fields must exist; below a free-form section
    (a factory's `kwargs`, e.g. model.kwargs.depth, or the loop's `params`) any key may be added."""
    node = tree
    parts = path.split(".")
    free = False  # below `kwargs` / `params`: the user's own keys, not our schema
    for depth, p in enumerate(parts[:-1]):
        nxt = node.get(p)
        if nxt is None and (free or (depth == 0 and p == FREE_PARAMS)):
            nxt = node[p] = {}
        if not isinstance(nxt, dict):
            raise ConfigError(f"{path}: {p!r} is not a section of the train config")
        node = nxt
        free = free or p == "kwargs" or (depth == 0 and p == FREE_PARAMS)
    if parts[-1] not in node and not free:
        hint = closest(parts[-1], list(node))
        raise ConfigError(f"{path}: no field {parts[-1]!r} here{hint}; known: {sorted(node)}")
    node[parts[-1]] = value
