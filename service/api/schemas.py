"""Response bodies of the REST API (service.api.sweeps, service.api.probes)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

from service.jobs.client import JobInfo
from service.jobs.trials import SweepTrial

__all__ = [
    "ERRORS",
    "Health",
    "Readiness",
    "SweepCreated",
    "SweepDetail",
    "SweepList",
    "SweepLogs",
    "SweepStopped",
]


class SweepCreated(BaseModel):
    id: str = Field(description="Ray submission id of the sweep's job.")
    status: str = Field(description="The job's status when submitted: PENDING.")
    sweep: str = Field(description="The spec's name.")


class SweepList(BaseModel):
    sweeps: list[JobInfo] = Field(description="cpsweep jobs on the cluster.")


class SweepDetail(JobInfo):
    trials: list[SweepTrial] | None = Field(None, description="None when MLflow can't be read.")
    trials_note: str | None = Field(None, description="Why trials is None, if it is.")


class SweepLogs(BaseModel):
    id: str = Field(description="Ray submission id.")
    logs: str = Field(description="The driver's log, or its last `tail` lines.")


class SweepStopped(BaseModel):
    id: str = Field(description="Ray submission id.")
    stopped: bool = Field(description="False when the job had already ended.")
    status: str = Field(description="The job's status after the stop request.")


class Health(BaseModel):
    status: Literal["ok"] = Field(description="The process and its event loop answer.")


class Readiness(BaseModel):
    status: Literal["ready", "not ready"]
    reasons: list[str] = Field(description="Why not ready; empty when ready.")
    ray_jobs_api: Literal["reachable", "unreachable"]
    busy_connections: int | None = Field(
        description="Connections with a request in progress (None: not served by uvicorn)."
    )


ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"description": "Missing or wrong bearer token."},
    404: {"description": "No cpsweep job with this id."},
    503: {
        "description": "The Ray Jobs API is unreachable, hung or refused the service's token, "
        "or the server is busy; retry after the Retry-After header's seconds."
    },
}
