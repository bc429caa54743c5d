"""The REST server under attack and with a hung Ray dashboard, for real:
a `cpsweep serve` subprocess on loopback whose Ray address is a socket server that
accepts connections and never answers. Every test reproduces one finding.
"""

from __future__ import annotations

import json
import secrets
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.integration.test_cluster_jobs import Api
from tests.servers import VENV_BIN, Processes, base_env, free_port, wait_http

pytestmark = pytest.mark.integration

CPSWEEP = str(VENV_BIN / "cpsweep")
ALLOWED_URI = "http://mlflow.allowed.invalid:5000"
SPEC = "name: hard\ntrain: {epochs: 2, data: {name: digits}}\ntracking: {enabled: false}\n"


class HungDashboard:
    """Accepts TCP connections on loopback, reads what arrives, answers nothing."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.held: list[socket.socket] = []
        self._stop = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        self.sock.settimeout(0.2)
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            self.held.append(conn)  # kept open, never answered

    def close(self) -> None:
        self._stop.set()
        for c in [*self.held, self.sock]:
            c.close()


@dataclass
class Server(Api):  # url, token and the bearer header, plus what these tests inspect
    log: Path
    port: int


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("hardening")
    (root / "data").mkdir()
    dashboard = HungDashboard()
    token = secrets.token_urlsafe(32)
    (root / "token").write_text(token)
    port = free_port()
    env = base_env(
        RAY_AUTH_TOKEN=secrets.token_hex(32),
        CPSWEEP_DATA_ROOTS=str(root / "data"),
        CPSWEEP_TRACKING_URIS=ALLOWED_URI,
    )
    log = root / "api.log"
    procs = Processes(marker=str(root))
    with open(log, "w") as out:
        p = subprocess.Popen(
            [
                CPSWEEP,
                "serve",
                "--host=127.0.0.1",
                f"--port={port}",
                f"--token-file={root / 'token'}",
                f"--ray-address=http://127.0.0.1:{dashboard.port}",
                "--header-timeout=3",
                "--body-timeout=3",
                "--max-connections=40",
                "--max-parallel-specs=2",
                "--max-trials=1000",
            ],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    procs.groups.append(p.pid)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(f"{url}/healthz", 120, proc=p, log=log)
        yield Server(url, token, log, port)
    finally:
        procs.stop()
        dashboard.close()


def post(server: Server, body: str, ctype: str = "application/x-yaml") -> httpx.Response:
    return httpx.post(
        f"{server.url}/v1/sweeps",
        content=body.encode(),
        headers={**server.auth, "Content-Type": ctype},
        timeout=30,
    )


def detail_of(r: httpx.Response) -> str:
    assert r.status_code == 422, r.text
    return json.dumps(r.json()["detail"])


# -- rows 2 and 1: a hung dashboard and heavy bodies do not stall the server -----------------


def test_hung_dashboard_is_reported_and_routes_fail_fast(server: Server) -> None:
    """Before: /healthz 89.5 s, GET /v1/sweeps 30.4 s then 60.5 s, queued on one lock.
    The client timeouts (10 s) are far above the 1 s probe wait, so load cannot flake it."""
    with ThreadPoolExecutor(6) as pool:
        ready = pool.submit(httpx.get, f"{server.url}/readyz", timeout=10)
        lists = [
            pool.submit(httpx.get, f"{server.url}/v1/sweeps", headers=server.auth, timeout=10)
            for _ in range(4)
        ]
        r = ready.result()
        assert r.status_code == 503  # not ready: a Service routes elsewhere meanwhile
        assert r.json()["ray_jobs_api"] == "unreachable" and "Ray Jobs API" in r.text
        h = httpx.get(f"{server.url}/healthz", timeout=10)
        assert h.status_code == 200 and h.json() == {"status": "ok"}  # alive: no restart
        for f in lists:
            r = f.result()
            assert r.status_code == 503, r.text
            assert r.headers["retry-after"].isdigit()
            assert "Ray Jobs API" in r.json()["detail"]


def _big_yaml(size: int) -> str:
    head = "name: big\ntrain: {epochs: 2, data: {name: digits}}\nsearch_space:\n"
    values, n = [], 0
    while len(head) + n < size - 200:
        v = f"0.{len(values):06d}"
        values.append(v)
        n += len(v) + 2
    return head + f"  optim.lr: {{grid: [{', '.join(values)}]}}\n"


def test_healthz_answers_while_16_maximum_bodies_are_validated(server: Server) -> None:
    """Before: 8 parallel 256 KiB bodies held /healthz for 18 s (parsing on the loop)."""
    body = _big_yaml(128 * 1024 - 1)
    assert len(body.encode()) < 128 * 1024
    with ThreadPoolExecutor(20) as pool:
        posts = [pool.submit(post, server, body) for _ in range(16)]
        time.sleep(0.2)
        probes = [httpx.get(f"{server.url}/healthz", timeout=5) for _ in range(3)]
        codes = [f.result() for f in posts]
    assert [p.status_code for p in probes] == [200] * 3
    for r in codes:
        assert r.status_code in (422, 503), r.text
        if r.status_code == 503:  # more than --max-parallel-specs at once: try later
            assert r.headers["retry-after"] == "2"
        else:  # grid of ~14,000 values: the per-list bound, naming the field
            assert r.json()["detail"][0]["loc"] == ["search_space", "optim.lr", "grid"]


# -- row 3: limits ---------------------------------------------------------------------------


def test_trial_count_and_scaling_limits_name_the_field(server: Server) -> None:
    grids = "".join(f"  p{i}: {{grid: [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]}}\n" for i in range(20))
    r = post(server, SPEC + "search_space:\n" + grids.replace("  p", "  optim.p"))
    msg = detail_of(r)  # 1e20 trials: refused before any path is checked
    assert "search_space x arms x num_samples: 1e+20 trials" in msg and "1000" in msg
    r = post(server, SPEC + "num_samples: 1001\n")
    assert "1e+03 trials" in detail_of(r) or "1.0e+03" in detail_of(r)
    r = post(server, SPEC + "scaling: {num_workers: 1024, cpus_per_worker: 256, use_gpu: true}\n")
    assert "scaling.num_workers: 1024" in detail_of(r)
    r = post(server, SPEC + "scaling: {num_workers: 8, cpus_per_worker: 64}\n")
    assert "scaling.cpus_per_worker: 8 workers x 64 CPUs = 512 CPUs" in detail_of(r)
    r = post(server, SPEC + "scaling: {num_workers: 32, use_gpu: true}\n")
    assert "GPUs per trial" in detail_of(r)


# -- rows 4, 5, 8, 10: what a spec may point at and hold -----------------------------------


def test_data_root_outside_the_allow_list_is_refused(server: Server, tmp_path: Path) -> None:
    for root in ("/etc", str(tmp_path), "/"):
        r = post(server, SPEC.replace("name: digits", f"name: cifar10, root: {root}"))
        d = r.json()["detail"]
        assert r.status_code == 422 and d[0]["loc"] == ["train", "data", "root"], r.text
        assert "CPSWEEP_DATA_ROOTS" in d[0]["msg"]
    arm = SPEC + "arms: {a: {data.root: /etc/passwd}}\n"
    assert post(server, arm).json()["detail"][0]["loc"] == ["arms", "a", "data.root"]


def test_tracking_uri_only_the_allowed_ones(server: Server) -> None:
    for uri in ("http://127.0.0.1:1/steal", "file:///tmp/x", "sqlite:////tmp/x.db"):
        r = post(server, SPEC.replace("{enabled: false}", f"{{uri: '{uri}'}}"))
        d = r.json()["detail"]
        assert r.status_code == 422 and d[0]["loc"] == ["tracking", "uri"], r.text
    ok = post(server, SPEC.replace("{enabled: false}", f"{{uri: '{ALLOWED_URI}'}}"))
    assert ok.status_code == 503  # valid; only the (hung) cluster is missing


@pytest.mark.parametrize(
    ("body", "ctype"),
    [
        ('{"name": "n", "train": {"optim": {"lr": NaN}}}', "application/json"),
        ('{"name": "n", "accounting": {"carbon_g_per_kwh": Infinity}}', "application/json"),
        ('{"name": "n", "search_space": {"optim.lr": {"grid": [1e400]}}}', "application/json"),
        ("name: n\ntrain: {optim: {lr: .nan}}\n", "application/x-yaml"),
        ("name: n\naccounting: {carbon_g_per_kwh: .inf}\n", "application/x-yaml"),
        ("name: n\naccounting: {energy_usd_per_kwh: .inf}\n", "application/x-yaml"),
        ("name: n\nsearch_space: {optim.lr: {uniform: [0.1, .inf]}}\n", "application/x-yaml"),
    ],
)
def test_non_finite_numbers_are_422(server: Server, body: str, ctype: str) -> None:
    r = post(server, body, ctype)
    assert r.status_code == 422, r.text  # before: 500 (or accepted for .inf)
    assert "finite" in json.dumps(r.json())


@pytest.mark.parametrize("name", ["..", ".", ".hidden", "-x", "a/b", "x" * 101])
def test_unsafe_names_are_422(server: Server, name: str) -> None:
    r = post(server, json.dumps({"name": name}), "application/json")
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["name"], r.text


# -- rows 11, 13: slow clients, disconnects (held connections: test_api_overload.py) -------


def _raw(server: Server) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", server.port), timeout=20)
    return s


def test_slow_headers_and_bodies_are_cut_off(server: Server) -> None:
    """Before: a connection that never finished its headers stayed open indefinitely."""
    s = _raw(server)
    s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")  # headers never end
    assert s.recv(100) == b""  # closed by the server (--header-timeout=3), not by us
    s.close()
    s = _raw(server)
    s.sendall(
        b"POST /v1/sweeps HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
        + server.token.encode()
        + b"\r\nContent-Type: text/yaml\r\nContent-Length: 5000\r\n\r\nname: slow\n"
    )
    answer = s.recv(4096)
    assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
    s.close()


def test_client_disconnect_is_logged_at_info(server: Server) -> None:
    s = _raw(server)
    s.sendall(
        b"POST /v1/sweeps HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
        + server.token.encode()
        + b"\r\nContent-Type: text/yaml\r\nContent-Length: 5000\r\n\r\nname: gone\n"
    )
    time.sleep(0.5)
    s.close()  # hangs up mid-body
    deadline = time.monotonic() + 15
    while "client disconnected" not in server.log.read_text() and time.monotonic() < deadline:
        time.sleep(0.2)
    text = server.log.read_text()
    line = next(x for x in text.splitlines() if "client disconnected" in x)
    assert " I service.api.bodies: POST /v1/sweeps: client disconnected" in line  # INFO
    assert "Traceback" not in text and "Exception in ASGI application" not in text


# -- row 7: placeholder and low-entropy tokens refused at start -----------------------------


@pytest.mark.parametrize(
    ("var", "value", "says"),
    [
        ("CPSWEEP_API_TOKEN", "REPLACE-ME-cpsweep-api-token", "API token refused"),
        ("CPSWEEP_API_TOKEN", "short-token", "API token refused"),
        ("RAY_AUTH_TOKEN", "REPLACE-ME-ray-auth-token-0123456789", "Ray auth token"),
        # 32 characters, 16 distinct: long enough, and a sequence typed twice.
        ("CPSWEEP_API_TOKEN", "0123456789abcdef0123456789abcdef", "API token refused"),
        ("RAY_AUTH_TOKEN", "0123456789abcdef0123456789abcdef", "Ray auth token"),
    ],
)
def test_serve_refuses_weak_tokens(var: str, value: str, says: str) -> None:
    """The module's server starts with secrets.token_urlsafe(32) and a token_hex(32) Ray
    token: strong tokens are accepted."""
    env = base_env(
        CPSWEEP_API_TOKEN=secrets.token_urlsafe(32), RAY_AUTH_TOKEN=secrets.token_hex(32)
    )
    env[var] = value
    r = subprocess.run(
        [CPSWEEP, "serve", f"--port={free_port()}"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 2, r.stderr[-2000:]
    assert says in r.stderr and "openssl rand -hex 32" in r.stderr and "token_urlsafe" in r.stderr
    assert value not in r.stderr  # the refusal names the setting, not the secret


def test_factories_from_callers_are_refused(server: Server) -> None:
    """A factory is 'module:function' called with the spec's kwargs: code on the cluster."""
    bad = SPEC.replace(
        "data: {name: digits}",
        "data: {factory: 'subprocess:run', kwargs: {args: 'touch /tmp/cpsweep-pwned'}}",
    )
    r = post(server, bad)
    assert r.status_code == 422, r.text
    d = r.json()["detail"][0]
    assert d["loc"] == ["train", "data", "factory"] and "CPSWEEP_FACTORY_MODULES" in d["msg"]
    arm = SPEC + "arms: {a: {model.name: null, model.factory: 'os:system'}}\n"
    assert post(server, arm).json()["detail"][0]["loc"] == ["arms", "a", "model.factory"]
    loop = SPEC.replace("epochs: 2,", "epochs: 2, loop: 'os:system',")
    assert post(server, loop).json()["detail"][0]["loc"] == ["train", "loop"]
