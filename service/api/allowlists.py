"""What a caller of the REST API may point a sweep at: MLflow URIs, code and dataset roots.

A spec from the API runs with the cluster's permissions, so the server accepts only what
its operator listed. `tracking.uri` must equal the server's own MLflow URI or one of
`CPSWEEP_TRACKING_URIS` (comma-separated; `--allowed-tracking-uri`); it is a sweep-wide
field that no arm or search-space path can reach. Factories (`model.factory`,
`data.factory`), augmentations (`recipe.*.augment_fn`), `train.loop` and `data.root` are judged by the policy
(trainables.core.policy: `CPSWEEP_FACTORY_MODULES`, `CPSWEEP_DATA_ROOTS`) on every value a
trial can end up with once arms and grid/choice values are applied (service.resolved), not
on the keys the spec happens to write; a range over such a path is refused. These checks
are text only; the job carries the policy and its processes check again where the code is
imported and the data read.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from typing import Any

from service.resolved import field_values
from service.spec import SweepSpec
from trainables.core.policy import FACTORY_MODULES_ENV, Policy, PolicyError

__all__ = [
    "CODE_FIELDS",
    "FACTORY_MODULES_ENV",
    "TRACKING_URIS_ENV",
    "allowed_factory_modules",
    "allowed_tracking_uris",
    "policy_problems",
    "tracking_uri_problem",
]

TRACKING_URIS_ENV = "CPSWEEP_TRACKING_URIS"
# train paths naming code to run
CODE_FIELDS = (
    "model.factory",
    "data.factory",
    "loop",
    "recipe.critical.augment_fn",
    "recipe.after.augment_fn",
)
_ROOT_FIELD = "data.root"


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


def policy_problems(spec: SweepSpec, policy: Policy) -> Iterator[tuple[list[Any], Any, str]]:
    """(loc, value, message) for every factory, loop or data root a trial could get that
    `policy` refuses."""
    for field in (*CODE_FIELDS, _ROOT_FIELD):
        label = "train.loop" if field == "loop" else field
        for found in field_values(spec, field):
            if not found.listed:
                yield (
                    list(found.loc),
                    found.value,
                    f"{label} is drawn from a range here, which cannot be checked; list its "
                    "values with grid or choice",
                )
                continue
            if found.value is None:
                continue
            try:
                if field == _ROOT_FIELD:
                    policy.check_root(found.value, label)
                else:
                    policy.check_target(found.value, label)
            except PolicyError as exc:
                yield list(found.loc), found.value, str(exc)
