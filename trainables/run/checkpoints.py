"""A trial's checkpoints: what they hold, how a run resumes from one, and finding the newest.

A checkpoint directory holds `state.pt` (the TrainingRun: model, optimizer, rotation
snapshot, recipe phase, switch epoch, RNG state), `meta.json` (epoch and decision, for
people and tools) and `reports.json`: every per-epoch report so far, so that results
Tune never recorded can be resent (`replayed`) and rank 0's rotation curve rebuilt.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import ray.train
import torch

from trainables.core.wire import REPLAYED
from trainables.run.engine import TrainingRun

__all__ = [
    "checkpoint_epoch",
    "checkpointed_reports",
    "load_checkpoint",
    "newer_checkpoints",
    "read_reports",
    "replay",
    "save_checkpoint",
    "trial_storage_dir",
    "write_records",
]

log = logging.getLogger(__name__)

_REPORTS_FILE = "reports.json"  # every epoch's report so far, to fill gaps in Tune's view


def read_reports(directory: str | Path) -> list[dict[str, Any]]:
    """The per-epoch reports a checkpoint directory carries ([] if none)."""
    path = Path(directory) / _REPORTS_FILE
    return json.loads(path.read_text()) if path.is_file() else []


def write_records(
    directory: str | Path, meta: dict[str, Any], reports: list[dict[str, Any]]
) -> None:
    """meta.json (epoch and decision, for people and tools) and every report so far.

    Written into every checkpoint, the built-in loop's and a user loop's alike.
    """
    (Path(directory) / "meta.json").write_text(json.dumps(meta))
    (Path(directory) / _REPORTS_FILE).write_text(json.dumps(reports))  # last: marks complete


def load_checkpoint(run: TrainingRun, ckpt: Any) -> list[dict[str, Any]]:
    """Restore `run` from `ckpt` (None: a fresh run); return the reports it carries."""
    if ckpt is None:
        return []
    with ckpt.as_directory() as d:
        state = torch.load(Path(d) / "state.pt", map_location="cpu", weights_only=False)
        reports = read_reports(d)
    run.load_state_dict(state["run"])
    log.info("resumed at epoch %d (switch_epoch=%s)", run.epoch, run.switch_epoch)
    return reports


def save_checkpoint(run: TrainingRun, reports: list[dict[str, Any]], directory: str) -> str:
    """The run's state and every report so far (rank 0's rotation curve is in them)."""
    torch.save({"run": run.state_dict()}, Path(directory) / "state.pt")
    meta = {"epoch": run.epoch, "cp_end_epoch": run.cp_end_epoch, "switch_epoch": run.switch_epoch}
    write_records(directory, meta, reports)
    return directory


def checkpoint_epoch(directory: str | Path) -> int | None:
    """The epoch a checkpoint directory holds; None if incomplete.

    `write_records` writes last, after the loop's own files (state.pt for the built-in loop).
    """
    d = Path(directory)
    try:
        if not (d / _REPORTS_FILE).is_file():
            return None
        return int(json.loads((d / "meta.json").read_text())["epoch"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def newer_checkpoints(trial_dir: str | Path, known_epoch: int) -> list[Path]:
    """Complete checkpoint directories in a trial directory past `known_epoch`, newest first.

    After Ctrl-C, Tune may deliver a trial's last result (and register its checkpoint)
    during its clean-up, after it saved the experiment state; `--resume` then restores
    the checkpoint before. The newer one is still on disk: restoring from it keeps that
    epoch from being trained twice.
    """
    root = Path(trial_dir)
    if not root.is_dir():
        return []
    found = [(e, d) for d in root.glob("checkpoint_*") if (e := checkpoint_epoch(d)) is not None]
    return [d for e, d in sorted(found, key=lambda x: x[0], reverse=True) if e > known_epoch]


def trial_storage_dir() -> str | None:
    """This Tune trial's directory on its storage when that is a local filesystem, else None."""
    try:  # Ray 2.60 internals (pinned); only used to look for checkpoints, never required
        import pyarrow.fs
        from ray.train._internal.session import get_session

        storage = get_session().storage  # type: ignore[union-attr]
        if isinstance(storage.storage_filesystem, pyarrow.fs.LocalFileSystem):
            return str(storage.trial_fs_path)
    except Exception as exc:
        log.debug("no local trial directory: %s", exc)
    return None


def checkpointed_reports(checkpoint: ray.train.Checkpoint) -> list[dict[str, Any]]:
    """The per-epoch reports a checkpoint written by `save_checkpoint` carries."""
    with checkpoint.as_directory() as d:
        return read_reports(d)


def replay(
    reports: list[dict[str, Any]],
    after: int,
    before: int | None,
    send: Callable[[dict[str, Any]], None],
) -> list[dict[str, Any]]:
    """Resend the reports of epochs after..before (exclusive), marked `cp/replayed`; returns them."""
    missing = [r for r in reports if r["epoch"] > after and (before is None or r["epoch"] < before)]
    for r in missing:
        send({**r, REPLAYED: True})
    return missing
