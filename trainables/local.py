"""In-process training with the critical-period rule applied after every epoch (`cpsweep train`)."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

from trainables.config import CriterionConfig, TrainConfig
from trainables.criteria import CriterionState, value_name
from trainables.engine import TrainingRun

__all__ = ["criterion_state", "progress_line", "summarize", "train_local"]

log = logging.getLogger(__name__)


def criterion_state(cfg: CriterionConfig, budget: int) -> CriterionState:
    return CriterionState(
        cfg.name,
        budget=budget,
        window=cfg.window,
        threshold_deg=cfg.threshold_deg,
        ratio=cfg.ratio,
        patience=cfg.patience,
        fraction=cfg.fraction,
    )


def progress_line(m: dict[str, Any], budget: int) -> str:
    """One human-readable line per epoch (`cpsweep train` and the sweep's live progress)."""
    stat_name = next((k for k in ("cp/angle_deg", "cp/rate_ratio") if m.get(k) is not None), None)
    stat_txt = f" {stat_name.split('/')[1]}={m[stat_name]:6.2f}" if stat_name else ""
    val = f" val_acc={m['val/acc']:.4f}" if "val/acc" in m else ""
    switch = f" switch@{m['cp/switch_epoch']}" if m.get("cp/switch_epoch") else ""
    return (
        f"epoch {m['epoch']:>3}/{budget} {m['phase']:<8} x{m['recipe/repeats']} "
        f"rot={m['rotation/mean']:.4f}{stat_txt} loss={m['train/loss']:.4f}{val}{switch} "
        f"{m['time/epoch_s']:.2f}s"
    )


def summarize(history: list[dict[str, Any]], run: TrainingRun, wall_s: float) -> dict[str, Any]:
    accs = [m["val/acc"] for m in history if "val/acc" in m]
    return {
        "epochs": run.epoch,
        "cp_end_epoch": run.cp_end_epoch,
        "switch_epoch": run.switch_epoch,
        "final_val_acc": accs[-1] if accs else None,
        "best_val_acc": max(accs) if accs else None,
        "wall_s": round(wall_s, 3),
        "train_s": round(sum(m["time/train_s"] for m in history), 3),
        "eval_s": round(sum(m["time/eval_s"] for m in history), 3),
        "samples": run.samples_total,
        "criterion": run.cfg.criterion.name,
        "device": str(run.device),
    }


def train_local(cfg: TrainConfig, out_dir: str | Path) -> dict[str, Any]:
    """Train in this process; write history.jsonl and summary.json into `out_dir`."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(cfg.model_dump_json(indent=2))
    t0 = time.perf_counter()
    run = TrainingRun(cfg)
    rule = criterion_state(cfg.criterion, cfg.epochs)
    stat_name = value_name(cfg.criterion.name)
    log.info(
        "training %s on %s (%d train / %d val) on %s, criterion=%s, budget=%d epochs",
        cfg.model.label,
        cfg.data.label,
        run.data.train_y.numel(),
        run.data.val_y.numel(),
        run.device,
        cfg.criterion.name,
        cfg.epochs,
    )
    history: list[dict[str, Any]] = []
    with (out / "history.jsonl").open("w") as fh:
        for _ in range(cfg.epochs):
            m = run.run_epoch()
            verdict = rule.update(m["rotation/mean"])
            if stat_name and verdict.value is not None:
                m[stat_name] = verdict.value
            if verdict.end_epoch is not None and run.switch_epoch is None:
                run.end_period(verdict.end_epoch)
                log.info(
                    "critical period ended at epoch %d (%s); post-period recipe from epoch %d",
                    verdict.end_epoch,
                    cfg.criterion.name,
                    run.switch_epoch,
                )
            m["cp/end_epoch"] = run.cp_end_epoch
            m["cp/switch_epoch"] = run.switch_epoch
            history.append(m)
            fh.write(json.dumps(m) + "\n")
            fh.flush()
            log.info(progress_line(m, cfg.epochs))
    summary = summarize(history, run, time.perf_counter() - t0)
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary
