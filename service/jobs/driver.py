"""A submitted sweep's driver on the cluster: which Python runs it and where its results last.

Shared by the submitting side (service.jobs.client) and the cluster side (service.job_entry), so it
imports the standard library only: it must run, and explain itself, on an interpreter that
lacks the project's dependencies.

**Interpreter.** A Ray Job's entrypoint is a shell command run on the head node with the
PATH that `ray start` had; Ray records nowhere which Python it runs on. `.venv/bin/ray start`
from a shell without the venv activated leaves a `python` on PATH that lacks Ray (or none at
all). So, unless `--python` names one, the entrypoint tries, in order: `$CPSWEEP_PYTHON` on
the head node, the submitting interpreter's path (the same install when the head is this
machine or built like it), the binary of the Ray worker that runs the entrypoint (right for
non-venv installs such as Ray's images), `python3`, `python`, and takes the first that has
every module in DRIVER_MODULES. `cpsweep submit` first runs this as a short preflight job and
submits the sweep with the interpreter found, or refuses naming what each candidate lacks.

**Results.** Ray runs the entrypoint inside a temporary copy of the working directory that it
deletes once no job references it, so nothing may be written relative to it. The MLflow store
is, in order: the spec's `tracking.uri`, `MLFLOW_TRACKING_URI` (from `--mlflow-uri`, else the
cluster's own environment), else `sqlite:///<results dir>/mlflow.db`. The results dir (summary,
submitted spec, Tune state) is `--output-dir`, else `<root>/<job id>` with the root from
`--output-root`, `$CPSWEEP_RESULTS_DIR` on the cluster, or `~/cpsweep-results`. Places inside
the working directory or Ray's temporary directory are refused, and so is `/tmp` unless chosen
explicitly; an MLflow server must answer from the head node.
"""

from __future__ import annotations

import json
import os
import shlex
import socket
import sys
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

__all__ = [
    "DEFAULT_RESULTS_ROOT",
    "DRIVER_MODULES",
    "JOB_ID_ENV",
    "LACKS_EXIT",
    "PREFLIGHT_MARK",
    "PYTHON_ENV",
    "REFUSED_EXIT",
    "RESULTS_ROOT_ENV",
    "SPEC_ENV",
    "DriverPlan",
    "check_plan",
    "entrypoint",
    "missing_modules",
    "plan_driver",
    "preflight_line",
    "read_preflight",
]

SPEC_ENV = "CPSWEEP_SPEC_B64"  # the validated spec, base64 (Ray expands $VAR in env vars)
JOB_ID_ENV = "CPSWEEP_JOB_ID"
PYTHON_ENV = "CPSWEEP_PYTHON"  # set on the head node before `ray start` to name the Python
RESULTS_ROOT_ENV = "CPSWEEP_RESULTS_DIR"  # set on the head node to move the default root
DEFAULT_RESULTS_ROOT = "~/cpsweep-results"
DRIVER_MODULES = ("ray", "torch", "mlflow", "yaml", "pydantic")
PREFLIGHT_MARK = "CPSWEEP_PREFLIGHT"  # prefix of the one JSON line a --check run prints
LACKS_EXIT = 10  # this interpreter lacks a module: the entrypoint tries the next one
REFUSED_EXIT = 3  # no durable, reachable place for the results: nothing was started
_DB_PORTS = {"postgresql": 5432, "mysql": 3306, "mssql": 1433}


# -- interpreter ---------------------------------------------------------------------------


def missing_modules(modules: tuple[str, ...] = DRIVER_MODULES) -> list[str]:
    """The driver's modules this interpreter cannot import (found, not imported: fast)."""
    import importlib.util

    return [m for m in modules if importlib.util.find_spec(m) is None]


