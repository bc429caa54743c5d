"""Fixtures of the job/API tests: a two-node Ray cluster and an MLflow server (tests/servers.py)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.servers import (
    VENV_BIN,
    Processes,
    RayCluster,
    base_env,
    free_port,
    start_ray_cluster,
    wait_http,
)
from tests.stores import migrated_sqlite


@pytest.fixture(scope="module")
def it_root() -> Iterator[Path]:
    root = Path(tempfile.mkdtemp(prefix="cpsweep-it-"))
    yield root
    if os.environ.get("CPSWEEP_IT_KEEP"):  # logs of the cluster, MLflow and the API
        print(f"kept {root}", file=sys.stderr)
    else:
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def mlflow_process(it_root: Path) -> Iterator[str]:
    """Launch MLflow without waiting: its start overlaps Ray's."""
    port = free_port()
    store = it_root / "mlflow"
    store.mkdir()
    backend = migrated_sqlite(store / "mlflow.db")  # no migrations at its start
    procs = Processes(marker=str(store))
    with open(it_root / "mlflow.log", "w") as out:
        p = subprocess.Popen(
            [
                str(VENV_BIN / "mlflow"),
                "server",
                "--backend-store-uri",
                backend,
                "--artifacts-destination",
                str(store / "artifacts"),
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--workers",
                "1",
            ],
            # No GenAI job runner (7 huey worker processes): nothing here uses it.
            env=base_env(MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false"),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    procs.groups.append(p.pid)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        procs.stop()


@pytest.fixture(scope="module")
def ray_cluster(it_root: Path, mlflow_process: str) -> Iterator[RayCluster]:
    root = it_root / "ray"
    root.mkdir()
    procs = Processes(marker=str(root))  # job drivers' --output-dir lies under it
    try:
        yield start_ray_cluster(root, procs)
    finally:
        procs.stop()


@pytest.fixture(scope="module")
def mlflow_server(mlflow_process: str) -> str:
    wait_http(f"{mlflow_process}/health", 240)
    return mlflow_process
