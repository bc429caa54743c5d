"""The REST server against clients that hold connections, for real: a `cpsweep serve`
subprocess on loopback whose Ray address is a fake dashboard that answers, so that
readiness can be seen to fail and to recover.

Before: 300 idle TCP connections from one pod filled uvicorn's `limit_concurrency`,
/healthz answered 503 and the livenessProbe restarted the pod.
"""

from __future__ import annotations

import json
import secrets
import select
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from tests.servers import VENV_BIN, Processes, base_env, free_port, wait_http

pytestmark = pytest.mark.integration

MAX_CONNECTIONS = 40  # --max-connections; the per-client limit stays at its default, 32
HEADER_TIMEOUT_S = 5.0  # --header-timeout: an idle connection is closed after this
SLACK_S = 10.0  # a loaded CI host may be this late on top


class FakeDashboard(ThreadingHTTPServer):
    """Answers the Ray Jobs API's version check, the probe behind /readyz."""

    def __init__(self) -> None:
        import ray

        body = json.dumps({"version": "4", "ray_version": ray.__version__}).encode()

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        super().__init__(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.serve_forever, daemon=True).start()


@dataclass
class Server:
    url: str
    port: int
    token: str
    log: Path


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("overload")
    dashboard = FakeDashboard()
    token = secrets.token_hex(32)
    (root / "token").write_text(token)
    port = free_port()
    log = root / "api.log"
    procs = Processes(marker=str(root))
    with open(log, "w") as out:
        p = subprocess.Popen(
            [
                str(VENV_BIN / "cpsweep"),
                "serve",
                "--host=127.0.0.1",
                f"--port={port}",
                f"--token-file={root / 'token'}",
                f"--ray-address=http://127.0.0.1:{dashboard.server_address[1]}",
                f"--header-timeout={HEADER_TIMEOUT_S}",
                "--body-timeout=60",  # slow bodies stay busy for the whole test
                f"--max-connections={MAX_CONNECTIONS}",
            ],
            env=base_env(RAY_AUTH_TOKEN=secrets.token_hex(32)),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    procs.groups.append(p.pid)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(f"{url}/healthz", 120, proc=p, log=log)
        # The first Ray probe imports the SDK and may take seconds: not ready until then.
        if not _wait_until(lambda: httpx.get(f"{url}/readyz", timeout=10).is_success, 60):
            raise TimeoutError(f"{url}/readyz: {httpx.get(f'{url}/readyz', timeout=10).text}")
        yield Server(url, port, token, log)
    finally:
        procs.stop()
        dashboard.shutdown()
        dashboard.server_close()


def _connect(server: Server, source: str = "127.0.0.1") -> socket.socket:
    """A TCP connection to the server from `source` (any 127.x address is this host)."""
    s = socket.socket()
    s.settimeout(10)
    s.bind((source, 0))
    s.connect(("127.0.0.1", server.port))
    return s


def _closed_by_server(s: socket.socket) -> bool:
    """Whether the server closed `s` (end of stream or reset), without waiting."""
    ready, _, _ = select.select([s], [], [], 0)
    if not ready:
        return False
    try:
        return s.recv(1) == b""
    except OSError:
        return True


def _wait_until(check: Callable[[], bool], timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


def _readyz(server: Server) -> httpx.Response:
    return httpx.get(f"{server.url}/readyz", timeout=10)


def test_idle_connections_from_one_client_cannot_fail_healthz(server: Server) -> None:
    """300 idle connections from one address (the finding), then /healthz from the same
    address: every probe 200; the server keeps 32 of them and closes the rest at once,
    and those 32 within the idle (header) timeout."""
    held: list[socket.socket] = []
    try:
        t0 = time.monotonic()
        held = [_connect(server) for _ in range(300)]
        codes = [httpx.get(f"{server.url}/healthz", timeout=10).status_code for _ in range(30)]
        assert codes == [200] * 30, codes  # before: 503 while the 300 were open
        r = _readyz(server)  # one client alone cannot make the server not ready
        assert r.status_code == 200 and r.json()["status"] == "ready", r.text
        # Each new connection beyond the client's 32 closed its oldest idle one.
        assert _wait_until(lambda: sum(map(_closed_by_server, held)) >= 300 - 32, SLACK_S)
        open_ = [s for s in held if not _closed_by_server(s)]
        assert len(open_) <= 32
        # The rest: closed by the server within the header timeout of their opening.
        assert _wait_until(lambda: all(map(_closed_by_server, open_)), HEADER_TIMEOUT_S + SLACK_S)
        assert time.monotonic() - t0 >= HEADER_TIMEOUT_S or not open_
    finally:
        for s in held:
            s.close()


def _slow_post(server: Server, source: str) -> socket.socket:
    """A request in progress: a POST whose body never finishes (--body-timeout=60)."""
    s = _connect(server, source)
    s.sendall(
        b"POST /v1/sweeps HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
        + server.token.encode()
        + b"\r\nContent-Type: text/yaml\r\nContent-Length: 5000\r\n\r\nname: slow\n"
    )
    return s


def test_saturated_server_is_not_ready_but_alive_then_ready_again(server: Server) -> None:
    """50 requests in progress from two addresses (25 each, under the per-client 32):
    over --max-connections=40. /readyz 503 naming the limit, /healthz 200, a new request
    503 with Retry-After; once they end, /readyz is 200 again."""
    busy: list[socket.socket] = []
    try:
        for source in ("127.0.0.2", "127.0.0.3"):
            busy += [_slow_post(server, source) for _ in range(25)]
        assert _wait_until(lambda: _readyz(server).status_code == 503, SLACK_S)
        r = _readyz(server)
        assert r.status_code == 503 and r.headers["retry-after"] == "2", r.text
        assert r.json()["status"] == "not ready"
        assert r.json()["busy_connections"] >= MAX_CONNECTIONS  # + any over, being answered
        assert "saturated" in r.text and "--max-connections" in r.text
        codes = [httpx.get(f"{server.url}/healthz", timeout=10).status_code for _ in range(20)]
        assert codes == [200] * 20
        auth = {"Authorization": f"Bearer {server.token}"}
        other = httpx.Client(transport=httpx.HTTPTransport(local_address="127.0.0.4"))
        with other:
            r = other.get(f"{server.url}/v1/sweeps", headers=auth, timeout=10)
        assert r.status_code == 503 and r.headers["retry-after"] == "2"
        assert "too many connections" in r.json()["detail"]
    finally:
        for s in busy:
            s.close()
    ready = {"status": "ready", "reasons": [], "ray_jobs_api": "reachable", "busy_connections": 0}
    assert _wait_until(lambda: _readyz(server).json() == ready, SLACK_S), _readyz(server).text
    assert "Traceback" not in server.log.read_text()
