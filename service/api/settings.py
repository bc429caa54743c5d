"""Settings of `cpsweep serve`: environment (`CPSWEEP_*`), command line, token checks, limits.

`ApiSettings` is a pydantic-settings `BaseSettings`: every field reads the environment
variable `CPSWEEP_<FIELD>` (`CPSWEEP_API_TOKEN`, `CPSWEEP_MAX_CONNECTIONS`,
`CPSWEEP_LIMITS__MAX_TRIALS`, ...), and the flags of `cpsweep serve` that are given
override it (`settings_from_args`). Nothing is read at import time: the entry point builds
the settings once and hands them to `create_app`.

The server refuses to start without a token (unless it binds loopback with
--insecure-no-auth) and refuses weak tokens (service.api.tokens).
"""

import ipaddress
import logging
import os
from pathlib import Path as FilePath
from typing import Annotated, Any

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from service.api.tokens import TOKEN_HOWTO, weak_token_problem
from service.jobs.client import default_address
from service.limits import SERVER_LIMITS, SpecLimits
from trainables.core.config import ConfigError

__all__ = ["ENV_PREFIX", "TOKEN_ENV", "ApiSettings", "check_settings", "settings_from_args"]

log = logging.getLogger(__name__)

ENV_PREFIX = "CPSWEEP_"
TOKEN_ENV = f"{ENV_PREFIX}API_TOKEN"


def _mlflow_env() -> str | None:
    return os.environ.get("MLFLOW_TRACKING_URI") or None


class ApiSettings(BaseSettings):
    """How `cpsweep serve` runs: `CPSWEEP_<FIELD>` from the environment, then the flags."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter="__",  # CPSWEEP_LIMITS__MAX_TRIALS=200
        extra="forbid",
        frozen=True,
    )

    host: str = Field("127.0.0.1", description="Bind address.")
    port: int = Field(8000, ge=0, le=65535, description="Bind port.")
    api_token: SecretStr | None = Field(None, description="Bearer token clients must send.")
    insecure_no_auth: bool = Field(False, description="Allow no token; loopback hosts only.")
    ray_address: str = Field(default_factory=default_address, description="Ray dashboard URL.")
    mlflow_uri: str | None = Field(
        default_factory=_mlflow_env,
        description="Sweeps log here; trials are read here. Unset: $MLFLOW_TRACKING_URI.",
    )
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
    tracking_uris: Annotated[tuple[str, ...], NoDecode] = Field(
        (), description="tracking.uri values allowed besides mlflow_uri; comma-separated."
    )
    data_roots: Annotated[tuple[str, ...], NoDecode] = Field(
        (), description="Directories data.root may lie under (os.pathsep-separated); empty: none."
    )
    factory_modules: Annotated[tuple[str, ...], NoDecode] = Field(
        (), description="Module prefixes a model/data factory may come from; empty: none."
    )

    @field_validator("limits", mode="before")
    @classmethod
    def _limits_over_server_defaults(cls, value: Any) -> Any:
        # A partial mapping (CPSWEEP_LIMITS__MAX_TRIALS, --max-trials) changes those limits
        # only; the rest stay the server's, not SpecLimits' loose local defaults.
        if isinstance(value, dict):
            return SpecLimits.model_validate({**SERVER_LIMITS.model_dump(), **value})
        return value

    @field_validator("tracking_uris", "factory_modules", mode="before")
    @classmethod
    def _comma_list(cls, value: Any) -> Any:
        return _split(value, ",")

    @field_validator("data_roots", mode="before")
    @classmethod
    def _path_list(cls, value: Any) -> Any:
        return _split(value, os.pathsep)


def _split(value: Any, sep: str) -> Any:
    if isinstance(value, str):
        return tuple(p.strip() for p in value.split(sep) if p.strip())
    return value


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_settings(s: ApiSettings) -> None:
    """Refuse to run without a token, unless on loopback with --insecure-no-auth."""
    if s.api_token is not None:
        weak = weak_token_problem(s.api_token.get_secret_value())
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
    """The settings from the environment, with every flag of `cpsweep serve` that was given
    in its place (flags left out are None, so the environment or the default stands)."""
    given: dict[str, Any] = {
        field: v for arg, field in _FLAGS.items() if (v := getattr(args, arg, None)) is not None
    }
    if getattr(args, "insecure_no_auth", False):
        given["insecure_no_auth"] = True
    if args.token_file:
        given["api_token"] = _read_token_file(args.token_file)
    limits = {k: v for k in _LIMIT_FLAGS if (v := getattr(args, k, None)) is not None}
    if limits:
        given["limits"] = limits  # merged over CPSWEEP_LIMITS__* by pydantic-settings
    extra_uris = getattr(args, "allowed_tracking_uri", None)
    if extra_uris:  # besides $CPSWEEP_TRACKING_URIS, not instead of it
        given["tracking_uris"] = (*_from_env().tracking_uris, *extra_uris)
    try:
        return ApiSettings(**given)
    except ValidationError as exc:
        raise ConfigError(_problems(exc)) from None


def _from_env() -> ApiSettings:
    try:
        return ApiSettings()
    except ValidationError as exc:
        raise ConfigError(_problems(exc)) from None


def _problems(exc: ValidationError) -> str:
    """One line per bad setting: its field, its variable, the value (never a token's)."""
    lines = []
    for err in exc.errors():
        path = ".".join(str(p) for p in err["loc"])
        var = ENV_PREFIX + "__".join(str(p) for p in err["loc"]).upper()
        shown = "" if "token" in path else f" = {err.get('input')!r}"
        lines.append(f"setting {path} ({var} or its flag){shown}: {err['msg']}")
    return "; ".join(lines)


def _read_token_file(path: str) -> str:
    try:
        token = FilePath(path).read_text().strip()
    except OSError as exc:
        raise ConfigError(f"--token-file {path}: cannot read it ({exc})") from None
    if not token:
        raise ConfigError(f"--token-file {path} is empty")
    return token


_FLAGS = {  # argparse dest -> ApiSettings field
    "host": "host",
    "port": "port",
    "ray_address": "ray_address",
    "mlflow_uri": "mlflow_uri",
    "output_root": "output_root",
    "header_timeout": "header_timeout_s",
    "body_timeout": "body_timeout_s",
    "max_connections": "max_connections",
    "max_client_connections": "max_client_connections",
    "max_parallel_specs": "max_parallel_specs",
}
_LIMIT_FLAGS = ("max_trials", "max_workers", "max_cpus_per_trial", "max_gpus_per_trial")
