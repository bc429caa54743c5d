"""Sweeps submitted as Ray Jobs to a real, token-protected two-node cluster, through the
CLI and through the REST API (a real `cpsweep serve` subprocess), logging to a real
MLflow server; plus auth, validation, a bounded load test and schemathesis fuzzing.

The two sweeps are submitted up front (module fixture) so they share the cluster's
three CPUs while the cheaper checks run.
"""

from __future__ import annotations

import json
import re
import secrets
import shutil
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.servers import (
    REPO,
    VENV_BIN,
    Processes,
    RayCluster,
    base_env,
    free_port,
    wait_http,
)

pytestmark = pytest.mark.integration

CPSWEEP = str(VENV_BIN / "cpsweep")
TERMINAL = {"SUCCEEDED", "FAILED", "STOPPED"}


def tiny_spec(name: str, epochs: int = 3) -> str:
    return f"""\
name: {name}
train: {{epochs: {epochs}, data: {{name: digits}}, model: {{name: small_cnn, width: 8}}}}
search_space:
  optim.lr: {{grid: [0.01, 0.05]}}
accounting: {{measure_energy: false}}
"""


def cpsweep(*args: str, env: dict[str, str], timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(
        [CPSWEEP, *args], env=env, capture_output=True, text=True, timeout=timeout, cwd=REPO
    )


@dataclass
class Api:
    url: str
    token: str

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


@pytest.fixture(scope="module")
def api(ray_cluster: RayCluster, mlflow_server: str) -> Iterator[Api]:
    token = secrets.token_urlsafe(32)
    token_file = ray_cluster.root / "api-token"
    token_file.write_text(token)
    token_file.chmod(0o600)
    port = free_port()
    procs = Processes(marker=str(token_file))
    with open(ray_cluster.root / "api.log", "w") as out:
        p = subprocess.Popen(
            [
                CPSWEEP,
                "serve",
                "--host=127.0.0.1",
                f"--port={port}",
                f"--token-file={token_file}",
                f"--ray-address={ray_cluster.dashboard}",
                f"--mlflow-uri={mlflow_server}",
                f"--output-root={ray_cluster.root / 'out'}",
            ],
            env=ray_cluster.env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    procs.groups.append(p.pid)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(f"{url}/readyz", 120)  # 503 until the Ray Jobs API answers
        yield Api(url, token)
    finally:
        procs.stop()


@pytest.fixture(scope="module")
def sweeps(ray_cluster: RayCluster, api: Api, mlflow_server: str) -> dict[str, str]:
    """Submit one sweep through the CLI (no --mlflow-uri: it logs beside its results) and
    one through the API (to the MLflow server); both run meanwhile."""
    spec = ray_cluster.root / "it-cli.yaml"  # outside the repo: shipped inline
    spec.write_text(tiny_spec("it-cli"))
    r = cpsweep(
        "submit",
        str(spec),
        f"--address={ray_cluster.dashboard}",
        f"--output-dir={ray_cluster.root / 'out' / 'cli'}",
        "--no-wait",
        env=ray_cluster.env,
    )
    assert r.returncode == 0, r.stderr
    cli_id = r.stdout.strip().splitlines()[-1]
    assert cli_id.startswith("cpsweep-it-cli-")
    assert f"cpsweep logs {cli_id} --follow" in r.stderr

    r2 = httpx.post(
        f"{api.url}/v1/sweeps",
        content=tiny_spec("it-api"),
        headers={**api.auth, "Content-Type": "application/x-yaml"},
        timeout=60,
    )
    assert r2.status_code == 201, r2.text
    return {"cli": cli_id, "api": r2.json()["id"]}


# -- the CLI ---------------------------------------------------------------------------------


def test_cli_without_or_with_wrong_ray_token_says_what_to_set(
    ray_cluster: RayCluster, tmp_path: Path
) -> None:
    env = {k: v for k, v in ray_cluster.env.items() if k != "RAY_AUTH_TOKEN"}
    env["HOME"] = str(tmp_path)  # no ~/.ray/auth_token either
    r = cpsweep("jobs", f"--address={ray_cluster.dashboard}", env=env)
    assert r.returncode == 1
    assert "requires a token" in r.stderr
    assert "RAY_AUTH_TOKEN" in r.stderr and "~/.ray/auth_token" in r.stderr

    r = cpsweep("jobs", f"--address={ray_cluster.dashboard}", env={**env, "RAY_AUTH_TOKEN": "x"})
    assert r.returncode == 1
    assert "rejected the token from $RAY_AUTH_TOKEN" in r.stderr


def test_cli_rejects_a_malformed_spec_naming_the_field(
    ray_cluster: RayCluster, tmp_path: Path
) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(tiny_spec("it-bad").replace("width: 8", "width: 8, depth: 3"))
    r = cpsweep("submit", str(bad), f"--address={ray_cluster.dashboard}", env=ray_cluster.env)
    assert r.returncode == 2
    assert "train.model.depth: unknown field" in r.stderr


# -- the API ---------------------------------------------------------------------------------


def test_api_auth_and_health(api: Api, sweeps: dict[str, str]) -> None:
    h = httpx.get(f"{api.url}/healthz", timeout=10)
    assert h.status_code == 200 and h.json() == {"status": "ok"}
    r = httpx.get(f"{api.url}/readyz", timeout=10)
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "ready" and r.json()["ray_jobs_api"] == "reachable"
    for headers in ({}, {"Authorization": "Bearer not-the-token"}):
        for method, path in [("GET", "/v1/sweeps"), ("GET", f"/v1/sweeps/{sweeps['api']}")]:
            r = httpx.request(method, f"{api.url}{path}", headers=headers, timeout=10)
            assert r.status_code == 401
            assert r.headers["www-authenticate"] == "Bearer"
    ids = [s["id"] for s in httpx.get(f"{api.url}/v1/sweeps", headers=api.auth).json()["sweeps"]]
    assert {sweeps["cli"], sweeps["api"]} <= set(ids)


def test_api_rejects_a_malformed_spec_naming_the_field(api: Api) -> None:
    def post(text: str) -> list[dict[str, Any]]:
        r = httpx.post(
            f"{api.url}/v1/sweeps",
            content=text,
            headers={**api.auth, "Content-Type": "text/yaml"},
            timeout=30,
        )
        assert r.status_code == 422, r.text
        return list(r.json()["detail"])

    spec = tiny_spec("it-bad")
    detail = post(spec.replace("width: 8", "width: -8"))
    assert [d["loc"] for d in detail] == [["train", "model", "width"]]
    assert detail[0]["input"] == -8
    detail = post(spec + "unknown_top: 1\n")
    assert detail[0]["loc"] == ["unknown_top"] and "unknown field" in detail[0]["msg"]
    detail = post(spec.replace("grid: [0.01, 0.05]", "grid: [-1]"))
    assert "search_space.optim.lr" in detail[0]["msg"]


def test_api_bounded_load(api: Api, sweeps: dict[str, str], ray_cluster: RayCluster) -> None:
    """200 requests, 20 at a time, on the list and health routes: no 5xx, no errors."""
    paths = ["/v1/sweeps", "/healthz"] * 100
    limits = httpx.Limits(max_connections=20, max_keepalive_connections=20)

    def one(client: httpx.Client, path: str) -> tuple[int, float]:
        t0 = time.perf_counter()
        r = client.get(path, headers=api.auth)
        return r.status_code, time.perf_counter() - t0

    with (
        httpx.Client(base_url=api.url, limits=limits, timeout=60) as client,
        ThreadPoolExecutor(20) as pool,
    ):
        t0 = time.perf_counter()
        results = list(pool.map(lambda p: one(client, p), paths))
        wall = time.perf_counter() - t0
    codes = [c for c, _ in results]
    lat = sorted(s for _, s in results)
    stats = {
        "requests": len(results),
        "concurrency": 20,
        "errors": sum(c != 200 for c in codes),
        "p50_ms": round(1000 * statistics.median(lat), 1),
        "p95_ms": round(1000 * lat[int(0.95 * len(lat)) - 1], 1),
        "max_ms": round(1000 * lat[-1], 1),
        "wall_s": round(wall, 2),
    }
    (ray_cluster.root.parent / "load.json").write_text(json.dumps(stats))
    print(f"\nload: {stats}", file=sys.stderr)
    assert codes == [200] * 200, stats


# -- the sweeps finish -----------------------------------------------------------------------


def _wait_cli(job_id: str, ray_cluster: RayCluster, timeout_s: float) -> dict[str, Any]:
    """`cpsweep status` once the job has ended. The wait polls Ray's Jobs API directly: a
    `cpsweep status` process every few seconds cost the two running sweeps a second or two
    of CPU per poll in imports."""
    url = f"{ray_cluster.dashboard}/api/jobs/{job_id}"
    auth = {"Authorization": f"Bearer {ray_cluster.token}"}
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        r = httpx.get(url, headers=auth, timeout=30)
        if r.status_code == 200 and r.json()["status"] in TERMINAL:
            break
        time.sleep(1)
    r = cpsweep("status", job_id, f"--address={ray_cluster.dashboard}", env=ray_cluster.env)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def test_cli_sweep_finishes_and_is_in_mlflow(
    sweeps: dict[str, str], ray_cluster: RayCluster
) -> None:
    job_id = sweeps["cli"]
    info = _wait_cli(job_id, ray_cluster, 300)
    logs = cpsweep("logs", job_id, f"--address={ray_cluster.dashboard}", env=ray_cluster.env)
    assert info["status"] == "SUCCEEDED", logs.stdout[-3000:]
    assert info["sweep"] == "it-cli"
    results = ray_cluster.root / "out" / "cli"
    assert info["results_dir"] == str(results)  # where the job wrote, from its metadata
    assert info["mlflow_uri"] == f"sqlite:///{results}/mlflow.db"  # no --mlflow-uri anywhere
    assert "TERMINATED" in logs.stdout  # the summary table of `cpsweep run`
    table = cpsweep("jobs", f"--address={ray_cluster.dashboard}", env=ray_cluster.env).stdout
    assert any(line.startswith(job_id) and "SUCCEEDED" in line for line in table.splitlines())
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=info["mlflow_uri"])
    exps = [e.experiment_id for e in client.search_experiments()]
    parents = client.search_runs(exps, filter_string=f"tags.`cpsweep.job_id` = '{job_id}'")
    assert len(parents) == 1
    assert parents[0].data.tags["cpsweep.sweep"] == "it-cli"
    children = client.search_runs(
        [parents[0].info.experiment_id],
        filter_string=f"tags.`mlflow.parentRunId` = '{parents[0].info.run_id}'",
    )
    assert len(children) == 2
    assert all(0.0 <= c.data.metrics["val/acc"] <= 1.0 for c in children)


def test_cli_follow_streams_a_running_job_until_stop_ends_it(ray_cluster: RayCluster) -> None:
    """`cpsweep logs --follow` prints epochs as they happen and returns once `cpsweep stop` lands."""
    spec = ray_cluster.root / "it-follow.yaml"
    spec.write_text(
        tiny_spec("it-follow", epochs=200).replace(
            "accounting:", "tracking: {enabled: false}\naccounting:"
        )
    )
    addr = f"--address={ray_cluster.dashboard}"
    out = f"--output-dir={ray_cluster.root / 'out' / 'follow'}"  # not the default, under ~
    r = cpsweep("submit", str(spec), addr, out, "--no-wait", env=ray_cluster.env)
    assert r.returncode == 0, r.stderr
    job_id = r.stdout.strip().splitlines()[-1]
    follow = subprocess.Popen(
        [CPSWEEP, "logs", job_id, "--follow", addr],
        env=ray_cluster.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=REPO,
    )
    try:
        seen: list[str] = []
        deadline = time.monotonic() + 240
        assert follow.stdout is not None
        for line in follow.stdout:  # blocks on the live stream: proves it is followed
            seen.append(line)
            if " epoch " in line or time.monotonic() > deadline:
                break
        assert any(" epoch " in line for line in seen), "".join(seen)[-3000:]
        stop = cpsweep("stop", job_id, addr, "--wait", env=ray_cluster.env)
        assert stop.returncode == 0, stop.stderr
        assert stop.stdout.strip() == f"{job_id}: stop requested; STOPPED"
        rest, _ = follow.communicate(timeout=60)  # the stream ends with the job
        assert follow.returncode == 0, rest[-2000:]
    finally:
        if follow.poll() is None:
            follow.kill()
    assert json.loads(cpsweep("status", job_id, addr, env=ray_cluster.env).stdout)["status"] == (
        "STOPPED"
    )
    again = cpsweep("stop", job_id, addr, env=ray_cluster.env)
    assert again.returncode == 0 and "already finished; STOPPED" in again.stdout


def test_api_sweep_finishes_with_trials(
    api: Api, sweeps: dict[str, str], mlflow_server: str
) -> None:
    job_id = sweeps["api"]
    deadline = time.monotonic() + 300
    while True:
        r = httpx.get(f"{api.url}/v1/sweeps/{job_id}", headers=api.auth, timeout=30)
        assert r.status_code == 200, r.text
        detail = r.json()
        if detail["status"] in TERMINAL or time.monotonic() > deadline:
            break
        time.sleep(1)
    logs = httpx.get(f"{api.url}/v1/sweeps/{job_id}/logs", headers=api.auth, timeout=30).json()
    assert detail["status"] == "SUCCEEDED", logs["logs"][-3000:]
    assert detail["sweep"] == "it-api"
    assert detail["mlflow_uri"] == mlflow_server  # the service's --mlflow-uri, in the metadata
    assert detail["trials_note"] is None
    assert len(detail["trials"]) == 2
    assert all(t["val_acc"] is not None for t in detail["trials"])


def test_api_shows_only_the_runs_the_job_created(
    api: Api, sweeps: dict[str, str], mlflow_server: str
) -> None:
    """A run anyone creates with the job's tag (and a child under it, or
    under the genuine parent but older than it) is not shown as the job's trial."""
    from mlflow.tracking import MlflowClient

    job_id = sweeps["api"]
    test_api_sweep_finishes_with_trials(
        api, sweeps, mlflow_server
    )  # the genuine trials first (idempotent)
    client = MlflowClient(tracking_uri=mlflow_server)
    exp = client.create_experiment(f"forged-{job_id}")
    forged = client.create_run(
        exp, tags={"cpsweep.job_id": job_id, "cpsweep.kind": "sweep", "cpsweep.sweep": "it-api"}
    )
    child = client.create_run(exp, tags={"mlflow.parentRunId": forged.info.run_id})
    client.log_metric(child.info.run_id, "val/acc", 0.999)
    detail = httpx.get(f"{api.url}/v1/sweeps/{job_id}", headers=api.auth, timeout=30).json()
    assert detail["trials_note"] is None, detail
    assert len(detail["trials"]) == 2
    assert child.info.run_id not in {t["run_id"] for t in detail["trials"]}
    # Without the job's log (the CLI's path) two claimants mean nothing is shown.
    from service.jobs.trials import sweep_trials

    found, note = sweep_trials(mlflow_server, job_id)
    assert found is None and "2 MLflow runs carry" in str(note)


def test_api_spec_too_large_for_the_job_is_413(api: Api) -> None:
    """413 at once; it used to be 503 (retry!) after the whole validation."""
    spec = tiny_spec("it-large") + f"description: {'x' * 90_000}\n"
    r = httpx.post(
        f"{api.url}/v1/sweeps",
        content=spec,
        headers={**api.auth, "Content-Type": "application/x-yaml"},
        timeout=60,
    )
    assert r.status_code == 413, r.text
    assert "encoded" in r.json()["detail"][0]["msg"]


def test_api_stop_and_unknown_id(api: Api) -> None:
    r = httpx.post(
        f"{api.url}/v1/sweeps",
        json={**_yaml(tiny_spec("it-stop", epochs=200)), "tracking": {"enabled": False}},
        headers=api.auth,
        timeout=60,
    )
    assert r.status_code == 201, r.text
    job_id = r.json()["id"]
    d = httpx.delete(f"{api.url}/v1/sweeps/{job_id}", headers=api.auth, timeout=30)
    assert d.status_code == 202, d.text
    deadline = time.monotonic() + 60
    while (status := _status(api, job_id)) not in TERMINAL and time.monotonic() < deadline:
        time.sleep(1)
    assert status == "STOPPED"
    missing = httpx.get(f"{api.url}/v1/sweeps/cpsweep-nope-00000000", headers=api.auth)
    assert missing.status_code == 404


def test_submit_is_refused_before_it_starts_without_python_or_a_lasting_store(
    ray_cluster: RayCluster, tmp_path: Path
) -> None:
    """The preflight refuses, naming the reason; no sweep job is left on the cluster."""
    addr = f"--address={ray_cluster.dashboard}"
    spec = tmp_path / "it-refused.yaml"
    spec.write_text(tiny_spec("it-refused"))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}"
    r = cpsweep("submit", str(spec), addr, f"--mlflow-uri={dead}", env=ray_cluster.env)
    assert r.returncode == 1
    assert f"not started: MLflow at {dead} does not answer from the head node" in r.stderr
    relative = tmp_path / "it-relative.yaml"
    relative.write_text(tiny_spec("it-refused") + "tracking: {uri: 'sqlite:///mlflow.db'}\n")
    r = cpsweep("submit", str(relative), addr, env=ray_cluster.env)
    assert r.returncode == 1
    assert "sqlite:///mlflow.db: path mlflow.db is a relative path" in r.stderr
    r = cpsweep("submit", str(spec), addr, "--python=/usr/bin/python3", env=ray_cluster.env)
    assert r.returncode == 1
    assert "no Python on the head node can run the sweep's driver" in r.stderr
    assert re.search(r"/usr/bin/python3[.0-9]*: lacks ray", r.stderr), r.stderr
    assert "CPSWEEP_PYTHON" in r.stderr and "--python" in r.stderr
    table = cpsweep("jobs", addr, env=ray_cluster.env).stdout
    assert "it-refused" not in table


