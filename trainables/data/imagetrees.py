"""Class-per-folder image trees (EuroSAT, Tiny ImageNet, ImageNet-30), decoded in threads.

Split from trainables/data/datasets.py; `load_dataset` imports this module (through the dataset
registry) only for these datasets. What both share is in trainables/data/splits.py.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset as TorchDataset

from trainables.data.splits import (
    IMAGE_EXTS,
    PROGRESS_EVERY,
    Split,
    dataset_error,
    logger,
    split_off_test,
)

__all__ = [
    "TREE_ITEMS",
    "TreeImages",
    "load_eurosat",
    "load_imagenet30",
    "load_tiny_imagenet",
    "read_images",
]


def _images_in(folder: Path, recursive: bool) -> list[Path]:
    found = folder.rglob("*") if recursive else folder.iterdir()
    return sorted(p for p in found if p.suffix.lower() in IMAGE_EXTS and p.is_file())


def _class_tree(name: str, folder: Path, recursive: bool) -> dict[str, list[Path]]:
    """Map each class sub-folder of `folder` (sorted) to its image files."""
    if not folder.is_dir():
        raise dataset_error(name, folder, "is not a directory")
    tree = {d.name: _images_in(d, recursive) for d in sorted(folder.iterdir()) if d.is_dir()}
    if not tree:
        raise dataset_error(name, folder, "has no class folders")
    for cls, files in tree.items():
        if not files:
            raise dataset_error(name, folder / cls, "is a class folder with no images")
    return tree


def _read_one(name: str, path: Path, size: int) -> np.ndarray:
    """One image file -> RGB uint8 [3, size, size] (bilinear resize)."""
    from PIL import Image

    try:
        with Image.open(path) as img:
            rgb = img.convert("RGB")
    except (OSError, ValueError) as exc:
        raise dataset_error(name, path, f"is not a readable image ({exc})") from exc
    if rgb.size != (size, size):
        rgb = rgb.resize((size, size), Image.Resampling.BILINEAR)
    return np.array(rgb, dtype=np.uint8).transpose(2, 0, 1)  # HWC -> CHW, a writable copy


def read_images(
    name: str, items: Sequence[tuple[Path, int]], size: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """(path, label) pairs -> RGB uint8 [N, 3, size, size] (bilinear resize), int64 labels."""
    paths = [p for p, _ in items]
    out = np.empty((len(paths), 3, size, size), dtype=np.uint8)
    # PIL releases the GIL while decoding, so threads speed up large trees.
    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        for i, arr in enumerate(pool.map(lambda p: _read_one(name, p, size), paths)):
            out[i] = arr
            if (i + 1) % PROGRESS_EVERY == 0:
                logger.info("%s: decoded %d / %d images", name, i + 1, len(paths))
    return torch.from_numpy(out), torch.tensor([y for _, y in items], dtype=torch.int64)


class TreeImages(TorchDataset[tuple[torch.Tensor, int]]):
    """Images decoded one at a time from (path, label) pairs: for trees over the memory limit.

    Streamed through a DataLoader, its worker processes do the decoding."""

    def __init__(self, name: str, items: Sequence[tuple[Path, int]], size: int) -> None:
        self.name, self.size = name, size
        self.paths = [p for p, _ in items]
        self.targets = [y for _, y in items]

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        pixels = np.ascontiguousarray(_read_one(self.name, self.paths[i], self.size))
        return torch.from_numpy(pixels), self.targets[i]


def _flatten(tree: dict[str, list[Path]], classes: list[str]) -> list[tuple[Path, int]]:
    """(path, label) pairs of a class tree, label = position of the class in `classes`."""
    index = {cls: i for i, cls in enumerate(classes)}
    return [(p, index[cls]) for cls, files in tree.items() for p in files]


_Items = list[tuple[Path, int]]
# training-pool (path, label) pairs, test pairs, classes; validation comes out of the pool
_TreeSplit = tuple[_Items, _Items, int]


def _eurosat_items(root: Path) -> _TreeSplit:
    folder = next((root / d for d in ("2750", "EuroSAT_RGB") if (root / d).is_dir()), root)
    tree = _class_tree("eurosat", folder, recursive=False)
    items = _flatten(tree, list(tree))
    # No published test split: hold one out (stratified, fixed seed).
    train, test = split_off_test(torch.tensor([y for _, y in items], dtype=torch.int64))
    return [items[i] for i in train.tolist()], [items[i] for i in test.tolist()], len(tree)


def _tiny_imagenet_items(root: Path) -> _TreeSplit:
    name = "tiny-imagenet"
    if (root / "tiny-imagenet-200").is_dir():
        root = root / "tiny-imagenet-200"
    wnids_file, ann_file = root / "wnids.txt", root / "val" / "val_annotations.txt"
    for required in (wnids_file, ann_file):
        if not required.is_file():
            raise dataset_error(name, root, f"has no {required.relative_to(root)}")
    # Classes sorted by wnid, the order torchvision's ImageFolder gives train/.
    wnids = sorted(set(wnids_file.read_text().split()))
    if not wnids:
        raise dataset_error(name, wnids_file, "lists no wnids")
    tree = {w: _images_in(root / "train" / w / "images", recursive=False) for w in wnids}
    for w, files in tree.items():
        if not files:
            raise dataset_error(name, root / "train" / w / "images", "has no images")
    index = {w: i for i, w in enumerate(wnids)}
    # The official test images carry no labels: val/ serves as the test split.
    val: _Items = []
    for lineno, line in enumerate(ann_file.read_text().splitlines(), 1):
        fields = line.split("\t")
        if not line.strip():
            continue
        if len(fields) < 2 or fields[1] not in index:
            problem = f"line {lineno} is not 'filename<TAB>wnid<TAB>bbox' with a listed wnid"
            raise dataset_error(name, ann_file, f"{problem}: {line!r}")
        val.append((root / "val" / "images" / fields[0], index[fields[1]]))
    if not val:
        raise dataset_error(name, ann_file, "lists no validation images")
    return _flatten(tree, wnids), val, len(wnids)


def _imagenet30_items(root: Path) -> _TreeSplit:
    name = "imagenet30"
    train_tree = _class_tree(name, root / "train", recursive=True)
    test_dir = next((root / d for d in ("test", "val") if (root / d).is_dir()), root / "test")
    test_tree = _class_tree(name, test_dir, recursive=True)
    unknown = sorted(set(test_tree) - set(train_tree))
    if unknown:
        raise dataset_error(name, test_dir, f"has classes not in train/: {unknown}")
    classes = list(train_tree)
    return _flatten(train_tree, classes), _flatten(test_tree, classes), len(classes)


TREE_ITEMS: dict[str, Callable[[Path], _TreeSplit]] = {
    "eurosat": _eurosat_items,
    "tiny-imagenet": _tiny_imagenet_items,
    "imagenet30": _imagenet30_items,
}


def _decoded(name: str, root: Path | None, size: int | None) -> Split:
    assert root is not None and size is not None  # load_dataset checks and defaults them
    train, test, classes = TREE_ITEMS[name](root)
    return (*read_images(name, train, size), *read_images(name, test, size), classes)


def load_eurosat(root: Path | None, size: int | None) -> Split:
    return _decoded("eurosat", root, size)


def load_tiny_imagenet(root: Path | None, size: int | None) -> Split:
    return _decoded("tiny-imagenet", root, size)


def load_imagenet30(root: Path | None, size: int | None) -> Split:
    return _decoded("imagenet30", root, size)
