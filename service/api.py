"""REST API over service.jobs: submit, list, inspect and stop sweeps (`cpsweep serve`).

Every route but /healthz (and the published OpenAPI document) wants
`Authorization: Bearer <CPSWEEP_API_TOKEN>`. The app is built by `create_app(settings)`;
nothing happens at import time. Tests inject a fake jobs backend through the factory.
"""

import hmac
import ipaddress
import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path as FilePath
from typing import Annotated, Any, Literal, Protocol

from fastapi import APIRouter, Depends, FastAPI, HTTPException, Path, Query, Request, Security
from fastapi.concurrency import run_in_threadpool
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, Field, SecretStr

from service.api_bodies import parse_spec, read_body, validate_spec
from service.job_trials import SweepTrial, sweep_trials
from service.jobs import (
    JOB_ID_PATTERN,
    JobInfo,
    JobNotFound,
    JobsClient,
    JobsError,
    RayAuthError,
    RayUnreachable,
    default_address,
)
from service.spec import SweepSpec
from trainables.config import ConfigError

__all__ = [
    "ApiSettings",
    "JobsBackend",
    "check_settings",
    "create_app",
    "serve",
    "settings_from_args",
]

log = logging.getLogger(__name__)

TOKEN_ENV = "CPSWEEP_API_TOKEN"
_MIN_TOKEN_CHARS = 16


class ApiSettings(BaseModel):
    """How `cpsweep serve` runs; built from the command line in `settings_from_args`."""

    host: str = Field("127.0.0.1", description="Bind address.")
    port: int = Field(8000, ge=0, le=65535)
    token: SecretStr | None = Field(None, description="Bearer token clients must send.")
    insecure_no_auth: bool = Field(False, description="Allow no token; loopback hosts only.")
    ray_address: str = Field(default_factory=default_address, description="Ray dashboard URL.")
    mlflow_uri: str | None = Field(None, description="Sweeps log here; trials are read here.")
    output_root: str | None = Field(
        None, description="Results dirs on the head node; None: the cluster's default."
    )
    job_python: str | None = Field(None, description="Python on the cluster; None: found.")
    max_body_bytes: int = Field(256 * 1024, ge=1024, description="Larger bodies get 413.")


class JobsBackend(Protocol):
    """What the API needs from a cluster; `service.jobs.JobsClient` in production."""

    def ping(self) -> None: ...
    def submit(
        self,
        spec: SweepSpec,
        *,
        mlflow_uri: str | None,
        output_root: str | None,
        python: str | None,
    ) -> str: ...
    def list(self) -> list[JobInfo]: ...
    def info(self, job_id: str) -> JobInfo: ...
    def logs(self, job_id: str) -> str: ...
    def stop(self, job_id: str) -> bool: ...


TrialsFn = Callable[[str | None, str], tuple[list[SweepTrial] | None, str | None]]


# -- settings --------------------------------------------------------------------------------


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_settings(s: ApiSettings) -> None:
    """Refuse to run without a token, unless on loopback with --insecure-no-auth."""
    if s.token is not None:
        if len(s.token.get_secret_value()) < _MIN_TOKEN_CHARS:
            raise ConfigError(
                f"API token: {_MIN_TOKEN_CHARS} characters at least; generate one with "
                "`python -c 'import secrets; print(secrets.token_urlsafe(32))'`"
            )
        if s.insecure_no_auth:
            log.warning("--insecure-no-auth ignored: a token is set, so it is required")
        return
    if not s.insecure_no_auth:
        raise ConfigError(
            f"no API token: set {TOKEN_ENV} or pass --token-file (or, for local use only, "
            "--insecure-no-auth with --host 127.0.0.1)"
        )
    if not _is_loopback(s.host):
        raise ConfigError(
            f"--insecure-no-auth with --host {s.host}: only a loopback host (127.0.0.1, ::1, "
            f"localhost) may run without a token; set {TOKEN_ENV} or pass --token-file"
        )


def settings_from_args(args: Any) -> ApiSettings:
    token: str | None = os.environ.get(TOKEN_ENV) or None
    if args.token_file:
        try:
            token = FilePath(args.token_file).read_text().strip()
        except OSError as exc:
            raise ConfigError(f"--token-file {args.token_file}: cannot read it ({exc})") from None
        if not token:
            raise ConfigError(f"--token-file {args.token_file} is empty")
    return ApiSettings(
        host=args.host,
        port=args.port,
        token=SecretStr(token) if token else None,
        insecure_no_auth=args.insecure_no_auth,
        ray_address=args.ray_address or default_address(),
        mlflow_uri=args.mlflow_uri or os.environ.get("MLFLOW_TRACKING_URI"),
        output_root=args.output_root,
    )


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
    status: Literal["ok", "degraded"]
    ray_jobs_api: Literal["reachable", "unreachable"]


class _HealthCache:
    """One Ray ping per `ttl_s`, however many probes arrive at once."""

    def __init__(self, backend: JobsBackend, ttl_s: float = 2.0):
        self._backend, self._ttl = backend, ttl_s
        self._lock = threading.Lock()
        self._at, self._ok = -1e9, False

    def reachable(self) -> bool:
        with self._lock:
            if time.monotonic() - self._at > self._ttl:
                try:
                    self._backend.ping()
                    self._ok = True
                except Exception as exc:
                    log.info("healthz: Ray Jobs API not reachable: %s", exc)
                    self._ok = False
                self._at = time.monotonic()
            return self._ok


