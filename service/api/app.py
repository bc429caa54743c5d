"""REST API over service.jobs.client: submit, list, inspect and stop sweeps (`cpsweep serve`).

Every route but the probes /healthz (liveness) and /readyz (readiness), and the
published OpenAPI document, wants `Authorization: Bearer <CPSWEEP_API_TOKEN>`. The app is built by `create_app(settings)`;
nothing happens at import time. Tests inject a fake jobs backend through the factory.

Nothing slow runs on the event loop: spec parsing/validation and every Ray or MLflow
call run in worker threads behind bounded gates (service.api.guards), so /healthz
answers while the cluster hangs or large specs are being validated; connection limits
(service.api.connections) answer it even when they refuse everything else.
"""

import asyncio
import hmac
import logging
import os
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Annotated, Any, Literal, Protocol

import anyio
from fastapi import APIRouter, Depends, FastAPI, HTTPException, Path, Query, Request, Security
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, Field
from starlette.requests import ClientDisconnect

from service.api.bodies import client_gone, parse_spec, read_body, validate_spec
from service.api.connections import ConnectionBook
from service.api.guards import RETRY_AFTER_S, HeavyGate, RayGate
from service.api.settings import TOKEN_ENV, ApiSettings, check_settings, settings_from_args
from service.api.tokens import TOKEN_HOWTO, weak_token_problem
from service.jobs.client import (
    JOB_ID_PATTERN,
    JobInfo,
    JobNotFound,
    JobsClient,
    JobsError,
    RayAuthError,
    RayUnreachable,
    SpecTooLarge,
    resolve_ray_token,
)
from service.jobs.trials import SweepTrial, parent_run_from_logs, sweep_trials
from service.spec import SweepSpec
from trainables.core.config import ConfigError
from trainables.core.policy import Policy

__all__ = [
    "ApiSettings",
    "JobsBackend",
    "check_settings",
    "create_app",
    "serve",
    "settings_from_args",
    "weak_token_problem",
]

log = logging.getLogger(__name__)


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


# -- responses -------------------------------------------------------------------------------


class SweepCreated(BaseModel):
    id: str
    status: str
    sweep: str


class SweepList(BaseModel):
    sweeps: list[JobInfo]


class SweepDetail(JobInfo):
    trials: list[SweepTrial] | None = Field(None, description="None when MLflow can't be read.")
    trials_note: str | None = None


class SweepLogs(BaseModel):
    id: str
    logs: str


class SweepStopped(BaseModel):
    id: str
    stopped: bool = Field(description="False when the job had already ended.")
    status: str


class Health(BaseModel):
    status: Literal["ok"] = Field(description="The process and its event loop answer.")


class Readiness(BaseModel):
    status: Literal["ready", "not ready"]
    reasons: list[str] = Field(description="Why not ready; empty when ready.")
    ray_jobs_api: Literal["reachable", "unreachable"]
    busy_connections: int | None = Field(
        description="Connections with a request in progress (None: not served by uvicorn)."
    )


_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"description": "Missing or wrong bearer token."},
    404: {"description": "No cpsweep job with this id."},
    503: {
        "description": "The Ray Jobs API is unreachable, hung or refused the service's token, "
        "or the server is busy; retry after the Retry-After header's seconds."
    },
}


# -- the app ---------------------------------------------------------------------------------


def create_app(
    settings: ApiSettings,
    *,
    backend: JobsBackend | None = None,
    trials: TrialsFn = sweep_trials,
    connections: ConnectionBook | None = None,
) -> FastAPI:
    """The REST app: /healthz and /readyz open, /v1/sweeps behind the bearer token.
    `connections`: the server's connection book, which /readyz reports on."""
    check_settings(settings)
    jobs: JobsBackend = backend or JobsClient(
        settings.ray_address, read_timeout_s=settings.ray_timeout_s
    )
    ray = RayGate(jobs.ping, max_calls=settings.max_ray_calls)
    app = FastAPI(
        title="cpsweep",
        version="0.1.0",
        summary="Critical-period sweeps on Ray.",
        lifespan=_probe_ray_at_start(ray),
    )
    _add_error_handlers(app)

    _add_probes(app, ray, connections)

    v1 = APIRouter(prefix="/v1", dependencies=[Depends(_token_check(settings))], responses=_ERRORS)
    _add_submit(v1, settings, jobs, ray)
    _add_inspect(v1, settings, jobs, ray, trials)
    _add_stop(v1, jobs, ray)
    app.include_router(v1)
    app.openapi = lambda: _openapi(app)  # type: ignore[method-assign]
    return app


