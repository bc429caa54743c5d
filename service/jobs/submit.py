"""What `cpsweep submit` sends to Ray: the preflight job, then the sweep's job.

build_submission is pure (no network): the keyword arguments of JobSubmissionClient.submit_job.
run_preflight runs the preflight job that service.jobs.driver describes and returns what it
found on the cluster (the interpreter, the results dir and host, the MLflow URI), which the
sweep's job is then built with; or raises SubmissionRefused with the reason.
"""

from __future__ import annotations

import base64
import logging
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import yaml

from service.jobs.driver import JOB_ID_ENV, REFUSED_EXIT, SPEC_ENV, entrypoint, read_preflight
from service.jobs.errors import JobsError, SpecTooLarge, SubmissionRefused
from service.spec import SweepSpec
from trainables.core.policy import Policy

__all__ = ["build_submission", "new_submission_id", "project_root", "run_preflight"]

log = logging.getLogger(__name__)

_MAX_SPEC_ENV_BYTES = 96 * 1024  # stays under Linux's 128 KiB per env string
_EXCLUDES = [
    ".venv", ".git", "runs", "mlruns", "mlartifacts", "*.db", "bench/results",
    ".mypy_cache", ".ruff_cache", ".pytest_cache", ".hypothesis", "__pycache__", "*.egg-info",
    "build",
]  # fmt: skip


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
    output_root: str | None = None,
    python: str | None = None,
    check: bool = False,
    results_host: str | None = None,
    user_code: dict[str, Any] | None = None,
    policy: Policy | None = None,
) -> dict[str, Any]:
    """Keyword arguments for JobSubmissionClient.submit_job (no network).

    `check` builds the preflight job (service.jobs.driver); python=None lets the entrypoint
    pick the interpreter on the cluster. The results' place goes into the metadata.
    `user_code` (service.usercode.runtime_env_for) ships the spec's own factory modules.
    `policy` goes into the job's environment, where the driver, every trial and every rank
    check each import and data root against it (trainables.core.policy).
    """
    env_vars = _job_env(spec, submission_id, mlflow_uri, user_code, policy)
    runtime_env: dict[str, Any] = {
        "working_dir": str(project_root()),
        "excludes": list(_EXCLUDES),
        "env_vars": env_vars,
    }
    if user_code and user_code.get("py_modules"):
        runtime_env["py_modules"] = list(user_code["py_modules"])
    args = ["--output-dir", output_dir] if output_dir else []
    args += ["--output-root", output_root] if output_root and not output_dir else []
    metadata = {"cpsweep": "check" if check else "1", "sweep": spec.name}
    if output_dir and not check:
        metadata.update(results_dir=output_dir, results_host=results_host or "")
        metadata.update(mlflow_uri=mlflow_uri or "" if spec.tracking.enabled else "")
    return {
        "entrypoint": entrypoint(
            python, [*args, "--check"] if check else args, sys.executable, probe=check
        ),
        "submission_id": f"{submission_id}-check" if check else submission_id,
        "runtime_env": runtime_env,
        "metadata": metadata,
    }


def _job_env(
    spec: SweepSpec,
    submission_id: str,
    mlflow_uri: str | None,
    user_code: dict[str, Any] | None,
    policy: Policy | None,
) -> dict[str, str]:
    """The job's environment: the spec inline (base64), its ids, MLflow, the user code's
    variables and, last so that nothing replaces it, the policy."""
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
    if user_code:
        env_vars.update(user_code.get("env_vars", {}))
    if policy is not None:
        env_vars.update(policy.to_env())
    return env_vars


def run_preflight(call: Any, sdk: Any, kwargs: dict[str, Any], timeout_s: float) -> dict[str, Any]:
    """Run the preflight job built by build_submission(check=True); its findings, or raise."""
    from ray.job_submission import JobStatus

    check_id = str(call(sdk.submit_job, **kwargs))
    deadline = time.monotonic() + timeout_s
    while (status := call(sdk.get_job_status, check_id)) not in (
        JobStatus.SUCCEEDED,
        JobStatus.FAILED,
        JobStatus.STOPPED,
    ):
        if time.monotonic() > deadline:
            call(sdk.stop_job, check_id)
            raise JobsError(f"the preflight job {check_id} did not finish in {timeout_s:.0f} s")
        time.sleep(0.25)
    text = str(call(sdk.get_job_logs, check_id))
    message = call(sdk.get_job_info, check_id).message or ""
    call(sdk.delete_job, check_id)
    found, notes = read_preflight(text)
    if found is None:
        if notes:
            raise SubmissionRefused(
                "no Python on the head node can run the sweep's driver: "
                + "; ".join(notes)
                + ". Pass --python with the interpreter `ray start` ran with on the head node, "
                "or export CPSWEEP_PYTHON=/path/to/python there before `ray start` (or start "
                "Ray with its virtual environment activated)"
            )
        tail = "\n".join(text.strip().splitlines()[-15:])
        raise SubmissionRefused(f"the preflight job {check_id} {status.value}: {message}\n{tail}")
    for warning in found.get("warnings") or []:
        log.warning("%s", warning)
    if not found.get("ok"):
        problems = "; ".join(found.get("problems") or [f"exit {REFUSED_EXIT}"])
        raise SubmissionRefused(f"the sweep was not started: {problems}")
    return found
