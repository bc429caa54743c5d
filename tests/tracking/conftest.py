"""Shared fixtures for tracking tests: one finished sweep, `mlflow server`s, a PostgreSQL.

Everything binds 127.0.0.1 on free ports and lives in pytest temp dirs. Servers and
the throwaway PostgreSQL run in their own process groups, which teardown stops; no
other process on the host is touched. Sweeps run in-process on the local Ray instance
the test session shares (`ray_local`, tests/conftest.py).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import sqlite3
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.requires import POSTGRESQL, pg_bin, requires
from tests.servers import VENV_BIN, base_env, free_port, wait_http

EXPERIMENT = "cpsweep-tracking-test"
EPOCHS = 4
# The database .ci/services.sh creates on the system cluster (found when nothing else is set).
CI_PG_URI = "postgresql://cpsweep:cpsweep@127.0.0.1:5432/cpsweep_test"


def stop_group(proc: subprocess.Popen, grace_s: float = 10.0) -> None:
    """Stop a process started with start_new_session=True and everything in its group."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(grace_s)
    with contextlib.suppress(ProcessLookupError):  # workers the leader left behind
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(10)


def tiny_spec(name: str, uri: str, **changes: Any) -> Any:
    """A digits sweep of a few seconds per trial: width-8 CNN, fixed quarter-budget rule."""
    from service.spec import SweepSpec

    raw: dict[str, Any] = {
        "name": name,
        "train": {
            "epochs": EPOCHS,
            "batch_size": 128,
            "data": {"name": "digits"},
            "model": {"name": "small_cnn", "width": 8},
            "optim": {"name": "sgd", "lr": 0.05},
            # The paper rule needs 5 epochs of history; a fixed rule switches within 4.
            "criterion": {"name": "fixed", "fraction": 0.25},
            "num_threads": 1,
        },
        "scaling": {"num_workers": 1, "cpus_per_worker": 1},
        "tracking": {"uri": uri, "experiment": EXPERIMENT},
        "accounting": {"measure_energy": False},
    }
    raw.update(changes)
    return SweepSpec.model_validate(raw)


@contextlib.contextmanager
def chdir(path: Path) -> Iterator[None]:
    """MLflow's sqlite store puts artifacts in ./mlruns of the cwd: keep them in tmp."""
    old = Path.cwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(old)


# -- the shared sweep -----------------------------------------------------------------------


def sqlite_schema(db: Path) -> dict[str, Any]:
    """Tables and alembic revision of an MLflow sqlite file, read without MLflow."""
    if not db.is_file():
        return {"exists": False, "tables": set(), "revision": None}
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        tables = {r[0] for r in con.execute("select name from sqlite_master where type='table'")}
        rev = (
            con.execute("select version_num from alembic_version").fetchone()
            if "alembic_version" in tables
            else None
        )
    finally:
        con.close()
    return {"exists": True, "tables": tables, "revision": rev[0] if rev else None}


def _store_probe(db: Path) -> Any:
    """A Tune callback that records the store's schema before trials and when each starts."""
    from ray.tune import Callback

    class StoreProbe(Callback):
        def __init__(self) -> None:
            self.at_setup: dict[str, Any] | None = None
            self.at_trial_start: list[dict[str, Any]] = []
            self.trial_starts: list[float] = []
            self.trial_ends: list[float] = []

        def setup(self, **info: Any) -> None:
            self.at_setup = sqlite_schema(db)

        def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            self.at_trial_start.append(sqlite_schema(db))
            self.trial_starts.append(time.monotonic())

        def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            self.trial_ends.append(time.monotonic())

    return StoreProbe()


@dataclass
class FinishedSweep:
    summary: dict[str, Any]
    uri: str  # sqlite:///<db>
    db: Path
    root: Path
    experiment: str
    probe: Any  # StoreProbe: the schema seen before and at each trial start
    wall_s: float


