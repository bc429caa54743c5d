"""REST API and job-submission helpers without a cluster: a fake jobs backend is injected."""

from __future__ import annotations

import base64
import json
import os
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from fastapi import FastAPI
from pydantic import SecretStr

from service.api.app import ApiSettings, check_settings, create_app
from service.api.deps import get_jobs, get_trials
from service.jobs.client import (
    JobInfo,
    JobNotFound,
    JobsError,
    RayAuthError,
    RayUnreachable,
    build_submission,
    default_address,
    resolve_ray_token,
)
from service.jobs.trials import SweepTrial, sweep_trials
from service.spec import SweepSpec
from trainables.core.config import ConfigError
from trainables.core.policy import Policy

with warnings.catch_warnings():  # starlette: "install httpx2"; httpx is what we pin
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient

TOKEN = "unit-test-token-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
SPEC_YAML = """\
name: unit
train: {epochs: 3, data: {name: digits}, model: {name: small_cnn, width: 8}}
search_space:
  optim.lr: {grid: [0.01, 0.05]}
tracking: {enabled: false}
"""


class FakeJobs:
    def __init__(self) -> None:
        self.submitted: list[SweepSpec] = []
        self.policies: list[Policy | None] = []  # what each job would carry to its trials
        self.pings = 0
        self.down: Exception | None = None
        self.jobs: dict[str, JobInfo] = {}

    def _check(self) -> None:
        if self.down is not None:
            raise self.down

    def ping(self) -> None:
        self.pings += 1
        self._check()

    def submit(
        self,
        spec: SweepSpec,
        *,
        mlflow_uri: str | None,
        output_root: str | None,
        python: str | None,
        policy: Policy | None = None,
    ) -> str:
        self._check()
        job_id = f"cpsweep-{spec.name}-{len(self.submitted):08x}"
        self.submitted.append(spec)
        self.policies.append(policy)
        self.jobs[job_id] = JobInfo(id=job_id, status="PENDING", sweep=spec.name)
        return job_id

    def list(self) -> list[JobInfo]:
        self._check()
        return list(self.jobs.values())

    def info(self, job_id: str) -> JobInfo:
        self._check()
        if job_id not in self.jobs:
            raise JobNotFound(f"no job {job_id!r}")
        return self.jobs[job_id]

    def logs(self, job_id: str) -> str:
        self.info(job_id)
        return "line 1\nline 2\nline 3\n"

    def stop(self, job_id: str) -> bool:
        info = self.info(job_id)
        self.jobs[job_id] = info.model_copy(update={"status": "STOPPED"})
        return True


@pytest.fixture(autouse=True)
def _no_server_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """ApiSettings reads CPSWEEP_* (and MLFLOW_TRACKING_URI): none from the caller's shell."""
    for var in list(os.environ):
        if var.startswith("CPSWEEP_") or var == "MLFLOW_TRACKING_URI":
            monkeypatch.delenv(var)


@pytest.fixture
def fake() -> FakeJobs:
    return FakeJobs()


def _app(fake: FakeJobs, trials: Any = None, **settings: Any) -> FastAPI:
    """The real app, with the fake cluster (and trials reader) put in by dependency overrides."""
    given = {"api_token": SecretStr(TOKEN), "ray_address": "http://127.0.0.1:1", **settings}
    app = create_app(ApiSettings(**given))
    app.dependency_overrides[get_jobs] = lambda: fake
    if trials is not None:
        app.dependency_overrides[get_trials] = lambda: trials
    return app


def _client(fake: FakeJobs, trials: Any = None, **settings: Any) -> TestClient:
    return TestClient(_app(fake, trials, **settings))


@pytest.fixture
def client(fake: FakeJobs) -> Iterator[TestClient]:
    with _client(fake) as c:
        yield c


def _post_yaml(client: TestClient, text: str, **headers: str) -> Any:
    return client.post(
        "/v1/sweeps",
        content=text.encode(),
        headers={**AUTH, "Content-Type": "application/x-yaml", **headers},
    )


