"""Loss-aware pruning (InfoBatch): the unbiased rescaling, determinism, annealing,
checkpoints, DDP agreement and the same decision through both data paths."""

from __future__ import annotations

import copy
import json
import math
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from pydantic import ValidationError

from trainables.core.config import TrainConfig, format_validation_error
from trainables.core.wire import PRUNED_FRACTION, SAMPLES
from trainables.data.sources import load_training_data
from trainables.data.streaming import stream_tensors
from trainables.method.infobatch import LossTable, anneal_epoch, prune_plan
from trainables.method.recipes import phase_for_epoch
from trainables.run.engine import TrainingRun

_PRUNE = {"method": "infobatch", "ratio": 0.5, "anneal": 0.75}


def _cfg(**kw) -> TrainConfig:
    base = {
        "seed": 5,
        "epochs": 4,
        "batch_size": 64,
        "data": {"name": "digits", "train_subset": 300, "val_subset": 100, "workers": 0},
        "model": {"name": "small_cnn", "width": 4},
        "recipe": {"critical": {"repeats": 1, "prune": _PRUNE}},
        "criterion": {"name": "never"},  # InfoBatch alone, throughout the run
        "num_threads": 1,
    }
    base.update(kw)
    return TrainConfig.model_validate(base)


def test_rescaling_keeps_the_expected_loss_of_a_fixed_batch() -> None:
    g = torch.Generator().manual_seed(0)
    losses = torch.empty(2000).exponential_(1.0, generator=g)
    ratio, seeds = 0.5, 400
    estimates = []
    for seed in range(seeds):
        plan = prune_plan(losses, ratio=ratio, seed=seed, epoch=1)
        estimates.append(float((plan.weights[plan.keep] * losses[plan.keep]).sum()) / 2000)
    mean = sum(estimates) / seeds
    # Each well-learned sample contributes l / (1 - r) with probability 1 - r, else 0:
    # variance l^2 r / (1 - r) per sample, so the estimate's sd is below.
    well = losses < losses.mean()
    sd = math.sqrt(float((losses[well] ** 2).sum()) * ratio / (1 - ratio)) / 2000
    assert abs(mean - float(losses.mean())) < 4 * sd / math.sqrt(seeds)
    # About half of the below-mean samples are dropped; the rest are always kept at weight 1.
    plan = prune_plan(losses, ratio=ratio, seed=0, epoch=1)
    dropped = torch.ones(2000, dtype=torch.bool)
    dropped[plan.keep] = False
    assert not dropped[~well].any() and bool((plan.weights[~well] == 1).all())
    assert abs(int(dropped.sum()) - 0.5 * int(well.sum())) < 4 * math.sqrt(int(well.sum()) / 4)
    assert plan.weights[plan.keep][well[plan.keep]].eq(2.0).all()


def test_decision_is_deterministic_per_seed_and_epoch_and_keeps_unseen_samples() -> None:
    losses = torch.linspace(0, 1, 100)
    losses[:10] = float("nan")  # never seen: kept
    a = prune_plan(losses, ratio=0.5, seed=1, epoch=3)
    assert torch.equal(a.keep, prune_plan(losses, ratio=0.5, seed=1, epoch=3).keep)
    assert not torch.equal(a.keep, prune_plan(losses, ratio=0.5, seed=2, epoch=3).keep)
    assert not torch.equal(a.keep, prune_plan(losses, ratio=0.5, seed=1, epoch=4).keep)
    assert set(range(10)) <= set(a.keep.tolist())
    assert prune_plan(torch.full((5,), float("nan")), ratio=0.5, seed=0, epoch=1).keep.numel() == 5


def test_config_rejects_two_prunings_in_one_phase_naming_the_field() -> None:
    with pytest.raises(ValidationError) as err:
        _cfg(recipe={"after": {"data_fraction": 0.5, "prune": _PRUNE}})
    text = format_validation_error(err.value)
    assert "recipe.after" in text and "data_fraction=0.5" in text and "prune" in text
    with pytest.raises(ValidationError) as err:
        _cfg(recipe={"after": {"prune": {"ratio": 1.5}}})
    assert "recipe.after.prune.ratio" in format_validation_error(err.value)
    with pytest.raises(ValidationError):
        _cfg(recipe={"after": {"prune": {"method": "random"}}})


