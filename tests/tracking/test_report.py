"""`cpsweep report`: pure rows and aggregates, charts, errors, and a report of a real sweep."""

from __future__ import annotations

import base64
import re
from pathlib import Path

import pytest

from service.reporting.charts import write_charts
from service.reporting.html import render_html
from service.reporting.report import build_report
from service.reporting.rows import (
    arm_columns,
    arm_summaries,
    table_cells,
    trial_columns,
    trial_row,
    trial_rows,
)
from service.tracking.reader import RunData, StoreError, SweepData, load_sweep
from tests.stores import migrated_sqlite

PNG = b"\x89PNG\r\n\x1a\n"


def _run(tid: str, arm: str, acc: float, usd: float, **extra: float) -> RunData:
    tags = {
        "cpsweep.trial_id": tid,
        "cpsweep.arm": arm,
        "cpsweep.last_epoch": "10",
        "cp.criterion": "never" if arm == "baseline" else "paper",
        "energy.method": "estimated-tdp",
    }
    if arm != "baseline":
        tags.update({"cp.end_epoch": "3", "cp.switch_epoch": "4"})
    metrics = {
        "val/acc": acc,
        "test/acc": acc - 0.05,  # the test split, measured after the last epoch
        "time/cum_s": 100 * usd,
        "energy/kwh": usd / 10,
        "co2/kg": usd / 20,
        "cost/usd": usd,
        **extra,
    }
    return RunData(
        run_id=f"run-{tid}",
        tags=tags,
        params={"search.optim.lr": "0.05", "search.optim.name": "sgd", "optim.lr": "0.05"},
        metrics=metrics,
        val_history=[acc - 0.1, acc + 0.01, acc],
    )


def _sweep() -> list[RunData]:
    return [
        _run("b", "baseline", 0.90, 3.0),
        _run("a2", "cp", 0.88, 2.0, **{"savings/time_pct": 30.0, "savings/cost_pct": 33.0}),
        _run(
            "a1", "cp", 0.86, 1.0, **{"savings/time_pct": 50.0, "savings_measured/time_pct": 60.0}
        ),
    ]


# -- pure functions -------------------------------------------------------------------------


def test_trial_row_reads_tags_metrics_and_history() -> None:
    run = _run("t1", "cp", 0.8, 2.0, **{"savings/co2_pct": 12.5, "savings_measured/cost_pct": 7.0})
    r = trial_row(run)
    assert (r.trial_id, r.run_id, r.arm, r.status) == ("t1", "run-t1", "cp", "FINISHED")
    assert r.label == "cp lr=0.05 name=sgd"  # arm, then searched params, short names
    assert not r.baseline
    assert (r.epochs, r.cp_end, r.switch) == (10, 3, 4)
    assert r.final_val == 0.8 and r.best_val == pytest.approx(0.81)
    assert r.final_test == pytest.approx(0.75)
    assert (r.time_s, r.kwh, r.co2_kg, r.usd) == (200.0, 0.2, 0.1, 2.0)
    assert r.savings_est == {"co2": 12.5} and r.savings_measured == {"cost": 7.0}
    assert r.energy_method == "estimated-tdp"


def test_trial_row_without_arm_or_period_end() -> None:
    run = RunData("x" * 32, tags={"cpsweep.arm": "None", "cp.criterion": "never"})
    r = trial_row(run)
    assert r.arm is None and r.label == "-" and r.trial_id == "x" * 8
    assert r.baseline  # criterion never: the full recipe throughout
    assert r.cp_end is None and r.final_val is None and r.best_val is None
    assert table_cells(r, trial_columns())[4] == ("-", None)


def test_rows_put_baselines_last() -> None:
    assert [r.trial_id for r in trial_rows(_sweep())] == ["a1", "a2", "b"]


def test_arm_summaries_mean_per_arm_and_skip_failed_trials() -> None:
    runs = [*_sweep(), _run("f", "cp", 0.1, 9.0)]
    runs[-1].status = "FAILED"
    cp, base = arm_summaries(trial_rows(runs))
    assert (cp.arm, cp.trials, base.arm, base.trials) == ("cp", 2, "baseline", 1)
    assert cp.final_val == pytest.approx(0.87) and cp.usd == pytest.approx(1.5)
    assert cp.cp_end == 3 and base.cp_end is None
    # A mean over the trials that logged the quantity, not over zeros.
    assert cp.savings_est == {"time": 40.0, "cost": 33.0}
    assert cp.savings_measured == {"time": 60.0}
    assert base.savings_est == {}


def test_table_cells_format_and_sort_values() -> None:
    a1 = trial_rows(_sweep())[0]
    columns = trial_columns()
    cells = dict(zip([h for h, _, _ in columns], table_cells(a1, columns)))
    assert cells["trial"] == ("a1", "a1")
    assert cells["val/acc (max)"] == ("0.8600", 0.86)
    assert cells["test/acc"] == ("0.8100", pytest.approx(0.81))
    assert cells["cp_end"] == ("3", 3)
    assert cells["saved time %"] == ("50.0 (meas 60.0)", 50.0)
    assert cells["saved USD %"] == ("-", None)
    [cp, _] = arm_summaries(trial_rows(_sweep()))
    arms = arm_columns()
    arm = dict(zip([h for h, _, _ in arms], table_cells(cp, arms)))
    assert arm["mean val/acc (max)"] == ("0.8700", pytest.approx(0.87))
    assert arm["mean test/acc"] == ("0.8200", pytest.approx(0.82))
    assert arm["meas. time saved %"] == ("60.0", 60.0)