# -- auth ------------------------------------------------------------------------------------

ROUTES = [
    ("GET", "/v1/sweeps"),
    ("POST", "/v1/sweeps"),
    ("GET", "/v1/sweeps/cpsweep-unit-00000000"),
    ("GET", "/v1/sweeps/cpsweep-unit-00000000/logs"),
    ("DELETE", "/v1/sweeps/cpsweep-unit-00000000"),
]


@pytest.mark.parametrize(("method", "path"), ROUTES)
@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer wrong-token-wrong-token"}, {"Authorization": f"Basic {TOKEN}"}],
    ids=["none", "wrong", "basic"],
)
def test_routes_need_the_bearer_token(
    client: TestClient, fake: FakeJobs, method: str, path: str, headers: dict[str, str]
) -> None:
    r = client.request(method, path, headers=headers, content=SPEC_YAML)
    assert r.status_code == 401
    assert r.headers["www-authenticate"] == "Bearer"
    assert fake.submitted == []


def test_healthz_is_liveness_and_readyz_reports_ray(fake: FakeJobs) -> None:
    with _client(fake) as c:
        assert c.get("/healthz").json() == {"status": "ok"}
        r = c.get("/readyz")
        assert r.status_code == 200
        assert r.json() == {
            "status": "ready",
            "reasons": [],
            "ray_jobs_api": "reachable",
            "busy_connections": None,  # no uvicorn under the test client
        }
    fake.down = RayUnreachable("down")
    with _client(fake) as c:  # a fresh app: no cached probe
        h = c.get("/healthz")
        assert h.status_code == 200 and h.json() == {"status": "ok"}  # no restart for Ray
        r = c.get("/readyz")
        assert r.status_code == 503 and r.headers["retry-after"] == "2"
        assert r.json()["status"] == "not ready"
        assert r.json()["reasons"] == ["Ray Jobs API: down"]
        assert r.json()["ray_jobs_api"] == "unreachable"


def test_ray_is_probed_when_the_server_starts(fake: FakeJobs) -> None:
    """/healthz no longer asks Ray, so the first probe must not wait for a request."""
    with _client(fake):
        deadline = time.monotonic() + 10
        while fake.pings == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert fake.pings == 1


def test_openapi_declares_bearer_and_spec_schema(client: TestClient) -> None:
    doc = client.get("/openapi.json").json()
    schemes = doc["components"]["securitySchemes"]
    assert schemes["HTTPBearer"] == {
        "type": "http",
        "scheme": "bearer",
        "description": "The server's CPSWEEP_API_TOKEN.",
    }
    assert doc["paths"]["/v1/sweeps"]["get"]["security"] == [{"HTTPBearer": []}]
    assert "security" not in doc["paths"]["/healthz"]["get"]
    assert "security" not in doc["paths"]["/readyz"]["get"]
    body = doc["paths"]["/v1/sweeps"]["post"]["requestBody"]["content"]
    assert {"application/json", "application/x-yaml"} <= set(body)
    assert "SweepSpec" in doc["components"]["schemas"]
    assert "TrainConfig" in doc["components"]["schemas"]


# -- submitting ------------------------------------------------------------------------------


def test_yaml_and_json_bodies_are_accepted(client: TestClient, fake: FakeJobs) -> None:
    r = _post_yaml(client, SPEC_YAML)
    assert r.status_code == 201, r.text
    job_id = r.json()["id"]
    assert r.json() == {"id": job_id, "status": "PENDING", "sweep": "unit"}
    assert r.headers["location"] == f"/v1/sweeps/{job_id}"

    raw = yaml.safe_load(SPEC_YAML)
    r = client.post("/v1/sweeps", json=raw, headers=AUTH)
    assert r.status_code == 201, r.text
    assert [s.train.epochs for s in fake.submitted] == [3, 3]
    assert fake.submitted[1].search_space["optim.lr"].grid == [0.01, 0.05]


