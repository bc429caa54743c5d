"""The PNG charts of `cpsweep report`: one bar chart per quantity, savings, the headline
metric (train.metric) against cost."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from service.reporting.rows import SAVINGS_KEYS, TrialRow
from trainables.core.wire import Headline

__all__ = ["write_charts"]

log = logging.getLogger(__name__)


_CP, _BASE = "tab:blue", "0.6"


def _bars(plt: Any, rows: Sequence[TrialRow], values: list[Any], title: str, unit: str) -> Any:
    """One bar per trial; baselines grey and hatched; missing values marked n/a."""
    fig, ax = plt.subplots(figsize=(max(5.0, 0.9 * len(rows) + 2), 3.6), dpi=100)
    bars = ax.bar(
        range(len(rows)),
        [v or 0.0 for v in values],
        color=[_BASE if r.baseline else _CP for r in rows],
    )
    for b, r, v in zip(bars, rows, values):
        b.set_hatch("//" if r.baseline else "")
        ax.annotate(
            "n/a" if v is None else f"{v:.3g}",
            (b.get_x() + b.get_width() / 2, b.get_height()),
            ha="center",
            va="bottom",
            fontsize=7,
        )
    ax.set_xticks(range(len(rows)), [f"{r.trial_id}\n{r.label}" for r in rows], fontsize=7)
    ax.set(title=title, ylabel=unit)
    fig.tight_layout()
    return fig


def _savings(plt: Any, rows: Sequence[TrialRow]) -> Any:
    """Estimated and measured savings side by side, grouped by quantity, a bar per trial."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8), dpi=100, sharey=True)
    for ax, (kind, attr) in zip(
        axes, (("estimated", "savings_est"), ("measured", "savings_measured"))
    ):
        pick = [r for r in rows if getattr(r, attr) and not r.baseline]  # baselines save 0
        width = 0.8 / max(1, len(pick))
        for i, r in enumerate(pick):
            xs = [j + i * width for j in range(len(SAVINGS_KEYS))]
            ax.bar(
                xs,
                [getattr(r, attr).get(k, 0.0) for k in SAVINGS_KEYS],
                width,
                label=f"{r.trial_id} {r.label}",
            )
        ax.set_xticks([j + 0.4 - width / 2 for j in range(len(SAVINGS_KEYS))], list(SAVINGS_KEYS))
        ax.axhline(0, color="black", lw=0.6)
        ax.set_title(f"{kind} savings" + ("" if pick else ": none logged"))
        if pick:
            ax.legend(fontsize=7)
    axes[0].set_ylabel("% less than the full recipe")
    fig.tight_layout()
    return fig


def _scatter(plt: Any, rows: Sequence[TrialRow], headline: Headline) -> Any:
    """Each trial a point at (cost, final headline value), labelled; baselines black squares."""
    fig, ax = plt.subplots(figsize=(6.5, 4.2), dpi=100)
    pts = [r for r in rows if r.usd is not None and r.final_val is not None]
    for baseline, marker, color, name in (
        (False, "o", _CP, "critical-period trials"),
        (True, "s", "black", "baseline (full recipe)"),
    ):
        sel = [r for r in pts if r.baseline == baseline]
        if sel:
            ax.scatter(
                [r.usd for r in sel],
                [r.final_val for r in sel],
                s=45,
                marker=marker,
                color=color,
                label=name,
            )
    for r in pts:
        ax.annotate(
            f"{r.trial_id} {r.label}",
            (r.usd, r.final_val),
            fontsize=7,
            xytext=(4, 4),
            textcoords="offset points",
        )
    ax.set(
        xlabel="cost (USD)", ylabel=f"final {headline.label}", title=f"{headline.key} against cost"
    )
    ax.margins(0.25, 0.15)  # room for the point labels
    ax.locator_params(axis="x", nbins=5)
    if pts:
        ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def write_charts(
    rows: Sequence[TrialRow], out_dir: Path, budget: int | None, headline: Headline | None = None
) -> list[tuple[str, str]]:
    """Write the comparison PNGs into out_dir; returns (file name, caption) in page order.
    The metric charts show `headline` (train.metric; default val/acc): `val_acc.png`."""
    h = headline or Headline()
    stem = h.key.replace("/", "_")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cp = _bars(plt, rows, [r.cp_end for r in rows], "End of the critical period", "epoch")
    if budget:
        cp.axes[0].axhline(budget, color="tab:red", ls="--", lw=1, label=f"budget {budget}")
        cp.axes[0].legend(fontsize=7)
    charts = [("cp_end.png", "End of the critical period per trial (n/a: never ended)", cp)]
    for name, attr, title, unit in (
        (f"{stem}.png", "final_val", f"Final {h.label}", h.key),
        ("wall_time.png", "time_s", "Wall time", "seconds"),
        ("energy.png", "kwh", "Energy", "kWh"),
        ("co2.png", "co2_kg", "CO2", "kg CO2e"),
        ("cost.png", "usd", "Cost", "USD"),
    ):
        fig = _bars(plt, rows, [getattr(r, attr) for r in rows], title, unit)
        charts.append((name, f"{title} per trial", fig))
    charts.append(("savings.png", "Estimated and measured savings per trial", _savings(plt, rows)))
    scatter = _scatter(plt, rows, h)
    charts.append((f"{stem}_vs_cost.png", f"Final {h.key} against cost", scatter))
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, _, fig in charts:
        fig.savefig(out_dir / name)
        plt.close(fig)
    return [(name, caption) for name, caption, _ in charts]
