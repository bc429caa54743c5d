"""Every value a field of a trial's train config can take, resolved as the trial resolves it.

A trial's train config is the spec's `train` (with the sweep-wide criterion), then its arm's
overrides, then its sampled search-space values, each a dotted path set in that order
(trainables.core.trial.train_dict_for, over the space service.spec.build_param_space
builds). Setting a path replaces what it holds, a whole section included, so the value a
trial ends with at `field` is the one the last writer of `field`, or of a section above it,
wrote there. Every value the field can take is therefore among:
- the base config with each arm applied (what no searched value overrides), and
- the base config with one listed value of one dimension whose path is `field` or a
  section above it (`data`, `data.root`): every `grid` and `choice` value.
That is arms + listed values configs, not the product of every grid. A dimension that
samples a range (uniform, loguniform, randint) over such a path has no list to check:
it is reported with `listed=False`.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from service.spec import SweepSpec, arms_of, base_train
from trainables.core.trial import train_dict_for

__all__ = ["FieldValue", "field_values"]


@dataclass(frozen=True)
class FieldValue:
    """One value a trial may get at a field, and where in the spec it comes from."""

    loc: tuple[Any, ...]  # ("train", "data", "root"), ("arms", arm, key), ("search_space", ...)
    value: Any  # None: unset there
    listed: bool = True  # False: drawn from a range, which cannot be enumerated


def _touches(path: str, field: str) -> bool:
    return field == path or field.startswith(path + ".")


def _at(tree: Any, field: str) -> Any:
    for part in field.split("."):
        if not isinstance(tree, dict):
            return None
        tree = tree.get(part)
    return tree


def field_values(spec: SweepSpec, field: str) -> Iterator[FieldValue]:
    """Every value trials of `spec` can have at the dotted train path `field` (see above)."""
    arms = arms_of(spec)
    space: dict[str, Any] = {"train": base_train(spec)}

    def resolved(arm: str | None, params: dict[str, Any]) -> Any:
        return _at(train_dict_for({**space, "arm": arm, "params": params}, arms), field)

    yield FieldValue(("train", *field.split(".")), resolved(None, {}))
    for arm, overrides in arms.items():
        keys = [k for k in overrides if _touches(k, field)]
        if keys:
            yield FieldValue(("arms", arm, keys[-1]), resolved(arm, {}))
    for path, dim in spec.search_space.items():
        if not _touches(path, field):
            continue
        kind, values = ("grid", dim.grid) if dim.grid is not None else ("choice", dim.choice)
        if values is None:  # a range: every sample is a number, none can be listed
            yield FieldValue(("search_space", path), dim.values_for_check()[0], listed=False)
            continue
        for i, value in enumerate(values):
            yield FieldValue(("search_space", path, kind, i), resolved(None, {path: value}))