@pytest.mark.parametrize(
    ("edit", "loc", "msg_part"),
    [
        ("train.optim.lr", ["train", "optim", "lr"], "greater than 0"),
        ("train.optim.lrr", ["train", "optim", "lrr"], "unknown field"),
        ("num_samples", ["num_samples"], "greater than or equal to 1"),
    ],
)
def test_bad_spec_is_422_naming_the_field(
    client: TestClient, fake: FakeJobs, edit: str, loc: list[str], msg_part: str
) -> None:
    raw = yaml.safe_load(SPEC_YAML)
    node = raw
    *parents, leaf = edit.split(".")
    for p in parents:
        node = node.setdefault(p, {})
    node[leaf] = -1 if leaf != "lrr" else 0.1
    r = _post_yaml(client, yaml.safe_dump(raw))
    assert r.status_code == 422
    detail = r.json()["detail"]
    assert [d["loc"] for d in detail] == [loc]
    assert msg_part in detail[0]["msg"]
    assert fake.submitted == []


@pytest.mark.parametrize(
    ("body", "msg_part"),
    [
        ("name: [unclosed", "not valid YAML"),
        ("- just\n- a list\n", "must be a mapping"),
        ("a: &x [1, 2]\nb: *x\n", "aliases are not accepted"),
        ("name: x\ntrain: " + "[" * 40 + "]" * 40 + "\n", "nested deeper"),
    ],
)
def test_unparseable_bodies_are_422(client: TestClient, body: str, msg_part: str) -> None:
    r = _post_yaml(client, body)
    assert r.status_code == 422
    assert r.json()["detail"][0]["loc"] == ["body"]
    assert msg_part in r.json()["detail"][0]["msg"]


def test_unknown_content_type_is_415(client: TestClient) -> None:
    r = client.post("/v1/sweeps", content=b"x", headers={**AUTH, "Content-Type": "image/png"})
    assert r.status_code == 415


def test_oversize_body_is_413_with_and_without_content_length(
    client: TestClient, fake: FakeJobs
) -> None:
    big = SPEC_YAML + "description: " + "x" * 300_000 + "\n"
    assert _post_yaml(client, big).status_code == 413

    def chunks() -> Iterator[bytes]:  # chunked transfer: no Content-Length to trust
        yield SPEC_YAML.encode()
        for _ in range(40):
            yield b"# " + b"y" * 8190 + b"\n"

    r = client.post(
        "/v1/sweeps", content=chunks(), headers={**AUTH, "Content-Type": "application/x-yaml"}
    )
    assert "content-length" not in r.request.headers
    assert r.status_code == 413
    assert fake.submitted == []


def test_tracking_uri_must_match_the_service(fake: FakeJobs) -> None:
    with _client(fake, mlflow_uri="http://mlflow:5000") as c:
        raw = yaml.safe_load(SPEC_YAML)
        raw["tracking"]["uri"] = "http://elsewhere:5000"
        r = c.post("/v1/sweeps", json=raw, headers=AUTH)
        assert r.status_code == 422
        assert r.json()["detail"][0]["loc"] == ["tracking", "uri"]


# -- reading and stopping --------------------------------------------------------------------


def test_list_get_logs_stop(fake: FakeJobs) -> None:
    seen: list[tuple[str | None, str, str | None]] = []

    def trials(
        uri: str | None, job_id: str, parent: str | None
    ) -> tuple[list[SweepTrial] | None, str | None]:
        seen.append((uri, job_id, parent))
        return [SweepTrial(run_id="r1", end_epoch=4, val_acc=0.9)], None

    with _client(fake, trials=trials, mlflow_uri="http://m:5000") as c:
        job_id = _post_yaml(c, SPEC_YAML).json()["id"]
        assert [j["id"] for j in c.get("/v1/sweeps", headers=AUTH).json()["sweeps"]] == [job_id]
        detail = c.get(f"/v1/sweeps/{job_id}", headers=AUTH).json()
        assert detail["status"] == "PENDING"
        assert detail["trials"][0]["end_epoch"] == 4
        assert seen == [("http://m:5000", job_id, None)]  # the fake's log names no run
        logs = c.get(f"/v1/sweeps/{job_id}/logs", params={"tail": 2}, headers=AUTH).json()
        assert logs["logs"] == "line 2\nline 3\n"
        r = c.delete(f"/v1/sweeps/{job_id}", headers=AUTH)
        assert r.status_code == 202
        assert r.json() == {"id": job_id, "stopped": True, "status": "STOPPED"}


