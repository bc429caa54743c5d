"""A spec's own code (factories, augmentations, train.loop): checked on the driver, shipped.

The REST server never calls anything here: it validates factory strings as text
(trainables.core.config) and leaves importing to the job. `cpsweep run` / `cpsweep train`
add the spec's directory to the import path, then `preflight` imports every factory
the sweep can reach and checks that its signature accepts the configured keyword
arguments, so a typo fails before Ray starts instead of in every trial. The data
factory itself is not called on the driver: it may load gigabytes; a trial that
fails in it names `data.factory`.

On a cluster the trials import from the job's working directory (this project) and
PYTHONPATH. `runtime_env_for` adds the rest: directories inside the working
directory go by relative path in $CPSWEEP_IMPORT_PATH; a module outside it travels
as a Ray `py_modules` entry (a .py file or a package directory).
"""

from __future__ import annotations

import copy
import inspect
import os
from pathlib import Path
from typing import Any

from service.spec import SweepSpec, arms_of
from trainables.core.config import TrainConfig, set_dotted
from trainables.core.imports import IMPORT_PATH_ENV, FactoryError, module_origin, resolve
from trainables.run.user_loop import load_loop

__all__ = ["add_import_dir", "factory_configs", "preflight", "runtime_env_for"]

_FIELDS = {"model": "model.factory", "data": "data.factory"}


def add_import_dir(path: str | Path) -> None:
    """Search `path` first for user modules, here and in trials started after this call."""
    full = str(Path(path).expanduser().resolve())
    env = [p for p in os.environ.get(IMPORT_PATH_ENV, "").split(os.pathsep) if p]
    if full not in env:
        os.environ[IMPORT_PATH_ENV] = os.pathsep.join([full, *env])


def factory_configs(spec: SweepSpec) -> list[TrainConfig]:
    """The base train config and every variant a search-space value or arm makes of it."""
    base = spec.train.model_dump()
    variants = [spec.train]
    overrides = [
        {path: value} for path, dim in spec.search_space.items() for value in dim.values_for_check()
    ]
    if spec.search_space:  # the union of all searched keys (kwargs of a factory all at once)
        overrides.append({p: d.values_for_check()[0] for p, d in spec.search_space.items()})
    for changes in [*overrides, *arms_of(spec).values()]:
        tree = copy.deepcopy(base)
        for path, value in changes.items():
            set_dotted(tree, path, value)
        variants.append(TrainConfig.model_validate(tree))
    return variants


# How cpsweep calls each kind of user code, for signature errors.
_CALLS = {
    "model": "factory(input_shape=<one sample's shape>, num_classes=<int>, **model.kwargs), "
    "returning an nn.Module",
    "data": "factory(**data.kwargs), returning (train, val[, test], num_classes)",
    "augment": "fn(x, g) on each training batch (x: the float batch, g: a torch.Generator), "
    "returning a tensor of x's shape",
}


def _check_signature(
    fn: Any, target: str, field: str, kwargs: dict[str, Any], args: tuple[Any, ...] = ()
) -> None:
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):  # builtins without a signature: the call will tell
        return
    try:
        sig.bind(*args, **kwargs)
    except TypeError as exc:
        kind = "augment" if args else field.split(".")[0]
        fix = "the function" if args else f"{kind}.kwargs or the function"
        raise FactoryError(
            f"{field}: {target}{sig} cannot be called as cpsweep calls it, "
            f"{_CALLS[kind]} ({exc}); fix {fix}"
        ) from None


def _factories(cfg: TrainConfig) -> list[tuple[str, str, dict[str, Any], tuple[Any, ...]]]:
    """(field, target, kwargs, positional args) of every factory and augmentation of `cfg`,
    with the arguments cpsweep passes besides the user's kwargs."""
    out: list[tuple[str, str, dict[str, Any], tuple[Any, ...]]] = []
    for part in ("model", "data"):
        section = getattr(cfg, part)
        if section.factory is not None:
            kwargs = dict(section.kwargs)
            if part == "model":  # what TrainingRun passes besides the user's kwargs
                kwargs.update(input_shape=(1, 1, 1), num_classes=2)
            out.append((_FIELDS[part], section.factory, kwargs, ()))
    for name in ("critical", "after"):
        fn = getattr(cfg.recipe, name).augment_fn
        if fn is not None:
            out.append((f"recipe.{name}.augment_fn", fn, {}, (None, None)))
    return out


def preflight(spec: SweepSpec) -> int:
    """Import every factory, augmentation and loop the sweep reaches and check its
    signature; returns how many."""
    seen: set[tuple[str, str, tuple[str, ...]]] = set()
    for cfg in factory_configs(spec):
        for field, target, kwargs, args in _factories(cfg):
            key = (field, target, tuple(sorted(kwargs)))
            if key in seen:
                continue
            seen.add(key)
            fn = resolve(target, field=field)
            if not callable(fn):
                raise FactoryError(f"{field}: {target!r} is not callable")
            _check_signature(fn, target, field, kwargs, args)
        if cfg.loop is not None and ("train.loop", cfg.loop, ()) not in seen:
            seen.add(("train.loop", cfg.loop, ()))
            load_loop(cfg.loop)  # imports it and checks fit(ctx); it runs only in trials
    return len(seen)


def runtime_env_for(spec: SweepSpec, working_dir: str | Path) -> dict[str, Any]:
    """runtime_env additions that make the spec's factories importable on a cluster whose
    job runs in `working_dir`; empty when the spec has none (or they are installed)."""
    root = Path(working_dir).resolve()
    local = [Path(p) for p in os.environ.get(IMPORT_PATH_ENV, "").split(os.pathsep) if p]
    local.append(Path.cwd())
    rel_dirs: list[str] = []
    modules: list[str] = []
    for cfg in factory_configs(spec):
        augments = (cfg.recipe.critical.augment_fn, cfg.recipe.after.augment_fn)
        for target in (cfg.model.factory, cfg.data.factory, cfg.loop, *augments):
            if target is None:
                continue
            origin = module_origin(target)
            if origin is None:
                continue  # not found here: it must be installed on the cluster
            top = Path(origin).resolve()
            base = top.parent  # the directory that makes the top-level module importable
            if not any(base == d.resolve() for d in local):
                continue  # an installed package (site-packages): not ours to ship
            if base == root or root in base.parents:
                rel = str(base.relative_to(root)) or "."
                if rel not in rel_dirs:
                    rel_dirs.append(rel)
            elif str(top) not in modules:
                modules.append(str(top))
    env: dict[str, Any] = {}
    if rel_dirs:
        env["env_vars"] = {IMPORT_PATH_ENV: os.pathsep.join(rel_dirs)}
    if modules:
        env["py_modules"] = modules
    return env
