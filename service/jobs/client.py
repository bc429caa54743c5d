"""Sweeps as Ray Jobs: submit a SweepSpec to a cluster, list, follow and stop it.

`cpsweep submit SPEC.yaml --address http://HEAD:8265` validates the spec here, then
submits a Ray Job whose working dir is this project (so `service` and `trainables`
import on every node) and whose entrypoint is `<python> -m service.job_entry`. The validated
spec travels inline, base64 in the job's env var `CPSWEEP_SPEC_B64` (Ray expands
`$VAR` inside runtime_env env vars, so plain YAML there could be altered); the entry
writes it to `<dir>/submitted_spec.yaml` and runs `cpsweep run` on it, `--output-dir <dir>`.
Before that, a short preflight job on the same cluster finds the Python that has Ray and
checks that the results dir and MLflow store last and answer (service.jobs.driver); the sweep
is submitted with what it found, recorded in the job's metadata, or refused with the reason.

Token auth (Ray >= 2.52, on by default for `ray start --head` in 2.60 once a token
exists): the dashboard wants `Authorization: Bearer <token>`. The Jobs SDK only sends
it when this process has `RAY_AUTH_MODE=token`; we resolve the token ourselves, in
Ray's order (`RAY_AUTH_TOKEN`, then the file `RAY_AUTH_TOKEN_PATH`, then
`~/.ray/auth_token`) and pass the header explicitly, so no global mode is needed.
`RAY_AUTH_MODE=disabled` sends none.
"""

from __future__ import annotations

import logging
import os
import re
import threading
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from service.jobs.driver import JOB_ID_ENV, SPEC_ENV
from service.jobs.errors import (
    JobNotFound,
    JobsError,
    RayAuthError,
    RayUnreachable,
    SpecTooLarge,
    SubmissionRefused,
)
from service.jobs.submit import build_submission, new_submission_id, project_root, run_preflight
from service.spec import SweepSpec
from trainables.core.policy import Policy

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
    "SubmissionRefused",
    "build_submission",
    "default_address",
    "new_submission_id",
    "project_root",
    "resolve_ray_token",
]

log = logging.getLogger(__name__)

DEFAULT_ADDRESS = "http://127.0.0.1:8265"
# Submission ids travel into Ray URL paths and MLflow filter strings: no '/', quotes, '..'.
JOB_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,199}$"
_TERMINAL = {"SUCCEEDED", "FAILED", "STOPPED"}


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
    results_dir: str | None = Field(
        None, description="On results_host: summary.json, the submitted spec, Tune's state."
    )
    results_host: str | None = Field(None, description="The node the driver writes on.")
    mlflow_uri: str | None = Field(None, description="Where the sweep logs; None: not tracked.")


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
        results_dir=meta.get("results_dir") or None,
        results_host=meta.get("results_host") or None,
        mlflow_uri=meta.get("mlflow_uri") or None,
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
        output_root: str | None = None,
        python: str | None = None,
        preflight_timeout_s: float = 120.0,
        user_code: dict[str, Any] | None = None,
        policy: Policy | None = None,
    ) -> str:
        """Preflight (service.jobs.driver), then submit with what it found, or raise.
        `policy` (the REST API's) binds every process of the job."""
        sid = new_submission_id(spec.name)
        client = self._client()
        probe = build_submission(
            spec,
            submission_id=sid,
            mlflow_uri=mlflow_uri,
            output_dir=output_dir,
            output_root=output_root,
            python=python,
            check=True,
            user_code=user_code,
            policy=policy,
        )
        found = run_preflight(self._call, client, probe, preflight_timeout_s)
        kwargs = build_submission(
            spec,
            submission_id=sid,
            mlflow_uri=found["mlflow_uri"],
            output_dir=found["results_dir"],
            python=found["python"],
            results_host=found["host"],
            user_code=user_code,
            policy=policy,
        )
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