def test_mlflow_unreachable_gives_null_trials_not_500(fake: FakeJobs) -> None:
    with _client(fake, mlflow_uri="http://127.0.0.1:9") as c:  # real sweep_trials
        job_id = _post_yaml(c, SPEC_YAML).json()["id"]
        r = c.get(f"/v1/sweeps/{job_id}", headers=AUTH)
        assert r.status_code == 200
        assert r.json()["trials"] is None
        assert "unreachable" in r.json()["trials_note"]


def test_unknown_id_404_and_malformed_id_422(client: TestClient) -> None:
    assert client.get("/v1/sweeps/cpsweep-nope-12345678", headers=AUTH).status_code == 404
    assert client.delete("/v1/sweeps/cpsweep-nope-12345678", headers=AUTH).status_code == 404
    assert client.get("/v1/sweeps/-starts-with-dash", headers=AUTH).status_code == 422


@pytest.mark.parametrize(
    "error", [RayUnreachable("cannot reach"), RayAuthError("rejected"), JobsError("odd")]
)
def test_ray_trouble_is_503_with_the_reason(fake: FakeJobs, error: Exception) -> None:
    fake.down = error
    with _client(fake) as c:
        r = c.get("/v1/sweeps", headers=AUTH)
        assert r.status_code == 503
        assert r.json()["detail"] == str(error)
        assert _post_yaml(c, SPEC_YAML).status_code == 503


# -- refusing to start -----------------------------------------------------------------------


def test_refuses_to_start_without_token_unless_loopback_and_insecure() -> None:
    with pytest.raises(ConfigError, match="CPSWEEP_API_TOKEN"):
        check_settings(ApiSettings())
    with pytest.raises(ConfigError, match="loopback"):
        check_settings(ApiSettings(host="0.0.0.0", insecure_no_auth=True))
    with pytest.raises(ConfigError, match="fewer than 32"):
        check_settings(ApiSettings(api_token=SecretStr("short")))
    for weak in (
        "REPLACE-ME-cpsweep-api-token-0123456",
        "a" * 40,
        "ab" * 20,
        "0123456789abcdef0123456789abcdef",
    ):
        with pytest.raises(ConfigError, match=r"API token refused: .*openssl rand -hex 32"):
            check_settings(ApiSettings(api_token=SecretStr(weak)))
    for host in ("127.0.0.1", "::1", "localhost"):
        check_settings(ApiSettings(host=host, insecure_no_auth=True))
    check_settings(ApiSettings(host="0.0.0.0", api_token=SecretStr(TOKEN)))
    with pytest.raises(ConfigError):
        create_app(ApiSettings(host="0.0.0.0"))


def test_insecure_loopback_app_needs_no_header(fake: FakeJobs) -> None:
    with _client(fake, api_token=None, insecure_no_auth=True) as c:
        assert c.get("/v1/sweeps").status_code == 200


