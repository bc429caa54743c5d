"""The sweep driver at scale: 1,000 simulated trials through the real driver-side path.

What runs on Tune's event loop for every result is driven here without Tune's
trials: `CriticalPeriodScheduler.on_trial_result` (with its control actor and its
decisions file), `ProgressCallback` and `MLflowSweepCallback` (tracking log +
background writer), for trials reporting ResNet-sized results (`bench.driver_sim`:
~113 metrics, per-layer rotation). Against a sqlite file and against a real
`mlflow server` backed by a fresh PostgreSQL database (both started here), it reports:

- per-result time on the loop (median, p99, max) and the sustained results/s;
- trial starts/s (scheduler `on_trial_add` + callbacks' `on_trial_start`);
- the time from the last result until everything is in MLflow, and whether every
  (trial, epoch) is there exactly once (counted in the store's own tables);
- the control actor's directive reads/s with 1,000 trials registered.

    .venv/bin/python bench/driver_scale.py [--quick] [--backends sqlite,postgres]

Writes bench/results/driver_scale.json (or driver_scale_quick.json). `--outage` instead
runs the outage case: the quickstart sweep (`--set train.epochs=15`) through a local
`mlflow server`, undisturbed and with the server killed when the first trial reaches
epoch 4 and restarted 10 s later, and records both wall times, the outage and how
many results were delayed (bench/results/driver_outage.json).
"""

from __future__ import annotations

import argparse
import logging
import os
import secrets
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

from _common import REPO, RESULTS, command_line, machine_info, now_iso, setup_logging, write_json

sys.path.insert(0, str(REPO))  # `bench.driver_sim` and the packages, run from anywhere
from bench.driver_sim import make_result, sim_spec, sim_trials

log = logging.getLogger("bench.driver_scale")

PG_ADMIN = "postgresql://cpsweep:cpsweep@127.0.0.1:5432/postgres"
TARGETS = {
    "loop_ms_per_result_max_median": 1.0,
    "results_per_s_min": 1000,
    "trial_starts_per_s_min": 100,
    "durable_after_last_s_max": 5.0,
}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _pg_bin(name: str) -> str:
    import glob

    found = sorted(
        glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), key=lambda p: int(p.split("/")[4])
    )
    if not found:
        raise SystemExit(f"PostgreSQL not reachable at {PG_ADMIN} and no {name} to start one")
    return found[-1]


class _Cluster:
    """A throwaway PostgreSQL cluster (default durability settings) when none answers."""

    def __init__(self) -> None:
        import shutil
        import tempfile

        self.root = Path(tempfile.mkdtemp(prefix="cpsweep-bench-pg-"))  # `postgres` must enter
        self.data, sock = self.root / "data", self.root / "sock"
        sock.mkdir()
        as_pg: list[str] = []
        if os.geteuid() == 0:  # initdb and postgres refuse to run as root
            shutil.chown(self.root, "postgres")
            shutil.chown(sock, "postgres")
            as_pg = ["runuser", "-u", "postgres", "--"]
        self.as_pg, port = as_pg, _free_port()
        subprocess.run(
            [*as_pg, _pg_bin("initdb"), "-D", str(self.data), "-U", "cpsweep", "--auth=trust"],
            check=True, capture_output=True, timeout=120,
        )  # fmt: skip
        opts = f"-c listen_addresses=127.0.0.1 -c port={port} -c unix_socket_directories={sock}"
        subprocess.run(
            [*as_pg, _pg_bin("pg_ctl"), "-D", str(self.data), "-l", str(self.root / "pg.log"),
             "-o", opts, "-w", "-t", "60", "start"],
            check=True, capture_output=True, timeout=90, start_new_session=True,
        )  # fmt: skip
        self.admin = f"postgresql://cpsweep@127.0.0.1:{port}/postgres"

    def close(self) -> None:
        import shutil

        stop = [*self.as_pg, _pg_bin("pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop"]
        subprocess.run(stop, capture_output=True, timeout=60)
        shutil.rmtree(self.root, ignore_errors=True)


class _Postgres:
    """A fresh database on the local PostgreSQL (started here if none answers on
    127.0.0.1:5432) and an `mlflow server` in front of it."""

    def __init__(self, work: Path) -> None:
        import psycopg2

        self.cluster: _Cluster | None = None
        admin = PG_ADMIN
        try:
            psycopg2.connect(admin, connect_timeout=3).close()
        except psycopg2.OperationalError:
            self.cluster = _Cluster()
            admin = self.cluster.admin
        self.admin = admin
        self.name = f"cpsweep_bench_{secrets.token_hex(4)}"
        con = psycopg2.connect(admin, connect_timeout=5)
        con.autocommit = True
        con.cursor().execute(f"CREATE DATABASE {self.name}")
        con.close()
        self.db_uri = admin.rsplit("/", 1)[0] + f"/{self.name}"
        port = _free_port()
        self.url = f"http://127.0.0.1:{port}"
        env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
        env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] = "false"
        bin_dir = Path(sys.executable).parent
        cmd = [
            str(bin_dir / "mlflow"), "server",
            "--backend-store-uri", self.db_uri.replace("postgresql://", "postgresql+psycopg2://"),
            "--artifacts-destination", str(work / "artifacts"),
            "--host", "127.0.0.1", "--port", str(port),
            "--allowed-hosts", f"127.0.0.1:{port},localhost:{port}",
            "--workers", "2",
        ]  # fmt: skip
        self.log = open(work / "mlflow-server.log", "w")  # noqa: SIM115
        self.proc = subprocess.Popen(
            cmd, env=env, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True
        )
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"{self.url}/health", timeout=2):
                    return
            except Exception:
                time.sleep(0.5)
        raise TimeoutError(f"mlflow server at {self.url} did not start; see {work}")

    def count(self, key: str) -> tuple[int, int]:
        """(rows, distinct (run, step)) of metric `key` in this database."""
        import psycopg2

        con = psycopg2.connect(self.db_uri)
        try:
            cur = con.cursor()
            cur.execute(
                "select count(*), count(distinct (run_uuid, step)) from metrics where key=%s",
                (key,),
            )
            rows, distinct = cur.fetchone()
            return int(rows), int(distinct)
        finally:
            con.close()

    def close(self) -> None:
        import psycopg2

        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.log.close()
        con = psycopg2.connect(self.admin, connect_timeout=5)
        con.autocommit = True
        con.cursor().execute(f"DROP DATABASE IF EXISTS {self.name} WITH (FORCE)")
        con.close()
        if self.cluster is not None:
            self.cluster.close()


