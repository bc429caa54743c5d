"""The entrypoint of a submitted sweep on the cluster: `python -m service.job_entry`.

`cpsweep submit` puts the validated spec, base64-encoded, in the job's env var
`CPSWEEP_SPEC_B64` (see service.jobs.client). This checks that the interpreter has the driver's
modules (exit 10 otherwise, so the entrypoint can try the next one), resolves and checks
where the results go (service.jobs.driver; exit 3 with the reason if they would not last),
then decodes the spec next to the results and runs `cpsweep run` on it. `--check` stops after
the checks and prints one JSON line for the submitting side. Imports stay in the standard
library until the interpreter is known to have the rest.
"""

from __future__ import annotations

import argparse
import base64
import os
import sys
from pathlib import Path

from service.jobs.driver import (
    JOB_ID_ENV,
    LACKS_EXIT,
    REFUSED_EXIT,
    SPEC_ENV,
    check_plan,
    missing_modules,
    plan_driver,
    preflight_line,
)

__all__ = ["job_entry"]


def _tracking(spec_yaml: bytes) -> dict[str, object]:
    from trainables.core.specdata import SpecDataError, load_yaml

    try:
        raw = load_yaml(spec_yaml.decode("utf-8")) or {}
    except (UnicodeDecodeError, SpecDataError):
        return {}  # `cpsweep run` below refuses the spec with the reason
    tracking = raw.get("tracking") if isinstance(raw, dict) else None
    return dict(tracking) if isinstance(tracking, dict) else {}


def job_entry(argv: list[str] | None = None) -> int:
    """Check the interpreter and the results' place, then run the inline spec."""
    p = argparse.ArgumentParser(prog="python -m service.job_entry")
    p.add_argument("--output-dir", help="the job's results dir (default <root>/<job id>)")
    p.add_argument("--output-root", help="default $CPSWEEP_RESULTS_DIR or ~/cpsweep-results")
    p.add_argument("--check", action="store_true", help="check only; print one JSON line")
    args = p.parse_args(argv)
    missing = missing_modules()
    if missing:
        print(f"cpsweep-preflight: {sys.executable}: lacks {', '.join(missing)}", flush=True)
        return LACKS_EXIT
    encoded = os.environ.get(SPEC_ENV)
    if not encoded:
        print(f"{SPEC_ENV} is not set: submit with `cpsweep submit`", file=sys.stderr)
        return 2
    spec_yaml = base64.b64decode(encoded)
    job_id = os.environ.get(JOB_ID_ENV) or os.environ.get("RAY_JOB_SUBMISSION_ID") or "job"
    plan = plan_driver(
        job_id,
        output_dir=args.output_dir,
        output_root=args.output_root,
        tracking=_tracking(spec_yaml),
    )
    problems, warnings = check_plan(plan)
    for w in warnings:
        print(f"cpsweep: warning: {w}", file=sys.stderr)
    if args.check:
        print(preflight_line(plan, problems, warnings), flush=True)
        return REFUSED_EXIT if problems else 0
    if problems:
        for problem in problems:
            print(f"cpsweep: refused, nothing was started: {problem}", file=sys.stderr)
        return REFUSED_EXIT
    if plan.mlflow_uri:  # the sweep would otherwise default to <cwd>/mlflow.db: the working_dir
        os.environ["MLFLOW_TRACKING_URI"] = plan.mlflow_uri
    print(f"cpsweep: results in {plan.results_dir} on {plan.host}; MLflow {plan.mlflow_uri}")
    from service.cli import main

    out = Path(plan.results_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "submitted_spec.yaml"  # kept next to the results, as their record
    path.write_bytes(spec_yaml)
    return main(["run", str(path), "--output-dir", str(out)])


if __name__ == "__main__":  # the entrypoint of submitted jobs: python -m service.job_entry
    sys.exit(job_entry())
