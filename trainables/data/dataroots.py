"""Where datasets may be read from: the operator's allow-list `CPSWEEP_DATA_ROOTS`.

A spec that arrives through the REST API or as a submitted job names `data.root`
itself; on a shared cluster that must not reach arbitrary paths (the loaders read,
and mnist1d writes a cache, under it). When `CPSWEEP_DATA_ROOTS` is set
(`os.pathsep`-separated directories), every dataset root must resolve, symlinks
followed, to one of them or below; the check is lexical on the resolved path, so its
error never says whether a directory exists. Unset: no restriction (local use).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

__all__ = ["DATA_ROOTS_ENV", "DataRootNotAllowed", "allowed_roots", "check_data_root", "within"]

DATA_ROOTS_ENV = "CPSWEEP_DATA_ROOTS"


class DataRootNotAllowed(ValueError):
    """data.root lies outside the operator's allow-list."""


def allowed_roots(env: Mapping[str, str] | None = None) -> tuple[str, ...] | None:
    """The allow-list from the environment; None when unset (no restriction)."""
    env = os.environ if env is None else env
    value = env.get(DATA_ROOTS_ENV, "").strip()
    if not value:
        return None
    return tuple(p for p in value.split(os.pathsep) if p.strip())


def _resolved(path: str | Path) -> str:
    return os.path.realpath(os.path.expanduser(str(path)))


def within(path: str | Path, roots: Sequence[str]) -> bool:
    """True when `path`, resolved, is one of `roots` (resolved) or lies below one."""
    target = _resolved(path)
    for root in roots:
        base = _resolved(root)
        if target == base or target.startswith(base.rstrip(os.sep) + os.sep):
            return True
    return False


def check_data_root(path: str | Path, env: Mapping[str, str] | None = None) -> Path:
    """`path` resolved, or DataRootNotAllowed when an allow-list is set and excludes it."""
    roots = allowed_roots(env)
    if roots is None:
        return Path(path).expanduser()
    if not within(path, roots):
        raise DataRootNotAllowed(
            f"data.root {str(path)[:200]!r} is outside the dataset directories this "
            f"cluster allows ({DATA_ROOTS_ENV}={os.pathsep.join(roots)}); put the dataset "
            "under one of them or ask the operator to add its directory"
        )
    return Path(_resolved(path))
