"""GET /healthz and /readyz: the probes, open without a token.

/healthz is the liveness: 200 while the event loop runs, whatever the load or the
cluster (a failing liveness restarts the pod, which cures neither). /readyz is the
readiness: 503 with the reasons while requests would be refused (every connection busy)
or the Ray Jobs API is down, so traffic goes elsewhere meanwhile.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from service.api.deps import ConnectionsDep, RayDep
from service.api.guards import RETRY_AFTER_S
from service.api.schemas import Health, Readiness

__all__ = ["router"]

router = APIRouter(tags=["ops"])


@router.get("/healthz", response_model=Health)
async def healthz() -> Health:
    return Health(status="ok")


@router.get(
    "/readyz",
    response_model=Readiness,
    responses={503: {"model": Readiness, "description": "Not ready; see reasons."}},
)
async def readyz(request: Request, ray: RayDep, connections: ConnectionsDep) -> JSONResponse:
    reasons = []
    asking = (request.client.host, request.client.port) if request.client else None
    saturated = connections.saturation(asking) if connections is not None else None
    if saturated is not None:
        reasons.append(saturated)
    ray_error = await ray.check()
    if ray_error is not None:
        reasons.append(f"Ray Jobs API: {ray_error}")
    ready = Readiness(
        status="not ready" if reasons else "ready",
        reasons=reasons,
        ray_jobs_api="unreachable" if ray_error is not None else "reachable",
        busy_connections=connections.busy(asking) if connections is not None else None,
    )
    headers = {"Retry-After": str(RETRY_AFTER_S)} if reasons else None
    return JSONResponse(ready.model_dump(), status_code=503 if reasons else 200, headers=headers)
