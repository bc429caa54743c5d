"""docs/cluster.md's commands, typed as written into a shell without an activated venv.

The commands are read from docs/cluster.md, so this breaks when the page drifts. Only what
must differ on a shared test host is added: free ports and a private temp dir on `ray start`,
the real dashboard port for the page's 8265, and a short sweep. The head is stopped by process
group instead of the page's `ray stop`, which would stop every Ray instance on the host. After
the cluster and its temp dir (the jobs' working_dir copies) are gone, every trial is read back
from where `cpsweep status` said the results are.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.requires import OPENSSL, requires
from tests.servers import REPO, VENV_BIN, Processes, _node_args, _ports

pytestmark = pytest.mark.integration

FRESH_PATH = "/usr/local/bin:/usr/bin:/bin"  # a new login shell: no venv on PATH
PLACEHOLDER_ID = "cpsweep-quickstart-1a2b3c4d"


def _cluster_commands() -> list[str]:
    """The bash lines of docs/cluster.md, comments stripped."""
    text = (REPO / "docs" / "cluster.md").read_text()
    lines: list[str] = []
    for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
        lines += [ln.split("   #")[0].strip() for ln in block.splitlines() if ln.strip()]
    return lines


def _one(lines: list[str], prefix: str) -> str:
    found = [ln for ln in lines if ln.startswith(prefix)]
    assert len(found) == 1, f"docs/cluster.md should have one `{prefix} ...`: {found}"
    venv = f"{VENV_BIN}/"  # the page's .venv/bin/, wherever this checkout's venv is
    return found[0].replace(".venv/bin/", venv) if venv != f"{REPO}/.venv/bin/" else found[0]


def _shell(script: str, home: str, timeout: float) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["env", "-i", f"HOME={home}", f"PATH={FRESH_PATH}", "bash", "-c", script],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
        start_new_session=True,
    )


@pytest.fixture
def ray_root() -> Iterator[Path]:
    root = Path(tempfile.mkdtemp(prefix="cpsweep-readme-"))
    procs = Processes(marker=str(root))
    try:
        yield root
    finally:
        procs.stop()  # every process whose command line names the temp dir
        shutil.rmtree(root, ignore_errors=True)


def test_readme_cluster_commands_work_in_a_fresh_shell_and_results_outlive_the_cluster(
    ray_root: Path,
) -> None:
    requires(OPENSSL)
    lines = _cluster_commands()
    export = _one(lines, "export RAY_AUTH_MODE=token")
    head = _one(lines, ".venv/bin/ray start --head")
    submit = _one(lines, ".venv/bin/cpsweep submit search_spaces/quickstart.yaml")
    status = _one(lines, ".venv/bin/cpsweep status")
    ui = _one(lines, ".venv/bin/mlflow ui --backend-store-uri")
    assert ".venv/bin/ray stop" in lines
    assert "--mlflow-uri" not in submit  # the default, lasting place is what is tested
    assert f"{PLACEHOLDER_ID} --trials" in status

    gcs, dash, client = _ports(3)
    extra = [
        f"--port={gcs}",
        f"--dashboard-port={dash}",
        f"--ray-client-server-port={client}",
        "--num-cpus=2",
        *_node_args([*_ports(6), 30000 + gcs % 5000], ray_root / "ray"),
    ]
    dashboard = f"http://127.0.0.1:{dash}"
    home = os.environ["HOME"]
    script = "\n".join(
        [
            "set -e",
            export,
            f'echo "$RAY_AUTH_TOKEN" > {ray_root}/token',
            f"{head} {' '.join(extra)} > {ray_root}/ray-start.log 2>&1",
            f"{submit.replace('http://127.0.0.1:8265', dashboard)} --set train.epochs=2",
        ]
    )
    r = _shell(script, home, timeout=400)
    job_ids = re.findall(r"^(cpsweep-quickstart-[0-9a-f]{8})$", r.stdout, flags=re.M)
    assert r.returncode == 0 and job_ids, r.stdout[-4000:] + r.stderr[-3000:]
    job_id = job_ids[0]
    results: Path | None = None
    try:
        token = (ray_root / "token").read_text().strip()
        auth = f"export RAY_AUTH_MODE=token RAY_AUTH_TOKEN={token}\n"
        line = status.replace(PLACEHOLDER_ID, job_id).replace("http://127.0.0.1:8265", dashboard)
        st = _shell(auth + line, home, timeout=120)
        assert st.returncode == 0, st.stderr
        info = json.loads(st.stdout)
        assert info["status"] == "SUCCEEDED"
        results = Path(info["results_dir"])
        assert results == Path(home) / "cpsweep-results" / job_id
        assert info["results_host"] == socket.gethostname()
        assert info["mlflow_uri"] == f"sqlite:///{results}/mlflow.db"
        assert f"results: {results}" in r.stderr  # `cpsweep submit` said so too
        assert len(info["trials"]) == 4 and all(t["val_acc"] for t in info["trials"])

        packages = list((ray_root / "ray").rglob("_ray_pkg_*"))
        assert packages, "the job's working_dir copy should exist while the cluster runs"
        Processes(marker=str(ray_root)).stop()  # the cluster ends ...
        shutil.rmtree(ray_root / "ray")  # ... and its temp dir, working_dir copies included
        assert not any(p.exists() for p in packages)

        uri = ui.split("--backend-store-uri ", 1)[1].split()[0]
        uri = uri.replace("$HOME", home).replace(PLACEHOLDER_ID, job_id)
        assert uri == info["mlflow_uri"]
        from mlflow.tracking import MlflowClient

        mlflow = MlflowClient(tracking_uri=uri)
        exps = [e.experiment_id for e in mlflow.search_experiments()]
        [parent] = mlflow.search_runs(exps, filter_string=f"tags.`cpsweep.job_id` = '{job_id}'")
        children = mlflow.search_runs(
            [parent.info.experiment_id],
            filter_string=f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'",
        )
        summary = json.loads((results / "summary.json").read_text())
        assert {c.info.run_id for c in children} == {t["mlflow_run_id"] for t in summary["trials"]}
        assert len(children) == 4
        assert all(len(mlflow.get_metric_history(c.info.run_id, "val/acc")) == 2 for c in children)
    finally:
        if results is not None:
            shutil.rmtree(results, ignore_errors=True)
            with contextlib.suppress(OSError):
                results.parent.rmdir()  # ~/cpsweep-results, if this test made it
