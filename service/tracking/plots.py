"""Per-trial charts logged as MLflow artifacts: rotation curves and accuracy against cost."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from trainables.core.wire import END_EPOCH, ROTATION_MEAN, ROTATION_PREFIX, VAL_ACC

__all__ = ["accuracy_cost_figure", "log_trial_plots", "rotation_figure"]


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def rotation_figure(history: list[dict[str, Any]]) -> Any:
    """Per-layer rotation (thin) and the mean (thick), the detected end marked."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=110)
    epochs = [h["epoch"] for h in history]
    layers = sorted(
        {k for h in history for k in h if k.startswith(ROTATION_PREFIX) and k != ROTATION_MEAN}
    )
    for k in layers:
        ax.plot(epochs, [h.get(k) for h in history], lw=0.7, alpha=0.45)
    ax.plot(epochs, [h.get(ROTATION_MEAN) for h in history], lw=2.5, color="black", label="mean")
    end = next((h.get(END_EPOCH) for h in reversed(history) if h.get(END_EPOCH)), None)
    if end:
        ax.axvline(end, color="tab:red", ls="--", label=f"end of critical period (epoch {end})")
    ax.set_xlabel("epoch")
    ax.set_ylabel("layer rotation (1 - cos(w, w0))")
    ax.set_title(f"Layer rotation, {len(layers)} layers")
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    return fig


def accuracy_cost_figure(history: list[dict[str, Any]]) -> Any:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 4), dpi=110)
    pts = [(h["cost/usd"], h[VAL_ACC]) for h in history if VAL_ACC in h and "cost/usd" in h]
    if pts:
        xs, ys = zip(*pts)
        ax.plot(xs, ys, marker="o", ms=3)
    ax.set_xlabel("cumulative cost (USD)")
    ax.set_ylabel("validation accuracy")
    ax.set_title("Accuracy against cumulative cost")
    fig.tight_layout()
    return fig


def log_trial_plots(client: Any, run_id: str, history: list[dict[str, Any]]) -> None:
    if not history:
        return
    plt = _plt()
    figures = [("rotation.png", rotation_figure(history))]
    if any(VAL_ACC in h for h in history):  # a loop without accuracy gets no empty chart
        figures.append(("accuracy_vs_cost.png", accuracy_cost_figure(history)))
    with tempfile.TemporaryDirectory() as tmp:
        for name, fig in figures:
            path = Path(tmp) / name
            fig.savefig(path)
            plt.close(fig)
            # At the run's artifact root: MLflow's compare page puts the root files that
            # every selected run has side by side (it does not look into folders).
            client.log_artifact(run_id, str(path))
