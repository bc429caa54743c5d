"""Sweeps as Ray Jobs: submit a SweepSpec to a cluster, list, follow and stop it.

`cpsweep submit SPEC.yaml --address http://HEAD:8265` validates the spec here, then
submits a Ray Job whose working dir is this project (so `service` and `trainables`
import on every node) and whose entrypoint is `python -m service.job_entry`. The validated
spec travels inline, base64 in the job's env var `CPSWEEP_SPEC_B64` (Ray expands
`$VAR` inside runtime_env env vars, so plain YAML there could be altered); the entry
writes it to `<dir>/submitted_spec.yaml` and runs `cpsweep run` on it, `--output-dir <dir>`.

Token auth (Ray >= 2.52, on by default for `ray start --head` in 2.60 once a token
exists): the dashboard wants `Authorization: Bearer <token>`. The Jobs SDK only sends
it when this process has `RAY_AUTH_MODE=token`; we resolve the token ourselves, in
Ray's order (`RAY_AUTH_TOKEN`, then the file `RAY_AUTH_TOKEN_PATH`, then
`~/.ray/auth_token`) and pass the header explicitly, so no global mode is needed.
`RAY_AUTH_MODE=disabled` sends none.
"""

from __future__ import annotations

import base64
import logging
import os
import re
import shlex
import threading
import time
import uuid
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, Field

from service.spec import SweepSpec

__all__ = [
    "DEFAULT_ADDRESS",
    "JOB_ID_ENV",
    "JOB_ID_PATTERN",
    "SPEC_ENV",
    "JobInfo",
    "JobNotFound",
    "JobsClient",
    "JobsError",
    "RayAuthError",
    "RayToken",
    "RayUnreachable",
    "SpecTooLarge",
    "build_submission",
    "default_address",
    "new_submission_id",
    "resolve_ray_token",
]

log = logging.getLogger(__name__)

DEFAULT_ADDRESS = "http://127.0.0.1:8265"
# Submission ids travel into Ray URL paths and MLflow filter strings: no '/', quotes, '..'.
JOB_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,199}$"
SPEC_ENV = "CPSWEEP_SPEC_B64"  # read by service.job_entry
JOB_ID_ENV = "CPSWEEP_JOB_ID"
_MAX_SPEC_ENV_BYTES = 96 * 1024  # stays under Linux's 128 KiB per env string
_TERMINAL = {"SUCCEEDED", "FAILED", "STOPPED"}
_EXCLUDES = [
    ".venv", ".git", "runs", "mlruns", "mlartifacts", "*.db", "bench/results",
    ".mypy_cache", ".ruff_cache", ".pytest_cache", ".hypothesis", "__pycache__", "*.egg-info",
    "build",
]  # fmt: skip


class JobsError(RuntimeError):
    """A Ray Jobs call failed; the message says what to change."""


class RayUnreachable(JobsError):
    """The Ray Jobs API (dashboard) did not answer."""


class RayAuthError(JobsError):
    """The cluster wants a token we do not have, or rejected ours."""


class JobNotFound(JobsError):
    """No cpsweep job with this id on the cluster."""


class SpecTooLarge(JobsError):
    """The validated spec does not fit in the job's environment (the API answers 413)."""


class JobInfo(BaseModel):
    """One cpsweep job as the Ray Jobs API reports it (times in epoch seconds)."""

    id: str = Field(description="Ray job submission id, cpsweep-<sweep>-<8 hex>.")
    status: str = Field(description="PENDING, RUNNING, SUCCEEDED, FAILED or STOPPED.")
    sweep: str | None = Field(None, description="Sweep name from the spec.")
    message: str | None = None
    error_type: str | None = None
    start_time: float | None = None
    end_time: float | None = None
    driver_exit_code: int | None = None


# -- addresses, tokens, submission payload (pure) -------------------------------------------


