"""A real multi-node Ray cluster on this host, for tests: `ray start` per node.

Each node runs `ray start --block` in its own process group and temp dir, so
teardown stops exactly the processes this helper started (never `ray stop`,
which would take down other clusters on the machine). Token authentication is
on with a fresh token passed to every process through the environment.
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
from pathlib import Path

__all__ = ["CPSWEEP", "RAY", "RayNodes", "free_port"]

_BIN = Path(sys.executable).parent
RAY = str(_BIN / "ray")
CPSWEEP = str(_BIN / "cpsweep")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class RayNodes:
    """Head (with dashboard and `trial_driver` slots) plus `workers` extra nodes."""

    def __init__(self, tmp: Path, *, head_cpus: int = 1, worker_cpus: int = 1, workers: int = 1):
        self.tmp = tmp
        self.head_cpus, self.worker_cpus, self.workers = head_cpus, worker_cpus, workers
        self.gcs_port, self.dashboard_port = free_port(), free_port()
        self.gcs_address = f"127.0.0.1:{self.gcs_port}"
        self.dashboard_url = f"http://127.0.0.1:{self.dashboard_port}"
        self.env = {
            **os.environ,
            "RAY_AUTH_MODE": "token",
            "RAY_AUTH_TOKEN": secrets.token_hex(16),
            "RAY_USAGE_STATS_ENABLED": "0",
            "PYTHONUNBUFFERED": "1",
        }
        self.procs: list[subprocess.Popen[bytes]] = []

    def _start(self, name: str, args: list[str]) -> None:
        # Short temp dirs: Ray's unix socket paths must stay under ~100 characters.
        temp = Path(f"/tmp/cps-{name}-{self.gcs_port}")
        log = (self.tmp / f"ray-{name}.log").open("wb")
        self.procs.append(
            subprocess.Popen(
                [RAY, "start", "--block", "--disable-usage-stats", f"--temp-dir={temp}", *args],
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        )

    def __enter__(self) -> RayNodes:
        self._start(
            "head",
            [
                "--head",
                f"--port={self.gcs_port}",
                f"--num-cpus={self.head_cpus}",
                '--resources={"trial_driver": 16}',
                "--dashboard-host=127.0.0.1",
                f"--dashboard-port={self.dashboard_port}",
                f"--ray-client-server-port={free_port()}",
                f"--dashboard-agent-listen-port={free_port()}",
                f"--metrics-export-port={free_port()}",
                f"--node-manager-port={free_port()}",
                f"--object-manager-port={free_port()}",
            ],
        )
        self._wait(lambda: self._port_open(self.dashboard_port), "the head's dashboard")
        for i in range(self.workers):
            self._start(
                f"worker{i}",
                [
                    f"--address={self.gcs_address}",
                    f"--num-cpus={self.worker_cpus}",
                    f"--dashboard-agent-listen-port={free_port()}",
                    f"--metrics-export-port={free_port()}",
                    f"--node-manager-port={free_port()}",
                    f"--object-manager-port={free_port()}",
                ],
            )
        self._wait(lambda: self.alive_nodes() == 1 + self.workers, "all nodes to join")
        return self

    def __exit__(self, *exc: object) -> None:
        for p in self.procs:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGTERM)
        time.sleep(2)
        for p in self.procs:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGKILL)
            p.wait(timeout=30)

    @staticmethod
    def _port_open(port: int) -> bool:
        with socket.socket() as s:
            return s.connect_ex(("127.0.0.1", port)) == 0

    def _wait(self, ok, what: str, timeout: float = 120) -> None:
        deadline = time.time() + timeout
        while time.time() < deadline:
            if any(p.poll() is not None for p in self.procs):
                raise RuntimeError(
                    f"a ray node exited while waiting for {what}; see {self.tmp}/ray-*.log"
                )
            if ok():
                return
            time.sleep(1)
        raise TimeoutError(f"timed out waiting for {what}; see {self.tmp}/ray-*.log")

    def alive_nodes(self) -> int:
        code = (
            f"import ray; ray.init(address={self.gcs_address!r}, logging_level='ERROR');"
            "print(sum(n['Alive'] for n in ray.nodes()))"
        )
        out = subprocess.run(
            [sys.executable, "-c", code], env=self.env, capture_output=True, text=True, timeout=120
        )
        try:
            return int(out.stdout.strip().splitlines()[-1])
        except (IndexError, ValueError):
            return 0
