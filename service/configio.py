"""Reading config files into pydantic models with one clear line per problem.

Every spec and config goes through trainables.core.specdata (plain data only: no tags,
aliases or duplicate keys); a file that is missing, a directory, unreadable or not UTF-8
is a ConfigError naming it, so the CLI prints one line and exits 2.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from trainables.core.config import ConfigError, apply_overrides, format_validation_error
from trainables.core.specdata import SpecDataError, load_yaml

__all__ = ["load_model", "read_text", "read_yaml"]

M = TypeVar("M", bound=BaseModel)


def read_text(path: str | Path, what: str = "a YAML config") -> str:
    """The UTF-8 text of the file at `path`; ConfigError (one line) when it cannot be read."""
    p = Path(path)
    if p.is_dir():
        raise ConfigError(f"{p}: is a directory; pass the path of {what}")
    if not p.is_file():
        raise ConfigError(f"{p}: no such file; pass the path of {what}")
    try:
        data = p.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{p}: cannot read it ({exc.strerror or exc})") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"{p}: not UTF-8 text (byte 0x{data[exc.start]:02x} at offset {exc.start}); "
            "save it as UTF-8"
        ) from None


def read_yaml(path: str | Path) -> dict[str, Any]:
    p = Path(path)
    try:
        raw = load_yaml(read_text(p)) or {}
    except SpecDataError as exc:
        raise ConfigError(f"{p}: {exc}") from None
    if not isinstance(raw, dict):
        raise ConfigError(
            f"{p}: the top level must be a mapping of fields, got {type(raw).__name__}"
        )
    return raw


def load_model(
    model: type[M], raw: dict[str, Any], overrides: list[str] | None = None, source: str = ""
) -> M:
    """Validate `raw` (after `key.path=value` overrides) as `model`; ConfigError on failure,
    its problems on one line."""
    apply_overrides(raw, overrides or [])
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        where = f"{source}: " if source else ""
        problems = format_validation_error(exc, model=model).replace("\n", "; ")
        raise ConfigError(f"{where}invalid {model.__name__}: {problems}") from None
