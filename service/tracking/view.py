"""The runs view the link `cpsweep run` prints opens: MLflow's shared view state.

The MLflow 3.17 UI opens `#/experiments/<id>/runs?viewStateShareKey=<key>` with the view
that the experiment tag `mlflow.sharedViewState.<key>` holds as JSON. What 3.17.2 takes
from that JSON (read in the wheel's minified UI, `mlflow/server/js/build/static/js/`:
grep `viewStateShareKey` and `runsExpanded`):

- the search facets `searchFilter`, `orderByKey`, `orderByAsc`, `startTime`,
  `lifecycleFilter`, `modelVersionFilter`, `datasetsFilter` (written into the URL);
- the UI state keys less `runsExpanded`, `runsPinned`, `runsHidden`, `runsVisibilityMap`
  and `autoRefreshEnabled`, which it drops: a shared view can neither expand the sweep's
  parent run nor hide it from the charts.

The runs table nests child runs under their parent, collapsed, whenever it is sorted by
start time (its default), and the charts draw only the rows shown: a parent-first view
showed one row and no charts. So the view filters on the sweep's parent run (its trials,
each a row, and no parent with an empty entry in every chart legend) and sorts by the
headline metric (no nesting). The sweep's own run (settings, totals, report) is one
click away: `run_url`, printed beside the link, or any trial's "Parent run".

Also measured in 3.17.2: `columnWidths` applies only to the columns `columnOrder`
names; a line chart card given without the fields the UI's own cards carry drew
smoothed curves (`_line_chart` gives them all); the
charts draw the first ten runs unless `runsHiddenMode` says otherwise; the default run
colour is a hash of the run id (two of the quickstart's four trials came out the same
red), so each trial carries its own `mlflow.runColor`.
"""

from __future__ import annotations

from typing import Any

from service.tracking.schema import CRITICAL, USAGE_KEYS
from trainables.core.wire import ROTATION_MEAN, VAL_LOSS, Headline

__all__ = [
    "RUN_COLOR_TAG",
    "SHARED_VIEW_PREFIX",
    "TRIAL_COLORS",
    "run_url",
    "runs_view_url",
    "shared_view",
    "shared_view_key",
    "trial_color",
    "view_columns",
]

SHARED_VIEW_PREFIX = "mlflow.sharedViewState."
RUN_COLOR_TAG = "mlflow.runColor"  # what the UI's own colour picker sets on a run
# Tableau 10: ten colours a legend tells apart; trial i gets colour i modulo ten.
TRIAL_COLORS = (
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
    "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf",
)  # fmt: skip
# The curves a sweep is compared by, in one chart section ahead of the UI's generated
# ones: rotation, the period's end on the same epoch axis, then the headline metric
# (train.metric) and the validation loss: what the trials reach.
_CURVES = (ROTATION_MEAN, CRITICAL)
_SECTION = {
    "uuid": "cpsweep-section",
    "name": "critical period and headline metric",
    "display": True,
    "isReordered": False,
    "deleted": False,
    "isGenerated": False,
}
_RUN_NAME = "attributes.`Run Name`"


def trial_color(index: int) -> str:
    """The run colour of the sweep's `index`-th trial (0-based, in start order)."""
    return TRIAL_COLORS[index % len(TRIAL_COLORS)]


def view_columns(searched: list[str], headline: Headline | None = None) -> list[str]:
    """The runs table's columns after the run name: the searched params (what tells the
    trials apart), the headline metric and its test value (never decided on), the usage
    totals and the period's end."""
    h = headline or Headline()
    columns = [f"params.`{p}`" for p in searched]
    columns += [f"metrics.`{k}`" for k in (h.key, h.test_key, *USAGE_KEYS)]
    columns += [f"tags.`{k}`" for k in ("cp.end_epoch", "cp.switch_epoch")]
    return columns


def _line_chart(index: int, key: str) -> dict[str, Any]:
    """A line chart card with every field the UI's own cards carry."""
    return {
        "uuid": f"cpsweep-chart-{index}",
        "type": "LINE",
        "metricSectionId": _SECTION["uuid"],
        "metricKey": key,
        "selectedMetricKeys": [key],
        "displayName": key,
        "isGenerated": False,
        "deleted": False,
        "runsCountToCompare": 10,
        "lineSmoothness": 0,
        "useGlobalLineSmoothing": True,
        "xAxisKey": "step",
        "useGlobalXaxisKey": True,
        "selectedXAxisMetricKey": "",
        "xAxisScaleType": "linear",
        "scaleType": "linear",
        "range": {},
        "yAxisKey": "metric",
        "yAxisExpressions": [],
        "ignoreOutliers": False,
    }


def shared_view_key(parent_run_id: str) -> str:
    """One view per sweep: a later sweep in the same experiment leaves this link as it was."""
    return f"cpsweep-{parent_run_id}"


def shared_view(
    searched: list[str], parent_run_id: str, headline: Headline | None = None
) -> dict[str, Any]:
    """The view of one sweep (the value of its experiment tag, see the module docstring):
    its trials as rows sorted by the headline metric, best first, their columns, and the
    chart section of their curves first, every trial drawn."""
    h = headline or Headline()
    columns = view_columns(searched, h)
    charts = list(dict.fromkeys((*_CURVES, h.key, VAL_LOSS)))
    return {
        "searchFilter": f"tags.`mlflow.parentRunId` = '{parent_run_id}'",
        "orderByKey": f"metrics.`{h.key}`",
        "orderByAsc": h.mode == "min",
        "selectedColumns": columns,
        "columnOrder": [_RUN_NAME, *columns],
        "columnWidths": {_RUN_NAME: 300},
        "runsHiddenMode": "SHOW_ALL",
        "compareRunSections": [_SECTION],
        "compareRunCharts": [_line_chart(i, k) for i, k in enumerate(charts)],
        "isAccordionReordered": True,
        "hideEmptyCharts": True,
        "globalLineChartConfig": {
            "xAxisKey": "step",
            "lineSmoothness": 0,
            "selectedXAxisMetricKey": "",
        },
    }


def runs_view_url(
    ui_url: str, experiment_id: str, parent_run_id: str | None, charts: bool = False
) -> str:
    """The link that opens an experiment on MLflow's training-runs page (not GenAI) with
    the sweep's view; the plain runs page when MLflow never took the sweep's run."""
    query = "workflowType=machine_learning"
    query += f"&viewStateShareKey={shared_view_key(parent_run_id)}" if parent_run_id else ""
    query += "&compareRunsMode=CHART" if charts else ""
    return f"{ui_url.rstrip('/')}/#/experiments/{experiment_id}/runs?{query}"


def run_url(ui_url: str, experiment_id: str, run_id: str) -> str:
    """One run's page, e.g. the sweep's own run: its settings, totals and report."""
    base = f"{ui_url.rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}"
    return f"{base}?workflowType=machine_learning"
