"""Helpers over config fields: plain-data checks and "did you mean" suggestions.

`check_plain_data` keeps free-form sections (`train.params`) to what YAML, JSON and a
Ray trial config carry unchanged: strings, numbers, booleans, null, lists and mappings
with string keys. `closest_field` turns pydantic's "extra fields not permitted" into a
pointer at the field the user most likely meant (`epochs` at a spec's top level:
`train.epochs`), with difflib's ratio, as Python's own NameError suggestions do.
"""

from __future__ import annotations

import difflib
import math
import types
from collections.abc import Iterator, Sequence
from typing import Any, Union, get_args, get_origin

from pydantic import BaseModel

__all__ = ["check_plain_data", "closest", "closest_field", "field_paths"]

_MAX_DEPTH = 6  # nesting of configs is far shallower; guards a self-referencing model


def check_plain_data(value: Any, where: str) -> None:
    """ValueError naming the path of the first value that is not plain data."""
    if value is None or isinstance(value, str | bool | int):
        return
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"{where}: {value!r} is not a finite number; use a finite float")
        return
    if isinstance(value, list | tuple):
        for i, item in enumerate(value):
            check_plain_data(item, f"{where}[{i}]")
        return
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise ValueError(f"{where}: key {key!r} is not a string; write it as text")
            check_plain_data(item, f"{where}.{key}")
        return
    raise ValueError(
        f"{where}: a {type(value).__name__} is not plain data; use numbers, strings, "
        "booleans, null, lists or mappings"
    )


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    """The pydantic models an annotation holds (`X`, `X | None`)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    if get_origin(annotation) in (Union, types.UnionType):
        return [m for a in get_args(annotation) for m in _models_in(a)]
    return []


def field_paths(model: type[BaseModel], prefix: str = "", depth: int = 0) -> Iterator[str]:
    """Every dotted field path of `model`, nested models included."""
    for name, info in model.model_fields.items():
        path = f"{prefix}{name}"
        yield path
        if depth < _MAX_DEPTH:
            for sub in _models_in(info.annotation):
                yield from field_paths(sub, f"{path}.", depth + 1)


def closest(key: str, known: Sequence[str]) -> str:
    """' (did you mean 'x'?)' for the closest of `known` to `key`, or ''."""
    near = difflib.get_close_matches(key, list(known), n=1, cutoff=0.6)
    return f" (did you mean {near[0]!r}?)" if near else ""


def closest_field(model: type[BaseModel], loc: Sequence[Any], prefix: str = "") -> str:
    """' (did you mean 'train.epochs'?)' for an unknown field at `loc` of `model`, or ''.

    A field of the same name elsewhere in the tree wins (a path one level off); else the
    closest spelling in the same section; else the closest path anywhere."""
    key = str(loc[-1]) if loc else ""
    section = ".".join(str(p) for p in loc[:-1] if not isinstance(p, int))
    paths = list(field_paths(model))
    same_name = [p for p in paths if p.rsplit(".", 1)[-1] == key]
    if same_name:
        found = min(same_name, key=lambda p: (p.count("."), p))
    else:
        here = [p for p in paths if p.rpartition(".")[0] == section]
        by_leaf = difflib.get_close_matches(
            key, [p.rsplit(".", 1)[-1] for p in here], n=1, cutoff=0.6
        )
        if by_leaf:
            found = f"{section}.{by_leaf[0]}" if section else by_leaf[0]
        else:
            near = difflib.get_close_matches(".".join(map(str, loc)), paths, n=1, cutoff=0.6)
            if not near:
                return ""
            found = near[0]
    full = f"{prefix}.{found}" if prefix else found
    return f" (did you mean {full!r}?)"
