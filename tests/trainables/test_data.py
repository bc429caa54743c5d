"""Tests for trainables.data.datasets: tiny fixtures written in the real on-disk formats,
and the three splits (train / val / test) every dataset comes in."""

from __future__ import annotations

import gzip
import pickle
import struct
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tests.requires import FASHION_MNIST, requires
from trainables.core.registry import DATASETS as REGISTRY
from trainables.data import datasets as data
from trainables.data.datasets import (
    DATASETS,
    Dataset,
    DatasetError,
    load_dataset,
    stratified_subset,
)
from trainables.data.splits import SPLIT_SEED, TEST_FRACTION, holdout, split_off_test

FASHION_ROOT = Path("/usr/share/datasets/fashion-mnist")


# --- fixture writers (the published formats) ------------------------------------------------


def write_idx(path: Path, arr: np.ndarray, *, gz: bool, magic: int | None = None) -> None:
    """IDX: 0x00 0x00, type 0x08 (ubyte), ndim, big-endian uint32 dims, then the bytes."""
    code = magic if magic is not None else 0x800 | arr.ndim
    header = struct.pack(">I", code) + struct.pack(f">{arr.ndim}I", *arr.shape)
    payload = header + arr.astype(np.uint8).tobytes()
    if gz:
        with gzip.open(path.with_name(path.name + ".gz"), "wb") as fh:
            fh.write(payload)
    else:
        path.write_bytes(payload)


def write_fashion(root: Path, *, gz: bool) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(1)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (6, 5, 4), dtype=np.uint8),
        "train-labels-idx1-ubyte": np.array([3, 1, 4, 1, 5, 9], dtype=np.uint8),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (3, 5, 4), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": np.array([2, 7, 0], dtype=np.uint8),
    }
    root.mkdir(parents=True, exist_ok=True)
    for fname, arr in arrays.items():
        write_idx(root / fname, arr, gz=gz)
    return arrays


def cifar_images(n: int, offset: int) -> np.ndarray:
    """[n, 3072] rows: R, G, B planes of 32x32; pixel (i, c, r, col) is predictable."""
    idx = np.arange(3072)
    return np.stack([(idx + 7 * (i + offset)) % 256 for i in range(n)]).astype(np.uint8)


def write_pickle(path: Path, entry: dict[bytes, object]) -> None:
    with path.open("wb") as fh:
        pickle.dump(entry, fh, protocol=2)  # the originals are Python 2 pickles