def test_anneal_point_restores_full_data() -> None:
    cfg = _cfg(epochs=8)
    assert anneal_epoch(8, 0.75) == 7
    assert [phase_for_epoch(cfg.recipe, e, None, 8).prune is None for e in range(1, 9)] == [
        False
    ] * 6 + [True] * 2
    run = TrainingRun(cfg)
    rows = [run.run_epoch() for _ in range(8)]
    assert rows[0][PRUNED_FRACTION] == 0.0 and rows[0][SAMPLES] == 300  # no losses yet
    assert all(0.1 < r[PRUNED_FRACTION] < 0.5 for r in rows[1:6])
    assert all(r[SAMPLES] < 300 for r in rows[1:6])
    assert [r[SAMPLES] for r in rows[6:]] == [300, 300]
    assert [r[PRUNED_FRACTION] for r in rows[6:]] == [0.0, 0.0]
    assert run.loss_table is not None and not torch.isnan(run.loss_table.losses).any()


def test_paper_phase_only_prunes_after_the_switch_with_losses_from_before() -> None:
    run = TrainingRun(_cfg(recipe={"after": {"prune": _PRUNE}}, criterion={"name": "paper"}))
    first = run.run_epoch()  # repeats 3, no pruning, but the losses are recorded
    run.end_period(1)
    second = run.run_epoch()
    assert first[PRUNED_FRACTION] == 0.0 and first[SAMPLES] == 900
    assert second[PRUNED_FRACTION] > 0.1 and second[SAMPLES] < 300


def test_resume_restores_the_loss_table_and_continues_identically() -> None:
    a = TrainingRun(_cfg())
    a.run_epoch()
    a.run_epoch()
    state = copy.deepcopy(a.state_dict())
    ref = a.run_epoch()
    b = TrainingRun(_cfg())
    b.load_state_dict(state)
    assert b.loss_table is not None and a.loss_table is not None
    assert torch.equal(b.loss_table.losses, state["loss_table"]["losses"])
    got = b.run_epoch()
    assert got[SAMPLES] == ref[SAMPLES] < 300
    assert got["train/loss"] == pytest.approx(ref["train/loss"], abs=1e-6)
    assert torch.allclose(b.loss_table.losses, a.loss_table.losses, atol=1e-6)
    with pytest.raises(ValueError, match="same data settings"):
        LossTable(10, torch.device("cpu")).load_state_dict(state["loss_table"])


def test_memory_and_streaming_paths_prune_the_same_samples() -> None:
    cfg = _cfg()
    memory = TrainingRun(cfg)
    d = load_training_data(cfg.data, seed=cfg.seed)
    data = stream_tensors(
        d.name, (d.train_x, d.train_y), (d.val_x, d.val_y), d.num_classes, d.mean, d.std
    )
    stream = TrainingRun(cfg, dataset=data)
    assert stream.batches.streaming and not memory.batches.streaming
    for _ in range(3):
        m, s = memory.run_epoch(), stream.run_epoch()
        assert torch.equal(memory.sampler.indices(), stream.sampler.indices())
        assert m[PRUNED_FRACTION] == s[PRUNED_FRACTION]
        assert m["train/loss"] == pytest.approx(s["train/loss"], abs=1e-5)
    assert memory.loss_table is not None and stream.loss_table is not None
    assert torch.allclose(memory.loss_table.losses, stream.loss_table.losses, atol=1e-5)


def _rank_main(rank: int, init: str, out: str) -> None:
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=2)
    try:
        run = TrainingRun(_cfg(), rank=rank, world_size=2)
        rows = []
        for _ in range(3):
            m = run.run_epoch()
            assert run.loss_table is not None
            rows.append(
                {
                    "order": run.sampler.indices().tolist(),
                    "table": run.loss_table.losses.tolist(),
                    "pruned": m[PRUNED_FRACTION],
                    "samples": m[SAMPLES],
                }
            )
        Path(out, f"rank{rank}.json").write_text(json.dumps(rows))
    finally:
        dist.destroy_process_group()