def test_results_outlive_the_working_dir(
    sweeps: dict[str, str], ray_cluster: RayCluster, api: Api
) -> None:
    """The CLI's sweep, submitted without --mlflow-uri: after Ray's working_dir copies are
    gone, every trial is still read back from where `cpsweep status` says they are (and the
    API reads them there too). tests/integration/test_readme_cluster.py does the same with
    docs/cluster.md's commands and the default ~/cpsweep-results."""
    job_id = sweeps["cli"]
    info = _wait_cli(job_id, ray_cluster, 300)
    assert info["status"] == "SUCCEEDED", info
    results = Path(info["results_dir"])
    assert results == ray_cluster.root / "out" / "cli"
    assert info["results_host"] == socket.gethostname()
    assert info["mlflow_uri"] == f"sqlite:///{results}/mlflow.db"
    # Every job here has finished: remove the working_dir copies Ray made for them.
    packages = [p for p in ray_cluster.root.rglob("_ray_pkg_*") if p.is_dir()]
    assert packages
    for p in packages:
        shutil.rmtree(p)
    r = cpsweep(
        "status", job_id, "--trials", f"--address={ray_cluster.dashboard}", env=ray_cluster.env
    )
    assert r.returncode == 0, r.stderr
    trials = json.loads(r.stdout)["trials"]
    summary = json.loads((results / "summary.json").read_text())
    assert len(trials) == 2 and all(0.0 <= t["val_acc"] <= 1.0 for t in trials)
    assert {t["run_id"] for t in trials} == {t["mlflow_run_id"] for t in summary["trials"]}
    assert (results / "submitted_spec.yaml").is_file()
    detail = httpx.get(f"{api.url}/v1/sweeps/{job_id}", headers=api.auth, timeout=30).json()
    assert detail["results_dir"] == str(results) and detail["trials_note"] is None
    assert {t["run_id"] for t in detail["trials"]} == {t["run_id"] for t in trials}


