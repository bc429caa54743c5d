"""Load test of the REST API while the Ray dashboard is slow, loopback only.

Starts a real `cpsweep serve` on 127.0.0.1 whose Ray address is a socket server on
127.0.0.1 that accepts every connection and answers each request only after
`--dashboard-delay` seconds (a dashboard that is up but overloaded). Then sends
`--requests` mixed requests, `--concurrency` at a time, and records per route the
status codes and p50/p99 latency. The deliberate answers under a slow dashboard are
503 with Retry-After on the Ray routes and 200 on /healthz (the liveness; readiness is
/readyz); any other 5xx counts as an error.

    .venv/bin/python bench/api_load.py                        # 500 requests at 20 and 50
    .venv/bin/python bench/api_load.py --concurrency 30 --requests 200

Writes bench/results/api_load.json. Bounded: every request has a 30 s timeout, the
servers bind loopback and are stopped at the end.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import secrets
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from _common import RESULTS, command_line, machine_info, now_iso, setup_logging, write_json

log = logging.getLogger("bench.api_load")

VENV_BIN = Path(sys.executable).parent
SPEC = "name: load\ntrain: {epochs: 2, data: {name: digits}}\ntracking: {enabled: false}\n"
JOB = "cpsweep-load-00000000"


class SlowDashboard:
    """Loopback HTTP server that answers every request after `delay_s` (Ray's /api/version)."""

    def __init__(self, delay_s: float, max_connections: int = 256):
        self.delay_s = delay_s
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(max_connections)
        self.port = int(self.sock.getsockname()[1])
        self.slots = threading.BoundedSemaphore(max_connections)
        self.stopped = threading.Event()
        self.connections = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        self.sock.settimeout(0.2)
        while not self.stopped.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            self.connections += 1
            if not self.slots.acquire(blocking=False):
                conn.close()
                continue
            threading.Thread(target=self._answer, args=(conn,), daemon=True).start()

    def _answer(self, conn: socket.socket) -> None:
        try:
            conn.settimeout(30)
            data = b""
            while b"\r\n\r\n" not in data and len(data) < 65536:
                chunk = conn.recv(4096)
                if not chunk:
                    return
                data += chunk
            if self.stopped.wait(self.delay_s):
                return
            body = json.dumps(
                {"ray_version": "2.60.0", "ray_commit": "0", "version": "4", "session_name": "x"}
            ).encode()
            conn.sendall(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n"
                + f"Content-Length: {len(body)}\r\n\r\n".encode()
                + body
            )
        except OSError:
            pass
        finally:
            conn.close()
            self.slots.release()

    def close(self) -> None:
        self.stopped.set()
        self.sock.close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(root: Path, dashboard_port: int) -> tuple[subprocess.Popen[bytes], str, str]:
    token = secrets.token_urlsafe(32)
    (root / "token").write_text(token)
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "MLFLOW_"))}
    env.update(RAY_AUTH_TOKEN=secrets.token_hex(32), PYTHONPATH=str(RESULTS.parents[1]))
    out = (root / "api.log").open("w")
    proc = subprocess.Popen(
        [
            str(VENV_BIN / "cpsweep"),
            "serve",
            "--host=127.0.0.1",
            f"--port={port}",
            f"--token-file={root / 'token'}",
            f"--ray-address=http://127.0.0.1:{dashboard_port}",
        ],
        env=env,
        stdout=out,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    import httpx

    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"cpsweep serve exited: {(root / 'api.log').read_text()[-2000:]}")
        try:
            if httpx.get(f"{url}/healthz", timeout=5).status_code == 200:
                return proc, url, token
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise RuntimeError("cpsweep serve did not answer /healthz within 120 s")


def _mix(n: int, seed: int) -> list[str]:
    """Route names in a fixed random order: health probes, reads, valid and bad posts."""
    weights = {
        "GET /healthz": 40, "GET /v1/sweeps": 20, "GET /v1/sweeps/{id}": 10,
        "GET /v1/sweeps/{id}/logs": 10, "POST valid": 10, "POST invalid": 5, "POST nan": 5,
    }  # fmt: skip
    names = [name for name, w in weights.items() for _ in range(w)]
    rng = random.Random(seed)
    return [rng.choice(names) for _ in range(n)]


def _request(client: Any, auth: dict[str, str], route: str) -> Any:
    yaml_ct = {**auth, "Content-Type": "application/x-yaml"}
    calls: dict[str, Callable[[], Any]] = {
        "GET /healthz": lambda: client.get("/healthz"),
        "GET /v1/sweeps": lambda: client.get("/v1/sweeps", headers=auth),
        "GET /v1/sweeps/{id}": lambda: client.get(f"/v1/sweeps/{JOB}", headers=auth),
        "GET /v1/sweeps/{id}/logs": lambda: client.get(f"/v1/sweeps/{JOB}/logs", headers=auth),
        "POST valid": lambda: client.post("/v1/sweeps", content=SPEC, headers=yaml_ct),
        "POST invalid": lambda: client.post(
            "/v1/sweeps", content=SPEC.replace("epochs: 2", "epochs: -2"), headers=yaml_ct
        ),
        "POST nan": lambda: client.post(
            "/v1/sweeps", content=SPEC + "num_samples: .nan\n", headers=yaml_ct
        ),
    }
    return calls[route]()


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered)) - 1))]


