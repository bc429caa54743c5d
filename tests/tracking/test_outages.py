"""MLflow outages during real sweeps: nothing freezes, nothing is lost, nothing is doubled.

Each sweep is tiny (digits, 2 concurrent trials, width 8) on the test session's local Ray,
against a real `mlflow server` that a Tune callback takes away at a trial's second
epoch: killed and restarted on the same port, replaced by a socket that accepts and
never answers, or killed for good until `cpsweep sync` runs after the sweep.
"""

from __future__ import annotations

import contextlib
import json
import logging
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from ray.tune import Callback

from tests.servers import free_port
from tests.stores import migrated_sqlite
from tests.tracking.conftest import EXPERIMENT, MlflowServer, launch_mlflow, stop_group, tiny_spec

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

EPOCHS = 6
KEYS = ("val/acc", "rotation/mean", "cost/usd", "train/loss")


def _spec(name: str, url: str, **tracking: Any) -> Any:
    return tiny_spec(
        name,
        url,
        train={**tiny_spec(name, url).train.model_dump(), "epochs": EPOCHS},
        num_samples=2,
        max_concurrent_trials=2,
        tracking={"uri": url, "experiment": EXPERIMENT, **tracking},
    )


_ACTIONS: dict[int, Callable[[], None]] = {}  # outside the callback: Tune pickles callbacks


class _AtEpoch(Callback):
    """Runs an action once, when the first trial reports epoch `epoch` (the action stays
    in `_ACTIONS`: Tune pickles its callbacks, and servers do not pickle)."""

    def __init__(self, epoch: int, action: Callable[[], None]) -> None:
        self.epoch, self.key, self.fired = epoch, len(_ACTIONS), False
        _ACTIONS[self.key] = action

    def on_trial_result(
        self, iteration: int, trials: list, trial: Any, result: dict, **info: Any
    ) -> None:
        if not self.fired and result.get("epoch") == self.epoch:
            self.fired = True
            _ACTIONS[self.key]()


class _Hang:
    """Listens on `port`, accepts every connection and never answers (a hung server)."""

    def __init__(self, port: int) -> None:
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", port))
        self.sock.listen(64)
        self.conns: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        with contextlib.suppress(OSError):
            while True:
                self.conns.append(self.sock.accept()[0])

    def close(self) -> None:
        self.sock.close()
        for c in self.conns:
            c.close()


@pytest.fixture
def server(tmp_path: Path) -> Iterator[dict[str, Any]]:
    """A restartable server: {'now': MlflowServer, 'restart': fn, 'kill': fn}."""
    root, backend, port = tmp_path / "mlflow", migrated_sqlite(tmp_path / "mlflow.db"), free_port()
    box: dict[str, Any] = {"now": launch_mlflow(root, backend, port), "port": port}

    def kill() -> None:
        stop_group(box["now"].proc, grace_s=2)

    def restart() -> MlflowServer:
        box["now"] = launch_mlflow(root, backend, port)
        return box["now"]

    box["kill"], box["restart"] = kill, restart
    yield box
    kill()


def _later(delay_s: float, fn: Callable[[], Any]) -> threading.Thread:
    t = threading.Thread(target=lambda: (time.sleep(delay_s), fn()), daemon=True)
    t.start()
    return t