def _yaml(text: str) -> dict[str, Any]:
    import yaml

    return dict(yaml.safe_load(text))


def _status(api: Api, job_id: str) -> str:
    r = httpx.get(f"{api.url}/v1/sweeps/{job_id}", headers=api.auth, timeout=30)
    return str(r.json()["status"])


# -- fuzzing ---------------------------------------------------------------------------------


def test_schemathesis_finds_no_server_errors(api: Api, ray_cluster: RayCluster) -> None:
    """Every documented operation but POST (a valid spec would start real jobs)."""
    report = ray_cluster.root.parent / "schemathesis"
    r = subprocess.run(
        [
            str(VENV_BIN / "schemathesis"),
            "run",
            f"{api.url}/openapi.json",
            "--header",
            f"Authorization: Bearer {api.token}",
            "--checks",
            "not_a_server_error",
            "--exclude-method",
            "POST",
            "--phases",
            "examples,coverage,fuzzing",
            "--max-examples",
            "15",
            "--request-timeout",
            "30",
            "--workers",
            "2",
            "--seed",
            "1",
            "--no-shrink",
            "--report",
            "junit",
            "--report-dir",
            str(report),
        ],
        env=base_env(NO_COLOR="1"),
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ray_cluster.root,
    )
    print(r.stdout[-1200:], file=sys.stderr)
    assert r.returncode == 0, r.stdout[-6000:] + r.stderr[-2000:]
    assert "Tested: 6" in r.stdout  # healthz, readyz, list, get, logs, delete
    generated = re.search(r"(\d+) generated", r.stdout)
    assert generated is not None and int(generated.group(1)) >= 20, r.stdout[-1500:]
    assert any(report.iterdir())


