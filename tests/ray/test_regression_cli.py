"""A regression own loop through `cpsweep run` and `cpsweep report`: everything shows its
headline metric, `train.metric: {name: val/loss, mode: min}`, and the savings its `samples`
fill; no accuracy column, no empty chart. A real local Ray cluster and MLflow in sqlite."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest

from tests.servers import REPO, VENV_BIN, base_env
from tests.stores import migrated_sqlite

pytestmark = pytest.mark.integration

SPEC = REPO / "examples" / "regression.yaml"


def _cpsweep(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [str(VENV_BIN / "cpsweep"), *args],
        cwd=cwd,
        env=base_env(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    return proc


def test_the_regression_example_shows_val_loss_everywhere(tmp_path: Path) -> None:
    uri = migrated_sqlite(tmp_path / "mlflow.db")
    out = tmp_path / "out"
    sets = ["train.epochs=3", "train.criterion.window=2", f"tracking.uri={uri}"]
    sets += ["accounting.measure_energy=false"]  # 2 trials: the spec's two learning rates
    run = _cpsweep(
        ["run", str(SPEC), "--output-dir", str(out), *(a for s in sets for a in ("--set", s))],
        tmp_path,
    )
    # The table: the headline's columns, filled; no accuracy column.
    lines = run.stdout.splitlines()
    head = next(line for line in lines if line.startswith("trial "))
    assert "val/loss (min)" in head and "best val/loss" in head and "test/loss" in head
    assert "acc" not in head
    rows = [line for line in lines[lines.index(head) + 2 :] if "TERMINATED" in line]
    assert len(rows) == 2
    # The done lines: the headline and its test value, never val_acc.
    done = [line for line in run.stderr.splitlines() if " done: " in line]
    assert len(done) == 2 and all("val/loss (min)=" in d and "test/loss=" in d for d in done)
    assert "val_acc" not in run.stderr
    # summary.json: the metric, values for each trial, samples and estimated savings.
    summary = json.loads((out / "summary.json").read_text())
    assert summary["metric"] == {"name": "val/loss", "mode": "min", "test": "test/loss"}
    for t in summary["trials"]:
        assert t["final_val"] is not None and t["best_val"] <= t["final_val"]
        assert t["final_test"] is not None and t["samples"] > 0
        assert t["savings_pct"], t  # from the `samples` the loop reports
        assert t["cp_flag"] == "earliest"  # window 2: the paper rule's first possible end
    # The report: the headline's columns and charts, no accuracy anywhere.
    report = _cpsweep(
        ["report", "regression", "--tracking-uri", uri, "--out", str(tmp_path / "rep")], tmp_path
    )
    page = Path(report.stdout.strip().splitlines()[-1]).read_text()
    text = re.sub(r"data:image/png;base64,[^\"]+", "", page)  # the text, not the images
    assert "val/loss (min)" in text and "test/loss" in text
    assert not re.search(r"accuracy|val/acc|test/acc|val acc|\bacc\b", text)
    charts = sorted(p.name for p in (tmp_path / "rep").glob("*.png"))
    assert "val_loss.png" in charts and "val_loss_vs_cost.png" in charts
