"""REST API over service.jobs.client: submit, list, inspect and stop sweeps (`cpsweep serve`).

Every route but the probes /healthz (liveness) and /readyz (readiness), and the
published OpenAPI document, wants `Authorization: Bearer <CPSWEEP_API_TOKEN>`. The
routers live at module level (service.api.sweeps, service.api.probes); `create_app(settings)`
includes them and keeps the app's state (service.api.deps.ApiState), so nothing happens
at import time. Tests replace the jobs backend with `app.dependency_overrides`.

Nothing slow runs on the event loop (service.api.sweeps), so /healthz answers while the
cluster hangs or large specs are being validated; connection limits
(service.api.connections) answer it even when they refuse everything else.
"""

import asyncio
import logging
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse, Response
from starlette.requests import ClientDisconnect

from service.api import probes, sweeps
from service.api.bodies import client_gone
from service.api.connections import ConnectionBook
from service.api.deps import ApiState, JobsBackend, jobs_of
from service.api.guards import RETRY_AFTER_S
from service.api.settings import ApiSettings, check_settings, settings_from_args
from service.api.tokens import TOKEN_HOWTO, weak_token_problem
from service.jobs.client import (
    JobNotFound,
    JobsError,
    RayAuthError,
    RayUnreachable,
    SpecTooLarge,
    resolve_ray_token,
)
from service.spec import SweepSpec
from trainables.core.config import ConfigError

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


def create_app(settings: ApiSettings, *, connections: ConnectionBook | None = None) -> FastAPI:
    """The REST app: /healthz and /readyz open, /v1/sweeps behind the bearer token.
    `connections`: the server's connection book, which /readyz reports on."""
    check_settings(settings)
    app = FastAPI(
        title="cpsweep",
        version="0.1.0",
        summary="Critical-period sweeps on Ray.",
        lifespan=_probe_ray_at_start,
    )
    app.state.api = ApiState(settings, connections)
    _add_error_handlers(app)
    app.include_router(probes.router)
    app.include_router(sweeps.router)
    app.openapi = lambda: _openapi(app)  # type: ignore[method-assign]
    return app


@asynccontextmanager
async def _probe_ray_at_start(app: FastAPI) -> AsyncIterator[None]:
    """Start the first Ray probe with the server: it imports the Ray SDK, which can take
    longer than a request's 1 s wait, and no route but a request would start it."""
    state: ApiState = app.state.api
    first = asyncio.ensure_future(state.gate(jobs_of(app)).check())
    yield
    first.cancel()


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
    if settings.api_token is None:
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
