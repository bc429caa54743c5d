"""Loading YAML configs into pydantic models with one clear message per problem."""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from trainables.core.config import ConfigError, apply_overrides, format_validation_error

__all__ = ["load_model", "read_yaml"]

M = TypeVar("M", bound=BaseModel)


def read_yaml(path: str | Path) -> dict[str, Any]:
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{p}: no such file; pass the path of a YAML config")
    try:
        raw = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{p}: not valid YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise ConfigError(
            f"{p}: the top level must be a mapping of fields, got {type(raw).__name__}"
        )
    return raw


def load_model(
    model: type[M], raw: dict[str, Any], overrides: list[str] | None = None, source: str = ""
) -> M:
    """Validate `raw` (after `key.path=value` overrides) as `model`; ConfigError on failure."""
    apply_overrides(raw, overrides or [])
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        where = f"{source}: " if source else ""
        raise ConfigError(
            f"{where}invalid {model.__name__}:\n{format_validation_error(exc)}"
        ) from exc