def entrypoint(python: str | None, args: list[str], client_python: str, probe: bool) -> str:
    """Shell command running `python -m service.job_entry ARGS` on the right interpreter.

    A found (or given) `python` runs directly unless `probe`. Otherwise each candidate in
    turn (only `python` when given): job_entry exits LACKS_EXIT (naming what is missing) on
    one that lacks a driver module and the loop goes on; any other exit status is the job's.
    """
    tail = " ".join(shlex.quote(a) for a in ["-m", "service.job_entry", *args])
    if python and not probe:
        return f"{shlex.quote(python)} {tail}"
    candidates = [
        f'"${{{PYTHON_ENV}:-}}"',
        shlex.quote(client_python),
        '"$(readlink /proc/$PPID/exe 2>/dev/null)"',  # $PPID: the Ray worker running us
        "python3",
        "python",
    ]
    candidates = [shlex.quote(python)] if python else candidates
    return (
        f"for py in {' '.join(candidates)}; do "
        '[ -n "$py" ] || continue; '
        'command -v "$py" >/dev/null 2>&1 || { echo "cpsweep-preflight: $py: not found"; continue; }; '
        f'"$py" {tail}; rc=$?; [ "$rc" -eq {LACKS_EXIT} ] || exit "$rc"; '
        "done; "
        f"echo 'cpsweep-preflight: no candidate Python has {', '.join(DRIVER_MODULES)}'; "
        f"exit {LACKS_EXIT}"
    )


# -- results ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class DriverPlan:
    """Where one job's results go, as resolved on the node that runs its driver."""

    results_dir: str
    mlflow_uri: str | None  # None: tracking disabled in the spec
    explicit_dir: bool  # chosen by someone (flag or cluster variable), not the built-in default
    host: str = field(default_factory=socket.gethostname)
    python: str = sys.executable


def plan_driver(
    job_id: str,
    *,
    output_dir: str | None,
    output_root: str | None,
    tracking: dict[str, object],
    env: dict[str, str] | None = None,
) -> DriverPlan:
    """Resolve the results dir and MLflow URI (see the module docstring for the order)."""
    env = dict(os.environ) if env is None else env

    def expand(path: str) -> Path:  # ~ from `env`, the job's own environment
        home = env.get("HOME")
        if home and (path == "~" or path.startswith("~/")):
            return Path(home + path[1:])
        return Path(path).expanduser()

    if output_dir:
        results, explicit = expand(output_dir), True
    else:
        root = output_root or env.get(RESULTS_ROOT_ENV) or ""
        explicit = bool(root)
        results = expand(root or DEFAULT_RESULTS_ROOT) / job_id
    results = Path(os.path.abspath(results)) if results.is_absolute() else results
    uri: str | None = None
    if tracking.get("enabled", True) is not False:
        uri = str(tracking.get("uri") or env.get("MLFLOW_TRACKING_URI") or "")
        uri = uri or f"sqlite:///{results / 'mlflow.db'}"
    return DriverPlan(str(results), uri, explicit)


def _ray_temp_dir(cwd: Path) -> Path | None:
    """Ray's temp dir, when cwd is a job's working_dir copy under <temp>/session_*/runtime_resources."""
    for parent in cwd.parents:
        if parent.name == "runtime_resources":
            return parent.parent.parent
    return None


def _inside(path: Path, root: Path) -> bool:
    return path == root or root in path.parents


def _place_problem(
    what: str, path: Path, explicit: bool, cwd: Path
) -> tuple[str | None, str | None]:
    """(problem, warning) for writing `what` at `path` from a job whose cwd is `cwd`."""
    if not path.is_absolute():
        return (
            f"{what} {path} is a relative path: it would land in the job's working_dir, a "
            "temporary copy Ray deletes; give an absolute path",
            None,
        )
    path, cwd = Path(os.path.realpath(path)), Path(os.path.realpath(cwd))
    if _inside(path, cwd):
        return f"{what} {path} is inside the job's working_dir {cwd}, which Ray deletes", None
    ray_tmp = _ray_temp_dir(cwd)
    if ray_tmp is not None and _inside(path, ray_tmp):
        return (
            f"{what} {path} is inside Ray's temporary directory {ray_tmp}, which each new Ray "
            "session replaces",
            None,
        )
    warning = None
    tmp_roots = {Path("/tmp"), Path(os.path.realpath(tempfile.gettempdir()))}
    if any(_inside(path, t) for t in tmp_roots):
        if not explicit:
            return (
                f"{what} {path} is under a temporary directory (HOME={Path.home()}), which the "
                f"system may clear; pass --output-dir DIR or set {RESULTS_ROOT_ENV} on the head "
                "node to a lasting directory",
                None,
            )
        warning = f"{what} {path} is under a temporary directory, which the system may clear"
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not (existing.is_dir() and os.access(existing, os.W_OK | os.X_OK)):
        return f"{what} {path}: cannot create it ({existing} is not a writable directory)", None
    return None, warning