def _sqlite_count(db: Path, key: str) -> tuple[int, int]:
    import sqlite3

    con = sqlite3.connect(db)
    try:
        rows, distinct = con.execute(
            "select count(*), count(distinct run_uuid || ':' || step) from metrics where key=?",
            (key,),
        ).fetchone()
        return int(rows), int(distinct)
    finally:
        con.close()


def _pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


def drive_driver(uri: str, work: Path, n_trials: int, epochs: int, control: str) -> dict[str, Any]:
    """One simulated sweep through the scheduler and both callbacks; timings per hook."""
    import random

    from service.sweeps.progress import ProgressCallback
    from service.sweeps.scheduler import CriticalPeriodScheduler
    from service.tracking.callback import MLflowSweepCallback
    from service.tracking.lifecycle import TrialTracker

    spec = sim_spec("driver-scale", uri, epochs, plots=False)
    trials = sim_trials(spec, n_trials)
    tracker = TrialTracker()
    sched = CriticalPeriodScheduler(state_path=work / "cp_decisions.jsonl", control_actor=control)
    progress = ProgressCallback(epochs, tracker)
    t0 = time.perf_counter()
    mlflow_cb = MLflowSweepCallback(spec, work / "out", tracker=tracker)
    setup_s = time.perf_counter() - t0
    callbacks = [progress, mlflow_cb]
    rng = random.Random(0)
    t0 = time.perf_counter()
    for t in trials:
        t.status = "RUNNING"
        sched.on_trial_add(None, t)
        for cb in callbacks:
            cb.on_trial_start(0, trials, t)
    starts_s = time.perf_counter() - t0
    results = [[make_result(t, e, epochs, rng) for t in trials] for e in range(1, epochs + 1)]
    per: list[float] = []
    t_feed = time.perf_counter()
    for e in range(epochs):
        for t, r in zip(trials, results[e]):
            a = time.perf_counter()
            sched.on_trial_result(None, t, r)
            for cb in callbacks:
                cb.on_trial_result(0, trials, t, r)
            per.append(time.perf_counter() - a)
    feed_s = time.perf_counter() - t_feed
    t_last = time.perf_counter()
    for t in trials:
        t.status = "TERMINATED"
        sched.on_trial_complete(None, t, t.last_result)
        for cb in callbacks:
            cb.on_trial_complete(0, trials, t)
    for cb in callbacks:
        cb.on_experiment_end(trials)
    in_mlflow = mlflow_cb.flush(1800)
    durable_s = time.perf_counter() - t_last
    report = mlflow_cb.close()
    n = len(per)
    return {
        "trials": n_trials,
        "epochs": epochs,
        "results": n,
        "metrics_per_result": len(results[0][0]),
        "callback_setup_s": round(setup_s, 3),
        "loop_ms_per_result": {
            "median": round(statistics.median(per) * 1e3, 4),
            "p99": round(_pct(per, 0.99) * 1e3, 4),
            "max": round(max(per) * 1e3, 3),
            "mean": round(sum(per) / n * 1e3, 4),
        },
        "results_per_s": round(n / feed_s, 1),
        "trial_starts_per_s": round(n_trials / starts_s, 1),
        "durable_after_last_s": round(durable_s, 2),
        "all_in_mlflow": in_mlflow,
        "writer": {
            "batches": mlflow_cb.writer.stats.batches,
            "failed_attempts": mlflow_cb.writer.stats.failures,
            "log_mb": round((work / "out" / "mlflow-wal.jsonl").stat().st_size / 2**20, 1),
            "threads": mlflow_cb.writer.threads,
            "calls": mlflow_cb.writer.stats.call_summary(),
        },
        "tracking_report": report,
    }


