"""/v1/sweeps: submit, list, inspect and stop sweeps; every route needs the bearer token.

Nothing slow runs on the event loop: spec parsing/validation runs in the app's bounded
spec threads, and every Ray or MLflow call in worker threads behind the Ray gate
(service.api.guards).
"""

from __future__ import annotations

import logging
from typing import Annotated

import anyio
from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import JSONResponse

from service.api.bodies import parse_spec, read_body, validate_spec
from service.api.deps import (
    JobsBackend,
    JobsDep,
    RayDep,
    SettingsDep,
    StateDep,
    TrialsDep,
    require_token,
)
from service.api.guards import RayGate
from service.api.schemas import (
    ERRORS,
    SweepCreated,
    SweepDetail,
    SweepList,
    SweepLogs,
    SweepStopped,
)
from service.jobs.client import JOB_ID_PATTERN
from service.jobs.trials import parent_run_from_logs
from service.spec import SweepSpec

__all__ = ["router"]

log = logging.getLogger(__name__)

router = APIRouter(prefix="/v1", dependencies=[Depends(require_token)], responses=ERRORS)

SweepId = Annotated[str, Path(pattern=JOB_ID_PATTERN, description="Ray submission id.")]
Tail = Annotated[int | None, Query(ge=1, le=100_000, description="Last N lines.")]

_SPEC_BODY_DOC = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": {"$ref": "#/components/schemas/SweepSpec"}},
            "application/x-yaml": {"schema": {"type": "string"}},
            "text/yaml": {"schema": {"type": "string"}},
        },
    }
}


@router.post("/sweeps", status_code=201, response_model=SweepCreated, openapi_extra=_SPEC_BODY_DOC)
async def create_sweep(
    request: Request, state: StateDep, settings: SettingsDep, jobs: JobsDep, ray: RayDep
) -> JSONResponse:
    """Read, parse and validate the spec (bounded threads), then submit it."""
    body = await read_body(request, settings.max_body_bytes, settings.body_timeout_s)
    ctype = request.headers.get("content-type", "")

    def parse_and_validate() -> SweepSpec:
        return validate_spec(
            parse_spec(body, ctype),
            settings.mlflow_uri,
            limits=settings.limits,
            tracking_uris=settings.tracking_uris,
            policy=state.policy,
        )

    spec = await state.specs.run(parse_and_validate)
    job_id = await ray.call(
        lambda: jobs.submit(
            spec,
            mlflow_uri=settings.mlflow_uri,
            output_root=settings.output_root,
            python=settings.job_python,
            policy=state.policy,
        )
    )
    log.info("POST /v1/sweeps: %s submitted as %s", spec.name, job_id)
    created = SweepCreated(id=job_id, status="PENDING", sweep=spec.name)
    return JSONResponse(
        created.model_dump(), status_code=201, headers={"Location": f"/v1/sweeps/{job_id}"}
    )


@router.get("/sweeps", response_model=SweepList)
async def list_sweeps(jobs: JobsDep, ray: RayDep) -> SweepList:
    return SweepList(sweeps=await ray.call(jobs.list))


@router.get("/sweeps/{sweep_id}", response_model=SweepDetail)
async def get_sweep(
    sweep_id: SweepId,
    state: StateDep,
    settings: SettingsDep,
    jobs: JobsDep,
    ray: RayDep,
    trials: TrialsDep,
) -> SweepDetail:
    """The job's status and, from its MLflow store, its trials."""
    info = await ray.call(jobs.info, sweep_id)
    uri = info.mlflow_uri or settings.mlflow_uri  # the job's own store, from its metadata
    parent = await _parent_run(state.parents, sweep_id, jobs, ray) if uri else None
    found, note = await anyio.to_thread.run_sync(
        lambda: trials(uri, sweep_id, parent), limiter=state.mlflow_threads
    )
    return SweepDetail(**info.model_dump(), trials=found, trials_note=note)


async def _parent_run(
    parents: dict[str, str], job_id: str, jobs: JobsBackend, ray: RayGate
) -> str | None:
    """The job's MLflow parent run as its own driver log names it (not a tag search)."""
    if job_id not in parents:
        found = parent_run_from_logs(await ray.call(jobs.logs, job_id))
        if found is None:
            return None
        if len(parents) > 10_000:
            parents.clear()
        parents[job_id] = found
    return parents[job_id]


@router.get("/sweeps/{sweep_id}/logs", response_model=SweepLogs)
async def get_logs(sweep_id: SweepId, jobs: JobsDep, ray: RayDep, tail: Tail = None) -> SweepLogs:
    text = await ray.call(jobs.logs, sweep_id)
    if tail is not None:
        text = "".join(text.splitlines(keepends=True)[-tail:])
    return SweepLogs(id=sweep_id, logs=text)


@router.delete("/sweeps/{sweep_id}", status_code=202, response_model=SweepStopped)
async def stop_sweep(sweep_id: SweepId, jobs: JobsDep, ray: RayDep) -> SweepStopped:
    """Ask Ray to stop the job; 202 with its status."""
    stopped = await ray.call(jobs.stop, sweep_id)
    status = (await ray.call(jobs.info, sweep_id)).status
    return SweepStopped(id=sweep_id, stopped=stopped, status=status)
