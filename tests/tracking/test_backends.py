"""MLflow backends for real: a fresh sqlite file, an `mlflow server`, PostgreSQL behind a server.

Each sweep is tiny (digits, 4 epochs, width 8) and runs on the test session's local Ray.
"""

from __future__ import annotations

import json
import sqlite3
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from tests.stores import migrated_sqlite
from tests.tracking.conftest import (
    EPOCHS,
    EXPERIMENT,
    sqlalchemy_uri,
    sqlite_schema,
    tiny_spec,
)

# A hung sweep fails in minutes, not at the global 15-minute timeout.
pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

# What a trial logs every epoch (service.tracking.callback); each must have one point per epoch.
PER_EPOCH = (
    "rotation/mean",
    "val/acc",
    "train/loss",
    "time/cum_s",
    "cost/usd",
    "energy/Wh",
    "co2/g",
    "cp/critical",
)
CORE_TABLES = {
    "experiments",
    "runs",
    "metrics",
    "latest_metrics",
    "params",
    "tags",
    "alembic_version",
}


def _head_revision() -> str:
    from mlflow.store.db.utils import _get_latest_schema_revision  # the schema MLflow expects

    return str(_get_latest_schema_revision())


def _check_sweep(client: Any, summary: dict[str, Any], n_trials: int) -> list[Any]:
    """Parent and child runs, full per-epoch histories, tags and plots; returns the child runs."""
    parent_id = summary["mlflow"]["parent_run_id"]
    parent = client.get_run(parent_id)
    assert parent.data.tags["cpsweep.kind"] == "sweep" and parent.info.status == "FINISHED"
    children = client.search_runs(
        [parent.info.experiment_id], f"tags.`mlflow.parentRunId` = '{parent_id}'"
    )
    assert len(children) == n_trials == len(summary["trials"])
    assert {c.data.tags["cpsweep.trial_id"] for c in children} == {
        t["trial_id"] for t in summary["trials"]
    }
    for run in children:
        rid = run.info.run_id
        assert run.info.status == "FINISHED"
        assert run.data.tags["cpsweep.kind"] == "trial"
        assert run.data.tags["cpsweep.last_epoch"] == str(EPOCHS)
        for key in PER_EPOCH:
            steps = [m.step for m in client.get_metric_history(rid, key)]
            assert steps == list(range(1, EPOCHS + 1)), (key, steps)
        # The test split: measured once, after the last epoch; the summary carries it too.
        for key in ("test/acc", "test/loss"):
            assert [m.step for m in client.get_metric_history(rid, key)] == [EPOCHS], key
        [row] = [t for t in summary["trials"] if t["trial_id"] == run.data.tags["cpsweep.trial_id"]]
        assert row["final_test_acc"] == pytest.approx(run.data.metrics["test/acc"])
        plots = {a.path for a in client.list_artifacts(rid)}
        assert plots == {"rotation.png", "accuracy_vs_cost.png"}
    return children


# -- sqlite ---------------------------------------------------------------------------------


def test_prepare_store_creates_and_migrates_a_fresh_sqlite_file(tmp_path: Path) -> None:
    from service.tracking.callback import prepare_store

    db = tmp_path / "sub" / "fresh.db"
    assert not db.exists()
    client = prepare_store(f"sqlite:///{db}")
    schema = sqlite_schema(db)
    assert schema["tables"] >= CORE_TABLES
    assert schema["revision"] == _head_revision()
    assert [e.name for e in client.search_experiments()] == ["Default"]


def test_concurrent_trials_share_a_fresh_sqlite_file(finished_sweep) -> None:
    """The store exists at head revision before Tune starts any trial; both trials log fully."""
    from mlflow.tracking import MlflowClient

    probe, head = finished_sweep.probe, _head_revision()
    for seen in [probe.at_setup, *probe.at_trial_start]:
        assert seen["exists"] and seen["tables"] >= CORE_TABLES and seen["revision"] == head
    assert len(probe.at_trial_start) == 2
    # The two trials really ran at the same time (max_concurrent_trials=2).
    assert max(probe.trial_starts) < min(probe.trial_ends)
    client = MlflowClient(finished_sweep.uri)
    children = _check_sweep(client, finished_sweep.summary, 2)
    assert {c.data.tags["cpsweep.arm"] for c in children} == {"cp", "baseline"}
    methods = {c.data.tags["energy.method"] for c in children}
    assert methods <= {"measured", "estimated-tdp"}, methods
    for c in children:
        assert client.get_metric_history(c.info.run_id, "energy/Wh")[-1].value > 0
    # An estimated saving means nothing for the arm that runs the full recipe throughout.
    by_arm = {t["arm"]: t for t in finished_sweep.summary["trials"]}
    assert by_arm["baseline"]["savings_pct"] == {}
    assert set(by_arm["cp"]["savings_pct"]) >= {"time", "energy", "cost"}


