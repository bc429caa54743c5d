"""What the routes of the REST API depend on, as FastAPI dependencies.

`create_app` builds one `ApiState` per app (no state at import time) and keeps it in
`app.state`; the functions below hand its parts to the routes, and `Annotated` aliases
(`SettingsDep`, `JobsDep`, ...) name them in route signatures. Tests replace a part with
`app.dependency_overrides[get_jobs] = lambda: fake` (an override takes no arguments).
"""

from __future__ import annotations

import hmac
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Annotated, Protocol

import anyio
from fastapi import Depends, FastAPI, HTTPException, Request, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from service.api.connections import ConnectionBook
from service.api.guards import HeavyGate, RayGate
from service.api.settings import TOKEN_ENV, ApiSettings
from service.jobs.client import JobInfo, JobsClient
from service.jobs.trials import SweepTrial, sweep_trials
from service.spec import SweepSpec
from trainables.core.policy import Policy

__all__ = [
    "ApiState",
    "ConnectionsDep",
    "JobsBackend",
    "JobsDep",
    "RayDep",
    "SettingsDep",
    "StateDep",
    "TokenDep",
    "TrialsDep",
    "TrialsFn",
    "get_connections",
    "get_jobs",
    "get_ray",
    "get_settings",
    "get_state",
    "get_trials",
    "jobs_of",
    "require_token",
]


class JobsBackend(Protocol):
    """What the API needs from a cluster; `service.jobs.client.JobsClient` in production."""

    def ping(self) -> None: ...
    def submit(
        self,
        spec: SweepSpec,
        *,
        mlflow_uri: str | None,
        output_root: str | None,
        python: str | None,
        policy: Policy | None,
    ) -> str: ...
    def list(self) -> list[JobInfo]: ...
    def info(self, job_id: str) -> JobInfo: ...
    def logs(self, job_id: str) -> str: ...
    def stop(self, job_id: str) -> bool: ...


# (MLflow URI, job id, the job's parent run id or None) -> (trials, note)
TrialsFn = Callable[[str | None, str, str | None], tuple[list[SweepTrial] | None, str | None]]


@dataclass
class ApiState:
    """One app's settings and the gates, caches and clients its routes share."""

    settings: ApiSettings
    connections: ConnectionBook | None = None
    specs: HeavyGate = field(init=False)  # spec parsing/validation threads
    policy: Policy = field(init=False)  # what a caller's trials may run and read
    mlflow_threads: anyio.CapacityLimiter = field(init=False)
    parents: dict[str, str] = field(default_factory=dict)  # job id -> its MLflow parent run
    _jobs: JobsClient | None = None
    _gates: dict[int, tuple[JobsBackend, RayGate]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        s = self.settings
        self.specs = HeavyGate(s.max_parallel_specs, "spec validations")
        # Checked by the server, and carried by each job so that its processes check
        # again (trainables.core.policy).
        self.policy = Policy(s.factory_modules, s.data_roots)
        self.mlflow_threads = anyio.CapacityLimiter(s.max_ray_calls)

    def jobs(self) -> JobsClient:
        """The Ray Jobs client, made on first use (it imports nothing slow until called)."""
        if self._jobs is None:
            self._jobs = JobsClient(
                self.settings.ray_address, read_timeout_s=self.settings.ray_timeout_s
            )
        return self._jobs

    def gate(self, jobs: JobsBackend) -> RayGate:
        """The one RayGate of `jobs`: every route shares its probe and its call limits."""
        if id(jobs) not in self._gates:
            gate = RayGate(jobs.ping, max_calls=self.settings.max_ray_calls)
            self._gates[id(jobs)] = (jobs, gate)  # holding jobs keeps its id unique
        return self._gates[id(jobs)][1]


def get_state(request: Request) -> ApiState:
    state: ApiState = request.app.state.api
    return state


StateDep = Annotated[ApiState, Depends(get_state)]


def get_settings(state: StateDep) -> ApiSettings:
    return state.settings


def get_jobs(state: StateDep) -> JobsBackend:
    return state.jobs()


def get_trials() -> TrialsFn:
    return sweep_trials


def get_connections(state: StateDep) -> ConnectionBook | None:
    return state.connections


SettingsDep = Annotated[ApiSettings, Depends(get_settings)]
JobsDep = Annotated[JobsBackend, Depends(get_jobs)]
TrialsDep = Annotated[TrialsFn, Depends(get_trials)]
ConnectionsDep = Annotated[ConnectionBook | None, Depends(get_connections)]


def get_ray(state: StateDep, jobs: JobsDep) -> RayGate:
    return state.gate(jobs)


RayDep = Annotated[RayGate, Depends(get_ray)]


def jobs_of(app: FastAPI) -> JobsBackend:
    """The backend the routes get, outside a request (the start-up probe): an override of
    `get_jobs` when a test set one."""
    override = app.dependency_overrides.get(get_jobs)
    if override is not None:
        jobs: JobsBackend = override()
        return jobs
    state: ApiState = app.state.api
    return state.jobs()


_bearer = HTTPBearer(auto_error=False, description=f"The server's {TOKEN_ENV}.")


def require_token(
    settings: SettingsDep,
    cred: Annotated[HTTPAuthorizationCredentials | None, Security(_bearer)],
) -> None:
    """`Authorization: Bearer <token>`, compared in constant time; none needed only with
    --insecure-no-auth on loopback (check_settings refuses the app otherwise)."""
    if settings.api_token is None:
        return
    expected = settings.api_token.get_secret_value().encode()
    given = cred.credentials.encode() if cred is not None else b""
    if not hmac.compare_digest(given, expected):
        raise HTTPException(
            401, "missing or wrong bearer token", headers={"WWW-Authenticate": "Bearer"}
        )


TokenDep = Annotated[None, Depends(require_token)]
