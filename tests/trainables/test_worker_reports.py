"""Reports reach Tune in order and without gaps, even after a lost result."""

from __future__ import annotations

import ray.train

from trainables.core.config import TrainConfig
from trainables.run.checkpoints import save_checkpoint
from trainables.run.engine import TrainingRun
from trainables.run.worker import _GapFiller


def _checkpoint(tmp_path, reports):
    cfg = TrainConfig.model_validate(
        {
            "epochs": 4,
            "data": {"name": "digits", "train_subset": 64},
            "model": {"name": "small_cnn", "width": 4},
        }
    )
    d = tmp_path / f"ckpt{reports[-1]['epoch']}"
    d.mkdir()
    save_checkpoint(TrainingRun(cfg), reports, str(d))
    return ray.train.Checkpoint.from_directory(str(d))


def _report(epoch: int) -> dict:
    return {"epoch": epoch, "rotation/mean": epoch / 10}


def test_reports_in_order_pass_through_unchanged(tmp_path):
    seen: list[dict] = []
    forward = _GapFiller(seen.append)
    for e in (1, 2, 3):
        forward(_report(e), _checkpoint(tmp_path, [_report(i) for i in range(1, e + 1)]))
    assert seen == [_report(1), _report(2), _report(3)]


def test_epochs_lost_before_a_resume_are_replayed_from_the_checkpoint(tmp_path):
    # Tune saw epoch 1, epochs 2-3 were checkpointed but their results were lost; the
    # restored run reports epoch 4 next with a checkpoint holding reports 1..4.
    seen: list[dict] = []
    forward = _GapFiller(seen.append)
    forward(_report(1), None)
    forward(_report(4), _checkpoint(tmp_path, [_report(i) for i in range(1, 5)]))
    assert [r["epoch"] for r in seen] == [1, 2, 3, 4]
    assert [bool(r.get("cp/replayed")) for r in seen] == [False, True, True, False]
    assert seen[1]["rotation/mean"] == 0.2


def test_a_fresh_trial_function_replays_the_whole_checkpointed_curve(tmp_path):
    seen: list[dict] = []
    forward = _GapFiller(seen.append)  # Tune restarted the trial: nothing seen yet
    forward(_report(3), _checkpoint(tmp_path, [_report(i) for i in range(1, 4)]))
    assert [r["epoch"] for r in seen] == [1, 2, 3]


def test_a_rewind_after_a_worker_retry_passes_through(tmp_path):
    seen: list[dict] = []
    forward = _GapFiller(seen.append)
    for e in (1, 2, 3):
        forward(_report(e), None)
    forward(_report(3), ray.train.Checkpoint.from_directory(str(tmp_path)))
    assert [r["epoch"] for r in seen] == [1, 2, 3, 3]


def test_newer_complete_checkpoints_on_disk_are_found_newest_first(tmp_path):
    """Tune lost its latest checkpoint at Ctrl-C: the trial restores from the newest one on disk."""
    import json

    from trainables.run.checkpoints import newer_checkpoints
    from trainables.run.engine import TrainingRun

    cfg = TrainConfig.model_validate(
        {
            "epochs": 4,
            "data": {"name": "digits", "train_subset": 64},
            "model": {"name": "small_cnn", "width": 4},
        }
    )
    run = TrainingRun(cfg)
    for index, epoch in ((0, 1), (1, 2), (2, 3)):
        d = tmp_path / f"checkpoint_{index:06d}"
        d.mkdir()
        run.epoch = epoch
        save_checkpoint(run, [_report(e) for e in range(1, epoch + 1)], str(d))
    partial = tmp_path / "checkpoint_000003"  # interrupted while being written: no state.pt
    partial.mkdir()
    (partial / "meta.json").write_text(json.dumps({"epoch": 4}))
    assert newer_checkpoints(tmp_path, 1) == [
        tmp_path / "checkpoint_000002",
        tmp_path / "checkpoint_000001",
    ]
    assert newer_checkpoints(tmp_path, 3) == []
    assert newer_checkpoints(tmp_path / "missing", 0) == []
