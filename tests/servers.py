"""Real servers for integration tests: token-protected Ray clusters and process groups.

Everything binds 127.0.0.1 on free ports and lives under one unique temp root, so a
test run never touches another Ray instance on this host (no plain `ray stop`): each
`ray start` runs in its own process group, which teardown kills, and then any
straggler whose command line names our temp root.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

__all__ = [
    "REPO",
    "VENV_BIN",
    "Processes",
    "RayCluster",
    "base_env",
    "free_port",
    "start_ray_cluster",
    "wait_http",
]

REPO = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _ports(n: int) -> list[int]:
    """n distinct free ports (held together so the kernel can't hand one out twice)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [int(s.getsockname()[1]) for s in socks]
    finally:
        for s in socks:
            s.close()


def wait_http(
    url: str,
    timeout_s: float,
    headers: dict[str, str] | None = None,
    proc: subprocess.Popen | None = None,
    log: Path | None = None,
) -> None:
    """Poll `url` until it answers below 500; fail early if `proc` (the server) exits."""
    deadline = time.monotonic() + timeout_s
    last: Exception | None = None
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            tail = log.read_text()[-3000:] if log and log.exists() else ""
            raise RuntimeError(
                f"{proc.args[0]} exited with {proc.returncode} before {url} answered:\n{tail}"
            )
        try:
            req = urllib.request.Request(url, headers=headers or {})
            with urllib.request.urlopen(req, timeout=2) as r:
                if r.status < 500:
                    return
        except Exception as exc:
            last = exc
        time.sleep(0.5)
    raise TimeoutError(f"{url} did not answer in {timeout_s:.0f} s: {last}")


def base_env(**extra: str) -> dict[str, str]:
    """This environment minus anything that would point at another Ray/MLflow instance."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("RAY_", "MLFLOW_")) and k != "CPSWEEP_API_TOKEN"
    }
    env["PATH"] = f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}"  # `python` = this venv
    env["PYTHONPATH"] = str(REPO)
    env.update(extra)
    return env


@dataclass
class Processes:
    """Process groups we started, and a marker string found in their command lines."""

    marker: str
    groups: list[int] = field(default_factory=list)

    def stop(self, grace_s: float = 5.0) -> None:
        import psutil

        # Ray workers and job drivers call setsid: collect them as descendants first.
        doomed: list[psutil.Process] = []
        for p in psutil.process_iter(["pid", "cmdline"]):
            try:
                ours = os.getpgid(p.pid) in self.groups or (
                    p.pid != os.getpid() and self.marker in " ".join(p.info["cmdline"] or [])
                )
                if ours:
                    doomed += [p, *p.children(recursive=True)]
            except (psutil.NoSuchProcess, psutil.AccessDenied, ProcessLookupError):
                pass
        for pgid in self.groups:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pgid, signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        while time.monotonic() < deadline and any(self._alive(g) for g in self.groups):
            time.sleep(0.25)
        for pgid in self.groups:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pgid, signal.SIGKILL)
        for p in doomed:
            with contextlib.suppress(psutil.NoSuchProcess):
                p.kill()

    @staticmethod
    def _alive(pgid: int) -> bool:
        import psutil

        for p in psutil.process_iter(["status"]):
            try:
                if os.getpgid(p.pid) == pgid and p.info["status"] != psutil.STATUS_ZOMBIE:
                    return True
            except (ProcessLookupError, psutil.NoSuchProcess):
                pass
        return False


@dataclass
class RayCluster:
    dashboard: str  # http://127.0.0.1:<port>, the Jobs API
    gcs: str
    token: str
    root: Path
    env: dict[str, str]  # what a client needs: RAY_AUTH_TOKEN, PATH


def _ray_start(args: list[str], env: dict[str, str], log: Path, procs: Processes) -> None:
    """`ray start` in a process group of its own; one retry, since a loaded host can
    exceed Ray's fixed 30 s wait for a raylet to register ("timed out during startup")."""
    for attempt in (1, 2):
        with open(log, "a") as out:
            p = subprocess.Popen(
                [str(VENV_BIN / "ray"), "start", *args],
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its daemons keep this process group
            )
        procs.groups.append(p.pid)
        if p.wait(timeout=120) == 0:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(p.pid, signal.SIGKILL)  # half-started daemons of this attempt
        if attempt == 2:
            raise RuntimeError(f"ray start failed twice:\n{log.read_text()[-3000:]}")
        time.sleep(3)


def _node_args(ports: list[int], temp_dir: Path) -> list[str]:
    node_manager, object_manager, agent_http, agent_grpc, metrics, env_agent, wmin = ports
    return [
        f"--temp-dir={temp_dir}",
        f"--node-manager-port={node_manager}",
        f"--object-manager-port={object_manager}",
        f"--dashboard-agent-listen-port={agent_http}",
        f"--dashboard-agent-grpc-port={agent_grpc}",
        f"--metrics-export-port={metrics}",
        f"--runtime-env-agent-port={env_agent}",
        f"--min-worker-port={wmin}",
        f"--max-worker-port={wmin + 60}",
        "--disable-usage-stats",
    ]


def start_ray_cluster(
    root: Path, procs: Processes, *, head_cpus: int = 2, worker_cpus: int = 1
) -> RayCluster:
    """Head (`head_cpus`, 8 trial_driver slots, dashboard) plus a `worker_cpus` worker node.

    Clients use 127.0.0.1 only; Ray itself resolves a loopback --node-ip-address to the
    host's own address for node-to-node traffic, so no node IP is forced here.
    """
    root.mkdir(parents=True, exist_ok=True)
    token = secrets.token_hex(32)
    # Token mode on every node, token passed by value: a worker without it can't join.
    env = base_env(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=token)
    gcs_port, dash_port, client_port = _ports(3)
    head_ports = _ports(6)
    worker_ports = _ports(6)
    # Worker-port ranges must not overlap between the two nodes on this host.
    head_ports.append(20000 + secrets.randbelow(10000))
    worker_ports.append(head_ports[-1] + 100)
    _ray_start(
        [
            "--head",
            f"--port={gcs_port}",
            f"--dashboard-port={dash_port}",
            "--dashboard-host=127.0.0.1",
            f"--ray-client-server-port={client_port}",
            f"--num-cpus={head_cpus}",
            '--resources={"trial_driver": 8}',
            *_node_args(head_ports, root / "h"),
        ],
        env,
        root / "ray-head.log",
        procs,
    )
    gcs = f"127.0.0.1:{gcs_port}"
    # A second node on one host needs its own --temp-dir (sockets, session files).
    _ray_start(
        [f"--address={gcs}", f"--num-cpus={worker_cpus}", *_node_args(worker_ports, root / "w")],
        env,
        root / "ray-worker.log",
        procs,
    )
    dashboard = f"http://127.0.0.1:{dash_port}"
    wait_http(f"{dashboard}/api/version", 120, {"Authorization": f"Bearer {token}"})
    client_env = base_env(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=token)
    return RayCluster(dashboard, gcs, token, root, client_env)