@pytest.mark.integration
def test_ddp_ranks_gather_one_table_and_take_one_decision(tmp_path: Path) -> None:
    init = f"file://{tmp_path / 'pg'}"
    mp.start_processes(_rank_main, args=(init, str(tmp_path)), nprocs=2, start_method="spawn")
    r0, r1 = (json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1))
    for a, b in zip(r0, r1, strict=True):
        assert a["table"] == b["table"]  # every rank holds every sample's loss
        assert not any(math.isnan(v) for v in a["table"])
        assert a["pruned"] == b["pruned"] and a["samples"] == b["samples"]
        assert abs(len(a["order"]) - len(b["order"])) <= 1  # shares differ by one at most
    # The decision of epoch 2 comes from epoch 1's gathered table: the two shards
    # together are exactly the kept set.
    plan = prune_plan(torch.tensor(r0[0]["table"]), ratio=0.5, seed=5, epoch=2)
    dealt = sorted(r0[1]["order"] + r1[1]["order"])
    assert dealt == plan.keep.tolist() and r0[1]["pruned"] == pytest.approx(plan.pruned_fraction)
    assert len(r0[1]["order"]) != len(r1[1]["order"]) or plan.keep.numel() % 2 == 0


# -- a pruned epoch does the kept work and no more (counted, not timed) --------------------


class _Work:
    """Training forward passes, their rows and optimizer steps of one model, counted."""

    def __init__(self, run: TrainingRun) -> None:
        self.forwards = self.rows = self.steps = 0
        run.model.register_forward_hook(self._forward)
        run.optimizer.register_step_post_hook(self._step)

    def _forward(self, module: torch.nn.Module, args: tuple, out: torch.Tensor) -> None:
        if module.training:  # evaluation runs in eval mode and trains nothing
            self.forwards += 1
            self.rows += int(args[0].shape[0])

    def _step(self, *_: object) -> None:
        self.steps += 1

    def take(self) -> tuple[int, int, int]:
        out = (self.forwards, self.rows, self.steps)
        self.forwards = self.rows = self.steps = 0
        return out


@pytest.mark.parametrize("stream", ["never", "always"])
def test_a_pruned_epoch_trains_only_the_kept_samples_once(stream: str) -> None:
    """Samples seen, forward passes and optimizer steps of a pruned epoch follow the
    kept count: one forward pass per step (the losses recorded come from it), one step
    per batch of kept samples, on both data paths."""
    cfg = _cfg(data={"name": "digits", "train_subset": 300, "stream": stream, "workers": 0})
    run = TrainingRun(cfg)
    work = _Work(run)
    first = run.run_epoch()  # nothing recorded yet: the full data
    assert work.take() == (5, 300, 5) and first[SAMPLES] == 300
    assert run.loss_table is not None
    plan = run.loss_table.plan(ratio=_PRUNE["ratio"], seed=cfg.seed, epoch=2)
    kept = plan.keep.numel()
    m = run.run_epoch()
    assert 0 < kept < 300 and m[SAMPLES] == kept
    assert m[PRUNED_FRACTION] == pytest.approx(1 - kept / 300)
    steps = math.ceil(kept / cfg.batch_size)
    assert work.take() == (steps, kept, steps)
    assert sorted(run.sampler.indices().tolist()) == plan.keep.tolist()  # each kept one once


def _python_lines(cfg: TrainConfig, epochs: int) -> int:
    """Python lines of trainables/ run during epochs 2..`epochs` (pruned ones)."""
    root = str(Path(__file__).resolve().parents[2] / "trainables")
    run = TrainingRun(cfg)
    run.run_epoch()  # the first losses
    lines = 0

    def trace(frame: Any, event: str, arg: Any) -> Any:
        nonlocal lines
        if not frame.f_code.co_filename.startswith(root):
            return None  # torch, numpy: not ours, and not traced line by line
        if event == "line":
            lines += 1
        return trace

    sys.settrace(trace)
    try:
        for _ in range(epochs - 1):
            assert run.run_epoch()[PRUNED_FRACTION] > 0
    finally:
        sys.settrace(None)
    return lines


def test_pruning_bookkeeping_has_no_per_sample_python_loop() -> None:
    """Four times the samples in batches four times larger (the same number of steps):
    the Python our code runs stays the same, so nothing in the loss table, the plan,
    the sampler or the step loops over samples."""
    base = {"stream": "never", "workers": 0, "name": "digits"}
    small = _cfg(epochs=3, batch_size=32, data={**base, "train_subset": 256})
    large = _cfg(epochs=3, batch_size=128, data={**base, "train_subset": 1024})
    a, b = _python_lines(small, 3), _python_lines(large, 3)
    assert a > 0 and abs(b - a) <= 0.1 * a, (a, b)
