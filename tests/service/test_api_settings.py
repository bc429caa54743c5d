"""`cpsweep serve`'s settings: CPSWEEP_* environment, flags over it, routers and dependencies."""

from __future__ import annotations

import importlib

import pytest
import yaml
from pydantic import SecretStr

from service.api.deps import get_settings
from service.api.settings import ApiSettings, settings_from_args
from service.cli import _parser
from service.limits import SERVER_LIMITS
from tests.service.test_api_unit import (
    AUTH,
    SPEC_YAML,
    TOKEN,
    FakeJobs,
    TestClient,
    _app,
    _client,
    _no_server_env,  # noqa: F401 (autouse: no CPSWEEP_* from the caller's shell)
)
from trainables.core.config import ConfigError


@pytest.fixture
def fake() -> FakeJobs:
    return FakeJobs()


def test_every_setting_reads_its_cpsweep_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CPSWEEP_API_TOKEN", TOKEN)
    monkeypatch.setenv("CPSWEEP_HOST", "0.0.0.0")
    monkeypatch.setenv("CPSWEEP_MAX_PARALLEL_SPECS", "2")
    monkeypatch.setenv("CPSWEEP_LIMITS__MAX_TRIALS", "7")
    monkeypatch.setenv("CPSWEEP_TRACKING_URIS", "http://a:5000, http://b:5000")
    monkeypatch.setenv("CPSWEEP_FACTORY_MODULES", "my_models")
    monkeypatch.setenv("CPSWEEP_DATA_ROOTS", "/data:/more")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://fallback:5000")
    s = ApiSettings()
    assert s.api_token is not None and s.api_token.get_secret_value() == TOKEN
    assert (s.host, s.max_parallel_specs) == ("0.0.0.0", 2)
    # One limit from the environment; the others stay the server's, not the loose local ones.
    assert s.limits.max_trials == 7
    assert s.limits.max_workers == SERVER_LIMITS.max_workers
    assert s.tracking_uris == ("http://a:5000", "http://b:5000")
    assert (s.factory_modules, s.data_roots) == (("my_models",), ("/data", "/more"))
    assert s.mlflow_uri == "http://fallback:5000"
    monkeypatch.setenv("CPSWEEP_MLFLOW_URI", "http://own:5000")
    assert ApiSettings().mlflow_uri == "http://own:5000"
    monkeypatch.setenv("CPSWEEP_PORT", "not-a-port")
    with pytest.raises(ConfigError, match=r"setting port \(CPSWEEP_PORT or its flag\) = 'not"):
        settings_from_args(_parser().parse_args(["serve"]))


def test_flags_override_the_environment_and_absent_flags_do_not(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CPSWEEP_HOST", "0.0.0.0")
    monkeypatch.setenv("CPSWEEP_PORT", "9000")
    monkeypatch.setenv("CPSWEEP_MAX_CONNECTIONS", "64")
    monkeypatch.setenv("CPSWEEP_LIMITS__MAX_WORKERS", "4")
    monkeypatch.setenv("CPSWEEP_TRACKING_URIS", "http://env:5000")
    args = _parser().parse_args(
        [
            "serve",
            "--host",
            "127.0.0.1",
            "--max-trials",
            "9",
            "--allowed-tracking-uri",
            "http://flag:5000",
        ]
    )
    s = settings_from_args(args)
    assert (s.host, s.port, s.max_connections) == ("127.0.0.1", 9000, 64)
    assert (s.limits.max_trials, s.limits.max_workers) == (9, 4)
    assert s.tracking_uris == ("http://env:5000", "http://flag:5000")  # besides, not instead


def test_limits_from_the_environment_reach_the_route(
    monkeypatch: pytest.MonkeyPatch, fake: FakeJobs
) -> None:
    monkeypatch.setenv("CPSWEEP_LIMITS__MAX_TRIALS", "1")
    with _client(fake) as c:  # SPEC_YAML's grid makes 2 trials
        r = c.post("/v1/sweeps", json=yaml.safe_load(SPEC_YAML), headers=AUTH)
    assert r.status_code == 422, r.text
    assert "1" in r.json()["detail"][0]["msg"] and fake.submitted == []


def test_routes_read_settings_through_the_dependency(fake: FakeJobs) -> None:
    app = _app(fake)
    tight = ApiSettings(api_token=SecretStr(TOKEN), max_body_bytes=1024)
    app.dependency_overrides[get_settings] = lambda: tight
    with TestClient(app) as c:
        big = SPEC_YAML + "# " + "x" * 2000 + "\n"
        r = c.post("/v1/sweeps", content=big, headers={**AUTH, "Content-Type": "text/yaml"})
    assert r.status_code == 413 and fake.submitted == []


def test_every_route_but_the_probes_requires_the_token(fake: FakeJobs) -> None:
    """The routers' own dependency, so a route added later is guarded too: every operation
    the OpenAPI document lists but the probes asks for the bearer token, and gets 401
    without it."""
    with _client(fake) as c:
        paths = c.get("/openapi.json").json()["paths"]
        assert set(paths) >= {"/healthz", "/readyz", "/v1/sweeps", "/v1/sweeps/{sweep_id}"}
        for path, ops in paths.items():
            for method, op in ops.items():
                probe = path in ("/healthz", "/readyz")
                assert ("security" in op) != probe, (method, path)
                url = path.replace("{sweep_id}", "cpsweep-unit-00000000")
                status = c.request(method.upper(), url).status_code
                assert (status == 401) != probe, (method, path, status)


def test_no_settings_are_built_at_import() -> None:
    for name in ("app", "deps", "probes", "sweeps", "settings"):
        module = importlib.import_module(f"service.api.{name}")
        built = [k for k, v in vars(module).items() if isinstance(v, ApiSettings)]
        assert built == [], f"service.api.{name} builds settings at import: {built}"
