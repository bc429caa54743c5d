"""The tracking writer around the real callback and a real `mlflow server`, without Ray.

Tune's calls are simulated (`bench.driver_sim`: trials and ResNet-sized results); the
callback, its tracking log, its writer thread and MLflow are the real ones. Checked:
interrupts at random points (SIGINT inside the callback, SIGKILL of the driver process)
followed by a resume, and a paused server: every (trial, epoch) lands exactly once.
"""

from __future__ import annotations

import json
import logging
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bench.driver_sim import drive, sim_spec, sim_trials
from tests.servers import REPO, base_env
from tests.stores import migrated_sqlite
from tests.tracking.conftest import MlflowServer, launch_mlflow, stop_group

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

KEYS = ("val/acc", "rotation/mean", "rotation/layer07", "cost/usd")


@pytest.fixture(scope="module")
def mlflow(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MlflowServer]:
    root = tmp_path_factory.mktemp("writer-mlflow")
    server = launch_mlflow(root, migrated_sqlite(root / "mlflow.db"))
    yield server
    os.killpg(server.proc.pid, signal.SIGCONT)  # in case a test left it paused
    stop_group(server.proc)


def _callback(spec: Any, out: Path, resume: bool = False) -> Any:
    from service.tracking.callback import MLflowSweepCallback

    return MLflowSweepCallback(spec, out, resume=resume)


def _resume_to_the_end(spec: Any, out: Path, n_trials: int, epochs: int, seed: int) -> Any:
    """What `--resume` does for the callback: Tune resends results (here all of them)."""
    cb = _callback(spec, out, resume=True)
    drive([cb], sim_trials(spec, n_trials), epochs, seed=seed)
    assert cb.flush(120), "the writer did not catch up"
    cb.close()
    return cb


def exactly_once(url: str, experiment: str, n_trials: int, epochs: int) -> None:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(url)
    exp = client.get_experiment_by_name(experiment)
    runs = client.search_runs([exp.experiment_id])
    sweeps = [r for r in runs if r.data.tags.get("cpsweep.kind") == "sweep"]
    trials = [r for r in runs if r.data.tags.get("cpsweep.kind") == "trial"]
    assert len(sweeps) == 1 and sweeps[0].info.status == "FINISHED"
    assert len(trials) == n_trials, [r.data.tags.get("cpsweep.trial_id") for r in trials]
    for run in trials:
        assert run.info.status == "FINISHED"
        assert run.data.tags["mlflow.parentRunId"] == sweeps[0].info.run_id
        for key in KEYS:
            steps = sorted(m.step for m in client.get_metric_history(run.info.run_id, key))
            assert steps == list(range(1, epochs + 1)), (run.data.tags["cpsweep.trial_id"], key)


class _Interrupt(Exception):
    pass


