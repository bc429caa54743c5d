"""The entrypoint of submitted jobs: the interpreter it runs on, where the results go and
whether that place lasts (service.jobs.driver), then the spec decoded next to the results."""

from __future__ import annotations

import base64
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from service.job_entry import job_entry
from service.jobs.driver import (
    LACKS_EXIT,
    PREFLIGHT_MARK,
    REFUSED_EXIT,
    SPEC_ENV,
    check_plan,
    entrypoint,
    plan_driver,
    read_preflight,
)

REPO = Path(__file__).resolve().parents[2]
SPEC = b"name: t\ntrain: {epochs: 3}\n"


def test_without_the_spec_variable_it_says_how_to_submit(tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.delenv(SPEC_ENV, raising=False)
    assert job_entry(["--output-dir", str(tmp_path / "out")]) == 2
    assert "submit with `cpsweep submit`" in capsys.readouterr().err


def test_the_decoded_spec_is_kept_and_validated(tmp_path, monkeypatch, capsys) -> None:
    spec = b"name: t\ntrain: {epochs: 0}\n"  # epochs must be >= 2: fails before Ray starts
    monkeypatch.setenv(SPEC_ENV, base64.b64encode(spec).decode())
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    out = tmp_path / "out"
    assert job_entry(["--output-dir", str(out)]) == 2
    assert (out / "submitted_spec.yaml").read_bytes() == spec
    err = capsys.readouterr().err
    assert "train.epochs" in err
    assert "under a temporary directory" in err  # an explicit /tmp dir is a warning only
    assert os.environ["MLFLOW_TRACKING_URI"] == f"sqlite:///{out / 'mlflow.db'}"


def test_default_place_is_under_home_with_sqlite_beside_it() -> None:
    env = {"HOME": "/srv/home"}
    plan = plan_driver("cpsweep-t-1", output_dir=None, output_root=None, tracking={}, env=env)
    assert plan.results_dir == "/srv/home/cpsweep-results/cpsweep-t-1"
    assert plan.mlflow_uri == "sqlite:////srv/home/cpsweep-results/cpsweep-t-1/mlflow.db"
    assert not plan.explicit_dir
    env |= {"CPSWEEP_RESULTS_DIR": "/data/r", "MLFLOW_TRACKING_URI": "http://mlflow:5000"}
    plan = plan_driver("j", output_dir=None, output_root=None, tracking={}, env=env)
    assert (plan.results_dir, plan.mlflow_uri, plan.explicit_dir) == (
        "/data/r/j",
        "http://mlflow:5000",
        True,
    )
    plan = plan_driver(
        "j", output_dir=None, output_root=None, tracking={"uri": "sqlite:///x.db"}, env=env
    )
    assert plan.mlflow_uri == "sqlite:///x.db"  # the spec's own wins, as in `cpsweep run`
    off = plan_driver("j", output_dir=None, output_root=None, tracking={"enabled": False}, env=env)
    assert off.mlflow_uri is None


def _plan(results: Path | str, uri: str | None, explicit: bool = True):  # type: ignore[no-untyped-def]
    from service.jobs.driver import DriverPlan

    return DriverPlan(str(results), uri, explicit)


def test_places_that_do_not_last_are_refused_with_the_reason(tmp_path, monkeypatch) -> None:
    ray_tmp = tmp_path / "ray"
    cwd = ray_tmp / "session_1" / "runtime_resources" / "working_dir_files" / "_ray_pkg_ab"
    cwd.mkdir(parents=True)
    good = tmp_path / "keep"

    def problems(results: Path | str, uri: str | None, explicit: bool = True) -> list[str]:
        return check_plan(_plan(results, uri, explicit), cwd=cwd, timeout_s=2)[0]

    assert problems(good, f"sqlite:///{good}/mlflow.db") == []
    [p] = problems(good, "sqlite:///mlflow.db")
    assert "relative path" in p and "working_dir" in p
    [p] = problems(cwd / "out", None)
    assert "inside the job's working_dir" in p
    [p] = problems(ray_tmp / "session_1" / "x", None)
    assert f"inside Ray's temporary directory {ray_tmp}" in p
    [p] = problems(good, f"file://{cwd}/mlruns")
    assert "working_dir" in p
    [p] = problems(good, "sqlite://")
    assert "in memory" in p
    (tmp_path / "a-file").write_text("")
    [p] = problems(tmp_path / "a-file" / "out", None)
    assert "not a writable directory" in p
    [p] = problems(good / "implicit", None, explicit=False)
    assert "temporary directory" in p and "CPSWEEP_RESULTS_DIR" in p
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    [p] = problems(good, f"http://127.0.0.1:{port}")
    assert f"MLflow at http://127.0.0.1:{port} does not answer from the head node" in p
    [p] = problems(good, f"postgresql://u:pw@127.0.0.1:{port}/db")
    assert "unreachable from the head node" in p and "pw" not in p


def test_check_prints_one_json_line_and_refuses_a_relative_store(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv(SPEC_ENV, base64.b64encode(SPEC).decode())
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/m.db")
    assert job_entry(["--output-dir", str(tmp_path / "o"), "--check"]) == 0
    found, notes = read_preflight(capsys.readouterr().out)
    assert found is not None and found["ok"] and notes == []
    assert found["python"] == sys.executable and found["results_dir"] == str(tmp_path / "o")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:///mlflow.db")
    assert job_entry(["--output-dir", str(tmp_path / "o"), "--check"]) == REFUSED_EXIT
    found, _ = read_preflight(capsys.readouterr().out)
    assert found is not None and not found["ok"]
    assert "relative path" in found["problems"][0]
    assert job_entry(["--output-dir", str(tmp_path / "o")]) == REFUSED_EXIT  # the job itself too
    assert not (tmp_path / "o").exists()


@pytest.mark.integration
@pytest.mark.parametrize("client_has_ray", [False, True])
def test_auto_entrypoint_tries_each_python_and_says_what_it_lacks(
    tmp_path: Path, client_has_ray: bool
) -> None:
    """The entrypoint as Ray's job supervisor runs it: `/bin/sh -c`, with a bare PATH."""
    client = sys.executable if client_has_ray else str(tmp_path / "no-such-python")
    cmd = entrypoint(None, ["--output-dir", str(tmp_path / "o"), "--check"], client, probe=True)
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(tmp_path),
        SPEC_ENV: base64.b64encode(SPEC).decode(),
    }
    r = subprocess.run(
        ["/bin/sh", "-c", cmd], env=env, cwd=REPO, capture_output=True, text=True, timeout=120
    )
    found, notes = read_preflight(r.stdout)
    if client_has_ray:
        assert r.returncode == 0, r.stdout + r.stderr
        assert found is not None and found["python"] == sys.executable
        return
    assert r.returncode == LACKS_EXIT, r.stdout + r.stderr
    assert found is None
    assert f"{client}: not found" in notes
    assert notes[-1].startswith("no candidate Python has ray")
    assert PREFLIGHT_MARK not in r.stdout
    json.dumps(notes)
