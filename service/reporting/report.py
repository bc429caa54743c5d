"""`cpsweep report`: one sweep from MLflow as a static HTML page with comparison charts.

The sweep is read back from its MLflow experiment (the latest parent run tagged
`cpsweep.kind=sweep`, or a given one) and its child trial runs by
`service.tracking.reader.load_sweep`; `service.reporting.rows` turns the runs into
rows and per-arm means, `service.reporting.charts` draws the PNGs and
`service.reporting.html` renders the page. `upload_report` puts the page on the
sweep's own run once tracking has finished (service.sweeps.run, `cpsweep sync`).
"""

from __future__ import annotations

import base64
import logging
import re
import tempfile
from pathlib import Path
from typing import Any

from service.reporting.charts import write_charts
from service.reporting.html import render_html
from service.reporting.rows import to_int, trial_rows
from service.tracking.reader import SweepData, client_for, load_sweep, resolve_tracking_uri

__all__ = ["build_report", "register_cli", "upload_report"]

log = logging.getLogger(__name__)


def build_report(data: SweepData, out_dir: str | Path) -> Path:
    """Write index.html and its PNGs into out_dir; returns the page's path."""
    out = Path(out_dir)
    rows = trial_rows(data.trials, data.headline)

    params = data.parent.params
    budget = to_int(params.get("epochs", params.get("train.epochs")))
    charts = write_charts(rows, out, budget, data.headline)
    # Images inline as data: URIs: MLflow's artifact viewer shows the page without the
    # files beside it, so relative <img> paths would break there.
    inline = {name: _data_uri(out / name) for name, _ in charts}
    page = out / "index.html"
    page.write_text(render_html(data, rows, charts, inline), encoding="utf-8")
    return page


def upload_report(tracking_uri: str, experiment: str, parent_id: str) -> bool:
    """Build the report of sweep run `parent_id` from what MLflow holds and log it to that
    run as `report/`. Never raises (the results are on disk and in the trial runs): False
    and a warning when it could not; `cpsweep sync` and `cpsweep report` try again."""
    try:
        data = load_sweep(experiment, tracking_uri, parent_id)
        with tempfile.TemporaryDirectory(prefix="cpsweep-report-") as tmp:
            build_report(data, tmp)
            client_for(tracking_uri).log_artifacts(parent_id, tmp, "report")
    except Exception as exc:
        log.warning("MLflow: could not put the report on the sweep's run %s: %s", parent_id, exc)
        return False
    return True


def _data_uri(png: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(png.read_bytes()).decode("ascii")


# -- CLI -----------------------------------------------------------------------------------


def _cmd_report(args: Any) -> int:
    data = load_sweep(args.experiment, resolve_tracking_uri(args.tracking_uri), args.parent)
    out = args.out or Path("reports") / re.sub(r"[^A-Za-z0-9_.-]", "_", args.experiment)
    page = build_report(data, out)
    log.info("report of sweep run %s (%d trials)", data.parent.run_id, len(data.trials))
    print(page.resolve())
    return 0


def register_cli(sub: Any) -> None:
    """`cpsweep report EXPERIMENT [--tracking-uri URI] [--parent RUN_ID] [--out DIR]`."""
    p = sub.add_parser("report", help="write an HTML report with charts of one sweep from MLflow")
    p.add_argument("experiment", help="MLflow experiment name (the sweep's name unless set)")
    p.add_argument("--tracking-uri", help="default $MLFLOW_TRACKING_URI or sqlite:///mlflow.db")
    p.add_argument("--parent", help="sweep parent run id (default: the experiment's latest sweep)")
    p.add_argument("--out", help="output directory (default reports/<experiment>/)")
    p.set_defaults(func=_cmd_report)