_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"description": "Missing or wrong bearer token."},
    404: {"description": "No cpsweep job with this id."},
    503: {"description": "The Ray Jobs API is unreachable or refused the service's token."},
}


# -- the app ---------------------------------------------------------------------------------


def create_app(
    settings: ApiSettings,
    *,
    backend: JobsBackend | None = None,
    trials: TrialsFn = sweep_trials,
) -> FastAPI:
    check_settings(settings)
    jobs: JobsBackend = backend or JobsClient(settings.ray_address, read_timeout_s=30.0)
    health = _HealthCache(jobs)
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

    app = FastAPI(title="cpsweep", version="0.1.0", summary="Critical-period sweeps on Ray.")
    v1 = APIRouter(prefix="/v1", dependencies=[Depends(require_token)], responses=_ERRORS)
    SweepId = Annotated[str, Path(pattern=JOB_ID_PATTERN, description="Ray submission id.")]

    @app.exception_handler(JobNotFound)
    async def _not_found(request: Request, exc: JobNotFound) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=404)

    @app.exception_handler(JobsError)
    async def _ray_down(request: Request, exc: JobsError) -> JSONResponse:
        if not isinstance(exc, RayUnreachable | RayAuthError):
            log.warning("Ray Jobs API error: %s", exc)
        return JSONResponse({"detail": str(exc)}, status_code=503)

    @app.get("/healthz", response_model=Health, tags=["ops"])
    def healthz() -> Health:
        ok = health.reachable()
        return Health(
            status="ok" if ok else "degraded",
            ray_jobs_api="reachable" if ok else "unreachable",
        )

    body_doc = {
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {"schema": {"$ref": "#/components/schemas/SweepSpec"}},
                "application/x-yaml": {"schema": {"type": "string"}},
                "text/yaml": {"schema": {"type": "string"}},
            },
        }
    }

    @v1.post("/sweeps", status_code=201, response_model=SweepCreated, openapi_extra=body_doc)
    async def create_sweep(request: Request) -> JSONResponse:
        body = await read_body(request, settings.max_body_bytes)
        raw = parse_spec(body, request.headers.get("content-type", ""))
        spec = await run_in_threadpool(validate_spec, raw, settings.mlflow_uri)
        job_id = await run_in_threadpool(
            lambda: jobs.submit(
                spec,
                mlflow_uri=settings.mlflow_uri,
                output_root=settings.output_root,
                python=settings.job_python,
            )
        )
        log.info("POST /v1/sweeps: %s submitted as %s", spec.name, job_id)
        created = SweepCreated(id=job_id, status="PENDING", sweep=spec.name)
        return JSONResponse(
            created.model_dump(), status_code=201, headers={"Location": f"/v1/sweeps/{job_id}"}
        )

    @v1.get("/sweeps", response_model=SweepList)
    def list_sweeps() -> SweepList:
        return SweepList(sweeps=jobs.list())

    @v1.get("/sweeps/{sweep_id}", response_model=SweepDetail)
    def get_sweep(sweep_id: SweepId) -> SweepDetail:
        info = jobs.info(sweep_id)
        found, note = trials(info.mlflow_uri or settings.mlflow_uri, sweep_id)
        return SweepDetail(**info.model_dump(), trials=found, trials_note=note)

    @v1.get("/sweeps/{sweep_id}/logs", response_model=SweepLogs)
    def get_logs(
        sweep_id: SweepId,
        tail: Annotated[int | None, Query(ge=1, le=100_000, description="Last N lines.")] = None,
    ) -> SweepLogs:
        text = jobs.logs(sweep_id)
        if tail is not None:
            text = "".join(text.splitlines(keepends=True)[-tail:])
        return SweepLogs(id=sweep_id, logs=text)

    @v1.delete("/sweeps/{sweep_id}", status_code=202, response_model=SweepStopped)
    def stop_sweep(sweep_id: SweepId) -> SweepStopped:
        stopped = jobs.stop(sweep_id)
        return SweepStopped(id=sweep_id, stopped=stopped, status=jobs.info(sweep_id).status)

    app.include_router(v1)
    app.openapi = lambda: _openapi(app)  # type: ignore[method-assign]
    return app


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
    import uvicorn

    # MLflow's client retries an unreachable server for minutes; a status page must not.
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
    logging.getLogger("ray._private.runtime_env").setLevel(logging.ERROR)  # .gitignore noise
    app = create_app(settings)
    if settings.token is None:
        log.warning("serving WITHOUT authentication on %s (loopback only)", settings.host)
    log.info(
        "cpsweep API on http://%s:%d (Ray %s, MLflow %s)",
        settings.host,
        settings.port,
        settings.ray_address,
        settings.mlflow_uri or "not configured",
    )
    uvicorn.run(
        app,
        host=settings.host,
        port=settings.port,
        log_level="info",
        server_header=False,
        proxy_headers=False,
        timeout_keep_alive=5,
    )