def tune_state(n_trials: int, epochs: int, work: Path) -> dict[str, Any]:
    """What Tune's own loop does per result and per experiment-state snapshot with
    `n_trials` trials of ResNet-sized results, on real `ray.tune.experiment.Trial`s:
    `update_last_result` (Tune keeps max/min/avg/last-5/last-10 of every metric per
    trial) and the snapshot's serialisation of every trial that reported since the
    last one (`TuneController.save_to_dir`: each trial's JSON state, one file)."""
    import json
    import random

    from ray.tune.experiment import Trial
    from ray.tune.utils.serialization import TuneFunctionEncoder

    spec = sim_spec("tune-state", "sqlite:///unused.db", epochs)
    sims = sim_trials(spec, n_trials)
    trials = [Trial("trial_main", config=t.config, trial_id=t.trial_id, stub=True) for t in sims]
    rng = random.Random(0)
    per: list[float] = []
    for epoch in (1, 2):
        for sim, trial in zip(sims, trials):
            r = make_result(sim, epoch, epochs, rng)
            a = time.perf_counter()
            trial.update_last_result(r)
            per.append(time.perf_counter() - a)
    a = time.perf_counter()
    data = [t.get_json_state() for t in trials]
    path = work / "experiment_state.json"
    with open(path, "w") as f:
        json.dump({"trial_data": data}, f, cls=TuneFunctionEncoder)
    snapshot_s = time.perf_counter() - a
    return {
        "trials": n_trials,
        "update_last_result_ms": round(statistics.median(per) * 1e3, 3),
        "snapshot_s": round(snapshot_s, 2),
        "snapshot_mb": round(path.stat().st_size / 2**20, 1),
        "per_trial_state_kb": round(path.stat().st_size / n_trials / 1024, 1),
    }


