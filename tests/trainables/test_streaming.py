"""Streaming through a DataLoader trains on exactly what the in-memory path trains on."""

from __future__ import annotations

import json
import textwrap
from collections import Counter
from pathlib import Path

import pytest
import torch

from trainables.core.config import RecipeConfig, TrainConfig
from trainables.core.imports import IMPORT_PATH_ENV
from trainables.data.sampler import RepeatSampler
from trainables.data.streaming import LoaderBatches, StreamData, TensorBatches
from trainables.method.recipes import epoch_indices, phase_for_epoch
from trainables.run.local import train_local

# digits as a user would hand them over: tensors, or a Dataset (with and without `targets`).
USER_DATA = """
import torch
from torch.utils.data import Dataset

from trainables.data.datasets import load_dataset


def _digits():
    d = load_dataset("digits", train_subset=400, val_subset=100)
    return (d.train_x, d.train_y), (d.val_x, d.val_y)


def tensors():
    train, val = _digits()
    return train, val, 10


class Items(Dataset):
    def __init__(self, x, y, with_targets):
        self.x, self.y = x, y
        if with_targets:
            self.targets = y.tolist()

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        return self.x[i], int(self.y[i])


def datasets(with_targets=True):
    (tx, ty), (vx, vy) = _digits()
    return Items(tx, ty, with_targets), Items(vx, vy, False), 10
"""


def _recipe() -> RecipeConfig:
    return RecipeConfig.model_validate(
        {"after": {"repeats": 1, "data_fraction": 0.5}, "anneal_ratio": 0.5}
    )


def test_ddp_shards_have_no_duplicates_or_gaps_and_equal_steps() -> None:
    labels = torch.arange(10) % 3
    phase = phase_for_epoch(_recipe(), 1, None, 10)
    order = epoch_indices(labels, phase, seed=7, epoch=1)  # 30 = 10 x repeats 3
    for world in (1, 2, 4, 7):
        for batch_size in (1, 3, 4):
            shards, steps = [], set()
            for rank in range(world):
                s = RepeatSampler(labels, seed=7, rank=rank, world_size=world)
                s.set_epoch(1, phase)
                batches = [list(s)[a:b] for a, b in s.bounds(batch_size)]
                assert [i for b in batches for i in b] == list(s)  # batches tile the share
                assert all(0 < len(b) <= batch_size + 1 for b in batches)
                shards.append(list(s))
                steps.add(len(batches))
            assert len(steps) == 1  # every rank takes the same number of steps
            # The epoch's global order, dealt: each entry exactly once over all ranks.
            assert Counter(i for s in shards for i in s) == Counter(order.tolist())
            assert sum(len(s) for s in shards) == order.numel()


def test_sampler_is_deterministic_per_seed_epoch_and_rank() -> None:
    labels = torch.arange(50) % 5
    phase = phase_for_epoch(_recipe(), 3, None, 10)

    def draw(seed: int, epoch: int, rank: int) -> list[int]:
        s = RepeatSampler(labels, seed=seed, rank=rank, world_size=2)
        s.set_epoch(epoch, phase)
        return list(s)

    assert draw(1, 3, 0) == draw(1, 3, 0)
    assert draw(1, 3, 0) != draw(1, 4, 0) and draw(1, 3, 0) != draw(2, 3, 0)
    assert draw(1, 3, 0) != draw(1, 3, 1)


