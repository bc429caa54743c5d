"""Spec-chosen dataset paths: CIFAR pickles run no code, and with
CPSWEEP_DATA_ROOTS set nothing is read or written outside the allowed directories."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest

from tests.trainables.test_data import write_cifar10, write_cifar100
from trainables.data.cifar_pickle import load_cifar_pickle
from trainables.data.dataroots import DATA_ROOTS_ENV, DataRootNotAllowed, check_data_root
from trainables.data.datasets import DatasetError, load_dataset


class _Planted:
    """Unpickling this calls os.system: what a hostile 'data_batch_1' would do."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, (f"touch {self.marker}",))


def test_a_planted_pickle_does_not_run(tmp_path: Path) -> None:
    write_cifar10(tmp_path)
    marker = tmp_path / "pwned"
    entry = {b"data": _Planted(marker), b"labels": [1]}
    (tmp_path / "data_batch_3").write_bytes(pickle.dumps(entry, protocol=2))
    with pytest.raises(DatasetError, match=r"refusing posix\.system|refusing os\.system"):
        load_dataset("cifar10", str(tmp_path))
    assert not marker.exists()  # before: pickle.load ran `touch`


@pytest.mark.parametrize(
    "payload",
    [
        b"cbuiltins\neval\n(V__import__('os').system('true')\ntR.",  # protocol 0 GLOBAL
        b"\x80\x02cnumpy\nload\nq\x00.",  # a numpy callable that is not the reconstructor
        b"\x80\x02csubprocess\nPopen\nq\x00.",
    ],
)
def test_restricted_unpickler_admits_only_numpy_arrays(tmp_path: Path, payload: bytes) -> None:
    path = tmp_path / "evil"
    path.write_bytes(payload)
    with path.open("rb") as fh, pytest.raises(pickle.UnpicklingError, match="refusing"):
        load_cifar_pickle(fh)


def test_real_layout_still_loads_arrays_bytes_lists(tmp_path: Path) -> None:
    """The fixture writer's batches (protocol 2, numpy arrays, bytes, lists) load as before."""
    write_cifar100(tmp_path / "cifar-100-python")
    ds = load_dataset("cifar100", str(tmp_path))
    assert ds.train_x.shape[1:] == (3, 32, 32) and ds.num_classes == 100
    assert len(ds.train_y) + len(ds.val_y) == 4  # the training pool, all read
    # Python 2's cPickle wrote numpy.core.multiarray._reconstruct and bytes as str.
    legacy = pickle.dumps({b"data": np.zeros((1, 3072), np.uint8), b"labels": [3]}, protocol=2)
    legacy = legacy.replace(b"numpy._core.multiarray", b"numpy.core.multiarray")
    path = tmp_path / "legacy"
    path.write_bytes(legacy)
    with path.open("rb") as fh:
        entry = load_cifar_pickle(fh)
    assert entry[b"labels"] == [3] and entry[b"data"].shape == (1, 3072)


def test_data_roots_allow_list(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    allowed = tmp_path / "allowed"
    write_cifar10(allowed / "cifar-10-batches-py")
    outside = tmp_path / "outside"
    write_cifar10(outside)
    monkeypatch.setenv(DATA_ROOTS_ENV, str(allowed))
    assert load_dataset("cifar10", str(allowed)).num_classes == 10
    messages = []
    for root in (outside, tmp_path / "missing", allowed / ".." / "outside", Path("/etc")):
        with pytest.raises(DataRootNotAllowed) as err:
            load_dataset("cifar10", str(root))
        messages.append(str(err.value).replace(str(root), "<root>"))
    # The same words for existing and missing directories: nothing leaks about either.
    assert len(set(messages)) == 1 and DATA_ROOTS_ENV in messages[0]
    link = allowed / "escape"
    link.symlink_to(outside)
    with pytest.raises(DataRootNotAllowed):
        check_data_root(link)  # a symlink out of the allowed root is resolved first


def test_mnist1d_writes_nothing_outside_the_roots(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(DATA_ROOTS_ENV, str(tmp_path / "allowed"))
    target = tmp_path / "elsewhere" / "deep"
    with pytest.raises(DataRootNotAllowed):
        load_dataset("mnist1d", str(target))
    assert not (tmp_path / "elsewhere").exists()  # before: created and written


def test_unset_allow_list_changes_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(DATA_ROOTS_ENV, raising=False)
    write_cifar10(tmp_path)
    ds = load_dataset("cifar10", str(tmp_path))
    assert ds.train_x.shape[0] + ds.val_x.shape[0] == 10  # the training pool, all read
