"""`cpsweep serve`: the command line of the REST API (service.api.app).

Every flag overrides the environment variable of its setting (service.api.settings).
"""

from __future__ import annotations

import argparse
from typing import Any

from service.jobs.client import DEFAULT_ADDRESS

__all__ = ["register_cli"]


def _cmd_serve(args: argparse.Namespace) -> int:
    # Imported here: every `cpsweep` command builds this parser, only serve needs FastAPI.
    from service.api.app import serve
    from service.api.settings import settings_from_args

    serve(settings_from_args(args))  # ConfigError (no token, bad bind) exits 2 via main
    return 0


def register_cli(sub: Any) -> None:
    """Add serve to the `cpsweep` parser."""
    sv = sub.add_parser("serve", help="run the REST API (FastAPI + uvicorn)")
    # No defaults here: a flag left out leaves $CPSWEEP_<FIELD> or the settings' default.
    sv.add_argument("--host", help="bind address (default $CPSWEEP_HOST or 127.0.0.1)")
    sv.add_argument("--port", type=int, help="bind port (default $CPSWEEP_PORT or 8000)")
    sv.add_argument("--token-file", help="file holding the API token (else $CPSWEEP_API_TOKEN)")
    sv.add_argument(
        "--insecure-no-auth",
        action="store_true",
        help="no token; only accepted with a loopback --host",
    )
    sv.add_argument("--ray-address", help=f"Ray dashboard URL (default {DEFAULT_ADDRESS})")
    sv.add_argument("--mlflow-uri", help="where sweeps log and trials are read from")
    sv.add_argument(
        "--output-root",
        help="results dirs on the head node (default $CPSWEEP_RESULTS_DIR or ~/cpsweep-results)",
    )
    sv.add_argument("--max-trials", type=int, help="largest sweep accepted (default 1000)")
    sv.add_argument("--max-workers", type=int, help="scaling.num_workers limit (default 32)")
    sv.add_argument("--max-cpus-per-trial", type=int, help="CPUs per trial limit (default 256)")
    sv.add_argument("--max-gpus-per-trial", type=float, help="GPUs per trial limit (default 16)")
    sv.add_argument(
        "--allowed-tracking-uri",
        action="append",
        help="a tracking.uri callers may set besides --mlflow-uri (repeatable; "
        "also $CPSWEEP_TRACKING_URIS, comma-separated)",
    )
    sv.add_argument("--header-timeout", type=float, help="seconds for request headers (10)")
    sv.add_argument("--body-timeout", type=float, help="seconds for a request body (15)")
    sv.add_argument("--max-connections", type=int, help="connections busy at once; then 503 (256)")
    sv.add_argument(
        "--max-client-connections",
        type=int,
        help="connections per client address; then its oldest idle one is closed (32)",
    )
    sv.add_argument("--max-parallel-specs", type=int, help="specs validated at once (4)")
    sv.set_defaults(func=_cmd_serve)
