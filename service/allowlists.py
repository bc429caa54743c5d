"""What a caller of the REST API may point a sweep at: MLflow URIs and dataset roots.

A spec from the API runs with the cluster's permissions, so the server accepts only
what its operator listed: `tracking.uri` equal to the server's own MLflow URI or one
of `CPSWEEP_TRACKING_URIS` (comma-separated; `--allowed-tracking-uri`), and dataset
roots under `CPSWEEP_DATA_ROOTS` (trainables.dataroots; unset: no `data.root` at all).
These checks are text only; the cluster re-checks data roots when it loads them.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from typing import Any

from service.spec import SweepSpec
from trainables.dataroots import DATA_ROOTS_ENV, within

__all__ = [
    "TRACKING_URIS_ENV",
    "allowed_tracking_uris",
    "data_root_problems",
    "tracking_uri_problem",
]

TRACKING_URIS_ENV = "CPSWEEP_TRACKING_URIS"
_ROOT_KEY = "data.root"


def allowed_tracking_uris(env: Mapping[str, str] | None = None) -> tuple[str, ...]:
    env = os.environ if env is None else env
    return tuple(u.strip() for u in env.get(TRACKING_URIS_ENV, "").split(",") if u.strip())


def tracking_uri_problem(
    uri: str | None, server_uri: str | None, allowed: tuple[str, ...]
) -> str | None:
    """Why a caller's tracking.uri is refused, or None when it is unset or allowed."""
    if uri is None or uri == server_uri or uri in allowed:
        return None
    own = f"this service logs to its own MLflow ({server_uri}); " if server_uri else ""
    return (
        f"{own}tracking.uri must be left unset or be one the operator allows "
        f"({TRACKING_URIS_ENV} / --allowed-tracking-uri: {', '.join(allowed) or 'none'})"
    )


def _roots_in(spec: SweepSpec) -> Iterator[tuple[list[Any], Any]]:
    """(loc, value) of every data.root the spec can set: train, grids, arms."""
    if spec.train.data.root is not None:
        yield ["train", "data", "root"], spec.train.data.root
    for path, dim in spec.search_space.items():
        if path == _ROOT_KEY:
            for value in dim.values_for_check():
                yield ["search_space", path], value
    for arm, overrides in spec.arms.items():
        if _ROOT_KEY in overrides:
            yield ["arms", arm, _ROOT_KEY], overrides[_ROOT_KEY]


def data_root_problems(
    spec: SweepSpec, roots: tuple[str, ...]
) -> Iterator[tuple[list[Any], Any, str]]:
    """(loc, value, message) for every data.root outside `roots` (empty: none allowed)."""
    for loc, value in _roots_in(spec):
        if value is None:
            continue
        if not roots:
            yield (
                loc,
                value,
                (
                    f"this server accepts no data.root; its operator lists dataset directories "
                    f"in {DATA_ROOTS_ENV}, or use a built-in dataset location"
                ),
            )
        elif not within(str(value), roots):
            yield (
                loc,
                value,
                (
                    f"data.root must lie under one of the directories this server allows "
                    f"({DATA_ROOTS_ENV}={os.pathsep.join(roots)})"
                ),
            )