def control_reads(name: str, n_trials: int, seconds: float) -> dict[str, Any]:
    """Directive reads/s through the trials' own `ControlChannel`s, with `n_trials` trials
    registered and a verdict posted to every trial once per second (sync/async mode with
    1-second epochs: each read sees a change once a second), all in this one process;
    then how long a switch takes to reach all of them, and the old round-trip read's rate."""
    import ray

    from service.sweeps.control import get_or_create_control
    from trainables.run.channel import ControlChannel

    actor = get_or_create_control(name)
    ids = [f"sim_{i:05d}" for i in range(n_trials)]
    t0 = time.perf_counter()
    channels = [ControlChannel(t, name) for t in ids]
    setup_s = time.perf_counter() - t0
    epoch = 0

    def read_for(secs: float, post_every_s: float | None) -> tuple[float, int]:
        """Reads/s over all channels round-robin; every `post_every_s` the scheduler's
        verdict on every trial's epoch (sync/async mode) changes each directive."""
        nonlocal epoch
        reads, posted = 0, 0
        t0 = next_post = time.perf_counter()
        while (now := time.perf_counter()) - t0 < secs:
            if post_every_s is not None and now >= next_post:
                epoch += 1
                for t in ids:
                    actor.post_verdict.remote(t, epoch, None)
                posted += n_trials
                next_post += post_every_s
            for ch in channels:
                ch.directive()
            reads += n_trials
        return reads / (time.perf_counter() - t0), posted

    unchanged_rate, _ = read_for(seconds / 2, None)  # push mode: directives rarely change
    calls0 = time.perf_counter()
    rate, posted = read_for(seconds / 2, 1.0)
    changes_s = time.perf_counter() - calls0
    # Every trial must end up with the last verdict (nothing lost on the way).
    deadline = time.perf_counter() + 30
    stale = n_trials
    while stale and time.perf_counter() < deadline:
        stale = sum(1 for ch in channels if (d := ch.directive()) and d.verdict_epoch < epoch)
    # A cohort switch for all trials at once: time until every channel sees it.
    t_switch = time.perf_counter()
    for t in ids:
        actor.force_switch.remote(t, 99, "cohort")
    waiting = set(range(n_trials))
    while waiting and time.perf_counter() - t_switch < 30:
        waiting = {i for i in waiting if channels[i].directive().switch_epoch != 99}
    switch_s = time.perf_counter() - t_switch
    # The earlier design, for comparison: one round trip to the actor per read.
    rt_reads, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < min(seconds, 3.0):
        ray.get([actor.directive.remote(t) for t in ids])
        rt_reads += n_trials
    need = n_trials  # 1,000 trials with 1-second epochs: one read per trial per second
    return {
        "reads_per_s": round(rate, 1),
        "reads_per_s_unchanged": round(unchanged_rate, 1),
        "reads_per_s_note": (
            "reads_per_s: with a verdict posted to every trial each second, this process "
            "doing the scheduler's posts and all trials' re-armed watches (2 actor calls "
            "per trial per second; spread over the driver and the trials in a sweep); "
            "reads_per_s_unchanged: push mode, no directive changes (local checks only)"
        ),
        "needed_per_s": need,
        "headroom_x": round(rate / need, 2),
        "verdicts_posted": posted,
        "actor_calls_per_s_with_changes": round(2 * posted / changes_s, 1),
        "trials_missing_the_last_verdict": stale,
        "switch_to_all_trials_s": round(switch_s, 3),
        "trials_missing_the_switch": len(waiting),
        "channels_setup_s": round(setup_s, 2),
        "round_trip_reads_per_s": round(rt_reads / (time.perf_counter() - t0), 1),
    }


def _serve_sqlite(work: Path, port: int) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] = "false"
    cmd = [
        str(Path(sys.executable).parent / "mlflow"), "server",
        "--backend-store-uri", f"sqlite:///{work / 'mlflow.db'}",
        "--artifacts-destination", str(work / "artifacts"),
        "--host", "127.0.0.1", "--port", str(port),
        "--allowed-hosts", f"127.0.0.1:{port},localhost:{port}",
        "--workers", "1",
    ]  # fmt: skip
    with open(work / "mlflow-server.log", "a") as out:
        proc = subprocess.Popen(
            cmd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2):
                return proc
        except Exception:
            time.sleep(0.3)
    raise TimeoutError(f"mlflow server on port {port} did not start")


def _stop(proc: subprocess.Popen) -> None:
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)


_OUTAGE: dict[str, Any] = {}  # the case being run: server, port, marks (read by _Kill)


def _restart_later(delay_s: float) -> None:
    time.sleep(delay_s)
    _OUTAGE["proc"] = _serve_sqlite(_OUTAGE["dir"], _OUTAGE["port"])
    _OUTAGE["back"] = time.monotonic()


def _kill_at_epoch_4() -> Any:
    """A Tune callback: kills the server when a trial reports epoch 4, restarts it later."""
    import threading

    from ray.tune import Callback

    class Kill(Callback):
        def on_trial_result(self, iteration, trials, trial, result, **info):  # type: ignore[no-untyped-def]
            if _OUTAGE["kill"] and "killed" not in _OUTAGE and result.get("epoch") == 4:
                _stop(_OUTAGE["proc"])
                _OUTAGE["killed"] = time.monotonic()
                args = (_OUTAGE["restart_after_s"],)
                threading.Thread(target=_restart_later, args=args, daemon=True).start()

        def __reduce__(self):  # type: ignore[no-untyped-def]
            return (Callback, ())  # Tune pickles its callbacks; a server does not pickle

    return Kill()


