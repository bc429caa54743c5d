"""Settings of `cpsweep serve`: the command line, the token checks, the limits.

The server refuses to start without a token (unless it binds loopback with
--insecure-no-auth) and refuses weak tokens (service.api.tokens).
"""

import ipaddress
import logging
import os
from pathlib import Path as FilePath
from typing import Any

from pydantic import BaseModel, Field, SecretStr

from service.api.allowlists import allowed_factory_modules, allowed_tracking_uris
from service.api.tokens import TOKEN_HOWTO, weak_token_problem
from service.jobs.client import default_address
from service.limits import SERVER_LIMITS, SpecLimits
from trainables.core.config import ConfigError
from trainables.data.dataroots import allowed_roots

__all__ = ["TOKEN_ENV", "ApiSettings", "check_settings", "settings_from_args"]

log = logging.getLogger(__name__)

TOKEN_ENV = "CPSWEEP_API_TOKEN"


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
    max_body_bytes: int = Field(128 * 1024, ge=1024, description="Larger bodies get 413.")
    body_timeout_s: float = Field(15.0, gt=0, description="Whole body within this, else 408.")
    header_timeout_s: float = Field(10.0, gt=0, description="Request headers within this.")
    max_connections: int = Field(
        256, ge=1, description="Connections with a request in progress; beyond: 503, not ready."
    )
    max_client_connections: int = Field(
        32, ge=1, description="Connections per client address; its oldest idle one is closed."
    )
    max_parallel_specs: int = Field(4, ge=1, description="Specs validated at once; then 503.")
    max_ray_calls: int = Field(16, ge=1, description="Ray Jobs API calls at once; then 503.")
    ray_timeout_s: float = Field(10.0, gt=0, description="Read timeout of each Ray call.")
    limits: SpecLimits = Field(SERVER_LIMITS, description="Largest sweep a caller may submit.")
    tracking_uris: tuple[str, ...] = Field((), description="tracking.uri values allowed.")
    data_roots: tuple[str, ...] = Field(
        (), description="Directories data.root may lie under; empty: no data.root accepted."
    )
    factory_modules: tuple[str, ...] = Field(
        (), description="Module prefixes a model/data factory may come from; empty: none."
    )


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
        weak = weak_token_problem(s.token.get_secret_value())
        if weak is not None:
            raise ConfigError(
                f"API token refused: {weak}; set {TOKEN_ENV} (or --token-file) to a random "
                f"value, {TOKEN_HOWTO}"
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
        limits=SERVER_LIMITS.model_copy(
            update={
                k: v
                for k in ("max_trials", "max_workers", "max_cpus_per_trial", "max_gpus_per_trial")
                if (v := getattr(args, k, None)) is not None
            }
        ),
        tracking_uris=(
            *allowed_tracking_uris(),
            *(getattr(args, "allowed_tracking_uri", None) or []),
        ),
        data_roots=allowed_roots() or (),
        factory_modules=allowed_factory_modules(),
        **{
            field: v
            for arg, field in _TUNING_ARGS.items()
            if (v := getattr(args, arg, None)) is not None
        },
    )


_TUNING_ARGS = {
    "header_timeout": "header_timeout_s",
    "body_timeout": "body_timeout_s",
    "max_connections": "max_connections",
    "max_client_connections": "max_client_connections",
    "max_parallel_specs": "max_parallel_specs",
}