@pytest.mark.parametrize("workers", [0, pytest.param(1, marks=pytest.mark.integration)])
def test_loader_batches_equal_memory_batches_in_every_phase(workers: int) -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (90, 1, 4, 4), generator=g, dtype=torch.uint8)
    y = torch.arange(90) % 3
    data = StreamData(
        "t",
        torch.utils.data.TensorDataset(x, y),
        torch.utils.data.TensorDataset(x[:20], y[:20]),
        y,
        y[:20],
        3,
        (1, 4, 4),
        (0.0,),
        (1.0,),
    )
    sampler = RepeatSampler(y, seed=3)
    memory = TensorBatches((x, y), (x[:20], y[:20]), torch.device("cpu"))
    stream = LoaderBatches(
        data,
        sampler,
        batch_size=16,
        val_batch_size=8,
        workers=workers,
        prefetch=2,
        pin_memory=False,
    )
    recipe, budget, switch = _recipe(), 10, 3
    seen = set()
    for epoch in range(1, budget + 1):  # critical 1-2, after 3-6, anneal 7-10
        phase = phase_for_epoch(recipe, epoch, switch, budget)
        seen.add(phase.name)
        sampler.set_epoch(epoch, phase)
        a = list(memory.train_batches(sampler, 16))
        b = list(stream.train_batches(sampler, 16))
        assert len(a) == len(b) > 0
        for (xa, ya), (xb, yb) in zip(a, b, strict=True):
            assert torch.equal(xa, xb) and torch.equal(ya, yb)
        n = sum(len(yb) for _, yb in b)
        assert n == {"critical": 270, "after": 45, "anneal": 90}[phase.name]
    assert seen == {"critical", "after", "anneal"}
    va, vb = list(memory.val_batches(8)), list(stream.val_batches(8))
    assert all(torch.equal(p[0], q[0]) for p, q in zip(va, vb, strict=True))


def _train(tmp_path: Path, name: str, data: dict) -> tuple[dict, list[dict]]:
    cfg = TrainConfig.model_validate(
        {
            "seed": 3,
            "epochs": 10,
            "batch_size": 64,
            "data": data,
            "model": {"name": "small_cnn", "width": 4},
            "optim": {"lr": 0.05},
            "recipe": {"after": {"repeats": 1, "data_fraction": 0.5}, "anneal_ratio": 0.5},
            "criterion": {"name": "paper", "window": 3},
            "num_threads": 1,
        }
    )
    summary = train_local(cfg, tmp_path / name)
    rows = (tmp_path / name / "history.jsonl").read_text().splitlines()
    return summary, [json.loads(r) for r in rows]


@pytest.mark.integration
def test_tensors_and_datasets_train_identically(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "user_digits.py").write_text(textwrap.dedent(USER_DATA))
    monkeypatch.setenv(IMPORT_PATH_ENV, str(tmp_path))
    runs = {
        "tensors": {"factory": "user_digits:tensors"},
        "datasets": {"factory": "user_digits:datasets", "workers": 1},
        "no_targets": {"factory": "user_digits:datasets", "kwargs": {"with_targets": False}},
        "materialised": {"factory": "user_digits:datasets", "stream": "never"},
    }
    results = {name: _train(tmp_path, name, data) for name, data in runs.items()}
    ref_summary, ref = results["tensors"]
    assert ref_summary["cp_end_epoch"] is not None  # the paper rule fired ...
    assert ref_summary["switch_epoch"] == ref_summary["cp_end_epoch"] + 1  # ... switch one later
    assert {m["phase"] for m in ref} == {"critical", "after", "anneal"}
    for name, (summary, hist) in results.items():
        assert summary["switch_epoch"] == ref_summary["switch_epoch"], name
        assert [m["samples"] for m in hist] == [m["samples"] for m in ref], name
        assert [m["phase"] for m in hist] == [m["phase"] for m in ref], name
        for key in ("train/loss", "rotation/mean", "val/acc"):
            assert [m[key] for m in hist] == pytest.approx([m[key] for m in ref], abs=1e-5), name