def outage(work: Path, restart_after_s: float = 10.0) -> dict[str, Any]:
    """The quickstart through an MLflow server, undisturbed and with a kill-and-restart."""
    from service.spec import load_spec
    from service.sweeps.run import init_ray, run_sweep

    init_ray(None)
    out: dict[str, Any] = {"restart_after_s": restart_after_s}
    for case in ("undisturbed", "killed_at_epoch_4"):
        cdir = work / case
        cdir.mkdir(parents=True)
        port = _free_port()
        _OUTAGE.clear()
        _OUTAGE.update(dir=cdir, port=port, kill=case != "undisturbed")
        _OUTAGE.update(restart_after_s=restart_after_s, proc=_serve_sqlite(cdir, port))
        spec = load_spec(
            str(Path(__file__).resolve().parents[1] / "search_spaces" / "quickstart.yaml"),
            [f"tracking.uri=http://127.0.0.1:{port}", "accounting.measure_energy=false"],
        )
        t0 = time.monotonic()
        summary = run_sweep(spec, output_dir=cdir / "out", callbacks=[_kill_at_epoch_4()]).to_json()
        wall = time.monotonic() - t0
        back, killed = _OUTAGE.get("back"), _OUTAGE.get("killed")
        out[case] = {
            "wall_s": round(wall, 1),
            "sweep_wall_s": summary["wall_s"],
            "tracking": summary["tracking"],
            "outage_s": round(back - killed, 1) if back and killed else None,
        }
        log.info("outage %s: %s", case, out[case])
        _stop(_OUTAGE["proc"])
    base = out["undisturbed"]["wall_s"]
    out["killed_vs_undisturbed_pct"] = round(
        100 * (out["killed_at_epoch_4"]["wall_s"] - base) / base, 1
    )
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="100 trials x 3 epochs (CI smoke)")
    ap.add_argument("--backends", default="sqlite,postgres", help="comma list: sqlite,postgres")
    ap.add_argument("--trials", type=int, help="default 1000 (quick 100)")
    ap.add_argument("--epochs", type=int, help="default 5 (quick 3)")
    ap.add_argument("--out", default=str(RESULTS), help="results directory")
    ap.add_argument("--outage", action="store_true", help="the MLflow kill-and-restart case")
    args = ap.parse_args()
    setup_logging()
    if args.outage:
        work = Path(args.out) / "tmp" / "driver_outage"
        if work.exists():
            import shutil

            shutil.rmtree(work)
        res = {"command": command_line(), "date": now_iso(), "machine": machine_info()}
        res.update(outage(work))
        res["loadavg_at_end"] = list(os.getloadavg())
        write_json(Path(args.out) / "driver_outage.json", res)
        return
    progress_log = logging.getLogger("cpsweep.progress")
    progress_log.propagate = False  # one line per result: to a file, as a driver's log would
    n_trials = args.trials or (100 if args.quick else 1000)
    epochs = args.epochs or (3 if args.quick else 5)
    work = Path(args.out) / "tmp" / "driver_scale"
    if work.exists():
        import shutil

        shutil.rmtree(work)
    work.mkdir(parents=True)
    progress_log.addHandler(logging.FileHandler(work / "progress.log"))
    import ray

    os.environ.setdefault("RAY_worker_niceness", "0")
    ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False)
    control = f"cpsweep-control:driver-scale:{secrets.token_hex(4)}"
    result: dict[str, Any] = {
        "command": command_line(),
        "date": now_iso(),
        "machine": machine_info(),
        "targets": TARGETS,
        "plots": "off (tracking.plots=false): each trial's two charts cost ~0.3 s on the writer",
    }
    path = Path(args.out) / ("driver_scale_quick.json" if args.quick else "driver_scale.json")
    try:
        for backend in [b for b in args.backends.split(",") if b]:
            bdir = work / backend
            bdir.mkdir()
            if backend == "sqlite":
                db = bdir / "mlflow.db"
                res = drive_driver(f"sqlite:///{db}", bdir, n_trials, epochs, control)
                rows, distinct = _sqlite_count(db, "val/acc")
            elif backend == "postgres":
                pg = _Postgres(bdir)
                try:
                    res = drive_driver(pg.url, bdir, n_trials, epochs, control)
                    rows, distinct = pg.count("val/acc")
                finally:
                    pg.close()
            else:
                raise SystemExit(f"--backends: unknown {backend!r}; use sqlite,postgres")
            res["mlflow_val_acc_rows"] = rows
            res["lost"] = res["results"] - distinct
            res["duplicated"] = rows - distinct
            result[backend] = res
            log.info("%s: %s", backend, res)
            write_json(path, result)
        result["control_actor"] = control_reads(control, n_trials, 3.0 if args.quick else 10.0)
        result["tune_state"] = tune_state(n_trials, epochs, work)
    finally:
        ray.shutdown()
    result["loadavg_at_end"] = list(os.getloadavg())
    write_json(path, result)
    log.info("wrote %s", path)


if __name__ == "__main__":
    main()