def test_the_sweep_run_holds_totals_the_summary_and_the_report(finished_sweep) -> None:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(finished_sweep.uri)
    summary = finished_sweep.summary
    parent = client.get_run(summary["mlflow"]["parent_run_id"])
    m, trials = parent.data.metrics, summary["trials"]
    assert m["sweep/trials"] == len(trials) == m["sweep/finished"] and m["sweep/failed"] == 0
    assert m["sweep/best_val_acc"] == max(t["final_val_acc"] for t in trials)
    best = max(trials, key=lambda t: t["final_val_acc"])  # chosen on val, reported on test
    assert m["sweep/test_acc_of_best_val"] == pytest.approx(best["final_test_acc"])
    # Totals under the trials' own keys and units (4 significant digits), so the parent's
    # row fills the same columns of the runs table.
    for key, src, scale in (("energy/Wh", "energy_kwh", 1e3), ("cost/usd", "cost_usd", 1)):
        total = sum(t[src] for t in trials) * scale
        assert m[key] == pytest.approx(total, rel=1e-3) and m[key] > 0
    assert m["total/kWh"] == pytest.approx(m["energy/Wh"] / 1e3, rel=1e-3)
    assert m["sweep/samples"] == sum(t["samples"] for t in trials)
    arts = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert {"spec.json", "summary.json", "report"} <= arts
    report = {a.path for a in client.list_artifacts(parent.info.run_id, "report")}
    assert "report/index.html" in report and len([r for r in report if r.endswith(".png")]) == 8
    page = Path(client.download_artifacts(parent.info.run_id, "report/index.html")).read_text()
    assert page.count('src="data:image/png;base64,') == 8  # stands alone in MLflow's viewer
    logged = json.loads(
        Path(client.download_artifacts(parent.info.run_id, "summary.json")).read_text()
    )
    assert [t["trial_id"] for t in logged["trials"]] == [t["trial_id"] for t in trials]


# -- mlflow server (sqlite behind it) ------------------------------------------------------------


def test_sweep_logs_through_an_mlflow_server(ray_local, start_mlflow_server, tmp_path) -> None:
    from mlflow.tracking import MlflowClient

    from service.sweeps.run import run_sweep

    db = tmp_path / "server.db"
    server = start_mlflow_server(migrated_sqlite(db))
    summary = run_sweep(tiny_spec("srv", server.url), output_dir=tmp_path / "out").to_json()
    assert summary["mlflow"]["tracking_uri"] == server.url
    client = MlflowClient(server.url)
    [child] = _check_sweep(client, summary, 1)
    rid = child.info.run_id
    # The REST API answers for the run, and the server's own store holds it.
    with urllib.request.urlopen(
        f"{server.url}/api/2.0/mlflow/runs/get?run_id={rid}", timeout=10
    ) as r:
        assert json.load(r)["run"]["info"]["run_id"] == rid
    con = sqlite3.connect(db)
    try:
        rows = con.execute(
            "select count(*) from metrics where run_uuid=? and key='val/acc'", (rid,)
        )
        assert rows.fetchone()[0] == EPOCHS
    finally:
        con.close()
    # Artifacts were proxied by the server into its --artifacts-destination.
    assert child.info.artifact_uri.startswith("mlflow-artifacts:")
    assert {a.path for a in client.list_artifacts(rid)} == {"rotation.png", "accuracy_vs_cost.png"}
    stored = {p.name for p in server.artifacts.rglob("*")}
    assert {"rotation.png", "summary.json", "index.html"} <= stored  # trial and sweep run
    local = client.download_artifacts(rid, "rotation.png", str(tmp_path))
    assert Path(local).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# -- PostgreSQL behind an mlflow server ----------------------------------------------------------


def test_sqlalchemy_uri_names_the_psycopg2_driver() -> None:
    assert sqlalchemy_uri("postgresql://u@h:1/d") == "postgresql+psycopg2://u@h:1/d"


def test_sweep_logs_into_postgresql(ray_local, start_mlflow_server, postgres_uri, tmp_path) -> None:
    import psycopg2
    from mlflow.tracking import MlflowClient

    from service.sweeps.run import run_sweep

    server = start_mlflow_server(sqlalchemy_uri(postgres_uri))
    summary = run_sweep(tiny_spec("pg", server.url), output_dir=tmp_path / "out").to_json()
    client = MlflowClient(server.url)
    [child] = _check_sweep(client, summary, 1)
    con = psycopg2.connect(postgres_uri)
    try:
        cur = con.cursor()
        cur.execute(
            "select e.name, count(*) from runs r join experiments e using (experiment_id) group by e.name"
        )
        assert dict(cur.fetchall()) == {EXPERIMENT: 2}  # parent + one trial
        cur.execute(
            "select step from metrics where run_uuid=%s and key='rotation/mean' order by step",
            (child.info.run_id,),
        )
        assert [s for (s,) in cur.fetchall()] == list(range(1, EPOCHS + 1))
        cur.execute("select version_num from alembic_version")
        assert cur.fetchone()[0] == _head_revision()
    finally:
        con.close()
