"""Where datasets may be read from: the cluster's `CPSWEEP_DATA_ROOTS` and the job's policy.

A spec that arrives through the REST API or as a submitted job names `data.root`
itself; on a shared cluster that must not reach arbitrary paths (the loaders read,
and mnist1d writes a cache, under it). Two lists bind it, each when present: the cluster's
own `CPSWEEP_DATA_ROOTS` (`os.pathsep`-separated directories) and the data roots of the
policy a REST job carries (trainables.core.policy; none listed there: no data.root at all).
A root must resolve, symlinks followed, to a listed directory or below; the check is
lexical on the resolved path, so its error never says whether a directory exists.
Neither present: no restriction (local use).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from trainables.core.policy import DATA_ROOTS_ENV, Policy, PolicyError, within

__all__ = ["DATA_ROOTS_ENV", "DataRootNotAllowed", "allowed_roots", "check_data_root", "within"]


class DataRootNotAllowed(PolicyError):
    """data.root lies outside the operator's allow-list."""


def allowed_roots(env: Mapping[str, str] | None = None) -> tuple[str, ...] | None:
    """The allow-list from the environment; None when unset (no restriction)."""
    env = os.environ if env is None else env
    value = env.get(DATA_ROOTS_ENV, "").strip()
    if not value:
        return None
    return tuple(p for p in value.split(os.pathsep) if p.strip())


def check_data_root(path: str | Path, env: Mapping[str, str] | None = None) -> Path:
    """`path` (resolved when a list applies), or DataRootNotAllowed when one excludes it."""
    policy = Policy.from_env(env)
    if policy is not None:
        try:
            policy.check_root(str(path))
        except PolicyError as exc:
            raise DataRootNotAllowed(str(exc)) from None
    roots = allowed_roots(env)
    if roots is not None and not within(path, roots):
        raise DataRootNotAllowed(
            f"data.root {str(path)[:200]!r} is outside the dataset directories this "
            f"cluster allows ({DATA_ROOTS_ENV}={os.pathsep.join(roots)}); put the dataset "
            "under one of them or ask the operator to add its directory"
        )
    if policy is None and roots is None:
        return Path(path).expanduser()
    return Path(os.path.realpath(os.path.expanduser(str(path))))