def _store_problem(
    uri: str, explicit: bool, cwd: Path, timeout_s: float
) -> tuple[str | None, str | None]:
    """(problem, warning) for the MLflow store at `uri`, seen from this node."""
    parts = urlsplit(uri)
    scheme = parts.scheme.split("+")[0]
    if scheme in ("sqlite", "file", ""):
        raw = uri[len("sqlite:///") :] if scheme == "sqlite" else (parts.path if scheme else uri)
        if scheme == "sqlite" and (not raw or raw == ":memory:"):
            return f"MLflow store {uri} is in memory: nothing would be kept", None
        return _place_problem(f"MLflow store {uri}: path", Path(raw), explicit, cwd)
    if scheme in ("http", "https"):
        import urllib.request

        try:
            with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout_s) as r:
                r.read(64)
        except Exception as exc:
            return (
                f"MLflow at {uri} does not answer from the head node {socket.gethostname()} "
                f"({type(exc).__name__}: {exc}); start it, or pass a --mlflow-uri the head node "
                "reaches",
                None,
            )
        return None, None
    if parts.hostname and (parts.port or scheme in _DB_PORTS):
        try:
            socket.create_connection(
                (parts.hostname, parts.port or _DB_PORTS[scheme]), timeout_s
            ).close()
        except OSError as exc:
            return (
                f"MLflow store {scheme}://{parts.hostname} unreachable from the head node: {exc}",
                None,
            )
        return None, None
    return None, f"MLflow store {uri}: not checked (scheme {scheme!r})"


def check_plan(
    plan: DriverPlan, cwd: Path | None = None, timeout_s: float = 5.0
) -> tuple[list[str], list[str]]:
    """(problems, warnings): problems mean the results would not last or not be written."""
    cwd = Path.cwd() if cwd is None else cwd
    checks = [_place_problem("results dir", Path(plan.results_dir), plan.explicit_dir, cwd)]
    if plan.mlflow_uri is not None:
        default = plan.mlflow_uri == f"sqlite:///{Path(plan.results_dir) / 'mlflow.db'}"
        explicit = plan.explicit_dir if default else True
        checks.append(_store_problem(plan.mlflow_uri, explicit, cwd, timeout_s))
    problems = [p for p, _ in checks if p]
    warnings = [w for _, w in checks if w]
    return problems, warnings


def preflight_line(plan: DriverPlan, problems: list[str], warnings: list[str]) -> str:
    """The JSON line a --check run prints, read back by the submitting side."""
    body = {**asdict(plan), "ok": not problems, "problems": problems, "warnings": warnings}
    return f"{PREFLIGHT_MARK} {json.dumps(body)}"


def read_preflight(log_text: str) -> tuple[dict[str, Any] | None, list[str]]:
    """(the --check JSON, or None) and the `cpsweep-preflight:` lines, from a probe's log."""
    found: dict[str, Any] | None = None
    notes: list[str] = []
    for line in log_text.splitlines():
        if line.startswith(PREFLIGHT_MARK + " "):
            found = json.loads(line[len(PREFLIGHT_MARK) + 1 :])
        elif line.startswith("cpsweep-preflight: "):
            notes.append(line[len("cpsweep-preflight: ") :].strip())
    return found, notes
