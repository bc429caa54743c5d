"""In-process training with the critical-period rule applied after every epoch (`cpsweep train`).

The rule runs inside `TrainingRun.run_epoch` (its `CriticalPeriod`), as in every trial.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

from trainables.core.config import TrainConfig
from trainables.core.wire import (
    END_EPOCH,
    EPOCH,
    ROTATION_PREFIX,
    SWITCH_EPOCH,
    TEST_ACC,
    VAL_ACC,
    headline_of,
)
from trainables.run.engine import TrainingRun, select_device
from trainables.run.progress import progress_line
from trainables.run.user_loop import run_user_loop

__all__ = ["summarize", "train_local"]

log = logging.getLogger(__name__)


def summarize(history: list[dict[str, Any]], run: TrainingRun, wall_s: float) -> dict[str, Any]:
    accs = [m[VAL_ACC] for m in history if VAL_ACC in m]
    tests = [m[TEST_ACC] for m in history if TEST_ACC in m]
    return {
        **_headline_values(history, run.cfg),
        "epochs": run.epoch,
        "cp_end_epoch": run.cp_end_epoch,
        "switch_epoch": run.switch_epoch,
        "final_val_acc": accs[-1] if accs else None,
        "best_val_acc": max(accs) if accs else None,
        "final_test_acc": tests[-1] if tests else None,  # measured, never decided on
        "wall_s": round(wall_s, 3),
        "train_s": round(sum(m["time/train_s"] for m in history), 3),
        "eval_s": round(sum(m["time/eval_s"] for m in history), 3),
        "samples": run.samples_total,
        "criterion": run.cfg.criterion.name,
        "device": str(run.device),
    }


def _headline_values(history: list[dict[str, Any]], cfg: TrainConfig) -> dict[str, Any]:
    """The headline metric (train.metric) after the last epoch, its best and test values."""
    h = headline_of(cfg.model_dump())
    vals = [m[h.key] for m in history if h.key in m]
    tests = [m[h.test_key] for m in history if h.test_key in m]
    return {
        "metric": {"name": h.key, "mode": h.mode, "test": h.test_key},
        "final_val": vals[-1] if vals else None,
        "best_val": h.best(vals),
        "final_test": tests[-1] if tests else None,
    }


def train_local(cfg: TrainConfig, out_dir: str | Path) -> dict[str, Any]:
    """Train in this process; write history.jsonl and summary.json into `out_dir`."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(cfg.model_dump_json(indent=2))
    t0 = time.perf_counter()
    if cfg.loop is not None:
        return _train_user_loop(cfg, out, t0)
    run = TrainingRun(cfg)
    log.info(
        "training %s on %s (%d train / %d val / %s test) on %s, criterion=%s, budget=%d epochs",
        cfg.model.label,
        cfg.data.label,
        run.data.train_y.numel(),
        run.data.val_y.numel(),
        "no" if run.data.test_y is None else run.data.test_y.numel(),
        run.device,
        cfg.criterion.name,
        cfg.epochs,
    )
    history: list[dict[str, Any]] = []
    headline = headline_of(cfg.model_dump())
    with (out / "history.jsonl").open("w") as fh:
        for _ in range(cfg.epochs):
            m = run.run_epoch()
            history.append(m)
            fh.write(json.dumps(m) + "\n")
            fh.flush()
            log.info(progress_line(m, cfg.epochs, headline))
    summary = summarize(history, run, time.perf_counter() - t0)
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


class _LocalSession:
    """`cpsweep train` with `train.loop`: the user's loop in this process, reports to disk."""

    rank, world = 0, 1

    def __init__(self, cfg: TrainConfig, fh: Any) -> None:
        self.cfg, self.fh = cfg, fh
        self.device = select_device(cfg.device)
        self.history: list[dict[str, Any]] = []
        self.headline = headline_of(cfg.model_dump())

    def report(self, m: dict[str, Any], directory: str | None = None) -> None:
        self.history.append(m)
        self.fh.write(json.dumps(m) + "\n")
        self.fh.flush()
        log.info(progress_line(m, self.cfg.epochs, self.headline))


def _train_user_loop(cfg: TrainConfig, out: Path, t0: float) -> dict[str, Any]:
    log.info("training with train.loop %s with the %s rule", cfg.loop, cfg.criterion.name)
    with (out / "history.jsonl").open("w") as fh:
        session = _LocalSession(cfg, fh)
        run_user_loop(cfg, session, checkpoint=None, channel=None, meter=None)
    last = session.history[-1] if session.history else {}
    summary = {
        **_headline_values(session.history, cfg),
        "epochs": last.get(EPOCH, 0),
        "cp_end_epoch": last.get(END_EPOCH),
        "switch_epoch": last.get(SWITCH_EPOCH),
        "wall_s": round(time.perf_counter() - t0, 3),
        "criterion": cfg.criterion.name,
        "loop": cfg.loop,
        "device": str(session.device),
        "last": {k: v for k, v in last.items() if not k.startswith(ROTATION_PREFIX)},
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary
