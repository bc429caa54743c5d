"""In-memory dataset loaders for offline, on-disk datasets.

Every dataset is read from its published on-disk format (IDX files, the CIFAR
python pickles, class-per-folder image trees, the tiny-imagenet-200 layout) or
generated locally (scikit-learn's digits, MNIST-1D). Nothing is downloaded.
Every dataset comes as three disjoint splits (trainables/data/splits.py): train,
val (carved out of the training data, stratified, fixed seed: `data.val_fraction`)
and test (the published test split, or a stratified hold-out where there is none).
Images come back as uint8 [N, C, H, W] tensors, so a whole training set stays
small in memory and moves to an accelerator once; `Dataset.to_float` turns a
batch into normalised floats on whatever device it lives on.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import logging
import os
import pickle
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from trainables.core.config import VAL_FRACTION
from trainables.core.registry import DATASETS as _REGISTRY
from trainables.data.cifar_pickle import load_cifar_pickle
from trainables.data.dataroots import check_data_root
from trainables.data.splits import (
    SPLIT_SEED,
    DatasetError,
    Split,
    dataset_error,
    holdout,
    split_off_test,
    stratified_subset,
)

__all__ = [
    "DATASETS",
    "DEFAULT_IMAGE_SIZE",
    "DEFAULT_ROOTS",
    "Dataset",
    "DatasetError",
    "channel_stats",
    "dataset_root",
    "load_dataset",
    "stratified_subset",
]

logger = logging.getLogger(__name__)

DATASETS: tuple[str, ...] = _REGISTRY.names()  # the built-ins; the names live in registry.py
# None: generated locally (digits, mnist1d: cache under ~/.cache/cpsweep/mnist1d)
# or no standard location, so `root` is required.
DEFAULT_ROOTS: dict[str, str | None] = {
    "fashion-mnist": "/usr/share/datasets/fashion-mnist",  # Debian dataset-fashion-mnist
}
_GENERATED = frozenset({"digits", "mnist1d"})  # need no root

DEFAULT_IMAGE_SIZE = {"eurosat": 64, "tiny-imagenet": 64, "imagenet30": 64}  # resizable
_FIXED_IMAGE_SIZE = {"digits": 8, "fashion-mnist": 28, "cifar10": 32, "cifar100": 32}


@dataclass(frozen=True)
class Dataset:
    """Train, validation and (optional) test splits in memory, with the normalisation
    statistics. `val` drives every decision; `test` is only measured (test/* metrics)."""

    name: str
    train_x: torch.Tensor  # images: uint8 [N, C, H, W]; mnist1d: float32 [N, 1, L]
    train_y: torch.Tensor  # int64 [N] class ids; float [N] / [N, T] regression targets
    val_x: torch.Tensor
    val_y: torch.Tensor
    num_classes: int
    mean: tuple[float, ...]  # per channel, in to_float's pre-normalisation scale ([0, 1] images)
    std: tuple[float, ...]
    test_x: torch.Tensor | None = None  # None: no test split (a factory that returns none)
    test_y: torch.Tensor | None = None

    @property
    def is_image(self) -> bool:
        """True for [N, C, H, W] data."""
        return self.train_x.dim() == 4

    @property
    def in_channels(self) -> int:
        """Number of input channels C."""
        return int(self.train_x.shape[1])

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Shape of one sample: (C, H, W) or (C, L)."""
        return tuple(self.train_x.shape[1:])

    def to_float(self, x: torch.Tensor) -> torch.Tensor:
        """Normalise a batch (or one sample): uint8 is scaled to [0, 1] first.

        The statistics are created on `x.device`, so this works on any device.
        """
        # Channel sits before the 2 (image) or 1 (signal) trailing dims: broadcast
        # from the right works for batched and single samples alike.
        view = (-1,) + (1,) * (2 if self.is_image else 1)
        mean = torch.tensor(self.mean, dtype=torch.float32, device=x.device).view(view)
        std = torch.tensor(self.std, dtype=torch.float32, device=x.device).view(view)
        xf = x.to(torch.float32) / 255.0 if x.dtype == torch.uint8 else x.to(torch.float32)
        return (xf - mean) / std


# --- generated datasets ---------------------------------------------------------------------


def load_digits(_root: Path | None, _image_size: int | None = None) -> Split:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    # Values are 0..16: rescale to the uint8 range every other image dataset uses.
    x = torch.from_numpy(np.rint(bunch.images * 255.0 / 16.0).astype(np.uint8)).unsqueeze(1)
    y = torch.from_numpy(bunch.target.astype(np.int64))
    train, test = split_off_test(y)  # no published test split: hold one out
    return x[train], y[train], x[test], y[test], 10


def load_mnist1d(
    root: Path | None, _image_size: int | None = None, num_samples: int = 5000
) -> Split:
    """Generate MNIST-1D with the package's own generator (never its downloading `get_dataset`).

    The arrays are cached as `<root>/mnist1d-<hash of the generator args>.npz`.
    """
    try:
        from mnist1d.data import get_dataset_args, make_dataset
    except ImportError as exc:
        raise ImportError(
            "dataset mnist1d needs the mnist1d package: pip install 'cpsweep[mnist1d]'"
        ) from exc
    args = get_dataset_args()  # the published defaults: 4000 train / 1000 test, length 40
    args.num_samples = num_samples
    params = {k: v for k, v in vars(args).items() if k != "url"}  # url: download only
    key = hashlib.sha1(json.dumps(params, sort_keys=True).encode()).hexdigest()[:16]
    cache_dir = root if root is not None else Path("~/.cache/cpsweep/mnist1d").expanduser()
    path = cache_dir / f"mnist1d-{key}.npz"
    arrays: list[np.ndarray] = []  # x, y, x_test, y_test
    if path.is_file():
        try:
            with np.load(path) as f:
                arrays = [f[f"arr_{i}"] for i in range(4)]
            logger.info("mnist1d: loaded cached %s", path)
        except (OSError, ValueError, KeyError) as exc:
            logger.warning("mnist1d: ignoring unreadable cache %s (%s)", path, exc)
    if not arrays:
        # make_dataset reseeds the global NumPy and random RNGs: restore the callers' state.
        np_state, py_state = np.random.get_state(), random.getstate()
        try:
            data = make_dataset(args)
        finally:
            np.random.set_state(np_state)
            random.setstate(py_state)
        arrays = [np.asarray(data[k]) for k in ("x", "y", "x_test", "y_test")]
        cache_dir.mkdir(parents=True, exist_ok=True)
        tmp = cache_dir / f".{path.name}.{os.getpid()}.tmp"
        with tmp.open("wb") as fh:
            np.savez(fh, *arrays)
        os.replace(tmp, path)  # atomic: concurrent trials never read a partial file
        logger.info("mnist1d: generated %d samples, cached at %s", num_samples, path)
    tx, sx = (torch.from_numpy(a.astype(np.float32)).unsqueeze(1) for a in arrays[0::2])
    ty, sy = (torch.from_numpy(a.astype(np.int64)) for a in arrays[1::2])
    return tx, ty, sx, sy, 10  # x: float32 [N, 1, L]; the generator's test split is ours


# --- array formats: IDX, CIFAR pickles --------------------------------------------------------


def _read_idx(name: str, path: Path, magic: int) -> np.ndarray:
    """Parse one IDX file: 0x0000, type 0x08 (ubyte), ndim, big-endian uint32 dims, data."""
    opener: Callable[..., Any] = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as fh:
            raw = fh.read()
    except (OSError, EOFError) as exc:
        raise dataset_error(name, path, f"is not readable ({exc})") from exc
    found = int.from_bytes(raw[:4], "big") if len(raw) >= 4 else None
    if found != magic:
        shown = "none" if found is None else f"0x{found:08x}"
        raise dataset_error(name, path, f"has IDX magic {shown}, not 0x{magic:08x}")
    ndim = magic & 0xFF
    dims = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    start = 4 + 4 * ndim
    if len(raw) - start != int(np.prod(dims)):
        raise dataset_error(name, path, f"holds {len(raw) - start} data bytes, header says {dims}")
    return np.frombuffer(raw, dtype=np.uint8, offset=start).reshape(dims).copy()


def _find_idx(name: str, root: Path, stem: str) -> Path:
    for folder in (root, root / "raw", root / "FashionMNIST" / "raw"):
        for fname in (f"{stem}.gz", stem):
            if (folder / fname).is_file():
                return folder / fname
    raise dataset_error(name, root, f"has no {stem}(.gz)")


def load_fashion_mnist(root: Path | None, _image_size: int | None = None) -> Split:
    name = "fashion-mnist"
    assert root is not None
    out = []
    for split in ("train", "t10k"):
        images = _read_idx(name, _find_idx(name, root, f"{split}-images-idx3-ubyte"), 0x803)
        labels = _read_idx(name, _find_idx(name, root, f"{split}-labels-idx1-ubyte"), 0x801)
        if len(images) != len(labels):
            raise dataset_error(
                name, root, f"has {len(images)} {split} images but {len(labels)} labels"
            )
        out += [torch.from_numpy(images).unsqueeze(1), torch.from_numpy(labels.astype(np.int64))]
    return out[0], out[1], out[2], out[3], 10


def _read_cifar_pickle(name: str, path: Path, label_key: str) -> tuple[torch.Tensor, torch.Tensor]:
    # The official batches are Python 2 pickles of dicts with bytes keys, read by an
    # unpickler that admits only numpy arrays, bytes, lists and ints (no code runs).
    if not path.is_file():
        raise dataset_error(name, path.parent, f"has no {path.name}")
    try:
        with path.open("rb") as fh:
            entry = load_cifar_pickle(fh)
        entry = {k.decode() if isinstance(k, bytes) else k: v for k, v in entry.items()}
        data, labels = entry["data"], entry[label_key]
    except (pickle.UnpicklingError, EOFError, AttributeError, KeyError, ValueError) as exc:
        raise dataset_error(
            name, path, f"is not a CIFAR pickle dict with b'data' and b'{label_key}' ({exc!r})"
        ) from exc
    data = np.asarray(data, dtype=np.uint8)
    if data.ndim != 2 or data.shape[1] != 3072 or len(data) != len(labels):
        raise dataset_error(
            name, path, f"has data {data.shape} for {len(labels)} labels, not [N, 3072]"
        )
    # Each row is the R, G, B planes of a 32x32 image, row-major.
    x = torch.from_numpy(data.reshape(-1, 3, 32, 32).copy())
    return x, torch.as_tensor(np.asarray(labels, dtype=np.int64))


def _cifar(name: str, root: Path | None, subdir: str, train: Sequence[str], test: str) -> Split:
    assert root is not None
    folder = root / subdir if (root / subdir).is_dir() else root
    label_key, num_classes = ("labels", 10) if name == "cifar10" else ("fine_labels", 100)
    parts = [_read_cifar_pickle(name, folder / f, label_key) for f in train]
    sx, sy = _read_cifar_pickle(name, folder / test, label_key)
    tx, ty = torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])
    return tx, ty, sx, sy, num_classes


def load_cifar10(root: Path | None, _image_size: int | None = None) -> Split:
    batches = [f"data_batch_{i}" for i in range(1, 6)]
    return _cifar("cifar10", root, "cifar-10-batches-py", batches, "test_batch")


def load_cifar100(root: Path | None, _image_size: int | None = None) -> Split:
    return _cifar("cifar100", root, "cifar-100-python", ["train"], "test")


# --- public entry point --------------------------------------------------------------------


def channel_stats(x: torch.Tensor) -> tuple[tuple[float, ...], ...]:
    """Per-channel mean and std over [N, C, ...], in [0, 1] scale for uint8 input."""
    scale = 255.0 if x.dtype == torch.uint8 else 1.0
    total = torch.zeros(x.shape[1], dtype=torch.float64)
    squares = torch.zeros(x.shape[1], dtype=torch.float64)
    chunk = max(1, 2**22 // max(1, x[0].numel()))  # float64 copies of ~32 MB at a time
    for part in x.split(chunk):
        flat = part.transpose(0, 1).reshape(x.shape[1], -1).to(torch.float64) / scale
        total += flat.sum(1)
        squares += flat.square().sum(1)
    count = x.numel() / x.shape[1]
    mean = total / count
    std = (squares / count - mean.square()).clamp_min(0).sqrt()
    std = torch.where(std > 1e-8, std, torch.ones_like(std))  # constant channel: leave unscaled
    return tuple(mean.tolist()), tuple(std.tolist())


def dataset_root(name: str, root: str | None) -> Path | None:
    """The directory to read `name` from (None: generated); DatasetError when it is missing."""
    root_str = root if root is not None else DEFAULT_ROOTS.get(name)
    # A root the spec names must lie under CPSWEEP_DATA_ROOTS (when set); defaults are ours.
    path = check_data_root(root) if root is not None else None
    if path is None and root_str is not None:
        path = Path(root_str).expanduser()
    if name not in _GENERATED:
        if path is None:
            raise dataset_error(name, "data.root", "is not set")
        if not path.is_dir():
            raise dataset_error(name, path, "does not exist or is not a directory")
    return path


def _check_sizes(
    name: str, image_size: int | None, train_subset: int | None, val_subset: int | None
) -> None:
    """ValueError for a subset or image size that `load_dataset` cannot honour for `name`."""
    for field, value in (("train_subset", train_subset), ("val_subset", val_subset)):
        if value is not None and value < 1:
            raise ValueError(f"{field}={value} must be >= 1 or None")
    if image_size is not None and image_size < 1:
        raise ValueError(f"image_size={image_size} must be >= 1 or None")
    fixed = _FIXED_IMAGE_SIZE.get(name)  # None for mnist1d (not an image) and image trees
    if image_size is not None and name not in DEFAULT_IMAGE_SIZE and image_size != fixed:
        raise ValueError(
            f"image_size={image_size} applies only to {', '.join(DEFAULT_IMAGE_SIZE)}; "
            f"{name} has a fixed size ({fixed or 'not an image'}): leave image_size unset"
        )


def load_dataset(
    name: str,
    root: str | None = None,
    *,
    image_size: int | None = None,
    train_subset: int | None = None,
    val_subset: int | None = None,
    val_fraction: float = VAL_FRACTION,
    seed: int = 0,
) -> Dataset:
    """Load `name` from `root` (or its `DEFAULT_ROOTS` entry) into memory.

    The loader gives a training pool and a test split; a stratified `val_fraction` of
    the pool becomes the validation split (fixed seed: every trial validates on the same
    samples, whatever its `seed` or `train_subset`). `image_size` resizes images to a
    square (tree datasets default to 64). `train_subset` keeps a stratified subset of
    the rest drawn with `seed`; `val_subset` one of the validation split drawn with the
    fixed seed. The test split is kept whole. Mean and std come from the training split.
    """
    try:
        loader = _REGISTRY.load(name)
    except ValueError as exc:
        raise DatasetError(str(exc)) from None
    _check_sizes(name, image_size, train_subset, val_subset)
    path = dataset_root(name, root)
    logger.info("loading %s from %s", name, path if path is not None else "(generated)")
    size = image_size or DEFAULT_IMAGE_SIZE.get(name)
    pool_x, pool_y, test_x, test_y, num_classes = loader(path, size)
    for labels in (pool_y, test_y):
        if len(labels) == 0 or int(labels.min()) < 0 or int(labels.max()) >= num_classes:
            raise dataset_error(
                name, path or name, f"has labels outside 0..{num_classes - 1} or none"
            )
    if len(pool_y) < 2:
        raise dataset_error(name, path or name, "has fewer than 2 training samples")
    train, val = holdout(pool_y, val_fraction, SPLIT_SEED)
    train_x, train_y, val_x, val_y = pool_x[train], pool_y[train], pool_x[val], pool_y[val]
    if train_subset is not None:
        keep = stratified_subset(train_y, train_subset, seed)
        train_x, train_y = train_x[keep], train_y[keep]
    if val_subset is not None:
        keep = stratified_subset(val_y, val_subset, SPLIT_SEED)
        val_x, val_y = val_x[keep], val_y[keep]
    mean, std = channel_stats(train_x)
    stats = [round(v, 4) for v in mean + std]
    logger.info("%s: train %s, val %s, test %s, %d classes, mean+std %s", name,
                tuple(train_x.shape), tuple(val_x.shape), tuple(test_x.shape), num_classes,
                stats)  # fmt: skip
    return Dataset(name, train_x, train_y, val_x, val_y, num_classes, mean, std, test_x, test_y)