def test_serve_cli_refuses_and_reads_token_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from service.api.app import settings_from_args
    from service.cli import _parser, main

    monkeypatch.delenv("CPSWEEP_API_TOKEN", raising=False)
    assert main(["serve", "--host", "0.0.0.0", "--insecure-no-auth"]) == 2
    assert "loopback" in capsys.readouterr().err
    assert main(["serve"]) == 2
    assert "CPSWEEP_API_TOKEN" in capsys.readouterr().err

    tf = tmp_path / "tok"
    tf.write_text(TOKEN + "\n")
    args = _parser().parse_args(["serve", "--host", "0.0.0.0", "--token-file", str(tf)])
    s = settings_from_args(args)
    assert s.api_token is not None and s.api_token.get_secret_value() == TOKEN
    check_settings(s)


# -- job submission helpers ------------------------------------------------------------------


def test_ray_token_precedence(tmp_path: Path) -> None:
    home = tmp_path / "home"
    (home / ".ray").mkdir(parents=True)
    (home / ".ray" / "auth_token").write_text("from-home\n")
    path = tmp_path / "tok"
    path.write_text("from-path\n")
    env = {"RAY_AUTH_TOKEN": "from-env", "RAY_AUTH_TOKEN_PATH": str(path)}
    assert resolve_ray_token(env, home).value == "from-env"
    assert resolve_ray_token({"RAY_AUTH_TOKEN_PATH": str(path)}, home).value == "from-path"
    assert resolve_ray_token({}, home).value == "from-home"
    assert resolve_ray_token({}, tmp_path / "nohome").value is None
    assert resolve_ray_token({**env, "RAY_AUTH_MODE": "disabled"}, home).value is None
    with pytest.raises(RayAuthError, match="RAY_AUTH_TOKEN_PATH"):
        resolve_ray_token({"RAY_AUTH_TOKEN_PATH": str(tmp_path / "missing")}, home)


def test_default_address() -> None:
    assert default_address({}) == "http://127.0.0.1:8265"
    assert default_address({"RAY_ADDRESS": "http://head:8265/"}) == "http://head:8265"
    assert default_address({"RAY_ADDRESS": "10.0.0.1:6379"}) == "http://127.0.0.1:8265"
    env = {"RAY_API_SERVER_ADDRESS": "http://api:8265", "RAY_ADDRESS": "http://head:8265"}
    assert default_address(env) == "http://api:8265"


def test_build_submission_ships_the_validated_spec_inline() -> None:
    raw = yaml.safe_load(SPEC_YAML)
    raw["description"] = "cost ${HOME} $PATH"  # Ray expands $VARS in env vars: base64 protects
    spec = SweepSpec.model_validate(raw)
    out = "/srv/results/cpsweep-unit-abcdef12"
    sub = build_submission(
        spec,
        submission_id="cpsweep-unit-abcdef12",
        mlflow_uri="http://m:5000",
        output_dir=out,
        python="/opt/py3",
        results_host="head",
    )
    assert sub["entrypoint"] == f"/opt/py3 -m service.job_entry --output-dir {out}"
    assert sub["metadata"] == {
        "cpsweep": "1",
        "sweep": "unit",
        "results_dir": out,
        "results_host": "head",
        "mlflow_uri": "",  # SPEC_YAML has tracking disabled
    }
    env = sub["runtime_env"]["env_vars"]
    assert env["MLFLOW_TRACKING_URI"] == "http://m:5000"
    assert env["CPSWEEP_JOB_ID"] == "cpsweep-unit-abcdef12"
    shipped = SweepSpec.model_validate(yaml.safe_load(base64.b64decode(env["CPSWEEP_SPEC_B64"])))
    assert shipped == spec
    assert (Path(sub["runtime_env"]["working_dir"]) / "pyproject.toml").is_file()
    assert {".venv", ".git", "mlruns", "*.db", "bench/results"} <= set(
        sub["runtime_env"]["excludes"]
    )
    json.dumps(sub)  # what the Jobs API receives must be JSON


def test_sweep_trials_without_mlflow_is_a_note() -> None:
    assert sweep_trials(None, "cpsweep-x-1")[0] is None
    trials, note = sweep_trials("http://127.0.0.1:9", "cpsweep-x-1", timeout_s=1)
    assert trials is None and note is not None and "unreachable" in note
