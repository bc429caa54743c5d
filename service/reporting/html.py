"""The HTML page of `cpsweep report`: self-contained (inline CSS, JS and images), sortable tables.

Pure: it turns the rows and per-arm summaries of `service.reporting.rows` into one page, with
the PNG charts inline as data: URIs so it renders inside MLflow's artifact viewer too.
"""

from __future__ import annotations

import html
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timezone
from typing import Any

from service.reporting.rows import (
    ENERGY_NOTES,
    Column,
    TrialRow,
    arm_columns,
    arm_summaries,
    table_cells,
    trial_columns,
)
from service.tracking.reader import SweepData

__all__ = ["render_html"]

_CSS = """
body{font:14px/1.45 system-ui,sans-serif;margin:1rem;color:#222;max-width:1500px}
h1{font-size:1.5rem}h2{font-size:1.15rem;margin-top:2rem;border-bottom:1px solid #ddd}
dl{display:grid;grid-template-columns:max-content auto;gap:.2rem 1rem}dt{color:#666}dd{margin:0}
code{background:#f4f4f4;padding:0 .25rem;border-radius:3px}
table{border-collapse:collapse;font-variant-numeric:tabular-nums}
table{font-size:12.5px}
th,td{padding:.25rem .3rem;border-bottom:1px solid #e4e4e4;text-align:right;white-space:normal}
th{background:#f3f5f8;cursor:pointer;user-select:none;position:sticky;top:0;white-space:normal;vertical-align:bottom}
td:nth-child(2){min-width:9em}
th::after{content:" \\2195";color:#aaa}td:nth-child(-n+3),th:nth-child(-n+3){text-align:left}
tr.baseline td{background:#f6f6f6;font-style:italic}tbody tr:hover td{background:#eef4ff}
.scroll{overflow-x:auto}.charts{display:grid;grid-template-columns:repeat(auto-fill,minmax(480px,1fr));gap:1rem}
figure{margin:0}figure.wide{grid-column:span 2}figure img{max-width:100%;border:1px solid #eee}figcaption{color:#666;font-size:.9em}
"""
# Clicking a header sorts by its column (numbers by their data-v); the page works without it.
_JS = """
document.querySelectorAll("table.sortable th").forEach((th,i)=>th.onclick=()=>{
 const tb=th.closest("table").tBodies[0],rows=[...tb.rows],up=th.dataset.up!=="1";th.dataset.up=up?"1":"0";
 const v=r=>{const c=r.cells[i],n=parseFloat(c.dataset.v);return isNaN(n)?c.textContent:n};
 rows.sort((a,b)=>{const x=v(a),y=v(b);return (x>y?1:x<y?-1:0)*(up?1:-1)});rows.forEach(r=>tb.appendChild(r))});
"""


def _e(v: Any) -> str:
    return html.escape(str(v))


def _table(columns: Sequence[Column], items: Sequence[Any], row_class: Callable[[Any], str]) -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h, _, _ in columns)
    body = []
    for item in items:
        tds = "".join(
            f'<td data-v="{v}">{_e(t)}</td>' if isinstance(v, int | float) else f"<td>{_e(t)}</td>"
            for t, v in table_cells(item, columns)
        )
        body.append(f'<tr class="{row_class(item)}">{tds}</tr>')
    rows = "".join(body)
    return f'<div class="scroll"><table class="sortable"><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table></div>'


def _run_ref(data: SweepData, run_id: str) -> str:
    ref = f"<code>{_e(run_id)}</code>"
    if data.tracking_uri.startswith(("http://", "https://")):
        url = f"{data.tracking_uri.rstrip('/')}/#/experiments/{data.experiment_id}/runs/{run_id}"
        ref = f'<a href="{_e(url)}">{ref}</a>'
    return ref


def render_html(
    data: SweepData,
    rows: Sequence[TrialRow],
    charts: Sequence[tuple[str, str]],
    images: Mapping[str, str] | None = None,
) -> str:
    """The page: inline CSS and JS; each chart (file name, caption) shown from
    `images[name]` (a data: URI, so the page stands alone) or else the file beside it."""
    srcs = images or {}
    methods = sorted({r.energy_method for r in rows if r.energy_method})
    energy = "; ".join(f"<code>{_e(m)}</code>: {_e(ENERGY_NOTES.get(m, m))}" for m in methods)
    sweep = data.parent.tags.get("cpsweep.sweep", data.parent.tags.get("mlflow.runName", "?"))
    h = data.headline
    trials = _table(trial_columns(h), rows, lambda r: "baseline" if r.baseline else "")
    arms = _table(arm_columns(h), arm_summaries(rows), lambda a: "")
    figs = "".join(
        f'<figure class="{"wide" if n == "savings.png" else ""}"><img src="{_e(srcs.get(n, n))}" alt="{_e(c)}">'
        f"<figcaption>{_e(c)}</figcaption></figure>"
        for n, c in charts
    )
    now = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>cpsweep report: {_e(data.experiment)}</title>
<style>{_CSS}</style></head><body>
<h1>cpsweep report: {_e(data.experiment)}</h1>
<dl>
<dt>sweep</dt><dd>{_e(sweep)} ({_e(data.parent.status)}, {len(rows)} trials)</dd>
<dt>experiment</dt><dd>{_e(data.experiment)} (id <code>{_e(data.experiment_id)}</code>)</dd>
<dt>parent run</dt><dd>{_run_ref(data, data.parent.run_id)}</dd>
<dt>tracking URI</dt><dd><code>{_e(data.tracking_uri)}</code></dd>
<dt>headline metric</dt><dd><code>{_e(h.label)}</code>, its test value <code>{_e(h.test_key)}</code></dd>
<dt>energy</dt><dd>{energy or "no energy.method tag logged"}</dd>
<dt>generated</dt><dd>{now}</dd>
</dl>
<h2>Trials</h2>
{trials}
<p>Saved %: estimated against the full recipe extrapolated from what the critical period cost
per sample; <em>meas</em>: measured against the real baseline arm with the same parameters.
Baseline rows (full recipe throughout) are shaded.</p>
<h2>By arm</h2>
{arms}
<h2>Charts</h2>
<div class="charts">{figs}</div>
<script>{_JS}</script>
</body></html>
"""