def test_schemathesis_post_finds_no_server_errors() -> None:
    """POST /v1/sweeps fuzzed in-process against a fake backend: no job reaches Ray."""
    import hypothesis.strategies as st
    import schemathesis
    from hypothesis import HealthCheck, given, settings
    from pydantic import SecretStr
    from schemathesis.checks import not_a_server_error
    from schemathesis.generation import GenerationMode

    from service.api.app import ApiSettings, create_app
    from service.api.deps import get_jobs
    from tests.service.test_api_unit import AUTH, TOKEN, FakeJobs

    fake = FakeJobs()
    app = create_app(ApiSettings(api_token=SecretStr(TOKEN), mlflow_uri=None))
    app.dependency_overrides[get_jobs] = lambda: fake
    op = schemathesis.openapi.from_asgi("/openapi.json", app)["/v1/sweeps"]["POST"]
    modes = [op.as_strategy(generation_mode=m) for m in GenerationMode]
    codes: dict[int, int] = {}

    @given(case=st.one_of(modes))
    @settings(
        max_examples=60, deadline=None, database=None, suppress_health_check=list(HealthCheck)
    )
    def fuzz(case: Any) -> None:
        r = case.call_and_validate(headers=AUTH, checks=[not_a_server_error])
        codes[r.status_code] = codes.get(r.status_code, 0) + 1

    fuzz()
    print(f"\nPOST fuzz status codes: {codes}", file=sys.stderr)
    assert sum(codes.values()) >= 30
    assert set(codes) <= {201, 401, 413, 415, 422}
    assert codes.get(201, 0) == len(fake.submitted)
