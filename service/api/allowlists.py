"""What a caller of the REST API may point a sweep at: MLflow URIs and dataset roots.

A spec from the API runs with the cluster's permissions, so the server accepts only
what its operator listed: `tracking.uri` equal to the server's own MLflow URI or one
of `CPSWEEP_TRACKING_URIS` (comma-separated; `--allowed-tracking-uri`), and dataset
roots under `CPSWEEP_DATA_ROOTS` (trainables.data.dataroots; unset: no `data.root` at all).
Factories (`model.factory`, `data.factory`: 'module:function', called with the spec's
kwargs) and a user's `train.loop` run code on the cluster: only modules under a prefix in
`CPSWEEP_FACTORY_MODULES` (comma-separated; unset: none) are accepted from a caller.
These checks are text only; the cluster re-checks data roots when it loads them.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from typing import Any

from service.spec import SweepSpec
from trainables.data.dataroots import DATA_ROOTS_ENV, within

__all__ = [
    "FACTORY_MODULES_ENV",
    "TRACKING_URIS_ENV",
    "allowed_factory_modules",
    "allowed_tracking_uris",
    "data_root_problems",
    "factory_problems",
    "tracking_uri_problem",
]

TRACKING_URIS_ENV = "CPSWEEP_TRACKING_URIS"
FACTORY_MODULES_ENV = "CPSWEEP_FACTORY_MODULES"
_ROOT_KEY = "data.root"
_FACTORY_KEYS = ("model.factory", "data.factory", "loop")  # train.loop is code too


def _listed(env: Mapping[str, str] | None, var: str) -> tuple[str, ...]:
    env = os.environ if env is None else env
    return tuple(u.strip() for u in env.get(var, "").split(",") if u.strip())


def allowed_tracking_uris(env: Mapping[str, str] | None = None) -> tuple[str, ...]:
    return _listed(env, TRACKING_URIS_ENV)


def allowed_factory_modules(env: Mapping[str, str] | None = None) -> tuple[str, ...]:
    return _listed(env, FACTORY_MODULES_ENV)


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


def _values_at(spec: SweepSpec, dotted: str) -> Iterator[tuple[list[Any], Any]]:
    """(loc, value) of every value the spec gives the train path `dotted`: train, grids, arms."""
    node: Any = spec.train
    for part in dotted.split("."):
        node = getattr(node, part, None)
    if node is not None:
        yield ["train", *dotted.split(".")], node
    for path, dim in spec.search_space.items():
        if path == dotted:
            for value in dim.values_for_check():
                yield ["search_space", path], value
    for arm, overrides in spec.arms.items():
        if dotted in overrides:
            yield ["arms", arm, dotted], overrides[dotted]


def factory_problems(
    spec: SweepSpec, modules: tuple[str, ...]
) -> Iterator[tuple[list[Any], Any, str]]:
    """(loc, value, message) for every factory outside the allowed module prefixes."""
    for key in _FACTORY_KEYS:
        for loc, value in _values_at(spec, key):
            module = str(value).split(":")[0]
            if value is not None and not any(
                module == m or module.startswith(m + ".") for m in modules
            ):
                yield (
                    loc,
                    value,
                    (
                        f"a factory runs code on the cluster; this server accepts only modules "
                        f"under {FACTORY_MODULES_ENV} ({', '.join(modules) or 'none'}); use a "
                        "registered name"
                    ),
                )


def data_root_problems(
    spec: SweepSpec, roots: tuple[str, ...]
) -> Iterator[tuple[list[Any], Any, str]]:
    """(loc, value, message) for every data.root outside `roots` (empty: none allowed)."""
    for loc, value in _values_at(spec, _ROOT_KEY):
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