def default_address(env: Mapping[str, str] | None = None) -> str:
    """$RAY_API_SERVER_ADDRESS, else an http(s) $RAY_ADDRESS, else http://127.0.0.1:8265."""
    env = os.environ if env is None else env
    for var in ("RAY_API_SERVER_ADDRESS", "RAY_ADDRESS"):
        value = env.get(var, "").strip()
        if value.startswith(("http://", "https://")):
            return value.rstrip("/")
        if value:
            log.debug("ignoring %s=%s: the Jobs API needs the dashboard's http URL", var, value)
    return DEFAULT_ADDRESS


@dataclass(frozen=True)
class RayToken:
    value: str | None = field(repr=False)  # never in logs, tracebacks or reprs
    source: str  # where it came from, for error messages; never the token itself


def resolve_ray_token(env: Mapping[str, str] | None = None, home: Path | None = None) -> RayToken:
    """Ray's own precedence: RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH, ~/.ray/auth_token."""
    env = os.environ if env is None else env
    if env.get("RAY_AUTH_MODE", "").strip().lower() == "disabled":
        return RayToken(None, "RAY_AUTH_MODE=disabled")
    if env.get("RAY_AUTH_TOKEN", "").strip():
        return RayToken(env["RAY_AUTH_TOKEN"].strip(), "$RAY_AUTH_TOKEN")
    if env.get("RAY_AUTH_TOKEN_PATH"):
        path = Path(env["RAY_AUTH_TOKEN_PATH"]).expanduser()
        try:
            token = path.read_text().strip()
        except OSError as exc:
            raise RayAuthError(f"RAY_AUTH_TOKEN_PATH={path}: cannot read it ({exc})") from None
        if not token:
            raise RayAuthError(f"RAY_AUTH_TOKEN_PATH={path} is empty; put the token in it")
        return RayToken(token, f"RAY_AUTH_TOKEN_PATH={path}")
    default = (home or Path.home()) / ".ray" / "auth_token"
    if default.is_file():
        token = default.read_text().strip()
        if token:
            return RayToken(token, str(default))
    return RayToken(None, "none")


def new_submission_id(sweep: str) -> str:
    return f"cpsweep-{sweep[:40]}-{uuid.uuid4().hex[:8]}"


def project_root() -> Path:
    for parent in Path(__file__).resolve().parents:
        if (parent / "pyproject.toml").is_file() and (parent / "service").is_dir():
            return parent
    raise JobsError(
        "cpsweep submit ships the project directory as the job's working_dir, but no "
        "pyproject.toml was found above service/; run from a source checkout (pip install -e .)"
    )


