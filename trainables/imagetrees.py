"""Class-per-folder image trees (EuroSAT, Tiny ImageNet, ImageNet-30), decoded in threads.

Split from trainables/data.py; `load_dataset` imports this module only for these datasets.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

from trainables.data import _IMAGE_EXTS, _PROGRESS_EVERY, _error, _fixed_split, _Split, logger

__all__ = ["load_eurosat", "load_imagenet30", "load_tiny_imagenet"]


def _images_in(folder: Path, recursive: bool) -> list[Path]:
    found = folder.rglob("*") if recursive else folder.iterdir()
    return sorted(p for p in found if p.suffix.lower() in _IMAGE_EXTS and p.is_file())


def _class_tree(name: str, folder: Path, recursive: bool) -> dict[str, list[Path]]:
    """Map each class sub-folder of `folder` (sorted) to its image files."""
    if not folder.is_dir():
        raise _error(name, folder, "is not a directory")
    tree = {d.name: _images_in(d, recursive) for d in sorted(folder.iterdir()) if d.is_dir()}
    if not tree:
        raise _error(name, folder, "has no class folders")
    for cls, files in tree.items():
        if not files:
            raise _error(name, folder / cls, "is a class folder with no images")
    return tree


def _read_images(
    name: str, items: Sequence[tuple[Path, int]], size: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """(path, label) pairs -> RGB uint8 [N, 3, size, size] (bilinear resize), int64 labels."""
    from PIL import Image

    def read(path: Path) -> np.ndarray:
        try:
            with Image.open(path) as img:
                rgb = img.convert("RGB")
        except (OSError, ValueError) as exc:
            raise _error(name, path, f"is not a readable image ({exc})") from exc
        if rgb.size != (size, size):
            rgb = rgb.resize((size, size), Image.Resampling.BILINEAR)
        return np.asarray(rgb, dtype=np.uint8)

    paths = [p for p, _ in items]
    out = np.empty((len(paths), 3, size, size), dtype=np.uint8)
    # PIL releases the GIL while decoding, so threads speed up large trees.
    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        for i, arr in enumerate(pool.map(read, paths)):
            out[i] = arr.transpose(2, 0, 1)  # HWC -> CHW
            if (i + 1) % _PROGRESS_EVERY == 0:
                logger.info("%s: decoded %d / %d images", name, i + 1, len(paths))
    return torch.from_numpy(out), torch.tensor([y for _, y in items], dtype=torch.int64)


def _flatten(tree: dict[str, list[Path]], classes: list[str]) -> list[tuple[Path, int]]:
    """(path, label) pairs of a class tree, label = position of the class in `classes`."""
    index = {cls: i for i, cls in enumerate(classes)}
    return [(p, index[cls]) for cls, files in tree.items() for p in files]


def load_eurosat(root: Path | None, size: int | None) -> _Split:
    assert size is not None  # trainables.data.load_dataset passes the default
    assert root is not None
    folder = next((root / d for d in ("2750", "EuroSAT_RGB") if (root / d).is_dir()), root)
    tree = _class_tree("eurosat", folder, recursive=False)
    x, y = _read_images("eurosat", _flatten(tree, list(tree)), size)
    train, val = _fixed_split(y)
    return x[train], y[train], x[val], y[val], len(tree)


def load_tiny_imagenet(root: Path | None, size: int | None) -> _Split:
    assert size is not None  # trainables.data.load_dataset passes the default
    name = "tiny-imagenet"
    assert root is not None
    if (root / "tiny-imagenet-200").is_dir():
        root = root / "tiny-imagenet-200"
    wnids_file, ann_file = root / "wnids.txt", root / "val" / "val_annotations.txt"
    for required in (wnids_file, ann_file):
        if not required.is_file():
            raise _error(name, root, f"has no {required.relative_to(root)}")
    # Classes sorted by wnid, the order torchvision's ImageFolder gives train/.
    wnids = sorted(set(wnids_file.read_text().split()))
    if not wnids:
        raise _error(name, wnids_file, "lists no wnids")
    tree = {w: _images_in(root / "train" / w / "images", recursive=False) for w in wnids}
    for w, files in tree.items():
        if not files:
            raise _error(name, root / "train" / w / "images", "has no images")
    index = {w: i for i, w in enumerate(wnids)}
    val: list[tuple[Path, int]] = []
    for lineno, line in enumerate(ann_file.read_text().splitlines(), 1):
        fields = line.split("\t")
        if not line.strip():
            continue
        if len(fields) < 2 or fields[1] not in index:
            problem = f"line {lineno} is not 'filename<TAB>wnid<TAB>bbox' with a listed wnid"
            raise _error(name, ann_file, f"{problem}: {line!r}")
        val.append((root / "val" / "images" / fields[0], index[fields[1]]))
    if not val:
        raise _error(name, ann_file, "lists no validation images")
    tx, ty = _read_images(name, _flatten(tree, wnids), size)
    return (tx, ty, *_read_images(name, val, size), len(wnids))


def load_imagenet30(root: Path | None, size: int | None) -> _Split:
    assert size is not None  # trainables.data.load_dataset passes the default
    name = "imagenet30"
    assert root is not None
    train_tree = _class_tree(name, root / "train", recursive=True)
    test_dir = next((root / d for d in ("test", "val") if (root / d).is_dir()), root / "test")
    test_tree = _class_tree(name, test_dir, recursive=True)
    unknown = sorted(set(test_tree) - set(train_tree))
    if unknown:
        raise _error(name, test_dir, f"has classes not in train/: {unknown}")
    classes = list(train_tree)
    tx, ty = _read_images(name, _flatten(train_tree, classes), size)
    return (tx, ty, *_read_images(name, _flatten(test_tree, classes), size), len(classes))