def write_cifar10(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for b in range(1, 6):
        write_pickle(
            folder / f"data_batch_{b}",
            {
                b"batch_label": f"training batch {b} of 5".encode(),
                b"labels": [b - 1, 9 - b],
                b"data": cifar_images(2, offset=2 * (b - 1)),
                b"filenames": [b"a.png", b"b.png"],
            },
        )
    write_pickle(
        folder / "test_batch",
        {
            b"batch_label": b"testing batch 1 of 1",
            b"labels": [7, 8, 9],
            b"data": cifar_images(3, offset=100),
            b"filenames": [b"c.png"] * 3,
        },
    )


def write_cifar100(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for split, labels, offset in (("train", [0, 42, 99, 42], 0), ("test", [5, 99], 50)):
        write_pickle(
            folder / split,
            {
                b"filenames": [b"x.png"] * len(labels),
                b"batch_label": split.encode(),
                b"fine_labels": labels,
                b"coarse_labels": [label // 5 for label in labels],
                b"data": cifar_images(len(labels), offset),
            },
        )


def solid(path: Path, rgb: tuple[int, int, int], size: int = 64, mode: str = "RGB") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    img = Image.new("RGB", (size, size), rgb)
    img.convert(mode).save(path)


def write_tiny_imagenet(root: Path) -> list[str]:
    wnids = ["n03444034", "n01443537", "n02099712"]  # not sorted on disk, as in the release
    (root / "val" / "images").mkdir(parents=True)
    root.joinpath("wnids.txt").write_text("\n".join(wnids) + "\n")
    for k, w in enumerate(wnids):
        for i in range(2):
            solid(root / "train" / w / "images" / f"{w}_{i}.JPEG", (40 * k, 200, 10 * i))
        root.joinpath("train", w, f"{w}_boxes.txt").write_text(f"{w}_0.JPEG\t0\t0\t63\t63\n")
    val = [("val_0.JPEG", wnids[2]), ("val_1.JPEG", wnids[0]), ("val_2.JPEG", wnids[1])]
    lines = [f"{f}\t{w}\t0\t32\t44\t62" for f, w in val]
    root.joinpath("val", "val_annotations.txt").write_text("\n".join(lines) + "\n")
    for f, _ in val:
        solid(root / "val" / "images" / f, (250, 0, 0))
    return wnids


def raw(name: str, root: Path, size: int | None = None) -> tuple:
    """What the registered loader reads: (pool_x, pool_y, test_x, test_y, num_classes),
    the training pool before the validation split is carved out of it."""
    return REGISTRY.load(name)(root, size)


def ids_of(ds: Dataset) -> tuple[list[int], list[int], list[int]]:
    """Sample ids of the train, val and test splits of an `indexed` dataset."""
    assert ds.test_x is not None
    return tuple(x.reshape(-1).long().tolist() for x in (ds.train_x, ds.val_x, ds.test_x))


# --- array formats --------------------------------------------------------------------------


@pytest.mark.parametrize("gz", [True, False])
@pytest.mark.parametrize("subdir", ["", "raw"])
def test_fashion_mnist_idx_round_trip(tmp_path: Path, gz: bool, subdir: str) -> None:
    arrays = write_fashion(tmp_path / subdir, gz=gz)
    tx, ty, sx, sy, _ = raw("fashion-mnist", tmp_path)
    assert tx.dtype == torch.uint8 and tx.shape == (6, 1, 5, 4)
    assert sx.shape == (3, 1, 5, 4) and ty.dtype == torch.int64
    assert ty.tolist() == [3, 1, 4, 1, 5, 9] and sy.tolist() == [2, 7, 0]
    assert torch.equal(tx[:, 0], torch.from_numpy(arrays["train-images-idx3-ubyte"]))
    assert sx[2, 0, 4, 3] == int(arrays["t10k-images-idx3-ubyte"][2, 4, 3])
    ds = load_dataset("fashion-mnist", str(tmp_path))  # t10k is the test split, kept whole
    assert ds.test_y is not None and ds.test_y.tolist() == [2, 7, 0]
    assert sorted(ds.train_y.tolist() + ds.val_y.tolist()) == sorted(ty.tolist())
    assert len(ds.val_y) == 1  # 10% of 6, at least one
    assert ds.num_classes == 10 and ds.in_channels == 1 and ds.input_shape == (1, 5, 4)


def test_fashion_mnist_real_debian_package() -> None:
    requires(FASHION_MNIST)
    ds = load_dataset("fashion-mnist")
    assert ds.test_x is not None and ds.test_x.shape == (10000, 1, 28, 28)  # t10k
    assert ds.train_x.shape == (54000, 1, 28, 28) and ds.val_x.shape == (6000, 1, 28, 28)
    assert ds.num_classes == 10
    assert ds.train_y.bincount().tolist() == [5400] * 10  # validation: 600 of every class
    assert ds.val_y.bincount().tolist() == [600] * 10
    assert ds.mean[0] == pytest.approx(0.2860, abs=2e-3)  # the well-known statistics
    assert ds.std[0] == pytest.approx(0.3530, abs=2e-3)


@pytest.mark.parametrize("subdir", ["cifar-10-batches-py", ""])
def test_cifar10_pickles(tmp_path: Path, subdir: str) -> None:
    write_cifar10(tmp_path / subdir if subdir else tmp_path / "flat")
    root = tmp_path if subdir else tmp_path / "flat"
    tx, ty, sx, sy, classes = raw("cifar10", root)
    assert tx.shape == (10, 3, 32, 32) and tx.dtype == torch.uint8
    assert sx.shape == (3, 3, 32, 32) and classes == 10
    assert ty.tolist() == [0, 8, 1, 7, 2, 6, 3, 5, 4, 4]  # batch 1 first, in order
    assert sy.tolist() == [7, 8, 9]  # test_batch
    # image 3 is row 1 of data_batch_2: channel 2 (B), row 5, column 9
    assert tx[3, 2, 5, 9] == (2 * 1024 + 5 * 32 + 9 + 7 * 3) % 256
    ds = load_dataset("cifar10", str(root))
    assert ds.test_y is not None and ds.test_y.tolist() == [7, 8, 9]
    assert len(ds.train_y) == 9 and len(ds.val_y) == 1
    assert ds.is_image and ds.in_channels == 3 and len(ds.mean) == 3


def test_cifar100_pickles(tmp_path: Path) -> None:
    write_cifar100(tmp_path / "cifar-100-python")
    tx, ty, sx, sy, classes = raw("cifar100", tmp_path / "cifar-100-python")
    assert classes == 100
    assert ty.tolist() == [0, 42, 99, 42] and sy.tolist() == [5, 99]
    assert tx.shape == (4, 3, 32, 32)
    assert sx[1, 1, 31, 31] == (1024 + 31 * 32 + 31 + 7 * 51) % 256
    ds = load_dataset("cifar100", str(tmp_path))
    assert ds.test_y is not None and ds.test_y.tolist() == [5, 99] and len(ds.train_y) == 3


# --- generated datasets ---------------------------------------------------------------------


def test_digits_split_three_ways_fixed_and_stratified() -> None:
    """No published test split: 20% test, then 10% of the rest validation."""
    a, b = load_dataset("digits"), load_dataset("digits", seed=5)
    assert a.test_y is not None and b.test_x is not None and a.test_x is not None
    assert (len(a.train_y), len(a.val_y), len(a.test_y)) == (1294, 144, 359)
    assert a.train_x.shape[1:] == (1, 8, 8) and a.train_x.dtype == torch.uint8
    assert int(a.train_x.max()) == 255 and a.num_classes == 10
    assert torch.equal(a.val_x, b.val_x) and torch.equal(a.train_y, b.train_y)
    assert torch.equal(a.test_x, b.test_x)
    assert (a.test_y.bincount() >= 35).all()  # every class ~20% in test
    assert (a.val_y.bincount() >= 14).all()  # and ~10% of the rest in val


def test_to_float_normalises_digits() -> None:
    ds = load_dataset("digits")
    x = ds.to_float(ds.train_x)
    assert x.dtype == torch.float32 and x.shape == ds.train_x.shape
    assert x.mean().item() == pytest.approx(0.0, abs=1e-5)
    assert x.std().item() == pytest.approx(1.0, abs=1e-3)
    assert torch.allclose(ds.to_float(ds.train_x[0]), x[0])  # one sample, no batch dim
    floats = ds.train_x.float() / 255
    assert torch.allclose(ds.to_float(floats), x, atol=1e-6)  # [0, 1] float input


def test_mnist1d_generates_once_then_hits_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    mnist1d_data = pytest.importorskip("mnist1d.data")
    np.random.seed(123)
    expected_next = np.random.rand()
    np.random.seed(123)
    first = load_dataset("mnist1d", str(tmp_path))
    assert np.random.rand() == expected_next  # the generator's reseeding did not leak
    assert first.train_x.shape == (3600, 1, 40) and first.train_x.dtype == torch.float32
    assert first.val_x.shape == (400, 1, 40) and first.num_classes == 10
    assert first.test_x is not None and first.test_x.shape == (1000, 1, 40)  # the generator's
    assert not first.is_image and first.input_shape == (1, 40)
    assert first.std[0] == pytest.approx(float(first.train_x.std()), rel=1e-3)
    assert len(list(tmp_path.glob("mnist1d-*.npz"))) == 1

    def no_generation(*args: object, **kwargs: object) -> None:
        raise AssertionError("regenerated instead of reading the cache")

    monkeypatch.setattr(mnist1d_data, "make_dataset", no_generation)
    second = load_dataset("mnist1d", str(tmp_path))
    assert torch.equal(first.train_x, second.train_x) and torch.equal(first.val_y, second.val_y)


# --- image trees ----------------------------------------------------------------------------


def test_eurosat_tree(tmp_path: Path) -> None:
    classes = {"AnnualCrop": (255, 0, 0), "Forest": (0, 255, 0), "River": (0, 0, 255)}
    for cls, rgb in classes.items():
        for i in range(4):
            solid(tmp_path / cls / f"{cls}_{i}.png", rgb)
        solid(tmp_path / cls / f"{cls}_4.jpg", rgb)
    ds = load_dataset("eurosat", str(tmp_path))  # 15 images: 3 test, 1 val, 11 train
    assert ds.test_x is not None and ds.test_y is not None and ds.test_x.shape == (3, 3, 64, 64)
    assert ds.train_x.shape == (11, 3, 64, 64) and ds.val_x.shape == (1, 3, 64, 64)
    assert ds.num_classes == 3 and sorted(ds.test_y.tolist()) == [0, 1, 2]
    for x, y in zip(ds.train_x, ds.train_y, strict=True):  # label i <-> sorted class i
        expected = torch.tensor(list(classes.values())[int(y)], dtype=torch.int16)
        assert (x[:, 10, 10].to(torch.int16) - expected).abs().max() <= 3
    small = load_dataset("eurosat", str(tmp_path), image_size=16)
    assert small.train_x.shape[1:] == (3, 16, 16) and torch.equal(small.val_y, ds.val_y)
    assert small.test_y is not None and torch.equal(small.test_y, ds.test_y)


def test_tiny_imagenet_layout(tmp_path: Path) -> None:
    wnids = write_tiny_imagenet(tmp_path / "tiny-imagenet-200")
    tx, ty, sx, sy, classes = raw("tiny-imagenet", tmp_path / "tiny-imagenet-200", 32)
    order = sorted(wnids)  # n01443537, n02099712, n03444034
    assert classes == 3 and tx.shape == (6, 3, 32, 32)
    assert ty.tolist() == [0, 0, 1, 1, 2, 2]
    # val/ (labelled) is the test split: the official test images have no labels
    assert sy.tolist() == [order.index(w) for w in (wnids[2], wnids[0], wnids[1])]
    # train image of wnids[0] (green 200, red 0) is label 2
    assert abs(int(tx[4, 1, 5, 5]) - 200) <= 3 and int(tx[4, 0, 5, 5]) <= 3
    assert abs(int(sx[0, 0, 16, 16]) - 250) <= 3
    ds = load_dataset("tiny-imagenet", str(tmp_path), image_size=32)
    assert ds.test_y is not None and torch.equal(ds.test_y, sy) and len(ds.train_y) == 5


@pytest.mark.parametrize("test_dir", ["test", "val"])
def test_imagenet30_trees(tmp_path: Path, test_dir: str) -> None:
    solid(tmp_path / "train" / "airliner" / "n1" / "a.JPEG", (10, 20, 30), size=40)
    solid(tmp_path / "train" / "airliner" / "b.jpg", (10, 20, 30), size=80)
    solid(tmp_path / "train" / "ambulance" / "c.png", (200, 100, 50), size=70, mode="L")
    solid(tmp_path / test_dir / "ambulance" / "d.png", (1, 2, 3), size=64)
    tx, ty, sx, sy, classes = raw("imagenet30", tmp_path, 64)
    assert classes == 2 and ty.tolist() == [0, 0, 1] and sy.tolist() == [1]
    assert tx.shape == (3, 3, 64, 64) and sx.shape == (1, 3, 64, 64)
    assert sx[0, :, 0, 0].tolist() == [1, 2, 3]  # lossless PNG, no resize
    grey = tx[2, :, 30, 30]  # greyscale converted to RGB: equal channels
    assert grey[0] == grey[1] == grey[2]
    ds = load_dataset("imagenet30", str(tmp_path))
    assert ds.test_y is not None and ds.test_y.tolist() == [1] and len(ds.train_y) == 2


# --- the three splits -----------------------------------------------------------------------


def test_holdout_is_disjoint_stratified_sized_and_seeded() -> None:
    labels = torch.tensor([0] * 600 + [1] * 300 + [2] * 100)[torch.randperm(1000)]
    rest, held = holdout(labels, 0.1, seed=7)
    assert len(held) == 100 and len(rest) == 900
    assert sorted(rest.tolist() + held.tolist()) == list(range(1000))  # a partition
    assert labels[held].bincount().tolist() == [60, 30, 10]  # the classes' shares
    again = holdout(labels, 0.1, seed=7)
    assert torch.equal(held, again[1]) and torch.equal(rest, again[0])
    assert not torch.equal(held, holdout(labels, 0.1, seed=8)[1])
    assert len(holdout(labels[:3], 0.01)[1]) == 1  # at least one held out
    assert len(holdout(labels[:3], 0.99)[0]) == 1  # and one kept
    pool, test = split_off_test(labels)
    assert len(pool) + len(test) == 1000
    assert len(test) == round(TEST_FRACTION * 1000)
    assert torch.equal(test, holdout(labels, TEST_FRACTION, SPLIT_SEED)[1])
    with pytest.raises(ValueError, match="fraction=0"):
        holdout(labels, 0.0)


def _indexed(pool: int = 800, test: int = 200):
    """A loader whose every sample's pixel is its id: pool ids 0.., test ids after them."""
    gen = torch.Generator().manual_seed(0)
    y = torch.tensor([0] * 500 + [1] * 300 + [2] * 200)[torch.randperm(pool + test, generator=gen)]
    x = torch.arange(pool + test, dtype=torch.float32).reshape(-1, 1, 1)

    def load(_root: Path | None, _size: int | None = None) -> tuple:
        return x[:pool], y[:pool], x[pool:], y[pool:], 3

    return load, y[:pool]


def test_load_dataset_carves_validation_out_of_training(monkeypatch: pytest.MonkeyPatch) -> None:
    """Train, val and test are disjoint; val is a stratified, fixed 10% of the training
    pool whatever the trial's seed or train subset; the test split is kept whole."""
    loader, pool_y = _indexed()
    monkeypatch.setattr(data._REGISTRY, "load", lambda name: loader)
    ds = load_dataset("digits", seed=1)
    train, val, test = ids_of(ds)
    assert (len(train), len(val), len(test)) == (720, 80, 200)
    assert set(train).isdisjoint(val) and set(test).isdisjoint(train + val)
    assert sorted(train + val) == list(range(800)) and test == list(range(800, 1000))
    expected = (pool_y.bincount().double() * 0.1).tolist()
    assert all(abs(a - b) < 1 for a, b in zip(ds.val_y.bincount().tolist(), expected, strict=True))
    other = load_dataset("digits", seed=2, train_subset=100)
    assert ids_of(other)[1] == val and ids_of(other)[2] == test  # fixed for every trial
    assert set(ids_of(other)[0]) < set(train) and len(ids_of(other)[0]) == 100
    assert len(ids_of(load_dataset("digits", val_fraction=0.25))[1]) == 200


def test_val_fraction_is_a_bounded_config_field() -> None:
    from pydantic import ValidationError

    from trainables.core.config import DataConfig

    assert DataConfig().val_fraction == 0.1 and DataConfig().test_every is None
    for bad in (0.0, 0.9):
        with pytest.raises(ValidationError, match="val_fraction"):
            DataConfig(val_fraction=bad)
    with pytest.raises(ValidationError, match="its own validation split"):
        DataConfig(factory="pkg.mod:load", val_fraction=0.2)
    assert "validation" in (DataConfig.model_fields["val_fraction"].description or "")


# --- subsets --------------------------------------------------------------------------------


def test_stratified_subset_proportions_and_determinism() -> None:
    labels = torch.tensor([0] * 600 + [1] * 300 + [2] * 100)[torch.randperm(1000)]
    idx = stratified_subset(labels, 100, seed=3)
    assert idx.dtype == torch.int64 and torch.equal(idx, idx.sort().values)
    assert len(idx.unique()) == 100
    assert labels[idx].bincount().tolist() == [60, 30, 10]
    assert torch.equal(idx, stratified_subset(labels, 100, seed=3))
    assert not torch.equal(idx, stratified_subset(labels, 100, seed=4))
    rare = torch.tensor([0] * 995 + [1] * 5)
    assert 1 in rare[stratified_subset(rare, 10, seed=0)].tolist()  # every class kept
    assert torch.equal(stratified_subset(rare, 5000, seed=0), torch.arange(1000))


def test_subsets_in_load_dataset() -> None:
    ds = load_dataset("digits", train_subset=100, val_subset=50, seed=1)
    other = load_dataset("digits", train_subset=100, val_subset=50, seed=2)
    assert len(ds.train_y) == 100 and len(ds.val_y) == 50
    assert (ds.train_y.bincount() >= 9).all() and ds.train_y.bincount().numel() == 10
    assert torch.equal(ds.val_x, other.val_x)  # validation subset ignores the trial seed
    assert not torch.equal(ds.train_x, other.train_x)
    assert ds.mean[0] == pytest.approx(float(ds.train_x.float().mean()) / 255, rel=1e-6)


# --- errors name the path and the expected layout -------------------------------------------


def test_unknown_name_lists_datasets() -> None:
    with pytest.raises(DatasetError, match="imagenet30") as info:
        load_dataset("mnist")
    assert all(name in str(info.value) for name in DATASETS)


def test_missing_dir(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    with pytest.raises(DatasetError) as info:
        load_dataset("cifar10", str(missing))
    assert str(missing) in str(info.value) and "data_batch_1" in str(info.value)
    with pytest.raises(DatasetError, match=r"data\.root"):
        load_dataset("eurosat")


def test_missing_idx_file(tmp_path: Path) -> None:
    write_fashion(tmp_path, gz=True)
    (tmp_path / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DatasetError) as info:
        load_dataset("fashion-mnist", str(tmp_path))
    msg = str(info.value)
    assert str(tmp_path) in msg and "t10k-labels-idx1-ubyte(.gz)" in msg
    assert "dataset-fashion-mnist" in msg and "train-images-idx3-ubyte" in msg


def test_bad_idx_magic(tmp_path: Path) -> None:
    write_fashion(tmp_path, gz=False)
    write_idx(tmp_path / "train-labels-idx1-ubyte", np.zeros(6, np.uint8), gz=False, magic=0x803)
    with pytest.raises(DatasetError) as info:
        load_dataset("fashion-mnist", str(tmp_path))
    msg = str(info.value)
    assert str(tmp_path / "train-labels-idx1-ubyte") in msg and "0x00000801" in msg
    assert "IDX files" in msg


def test_cifar_pickle_missing_key(tmp_path: Path) -> None:
    write_cifar100(tmp_path)
    write_pickle(tmp_path / "test", {b"data": cifar_images(2, 0), b"coarse_labels": [1, 2]})
    with pytest.raises(DatasetError) as info:
        load_dataset("cifar100", str(tmp_path))
    msg = str(info.value)
    assert str(tmp_path / "test") in msg and "fine_labels" in msg and "cifar-100-python" in msg


def test_empty_class_folder(tmp_path: Path) -> None:
    solid(tmp_path / "Forest" / "a.png", (0, 0, 0))
    (tmp_path / "River").mkdir()
    with pytest.raises(DatasetError) as info:
        load_dataset("eurosat", str(tmp_path))
    msg = str(info.value)
    assert str(tmp_path / "River") in msg and "<root>/<ClassName>/" in msg


def test_empty_tree_and_missing_annotations(tmp_path: Path) -> None:
    (tmp_path / "train").mkdir()
    with pytest.raises(DatasetError, match="no class folders") as info:
        load_dataset("imagenet30", str(tmp_path))
    assert str(tmp_path / "train") in str(info.value) and "<root>/test/" in str(info.value)
    root = tmp_path / "tiny"
    write_tiny_imagenet(root)
    (root / "val" / "val_annotations.txt").unlink()
    with pytest.raises(DatasetError, match=r"val_annotations\.txt") as info:
        load_dataset("tiny-imagenet", str(root))
    assert str(root) in str(info.value) and "wnids.txt" in str(info.value)


def test_image_size_rejected_for_fixed_size_datasets() -> None:
    with pytest.raises(ValueError, match="image_size=32"):
        load_dataset("digits", image_size=32)
    assert load_dataset("digits", image_size=8).input_shape == (1, 8, 8)


def test_dataset_is_frozen_and_module_is_lazy() -> None:
    ds = load_dataset("digits", train_subset=20)
    with pytest.raises(AttributeError):
        ds.name = "x"  # type: ignore[misc]
    assert isinstance(ds, Dataset) and set(data.__all__) >= {"load_dataset", "DATASETS"}
    assert data.DEFAULT_ROOTS["fashion-mnist"] == str(FASHION_ROOT)
    assert data.DEFAULT_ROOTS.get("digits") is None and data.DEFAULT_ROOTS.get("cifar10") is None


def test_unreadable_image_names_the_file(tmp_path: Path) -> None:
    solid(tmp_path / "Forest" / "a.png", (0, 0, 0))
    (tmp_path / "Forest" / "b.png").write_bytes(b"not a png")
    with pytest.raises(DatasetError, match="not a readable image") as info:
        load_dataset("eurosat", str(tmp_path))
    assert str(tmp_path / "Forest" / "b.png") in str(info.value)


def test_mnist1d_missing_package_names_the_extra(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "mnist1d.data", None)  # makes the import fail
    with pytest.raises(ImportError, match=r"pip install 'cpsweep\[mnist1d\]'"):
        load_dataset("mnist1d", str(tmp_path))