@pytest.fixture(scope="package")
def finished_sweep(ray_local: None, tmp_path_factory: pytest.TempPathFactory) -> FinishedSweep:
    """A cp arm and its baseline arm, run concurrently against a FRESH sqlite file.

    Energy is measured (CodeCarbon), so the report has a real `energy.method`.
    """
    from service.sweeps.run import run_sweep

    root = tmp_path_factory.mktemp("sweep")
    db = root / "mlflow.db"
    assert not db.exists()
    uri = f"sqlite:///{db}"
    spec = tiny_spec(
        "trk",
        uri,
        baseline_arm=True,
        max_concurrent_trials=2,
        search_space={"optim.lr": {"grid": [0.05]}},  # a searched param for the labels
        accounting={"measure_energy": True},
    )
    probe = _store_probe(db)
    t0 = time.monotonic()
    with chdir(root):
        summary = run_sweep(spec, output_dir=root / "out", callbacks=[probe]).to_json()
    return FinishedSweep(summary, uri, db, root, EXPERIMENT, probe, time.monotonic() - t0)


# -- mlflow server --------------------------------------------------------------------------


@dataclass
class MlflowServer:
    url: str
    backend: str
    artifacts: Path
    log: Path
    proc: subprocess.Popen


def launch_mlflow(root: Path, backend: str, port: int | None = None) -> MlflowServer:
    """`mlflow server` on `port` (default a free one) with its files under `root`; waits
    until it answers. Starting it again on the same port and backend is a restart."""
    root.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    log = root / "server.log"
    cmd = [
        str(VENV_BIN / "mlflow"), "server",
        "--backend-store-uri", backend,
        "--artifacts-destination", str(root / "artifacts"),  # proxied: mlflow-artifacts:/
        "--host", "127.0.0.1", "--port", str(port),
        "--allowed-hosts", f"127.0.0.1:{port},localhost:{port}",
        "--workers", "1",
    ]  # fmt: skip
    with open(log, "a") as out:
        # No GenAI job runner (7 huey worker processes): nothing here uses it.
        env = base_env(MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false")
        proc = subprocess.Popen(
            cmd, cwd=root, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    server = MlflowServer(f"http://127.0.0.1:{port}", backend, root / "artifacts", log, proc)
    try:
        wait_http(f"{server.url}/health", 120, proc=proc, log=log)  # a fresh store migrates first
    except BaseException:
        stop_group(proc)
        raise
    return server


@pytest.fixture(scope="package")
def start_mlflow_server(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Callable[[str], MlflowServer]]:
    """Factory: `start(backend_store_uri)` runs `mlflow server` on a free port until teardown."""
    started: list[MlflowServer] = []

    def start(backend: str) -> MlflowServer:
        server = launch_mlflow(tmp_path_factory.mktemp("mlflow-server"), backend)
        started.append(server)
        return server

    yield start
    for s in started:
        stop_group(s.proc)


# -- PostgreSQL -----------------------------------------------------------------------------


def _pg_reachable(uri: str) -> bool:
    import psycopg2

    try:
        psycopg2.connect(uri, connect_timeout=3).close()
        return True
    except psycopg2.OperationalError:
        return False


def _as_postgres_user(cmd: list[str]) -> list[str]:
    """initdb and postgres refuse to run as root: drop to the `postgres` account."""
    if os.geteuid() != 0:
        return cmd
    return ["runuser", "-u", "postgres", "--", *cmd]


@contextlib.contextmanager
def _throwaway_cluster(root: Path) -> Iterator[str]:
    initdb, pg_ctl = pg_bin("initdb"), pg_bin("pg_ctl")
    assert initdb and pg_ctl
    data, sock = root / "data", root / "sock"
    sock.mkdir(parents=True)
    if os.geteuid() == 0:
        shutil.chown(root, "postgres")
        shutil.chown(sock, "postgres")
    port = free_port()
    init = _as_postgres_user(
        [initdb, "-D", str(data), "-U", "cpsweep", "--auth=trust", "-E", "UTF8"]
    )
    res = subprocess.run(init, capture_output=True, text=True, timeout=120)
    if res.returncode != 0:
        raise RuntimeError(f"initdb failed ({res.returncode}): {res.stdout}{res.stderr}")
    opts = f"-c listen_addresses=127.0.0.1 -c port={port} -c unix_socket_directories={sock} -c fsync=off"
    start = _as_postgres_user(
        [pg_ctl, "-D", str(data), "-l", str(root / "pg.log"), "-o", opts, "-w", "-t", "60", "start"]
    )
    res = subprocess.run(start, capture_output=True, text=True, timeout=90, start_new_session=True)
    if res.returncode != 0:
        log = (root / "pg.log").read_text() if (root / "pg.log").exists() else ""
        raise RuntimeError(f"pg_ctl start failed: {res.stdout}{res.stderr}\n{log[-3000:]}")
    try:
        import psycopg2

        con = psycopg2.connect(
            f"postgresql://cpsweep@127.0.0.1:{port}/postgres", connect_timeout=10
        )
        con.autocommit = True
        con.cursor().execute("CREATE DATABASE mlflow")
        con.close()
        yield f"postgresql://cpsweep@127.0.0.1:{port}/mlflow"
    finally:
        stop = _as_postgres_user([pg_ctl, "-D", str(data), "-m", "immediate", "-w", "stop"])
        subprocess.run(stop, capture_output=True, timeout=60)


@contextlib.contextmanager
def _fresh_database(base_uri: str) -> Iterator[str]:
    """A new database on an existing server (dropped afterwards), or the base one if we may not."""
    import psycopg2

    name = f"cpsweep_{secrets.token_hex(4)}"
    con = psycopg2.connect(base_uri, connect_timeout=5)
    con.autocommit = True
    try:
        con.cursor().execute(f"CREATE DATABASE {name}")
    except psycopg2.errors.InsufficientPrivilege:
        con.close()
        yield base_uri
        return
    try:
        yield base_uri.rsplit("/", 1)[0] + f"/{name}"
    finally:
        with contextlib.suppress(psycopg2.Error):
            con.cursor().execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        con.close()


def sqlalchemy_uri(libpq_uri: str) -> str:
    """SQLAlchemy 2.1 maps plain postgresql:// to psycopg 3; MLflow's extra installs psycopg2."""
    return libpq_uri.replace("postgresql://", "postgresql+psycopg2://", 1)


@pytest.fixture(scope="package")
def postgres_uri() -> Iterator[str]:
    """A libpq URI of an empty PostgreSQL database: from $CPSWEEP_TEST_PG_URI, the CI
    database (.ci/services.sh), or a throwaway cluster started here.

    With none of these and no PostgreSQL binaries it skips, or fails under CI (tests/requires.py).
    """
    try:
        import psycopg2  # noqa: F401
    except ImportError:
        pytest.fail("psycopg2 is missing: .venv/bin/pip install -c constraints.txt psycopg2-binary")
    given = os.environ.get("CPSWEEP_TEST_PG_URI", "").replace(
        "postgresql+psycopg2://", "postgresql://"
    )
    if given:
        with _fresh_database(given) as uri:
            yield uri
        return
    if _pg_reachable(CI_PG_URI):
        with _fresh_database(CI_PG_URI) as uri:
            yield uri
        return
    requires(POSTGRESQL)  # or set CPSWEEP_TEST_PG_URI, or run .ci/services.sh
    # Not under pytest's temp root: that is private to this user and `postgres` must enter.
    root = Path(tempfile.mkdtemp(prefix="cpsweep-pg-"))
    try:
        with _throwaway_cluster(root) as uri:
            yield uri
    finally:
        shutil.rmtree(root, ignore_errors=True)