def build_submission(
    spec: SweepSpec,
    *,
    submission_id: str,
    mlflow_uri: str | None,
    output_dir: str | None = None,
    output_root: str = "/tmp/cpsweep",
    python: str = "python",
    user_code: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Keyword arguments for JobSubmissionClient.submit_job (no network).

    `user_code` (service.usercode.runtime_env_for) ships the spec's own factory modules."""
    dumped = yaml.safe_dump(spec.model_dump(mode="json", exclude_unset=True), sort_keys=False)
    encoded = base64.b64encode(dumped.encode()).decode()
    if len(encoded) > _MAX_SPEC_ENV_BYTES:
        raise SpecTooLarge(
            f"spec is {len(encoded)} bytes encoded, over the {_MAX_SPEC_ENV_BYTES} that fit "
            "in the job's environment; shorten search_space/arms"
        )
    env_vars = {SPEC_ENV: encoded, JOB_ID_ENV: submission_id}
    # Ray sets no such variable for a submitted job's driver; tracking reads either name.
    env_vars["RAY_JOB_SUBMISSION_ID"] = submission_id
    if mlflow_uri:
        env_vars["MLFLOW_TRACKING_URI"] = mlflow_uri
    out = output_dir or f"{output_root.rstrip('/')}/{submission_id}"
    if user_code:
        env_vars.update(user_code.get("env_vars", {}))
    runtime_env: dict[str, Any] = {
        "working_dir": str(project_root()),
        "excludes": list(_EXCLUDES),
        "env_vars": env_vars,
    }
    if user_code and user_code.get("py_modules"):
        runtime_env["py_modules"] = list(user_code["py_modules"])
    return {
        "entrypoint": f"{shlex.quote(python)} -m service.job_entry --output-dir {shlex.quote(out)}",
        "submission_id": submission_id,
        "runtime_env": runtime_env,
        "metadata": {"cpsweep": "1", "sweep": spec.name},
    }


def _job_info(details: Any) -> JobInfo:
    meta = details.metadata or {}

    def secs(ms: Any) -> float | None:
        return None if ms is None else float(ms) / 1000.0

    return JobInfo(
        id=details.submission_id or details.job_id,
        status=str(getattr(details.status, "value", details.status)),
        sweep=meta.get("sweep"),
        message=details.message,
        error_type=details.error_type,
        start_time=secs(details.start_time),
        end_time=secs(details.end_time),
        driver_exit_code=details.driver_exit_code,
    )


# -- the client ------------------------------------------------------------------------------


class _HTTPError(JobsError):
    def __init__(self, status: int, text: str):
        super().__init__(f"Ray Jobs API answered {status}: {text.strip()[:500]}")
        self.status = status


def _sdk_client_class() -> type:
    from ray.job_submission import JobSubmissionClient

    class _Client(JobSubmissionClient):  # type: ignore[misc, valid-type]
        """The SDK with a timeout on every request and typed HTTP errors.

        Ray's SDK calls requests without a timeout and raises a bare RuntimeError whose
        text is the only hint of a 404; both matter behind a REST service.
        """

        def __init__(self, address: str, timeout: tuple[float, float], **kwargs: Any):
            self._cpsweep_timeout = timeout
            super().__init__(address, **kwargs)

        def _do_request(self, method: str, endpoint: str, **kwargs: Any) -> Any:
            kwargs.setdefault("timeout", self._cpsweep_timeout)
            return super()._do_request(method, endpoint, **kwargs)

        def _raise_error(self, r: Any) -> None:
            raise _HTTPError(r.status_code, r.text)

    return _Client


class JobsClient:
    """cpsweep's view of one cluster's Ray Jobs API; thread-safe, connects lazily.

    Every request has a connect and a read timeout, and no lock is held while one is
    on the wire: a dashboard that accepts and never answers costs each caller at most
    its own timeout instead of queueing every other caller behind it.
    """

    def __init__(
        self,
        address: str | None = None,
        *,
        token: RayToken | None = None,
        connect_timeout_s: float = 3.0,
        read_timeout_s: float = 30.0,
    ):
        self.address = (address or default_address()).rstrip("/")
        self._token = token if token is not None else resolve_ray_token()
        self._timeout = (connect_timeout_s, read_timeout_s)
        self._sdk: Any = None
        self._lock = threading.Lock()

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self._token.value}"} if self._token.value else {}

    def _call(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        """Run an SDK call, translating its errors into ours."""
        import requests
        from ray.exceptions import AuthenticationError

        try:
            return fn(*args, **kwargs)
        except AuthenticationError as exc:
            if self._token.value is None:
                raise RayAuthError(
                    f"the Ray cluster at {self.address} requires a token and none was found: "
                    "set RAY_AUTH_TOKEN=<token> or RAY_AUTH_TOKEN_PATH=<file>, or write it to "
                    "~/.ray/auth_token (print it on the head node with `ray get-auth-token`)"
                ) from None
            raise RayAuthError(
                f"the Ray cluster at {self.address} rejected the token from "
                f"{self._token.source}; use the cluster's token (`ray get-auth-token` on the "
                f"head node). Ray said: {str(exc).splitlines()[0]}"
            ) from None
        except (ConnectionError, requests.exceptions.RequestException) as exc:
            raise RayUnreachable(
                f"cannot reach the Ray Jobs API at {self.address} ({type(exc).__name__}); is "
                "the head's dashboard up (ray[default]) and is the address http://HEAD:8265?"
            ) from None

    def _client(self) -> Any:
        sdk = self._sdk
        if sdk is not None:
            return sdk
        # The SDK's constructor asks the dashboard for its version: off the lock, so
        # concurrent first callers may each build one; the first stored wins.
        built = self._call(
            _sdk_client_class(), self.address, timeout=self._timeout, headers=self._headers()
        )
        with self._lock:
            if self._sdk is None:
                self._sdk = built
            return self._sdk

    def ping(self) -> None:
        """Raise RayUnreachable / RayAuthError unless the Jobs API answers."""
        client = self._client()
        self._call(client._check_connection_and_version)

    def submit(
        self,
        spec: SweepSpec,
        *,
        mlflow_uri: str | None = None,
        output_dir: str | None = None,
        output_root: str = "/tmp/cpsweep",
        python: str = "python",
        user_code: dict[str, Any] | None = None,
    ) -> str:
        """Submit; the job writes to output_dir, default <output_root>/<job id>."""
        sid = new_submission_id(spec.name)
        kwargs = build_submission(
            spec,
            submission_id=sid,
            mlflow_uri=mlflow_uri,
            output_dir=output_dir,
            output_root=output_root,
            python=python,
            user_code=user_code,
        )
        client = self._client()
        job_id = str(self._call(client.submit_job, **kwargs))
        log.info("submitted sweep %s as Ray job %s to %s", spec.name, job_id, self.address)
        return job_id

    def list(self) -> list[JobInfo]:
        """cpsweep jobs on the cluster, newest first."""
        client = self._client()
        jobs = [
            _job_info(d)
            for d in self._call(client.list_jobs)
            if (d.metadata or {}).get("cpsweep") == "1"
        ]
        return sorted(jobs, key=lambda j: j.start_time or 0.0, reverse=True)

    def info(self, job_id: str) -> JobInfo:
        if not re.fullmatch(JOB_ID_PATTERN, job_id):
            raise JobNotFound(f"{job_id!r} is not a job id (expected cpsweep-<sweep>-<hex>)")
        client = self._client()
        try:
            details = self._call(client.get_job_info, job_id)
        except _HTTPError as exc:
            if exc.status == 404:
                raise JobNotFound(f"no job {job_id!r} on {self.address}") from None
            raise
        if (details.metadata or {}).get("cpsweep") != "1":
            raise JobNotFound(f"job {job_id!r} on {self.address} is not a cpsweep sweep")
        return _job_info(details)

    def logs(self, job_id: str) -> str:
        self.info(job_id)
        return str(self._call(self._client().get_job_logs, job_id))

    async def tail(self, job_id: str) -> AsyncIterator[str]:
        """Log chunks as the driver writes them, until the job ends."""
        import aiohttp

        self.info(job_id)
        try:
            async for chunk in self._client().tail_job_logs(job_id):
                yield chunk
        except aiohttp.ClientError as exc:
            raise RayUnreachable(
                f"log stream of {job_id} from {self.address} broke ({type(exc).__name__}); "
                f"`cpsweep logs {job_id}` prints what was written"
            ) from None

    def stop(self, job_id: str) -> bool:
        """Ask the job to stop; False when it had already ended."""
        self.info(job_id)
        stopped = bool(self._call(self._client().stop_job, job_id))
        log.info("stop %s: %s", job_id, "requested" if stopped else "already finished")
        return stopped

    def wait(self, job_id: str, timeout_s: float | None = None, poll_s: float = 2.0) -> JobInfo:
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while True:
            info = self.info(job_id)
            if info.status in _TERMINAL:
                return info
            if deadline is not None and time.monotonic() > deadline:
                raise JobsError(f"job {job_id} still {info.status} after {timeout_s:.0f} s")
            time.sleep(poll_s)