def _data(uri: str = "sqlite:////tmp/x.db") -> SweepData:
    parent = RunData("parent-123", tags={"cpsweep.sweep": "s<1>"}, params={"train.epochs": "10"})
    return SweepData("exp <b>", "7", uri, parent, _sweep())


def test_render_html_is_self_contained_and_escaped() -> None:
    rows = trial_rows(_sweep())
    page = render_html(_data(), rows, [("cost.png", "Cost per trial")])
    for tid in ("a1", "a2", "b"):
        assert f"<td>{tid}</td>" in page
    assert "parent-123" in page and "sqlite:////tmp/x.db" in page
    assert "exp &lt;b&gt;" in page and "<b>" not in page and "s&lt;1&gt;" in page
    assert "<code>estimated-tdp</code>" in page and "TDP" in page
    assert '<img src="cost.png"' in page
    assert '<tr class="baseline">' in page
    assert "<style>" in page and not re.search(r"<link|<script src|https?://", page)


def test_render_html_links_runs_on_an_http_server() -> None:
    page = render_html(_data("http://127.0.0.1:5000"), trial_rows(_sweep()), [])
    assert 'href="http://127.0.0.1:5000/#/experiments/7/runs/parent-123"' in page


def test_write_charts_makes_valid_pngs(tmp_path: Path) -> None:
    from PIL import Image

    rows = trial_rows(_sweep())
    rows[0].usd = None  # a trial without cost is left out of the scatter, not an error
    charts = write_charts(rows, tmp_path / "out", budget=10)
    names = [n for n, _ in charts]
    assert names == [
        "cp_end.png", "val_acc.png", "wall_time.png", "energy.png", "co2.png", "cost.png",
        "savings.png", "val_acc_vs_cost.png",
    ]  # fmt: skip
    for n in names:
        path = tmp_path / "out" / n
        assert path.read_bytes()[:8] == PNG
        with Image.open(path) as im:
            im.verify()


# -- errors -------------------------------------------------------------------------------


def test_missing_sqlite_file_is_a_clear_error(tmp_path: Path) -> None:
    db = tmp_path / "none.db"
    with pytest.raises(StoreError, match=re.escape(f"sqlite:///{db}")):
        load_sweep("anything", f"sqlite:///{db}")
    assert not db.exists()  # the report never creates a store


def test_unknown_experiment_names_uri_and_available_ones(tmp_path: Path, capsys) -> None:
    from mlflow.tracking import MlflowClient

    from service.cli import main

    uri = migrated_sqlite(tmp_path / "m.db")
    client = MlflowClient(uri)
    client.create_experiment("other-sweep")
    with pytest.raises(StoreError) as err:
        load_sweep("nope", uri)
    msg = str(err.value)
    assert "'nope'" in msg and uri in msg and "'other-sweep'" in msg and "'Default'" in msg
    # An experiment without a sweep run, and the command line's exit code and message.
    assert main(["report", "other-sweep", "--tracking-uri", uri, "--out", str(tmp_path)]) == 2
    assert "no sweep run (tag cpsweep.kind=sweep)" in capsys.readouterr().err


def test_unreachable_server_fails_fast() -> None:
    from tests.servers import free_port

    with pytest.raises(StoreError, match="unreachable"):
        load_sweep("x", f"http://127.0.0.1:{free_port()}")


# -- a real sweep ---------------------------------------------------------------------------


@pytest.mark.integration
@pytest.mark.timeout(600)
def test_report_of_a_real_sweep_with_a_baseline_arm(finished_sweep, tmp_path, capsys) -> None:
    from service.cli import main

    out = tmp_path / "report"
    argv = ["report", finished_sweep.experiment, "--tracking-uri", finished_sweep.uri]
    assert main([*argv, "--out", str(out)]) == 0
    assert capsys.readouterr().out.strip() == str((out / "index.html").resolve())
    page = (out / "index.html").read_text()
    summary = finished_sweep.summary
    for t in summary["trials"]:
        assert f"<td>{t['trial_id']}</td>" in page
    assert summary["mlflow"]["parent_run_id"] in page and finished_sweep.uri in page
    methods = {
        r.energy_method
        for r in trial_rows(load_sweep(finished_sweep.experiment, finished_sweep.uri).trials)
    }
    assert methods and all(f"<code>{m}</code>" in page for m in methods)
    assert "(meas " in page  # the cp arm has savings measured against its baseline arm
    assert "critical-period lr=0.05" in page and '<tr class="baseline">' in page
    # The charts are embedded (the page renders inside MLflow's artifact viewer) and also
    # written beside it.
    images = re.findall(r'<img src="data:image/png;base64,([^"]+)"', page)
    assert len(images) == 8 and (out / "val_acc_vs_cost.png").read_bytes()[:8] == PNG
    for data in images:
        assert base64.b64decode(data)[:8] == PNG
    assert len(list(out.glob("*.png"))) == 8
    # --parent picks the same sweep explicitly; a run of another kind is refused.
    assert (
        main([*argv, "--out", str(tmp_path / "p"), "--parent", summary["mlflow"]["parent_run_id"]])
        == 0
    )
    child = summary["trials"][0]["mlflow_run_id"]
    assert main([*argv, "--out", str(tmp_path / "q"), "--parent", child]) == 2
    assert "is not a sweep run" in capsys.readouterr().err


def test_build_report_from_plain_data(tmp_path: Path) -> None:
    page = build_report(_data(), tmp_path)
    assert page == tmp_path / "index.html" and page.is_file()
    assert len(list(tmp_path.glob("*.png"))) == 8
