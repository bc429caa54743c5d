"""`cpsweep submit | jobs | status | logs | stop`: the command line of service.jobs.client."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

from pydantic import TypeAdapter

from service.jobs.client import (
    DEFAULT_ADDRESS,
    JobInfo,
    JobsClient,
    JobsError,
)
from service.jobs.trials import sweep_trials

__all__ = ["register_cli"]

log = logging.getLogger(__name__)


def _fmt_time(ts: float | None) -> str:
    return "-" if ts is None else datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M:%S")


def _print_error(cmd: str, exc: Exception) -> int:
    print(f"cpsweep {cmd}: error: {exc}", file=sys.stderr)
    return 1


def _follow(client: JobsClient, job_id: str) -> None:

    async def run() -> None:
        async for chunk in client.tail(job_id):
            sys.stdout.write(chunk)
            sys.stdout.flush()

    asyncio.run(run())


def _cmd_submit(args: argparse.Namespace) -> int:
    from service.spec import load_spec

    spec = load_spec(args.spec, args.set)  # ConfigError names the field; exit 2

    from service.jobs.client import project_root
    from service.usercode import add_import_dir, preflight, runtime_env_for

    add_import_dir(Path(args.spec).parent)
    preflight(spec)  # the spec's factories import here, so they will on the cluster too
    user_code = runtime_env_for(spec, project_root())
    uri = args.mlflow_uri or os.environ.get("MLFLOW_TRACKING_URI")
    if not args.verbose:  # Ray logs every .gitignore it honours while packaging
        logging.getLogger("ray._private.runtime_env").setLevel(logging.ERROR)
        logging.getLogger("ray.dashboard.modules.dashboard_sdk").setLevel(logging.WARNING)
    client = JobsClient(args.address)
    try:
        job_id = client.submit(
            spec,
            mlflow_uri=uri,
            output_dir=args.output_dir,
            python=args.python,
            user_code=user_code,
        )
        print(job_id)
        results = _results_lines(client.info(job_id))
        print(results, file=sys.stderr)
        where = f" --address {client.address}"
        if args.no_wait:
            print(f"follow it: cpsweep logs {job_id} --follow{where}", file=sys.stderr)
            print(f"status:    cpsweep status {job_id}{where}", file=sys.stderr)
            return 0
        _follow(client, job_id)
        info = client.wait(job_id)
    except JobsError as exc:
        return _print_error("submit", exc)
    print(f"{job_id}: {info.status} {info.message or ''}".rstrip(), file=sys.stderr)
    print(results, file=sys.stderr)
    return 0 if info.status == "SUCCEEDED" else 1


def _results_lines(info: JobInfo) -> str:
    """Where a job's results are, and how to open them."""
    on = f" on {info.results_host}" if info.results_host else ""
    lines = [f"results: {info.results_dir}{on} (summary.json, submitted_spec.yaml)"]
    uri = info.mlflow_uri
    if uri and uri.startswith("sqlite:///"):
        lines.append(f"MLflow:  {uri}{on}; there: mlflow ui --backend-store-uri {uri}")
    elif uri:
        lines.append(f"MLflow:  {uri}")
    else:
        lines.append("MLflow:  off (tracking.enabled: false)")
    return "\n".join(lines)


def _cmd_jobs(args: argparse.Namespace) -> int:
    try:
        jobs = JobsClient(args.address).list()
    except JobsError as exc:
        return _print_error("jobs", exc)
    if args.json:
        print(TypeAdapter(list[JobInfo]).dump_json(jobs, indent=2).decode())
        return 0
    rows = [("id", "status", "sweep", "start")]
    rows += [(j.id, j.status, j.sweep or "-", _fmt_time(j.start_time)) for j in jobs]
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())
    return 0


def _cmd_status(args: argparse.Namespace) -> int:
    try:
        info = JobsClient(args.address).info(args.id)
    except JobsError as exc:
        return _print_error("status", exc)
    out = info.model_dump()
    if args.trials:
        uri = args.mlflow_uri or info.mlflow_uri or os.environ.get("MLFLOW_TRACKING_URI")
        trials, note = sweep_trials(uri, args.id)
        out["trials"] = None if trials is None else [t.model_dump() for t in trials]
        out["trials_note"] = note

    print(json.dumps(out, indent=2))
    return 0


def _cmd_logs(args: argparse.Namespace) -> int:
    client = JobsClient(args.address)
    try:
        if args.follow:
            _follow(client, args.id)
        else:
            sys.stdout.write(client.logs(args.id))
    except JobsError as exc:
        return _print_error("logs", exc)
    return 0


def _cmd_stop(args: argparse.Namespace) -> int:
    client = JobsClient(args.address)
    try:
        stopped = client.stop(args.id)
        info = client.wait(args.id, timeout_s=60) if args.wait else client.info(args.id)
    except JobsError as exc:
        return _print_error("stop", exc)
    print(f"{args.id}: {'stop requested' if stopped else 'already finished'}; {info.status}")
    return 0


def _address_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--address",
        help=f"Ray dashboard URL (default $RAY_API_SERVER_ADDRESS, $RAY_ADDRESS or {DEFAULT_ADDRESS})",
    )


def register_cli(sub: Any) -> None:
    """Add submit, jobs, status, logs and stop to the `cpsweep` parser."""
    s = sub.add_parser("submit", help="submit a sweep spec to a Ray cluster as a Ray Job")
    s.add_argument("spec", help="YAML SweepSpec; validated here, shipped inline")
    _address_arg(s)
    s.add_argument("--mlflow-uri", help="tracking URI for the job (default $MLFLOW_TRACKING_URI)")
    s.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="override a spec field"
    )
    s.add_argument("--no-wait", action="store_true", help="print the job id and return")
    s.add_argument(
        "--output-dir",
        help="results dir on the head node (default $CPSWEEP_RESULTS_DIR/<job id> there, "
        "else ~/cpsweep-results/<job id>)",
    )
    s.add_argument(
        "--python",
        help="Python on the head node that has Ray (default: found by a preflight job: "
        "$CPSWEEP_PYTHON there, this interpreter's path, Ray's own, python3, python)",
    )
    s.set_defaults(func=_cmd_submit)

    j = sub.add_parser("jobs", help="list cpsweep jobs on a Ray cluster")
    _address_arg(j)
    j.add_argument("--json", action="store_true")
    j.set_defaults(func=_cmd_jobs)

    st = sub.add_parser("status", help="status of one cpsweep job (JSON)")
    st.add_argument("id")
    _address_arg(st)
    st.add_argument("--trials", action="store_true", help="add each trial's results from MLflow")
    st.add_argument("--mlflow-uri", help="default: the job's, else $MLFLOW_TRACKING_URI")
    st.set_defaults(func=_cmd_status)

    lg = sub.add_parser("logs", help="print (or --follow) a job's driver log")
    lg.add_argument("id")
    _address_arg(lg)
    lg.add_argument("--follow", action="store_true", help="stream until the job ends")
    lg.set_defaults(func=_cmd_logs)

    sp = sub.add_parser("stop", help="stop a running cpsweep job")
    sp.add_argument("id")
    _address_arg(sp)
    sp.add_argument("--wait", action="store_true", help="wait until it has stopped")
    sp.set_defaults(func=_cmd_stop)