@pytest.mark.integration
def test_image_tree_over_the_memory_limit_streams_the_same_images(tmp_path: Path) -> None:
    from tests.trainables.test_data import solid
    from trainables.core.config import DataConfig
    from trainables.data.datasets import load_dataset
    from trainables.data.imagetrees import TreeImages
    from trainables.data.sources import load_training_data
    from trainables.run.engine import TrainingRun

    g = torch.Generator().manual_seed(0)
    for k, cls in enumerate(("AnnualCrop", "Forest", "River")):
        for i in range(6):
            rgb = tuple(int(v) for v in torch.randint(0, 256, (3,), generator=g))
            solid(tmp_path / cls / f"{cls}_{i}.png", rgb, size=24 + 4 * k)
    memory = load_dataset("eurosat", str(tmp_path), image_size=32)
    small = DataConfig(name="eurosat", root=str(tmp_path), image_size=32)
    assert load_training_data(small, seed=0).__class__.__name__ == "Dataset"  # under the limit
    # 15 x 3 x 256 x 256 bytes is 2.8 MiB, over a 1 MiB limit: decoded lazily.
    big = small.model_copy(update={"image_size": 256, "max_memory_mb": 1})
    streamed = load_training_data(big, seed=0)
    assert isinstance(streamed, StreamData) and isinstance(streamed.train, TreeImages)
    assert streamed.input_shape == (3, 256, 256)
    # The same images in the same order, and the same statistics (all 15 sampled).
    same = load_training_data(small.model_copy(update={"stream": "always"}), seed=0)
    assert isinstance(same, StreamData) and isinstance(same.train, TreeImages)
    assert torch.equal(same.train_y, memory.train_y) and torch.equal(same.val_y, memory.val_y)
    assert same.test_y is not None and memory.test_y is not None  # the same three splits
    assert torch.equal(same.test_y, memory.test_y)
    for i in range(len(memory.train_y)):
        assert torch.equal(same.train[i][0], memory.train_x[i])
    assert same.mean == pytest.approx(memory.mean) and same.std == pytest.approx(memory.std)
    cfg = {"epochs": 2, "batch_size": 8, "model": {"name": "small_cnn", "width": 4}}
    data = {"name": "eurosat", "root": str(tmp_path), "image_size": 32, "workers": 1}
    a = TrainingRun(TrainConfig.model_validate({**cfg, "data": {**data, "stream": "never"}}))
    b = TrainingRun(TrainConfig.model_validate({**cfg, "data": {**data, "stream": "always"}}))
    for epoch in (1, 2):
        ma, mb = a.run_epoch(), b.run_epoch()
        assert ma["train/loss"] == pytest.approx(mb["train/loss"], abs=1e-6)
        assert ma["val/acc"] == pytest.approx(mb["val/acc"], abs=1e-6)
        assert ("test/acc" in ma, "test/acc" in mb) == (epoch == 2, epoch == 2)  # the last only
    assert ma["test/acc"] == pytest.approx(mb["test/acc"], abs=1e-6)


def _ddp_rank(rank: int, init: str, out: str, stream: str) -> None:
    import torch.distributed as dist

    from trainables.run.engine import TrainingRun

    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=2)
    try:
        # 101 samples: shares of 51 and 50, five steps of 10 each; rank 0's last batch has 11.
        cfg = TrainConfig.model_validate(
            {
                "epochs": 2,
                "batch_size": 20,
                "data": {"name": "digits", "train_subset": 101, "stream": stream, "workers": 0},
                "model": {"name": "small_cnn", "width": 4},
                "recipe": {"critical": {"repeats": 1}},
                "num_threads": 1,
            }
        )
        run = TrainingRun(cfg, rank=rank, world_size=2)
        rows = [run.run_epoch() for _ in range(2)]
        seen = list(run.sampler)
        Path(out, f"{stream}{rank}.json").write_text(json.dumps({"rows": rows, "seen": seen}))
    finally:
        dist.destroy_process_group()


@pytest.mark.integration
def test_two_rank_ddp_epoch_deals_every_sample_once(tmp_path: Path) -> None:
    import torch.multiprocessing as mp

    stream = "always"  # the loader's batch sampler; memory uses the same step bounds

    mp.spawn(_ddp_rank, args=(f"file://{tmp_path / 'pg'}", str(tmp_path), stream), nprocs=2)
    r0, r1 = (json.loads((tmp_path / f"{stream}{r}.json").read_text()) for r in (0, 1))
    assert sorted(r0["seen"] + r1["seen"]) == list(range(101))  # no duplicates, no gaps
    assert [m["samples"] for m in r0["rows"]] == [101, 101]  # counted over both ranks
    for key in ("train/loss", "rotation/mean"):  # all-reduced / replicas kept equal
        assert [m[key] for m in r0["rows"]] == pytest.approx([m[key] for m in r1["rows"]])