def _probe_ray_at_start(ray: RayGate) -> Callable[[FastAPI], Any]:
    """Start the first Ray probe with the server: it imports the Ray SDK, which can take
    longer than a request's 1 s wait, and no route but a request would start it."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        first = asyncio.ensure_future(ray.check())
        yield
        first.cancel()

    return lifespan


def _add_probes(app: FastAPI, ray: RayGate, connections: ConnectionBook | None) -> None:
    """GET /healthz, the liveness: 200 while the event loop runs, whatever the load or
    the cluster (a failing liveness restarts the pod, which cures neither). GET /readyz,
    the readiness: 503 with the reasons while requests would be refused (every
    connection busy) or the Ray Jobs API is down, so traffic goes elsewhere meanwhile."""

    @app.get("/healthz", response_model=Health, tags=["ops"])
    async def healthz() -> Health:
        return Health(status="ok")

    @app.get(
        "/readyz",
        response_model=Readiness,
        tags=["ops"],
        responses={503: {"model": Readiness, "description": "Not ready; see reasons."}},
    )
    async def readyz(request: Request) -> JSONResponse:
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
        return JSONResponse(
            ready.model_dump(), status_code=503 if reasons else 200, headers=headers
        )


def _token_check(settings: ApiSettings) -> Callable[..., None]:
    """The dependency every /v1 route has: `Authorization: Bearer <token>`, compared in
    constant time; none with --insecure-no-auth on loopback (check_settings)."""
    expected = settings.token.get_secret_value().encode() if settings.token else None
    bearer = HTTPBearer(auto_error=False, description=f"The server's {TOKEN_ENV}.")

    def require_token(
        cred: Annotated[HTTPAuthorizationCredentials | None, Security(bearer)],
    ) -> None:
        if expected is None:  # loopback with --insecure-no-auth, checked above
            return
        given = cred.credentials.encode() if cred is not None else b""
        if not hmac.compare_digest(given, expected):
            raise HTTPException(
                401, "missing or wrong bearer token", headers={"WWW-Authenticate": "Bearer"}
            )

    return require_token


def _add_error_handlers(app: FastAPI) -> None:
    """Errors of the layers below as HTTP answers: 404, 413, 503 with Retry-After, 400."""

    @app.exception_handler(JobNotFound)
    async def _not_found(request: Request, exc: JobNotFound) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=404)

    @app.exception_handler(SpecTooLarge)
    async def _too_large(request: Request, exc: SpecTooLarge) -> JSONResponse:
        detail = [{"loc": ["body"], "msg": str(exc), "type": "body"}]
        return JSONResponse({"detail": detail}, status_code=413)

    @app.exception_handler(JobsError)
    async def _ray_down(request: Request, exc: JobsError) -> JSONResponse:
        if not isinstance(exc, RayUnreachable | RayAuthError):
            log.warning("Ray Jobs API error: %s", exc)
        headers = {"Retry-After": str(RETRY_AFTER_S)}
        return JSONResponse({"detail": str(exc)}, status_code=503, headers=headers)

    @app.exception_handler(ClientDisconnect)
    async def _gone(request: Request, exc: ClientDisconnect) -> Response:
        client_gone(request, exc)
        return Response(status_code=400)


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

_SweepId = Annotated[str, Path(pattern=JOB_ID_PATTERN, description="Ray submission id.")]


def _add_submit(v1: APIRouter, settings: ApiSettings, jobs: JobsBackend, ray: RayGate) -> None:
    """POST /v1/sweeps: read, parse and validate the spec (bounded threads), submit it."""
    specs = HeavyGate(settings.max_parallel_specs, "spec validations")
    # What a caller's trials may run and read: checked here, and carried by the job so
    # that its processes check again (trainables.core.policy).
    policy = Policy(settings.factory_modules, settings.data_roots)

    @v1.post("/sweeps", status_code=201, response_model=SweepCreated, openapi_extra=_SPEC_BODY_DOC)
    async def create_sweep(request: Request) -> JSONResponse:
        body = await read_body(request, settings.max_body_bytes, settings.body_timeout_s)
        ctype = request.headers.get("content-type", "")

        def parse_and_validate() -> SweepSpec:
            return validate_spec(
                parse_spec(body, ctype),
                settings.mlflow_uri,
                limits=settings.limits,
                tracking_uris=settings.tracking_uris,
                policy=policy,
            )

        spec = await specs.run(parse_and_validate)
        job_id = await ray.call(
            lambda: jobs.submit(
                spec,
                mlflow_uri=settings.mlflow_uri,
                output_root=settings.output_root,
                python=settings.job_python,
                policy=policy,
            )
        )
        log.info("POST /v1/sweeps: %s submitted as %s", spec.name, job_id)
        created = SweepCreated(id=job_id, status="PENDING", sweep=spec.name)
        return JSONResponse(
            created.model_dump(), status_code=201, headers={"Location": f"/v1/sweeps/{job_id}"}
        )


def _add_inspect(
    v1: APIRouter, settings: ApiSettings, jobs: JobsBackend, ray: RayGate, trials: TrialsFn
) -> None:
    """GET /v1/sweeps, /v1/sweeps/{id} (with its trials from MLflow) and its logs."""
    mlflow_threads = anyio.CapacityLimiter(settings.max_ray_calls)
    parents: dict[str, str] = {}  # job id -> its MLflow parent run, read from its own log

    @v1.get("/sweeps", response_model=SweepList)
    async def list_sweeps() -> SweepList:
        return SweepList(sweeps=await ray.call(jobs.list))

    async def parent_run(job_id: str) -> str | None:
        """The job's MLflow parent run as its own driver log names it (not a tag search)."""
        if job_id not in parents:
            found = parent_run_from_logs(await ray.call(jobs.logs, job_id))
            if found is None:
                return None
            if len(parents) > 10_000:
                parents.clear()
            parents[job_id] = found
        return parents[job_id]

    @v1.get("/sweeps/{sweep_id}", response_model=SweepDetail)
    async def get_sweep(sweep_id: _SweepId) -> SweepDetail:
        info = await ray.call(jobs.info, sweep_id)
        uri = info.mlflow_uri or settings.mlflow_uri  # the job's own store, from its metadata
        parent = await parent_run(sweep_id) if uri else None
        found, note = await anyio.to_thread.run_sync(
            lambda: trials(uri, sweep_id, parent), limiter=mlflow_threads
        )
        return SweepDetail(**info.model_dump(), trials=found, trials_note=note)

    @v1.get("/sweeps/{sweep_id}/logs", response_model=SweepLogs)
    async def get_logs(
        sweep_id: _SweepId,
        tail: Annotated[int | None, Query(ge=1, le=100_000, description="Last N lines.")] = None,
    ) -> SweepLogs:
        text = await ray.call(jobs.logs, sweep_id)
        if tail is not None:
            text = "".join(text.splitlines(keepends=True)[-tail:])
        return SweepLogs(id=sweep_id, logs=text)