def test_sigint_at_random_points_then_resume_logs_every_epoch_once(mlflow, tmp_path):
    """20 seeded runs: SIGINT lands at a random instruction inside the callback's hooks
    (harsher than Tune, which catches it between results), the driver shuts down
    gracefully or not, and a resumed callback gets every result again."""
    n_trials, epochs = 2, 4

    def on_alarm(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    old = signal.signal(signal.SIGALRM, on_alarm)
    try:
        for seed in range(20):
            rng = random.Random(seed)
            spec = sim_spec(f"sigint-{seed}", mlflow.url, epochs, plots=False)
            out = tmp_path / f"s{seed}"
            cb = _callback(spec, out)
            trials = sim_trials(spec, n_trials)
            k = rng.randrange(1, n_trials * epochs + 1)

            def arm(n: int, k: int = k, rng: random.Random = rng) -> None:
                if n == k:  # within the next hook calls, at a random instruction
                    signal.setitimer(signal.ITIMER_REAL, rng.uniform(1e-6, 4e-4))

            try:
                drive([cb], trials, epochs, seed=seed, on_result=arm)
                time.sleep(0.01)
            except KeyboardInterrupt:
                pass
            signal.setitimer(signal.ITIMER_REAL, 0)
            if rng.random() < 0.5:  # Tune's graceful end: trials marked KILLED, queue drained
                cb.on_experiment_end(trials)
                cb.close(timeout_s=5)
            else:  # a second Ctrl-C: gone at once, whatever was queued stays in the log
                cb.close(timeout_s=0)
            _resume_to_the_end(spec, out, n_trials, epochs, seed)
            exactly_once(mlflow.url, f"sigint-{seed}", n_trials, epochs)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


_DRIVER = """
import random, sys, time
from pathlib import Path
from bench.driver_sim import drive, sim_spec, sim_trials
from service.tracking.callback import MLflowSweepCallback
url, out, seed = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3])
spec = sim_spec(f"kill-{seed}", url, 8, plots=False)
cb = MLflowSweepCallback(spec, out)
print("ready", flush=True)
rng = random.Random(seed)
drive([cb], sim_trials(spec, 4), 8, seed=seed, on_result=lambda n: time.sleep(rng.uniform(0, 0.03)))
cb.flush(60)
cb.close()
print("done", flush=True)
"""


@pytest.mark.parametrize("seed", [1, 2])
def test_sigkill_of_the_driver_then_resume_logs_every_epoch_once(mlflow, tmp_path, seed):
    out = tmp_path / "out"
    proc = subprocess.Popen(
        [sys.executable, "-c", _DRIVER, mlflow.url, str(out), str(seed)],
        cwd=REPO,
        env=base_env(),
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "ready"
    time.sleep(random.Random(seed).uniform(0.05, 1.2))
    proc.kill()  # SIGKILL: no handler, no flush, no goodbye
    proc.wait(30)
    wal = out / "mlflow-wal.jsonl"
    assert wal.exists()
    spec = sim_spec(f"kill-{seed}", mlflow.url, 8, plots=False)
    _resume_to_the_end(spec, out, 4, 8, seed)
    exactly_once(mlflow.url, f"kill-{seed}", 4, 8)


def test_a_paused_server_fills_the_log_not_memory_and_loses_nothing(mlflow, tmp_path, caplog):
    """SIGSTOP the server: the writer's requests time out, results pile up in the log (a
    warning names it), the loop goes on; after SIGCONT every result lands once."""
    n_trials, epochs = 3, 20
    spec = sim_spec("paused", mlflow.url, epochs, request_timeout_s=1, plots=False)
    cb = _callback(spec, tmp_path / "out")
    assert cb.flush(60)  # the parent run exists
    caplog.set_level(logging.WARNING)
    cb.wal._warn_at = 64 * 1024  # the first warning early, as it comes at 256 MB
    os.killpg(mlflow.proc.pid, signal.SIGSTOP)
    try:
        delivered = drive([cb], sim_trials(spec, n_trials), epochs)
        deadline = time.monotonic() + 60
        while cb.writer.stats.failures == 0 and time.monotonic() < deadline:
            time.sleep(0.2)  # the writer tries, times out, keeps the batch
        assert cb.writer.stats.failures >= 1
        assert not cb.writer.caught_up()
        pending = cb.report()["pending_results"]
    finally:
        os.killpg(mlflow.proc.pid, signal.SIGCONT)
    assert delivered == n_trials * epochs and pending == delivered
    grown = [r.getMessage() for r in caplog.records if "has grown to" in r.getMessage()]
    assert grown and str(cb.wal.path) in grown[0]
    assert cb.flush(120)
    report = cb.close()
    assert report["all_in_mlflow"] and report["delayed_results"] > 0
    exactly_once(mlflow.url, "paused", n_trials, epochs)
    acks = [json.loads(x) for x in cb.wal.path.read_text().splitlines()]
    assert any(r.get("op") == "ack" for r in acks)