def check_exactly_once(url: str, summary: dict[str, Any]) -> None:
    """Every trial's run holds each epoch exactly once for every per-epoch key; all closed."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(url)
    parent = client.get_run(summary["mlflow"]["parent_run_id"])
    assert parent.info.status == "FINISHED"
    assert "summary.json" in {a.path for a in client.list_artifacts(parent.info.run_id)}
    children = client.search_runs(
        [parent.info.experiment_id], f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'"
    )
    assert len(children) == len(summary["trials"]) == 2  # no run created twice
    for run in children:
        assert run.info.status == "FINISHED"
        for key in KEYS:
            steps = sorted(m.step for m in client.get_metric_history(run.info.run_id, key))
            assert steps == list(range(1, EPOCHS + 1)), (run.data.tags["cpsweep.trial_id"], key)
        plots = {a.path for a in client.list_artifacts(run.info.run_id)}
        assert plots == {"rotation.png", "accuracy_vs_cost.png"}


def test_a_server_killed_mid_sweep_and_restarted_loses_nothing(ray_local, server, tmp_path):
    from service.sweeps.run import run_sweep

    restarted: list[threading.Thread] = []

    def outage() -> None:
        server["kill"]()
        restarted.append(_later(1.0, server["restart"]))

    spec = _spec("kill", server["now"].url, drain_timeout_s=180)
    summary = run_sweep(
        spec, output_dir=tmp_path / "out", callbacks=[_AtEpoch(2, outage)]
    ).to_json()
    assert restarted, "the outage never happened"
    restarted[0].join(180)
    assert [t["status"] for t in summary["trials"]] == ["TERMINATED"] * 2
    tracking = summary["tracking"]
    assert tracking["all_in_mlflow"] and tracking["pending_results"] == 0
    assert tracking["delayed_results"] > 0, "the outage delayed nothing: it came too late"
    assert tracking["results"] == 2 * EPOCHS
    check_exactly_once(server["now"].url, summary)
    written = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert written["tracking"] == tracking


def test_a_server_that_hangs_does_not_stall_the_sweep(ray_local, server, tmp_path):
    from service.sweeps.run import run_sweep

    hang: list[_Hang] = []
    back: list[threading.Thread] = []

    def outage() -> None:
        server["kill"]()
        hang.append(_Hang(server["port"]))

        def recover() -> None:
            hang[0].close()
            server["restart"]()

        back.append(_later(6.0, recover))

    spec = _spec("hang", server["now"].url, drain_timeout_s=180, request_timeout_s=2)
    summary = run_sweep(
        spec, output_dir=tmp_path / "out", callbacks=[_AtEpoch(2, outage)]
    ).to_json()
    assert hang and back, "the outage never happened"
    back[0].join(180)
    assert hang[0].conns, "nothing ever reached the hanging server"
    assert [t["status"] for t in summary["trials"]] == ["TERMINATED"] * 2
    assert summary["tracking"]["all_in_mlflow"] and summary["tracking"]["delayed_results"] > 0
    check_exactly_once(server["now"].url, summary)


def test_a_server_down_until_the_end_is_synced_later(ray_local, server, tmp_path, caplog, capsys):
    """The sweep finishes and exits 0 naming the pending file; `cpsweep sync` uploads it."""
    from service.cli import main

    url = server["now"].url
    spec = _spec("down", url, drain_timeout_s=1)
    spec_file = tmp_path / "spec.yaml"
    spec_file.write_text(yaml.safe_dump(spec.model_dump(mode="json", exclude_none=True)))
    out = tmp_path / "out"
    from service.sweeps import run as sweep

    real_run = sweep.run_sweep

    def run_with_outage(*args: Any, **kwargs: Any) -> dict[str, Any]:
        return real_run(*args, **kwargs, callbacks=[_AtEpoch(2, server["kill"])])

    caplog.set_level(logging.WARNING)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(sweep, "run_sweep", run_with_outage)
        code = main(["run", str(spec_file), "--output-dir", str(out)])
    assert code == 0
    wal = out / "mlflow-wal.jsonl"
    warned = [r.getMessage() for r in caplog.records if str(wal) in r.getMessage()]
    assert any(f"cpsweep sync {out}" in m for m in warned), warned
    summary = json.loads((out / "summary.json").read_text())
    assert [t["status"] for t in summary["trials"]] == ["TERMINATED"] * 2
    assert not summary["tracking"]["all_in_mlflow"] and summary["tracking"]["pending_results"] > 0
    assert f"cpsweep sync {out}" in capsys.readouterr().out  # the table's footer says it too

    assert main(["sync", str(out), "--timeout", "2"]) == 1  # still down: says so, keeps all
    server["restart"]()
    assert main(["sync", str(out)]) == 0
    printed = capsys.readouterr().out
    synced, _ = json.JSONDecoder().raw_decode(printed[printed.rindex('{\n  "results"') :])
    assert synced["all_in_mlflow"] and synced["results"] == 2 * EPOCHS
    from mlflow.tracking import MlflowClient

    parent = MlflowClient(url).search_runs(
        [MlflowClient(url).get_experiment_by_name(EXPERIMENT).experiment_id],
        "tags.`cpsweep.kind` = 'sweep'",
    )[0]
    check_exactly_once(url, {**summary, "mlflow": {"parent_run_id": parent.info.run_id}})