def run_load(url: str, token: str, requests: int, concurrency: int, seed: int) -> dict[str, Any]:
    import httpx

    auth = {"Authorization": f"Bearer {token}"}
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    routes = _mix(requests, seed)
    results: list[tuple[str, int, float, str]] = []

    def one(route: str) -> tuple[str, int, float, str]:
        t0 = time.perf_counter()
        try:
            r = _request(client, auth, route)
            code, note = r.status_code, ""
            if route == "GET /healthz":
                note = r.json().get("status", "")
            elif code == 503 and "retry-after" not in r.headers:
                note = "503 without Retry-After"
        except httpx.HTTPError as exc:
            code, note = 0, type(exc).__name__
        return route, code, time.perf_counter() - t0, note

    with (
        httpx.Client(base_url=url, limits=limits, timeout=30) as client,
        ThreadPoolExecutor(concurrency) as pool,
    ):
        t0 = time.perf_counter()
        results = list(pool.map(one, routes))
        wall = time.perf_counter() - t0
    per_route: dict[str, Any] = {}
    for route in dict.fromkeys(routes):
        mine = [r for r in results if r[0] == route]
        lat = [r[2] for r in mine]
        codes: dict[str, int] = {}
        for r in mine:
            codes[str(r[1])] = codes.get(str(r[1]), 0) + 1
        per_route[route] = {
            "requests": len(mine),
            "codes": dict(sorted(codes.items())),
            "p50_ms": round(1000 * statistics.median(lat), 1),
            "p99_ms": round(1000 * _pct(lat, 0.99), 1),
            "max_ms": round(1000 * max(lat), 1),
        }
    all_lat = [r[2] for r in results]
    # Deliberate: 503 with Retry-After from a Ray route (the dashboard is too slow).
    errors = [
        r for r in results if r[1] == 0 or (r[1] >= 500 and r[1] != 503) or r[3].startswith("503")
    ]
    health = [r[3] for r in results if r[0] == "GET /healthz"]
    return {
        "requests": len(results),
        "concurrency": concurrency,
        "wall_s": round(wall, 2),
        "throughput_rps": round(len(results) / wall, 1),
        "p50_ms": round(1000 * statistics.median(all_lat), 1),
        "p99_ms": round(1000 * _pct(all_lat, 0.99), 1),
        "errors": len(errors),
        "error_examples": [f"{r[0]}: {r[1]} {r[3]}" for r in errors[:5]],
        "deliberate_503": sum(r[1] == 503 for r in results)
        - len([r for r in errors if r[1] == 503]),
        "healthz_reports": {v: health.count(v) for v in sorted(set(health))},
        "routes": per_route,
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--requests", type=int, default=500)
    p.add_argument("--concurrency", type=int, action="append", help="default: 20 and 50")
    p.add_argument("--dashboard-delay", type=float, default=5.0, help="seconds per answer")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=RESULTS / "api_load.json")
    args = p.parse_args()
    setup_logging()
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per request otherwise
    if not 1 <= args.requests <= 5000:
        p.error("--requests: 1..5000 (a bounded test)")
    levels = args.concurrency or [20, 50]
    if any(not 1 <= c <= 100 for c in levels):
        p.error("--concurrency: 1..100")
    dashboard = SlowDashboard(args.dashboard_delay)
    with tempfile.TemporaryDirectory(prefix="cpsweep-load-") as tmp:
        proc, url, token = start_server(Path(tmp), dashboard.port)
        try:
            runs = []
            for c in levels:
                log.info("%d requests at concurrency %d ...", args.requests, c)
                runs.append(run_load(url, token, args.requests, c, args.seed))
                log.info("%s", json.dumps({k: v for k, v in runs[-1].items() if k != "routes"}))
            server_log = (Path(tmp) / "api.log").read_text()
        finally:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=30)
            dashboard.close()
    result = {
        "when": now_iso(),
        "command": command_line(),
        "machine": machine_info(),
        "dashboard_delay_s": args.dashboard_delay,
        "dashboard_connections": dashboard.connections,
        "server_tracebacks": server_log.count("Traceback"),
        "runs": runs,
    }
    write_json(args.out, result)
    for run in runs:
        health = run["routes"]["GET /healthz"]
        print(
            f"concurrency {run['concurrency']}: {run['requests']} requests in {run['wall_s']} s, "
            f"p50 {run['p50_ms']} ms, p99 {run['p99_ms']} ms, /healthz p99 {health['p99_ms']} ms, "
            f"errors {run['errors']}, deliberate 503 {run['deliberate_503']}"
        )
    print(f"wrote {args.out}")
    bad = any(r["errors"] or r["routes"]["GET /healthz"]["p99_ms"] >= 1000 for r in runs)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
