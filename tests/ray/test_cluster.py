"""`cpsweep run` as a real process: a two-node cluster on one host, interrupt and resume."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import pytest
import yaml

from tests.servers import VENV_BIN, Processes, start_ray_cluster
from tests.stores import migrated_sqlite

CPSWEEP = str(VENV_BIN / "cpsweep")

pytestmark = pytest.mark.integration

_SPEC = {
    "name": "it",
    "train": {
        "epochs": 6,
        "batch_size": 64,
        "data": {"name": "digits"},
        "model": {"name": "small_cnn", "width": 8},
    },
    "search_space": {"optim.lr": {"grid": [0.02, 0.05]}},
    "accounting": {"measure_energy": False},
}


def _write_spec(tmp: Path, **changes) -> Path:
    spec = {**_SPEC, "tracking": {"uri": migrated_sqlite(tmp / "mlflow.db")}, **changes}
    path = tmp / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def test_sweep_spreads_over_two_nodes(tmp_path):
    # One CPU per node and two DDP workers per trial: every trial's ranks span both nodes.
    spec = _write_spec(tmp_path, scaling={"num_workers": 2, "cpus_per_worker": 1})
    root = Path(tempfile.mkdtemp(prefix="cps-"))  # Ray's socket paths must stay short
    procs = Processes(marker=str(root))
    try:
        cluster = start_ray_cluster(root, procs, head_cpus=1, worker_cpus=1)
        proc = subprocess.run(
            [
                CPSWEEP,
                "run",
                str(spec),
                "--address",
                cluster.gcs,
                "--output-dir",
                str(tmp_path / "out"),
            ],
            env=cluster.env,
            capture_output=True,
            text=True,
            timeout=600,
        )
    finally:
        procs.stop()
        shutil.rmtree(root, ignore_errors=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert [t["status"] for t in summary["trials"]] == ["TERMINATED", "TERMINATED"]
    nodes = set()
    for trial_dir in (tmp_path / "out" / "ray" / "it").glob("*/ranks"):
        per_trial = set()
        for rank_log in trial_dir.glob("rank*.jsonl"):
            per_trial |= {json.loads(x)["node_id"] for x in rank_log.read_text().splitlines()}
        assert len(per_trial) == 2, f"{trial_dir.parent.name} ran on {per_trial}"
        nodes |= per_trial
    assert len(nodes) == 2, f"workers ran on {nodes}; expected both nodes"


def _results(out: Path) -> dict[str, list[str]]:
    return {
        p.parent.name: p.read_text().splitlines()
        for p in (out / "ray" / "it").glob("*/result.json")
    }


@pytest.mark.parametrize("executor", ["auto", "train"])  # train: ranks on a warm group
def test_interrupted_sweep_resumes_without_redoing_finished_trials(tmp_path, executor):
    scaling = {"executor": executor, **({"worker_pool": True} if executor == "train" else {})}
    spec = _write_spec(tmp_path, max_concurrent_trials=1, scaling=scaling)
    out = tmp_path / "out"
    cmd = [CPSWEEP, "run", str(spec), "--output-dir", str(out)]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        cmd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    deadline = time.time() + 400
    finished: dict[str, list[str]] = {}
    while time.time() < deadline and proc.poll() is None:
        done = {k: v for k, v in _results(out).items() if len(v) == 6} if out.exists() else {}
        if done:
            finished = done
            break
        time.sleep(0.5)
    assert finished, "no trial finished before the deadline"
    os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C: Tune saves the experiment state and exits
    first_out, _ = proc.communicate(timeout=180)
    assert len(_results(out)) >= 1
    assert proc.returncode == 130, first_out[-3000:]
    assert f"--resume --output-dir {out}" in first_out  # the command that continues it
    interrupted = json.loads((out / "summary.json").read_text())
    assert interrupted["interrupted"] is True
    assert "INTERRUPTED" in {t["status"] for t in interrupted["trials"]}

    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    exp_id = client.get_experiment_by_name("it").experiment_id
    statuses = {
        r.data.tags.get("cpsweep.kind"): r.info.status for r in client.search_runs([exp_id])
    }
    assert statuses["sweep"] == "KILLED"  # not left RUNNING in the UI

    rerun = subprocess.run([*cmd, "--resume"], env=env, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    after = _results(out)
    for name, lines in finished.items():
        assert after[name] == lines, "a finished trial was run again"
    summary = json.loads((out / "summary.json").read_text())
    assert sorted(t["status"] for t in summary["trials"]) == ["TERMINATED", "TERMINATED"]
    for t in summary["trials"]:
        [key] = [k for k in after if t["trial_id"] in k]
        rows = [json.loads(x) for x in after[key]]
        trained = [r["epoch"] for r in rows if not r.get("cp/replayed")]
        # Every epoch reached Tune, and none was trained twice: a resumed trial continues
        # from its newest checkpoint; results Tune may have lost are resent, marked replayed.
        assert sorted({r["epoch"] for r in rows}) == list(range(1, 7)), rows
        assert trained == sorted(set(trained)), trained

    assert summary["interrupted"] is False
    runs = client.search_runs([exp_id])
    assert sum(r.data.tags.get("cpsweep.kind") == "sweep" for r in runs) == 1
    assert {r.info.status for r in runs} == {"FINISHED"}
    children = [r for r in runs if r.data.tags.get("cpsweep.kind") == "trial"]
    assert len(children) == 2
    for r in children:
        steps = [m.step for m in client.get_metric_history(r.info.run_id, "rotation/mean")]
        assert steps == list(range(1, 7)), "an epoch was logged twice or lost across the resume"


def test_bad_spec_exits_nonzero_naming_the_field(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"name": "x", "train": {"optim": {"lr": -1, "nam": "sgd"}}}))
    proc = subprocess.run([CPSWEEP, "run", str(bad)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "train.optim.lr" in proc.stderr and "greater than 0" in proc.stderr
    assert "train.optim.nam" in proc.stderr and "unknown field" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (Path("runs") / "x").exists()  # rejected before any output was written


def test_missing_dataset_fails_every_trial_naming_the_path_and_exits_1(tmp_path):
    missing = tmp_path / "no-cifar"
    train = {**_SPEC["train"], "data": {"name": "cifar10", "root": str(missing)}}
    # Retries (inline: worker_failures are Tune's, 2 by default) fail the same way again.
    spec = _write_spec(tmp_path, train=train, failures={"worker_failures": 0})
    out = tmp_path / "out"
    proc = subprocess.run(
        [CPSWEEP, "run", str(spec), "--output-dir", str(out)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert "every trial failed" in proc.stderr
    assert f"{missing} does not exist" in proc.stderr and "data.root" in proc.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["trials"] and {t["status"] for t in summary["trials"]} == {"ERROR"}
    assert all(str(missing) in t["error"] for t in summary["trials"])