def _add_stop(v1: APIRouter, jobs: JobsBackend, ray: RayGate) -> None:
    """DELETE /v1/sweeps/{id}: ask Ray to stop the job; 202 with its status."""

    @v1.delete("/sweeps/{sweep_id}", status_code=202, response_model=SweepStopped)
    async def stop_sweep(sweep_id: _SweepId) -> SweepStopped:
        stopped = await ray.call(jobs.stop, sweep_id)
        status = (await ray.call(jobs.info, sweep_id)).status
        return SweepStopped(id=sweep_id, stopped=stopped, status=status)


def _openapi(app: FastAPI) -> dict[str, Any]:
    """FastAPI's document plus the SweepSpec schema the POST body refers to."""
    if app.openapi_schema is None:
        doc = get_openapi(
            title=app.title, version=app.version, summary=app.summary, routes=app.routes
        )
        spec = SweepSpec.model_json_schema(ref_template="#/components/schemas/{model}")
        schemas = doc.setdefault("components", {}).setdefault("schemas", {})
        schemas.update(spec.pop("$defs", {}))
        schemas["SweepSpec"] = spec
        app.openapi_schema = doc
    return app.openapi_schema


def serve(settings: ApiSettings) -> None:
    """Run the API with uvicorn until interrupted (entry point of `cpsweep serve`)."""
    from service.api.server import run_uvicorn

    # MLflow's client retries an unreachable server for minutes; a status page must not.
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
    logging.getLogger("ray._private.runtime_env").setLevel(logging.ERROR)  # .gitignore noise
    ray_token = resolve_ray_token()
    weak = weak_token_problem(ray_token.value) if ray_token.value else None
    if weak is not None:
        raise ConfigError(
            f"Ray auth token from {ray_token.source} refused: {weak}; give the cluster a "
            f"random token (k8s/README.md, Secrets), {TOKEN_HOWTO}"
        )
    book = ConnectionBook(settings.max_connections, settings.max_client_connections)
    app = create_app(settings, connections=book)
    if settings.token is None:
        log.warning("serving WITHOUT authentication on %s (loopback only)", settings.host)
    log.info(
        "cpsweep API on http://%s:%d (Ray %s, MLflow %s)",
        settings.host,
        settings.port,
        settings.ray_address,
        settings.mlflow_uri or "not configured",
    )
    run_uvicorn(
        app,
        host=settings.host,
        port=settings.port,
        book=book,
        header_timeout_s=settings.header_timeout_s,
    )
