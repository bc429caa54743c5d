"""Read the CIFAR python batches without letting a pickle run code.

The official `cifar-10-batches-py` / `cifar-100-python` files are Python 2 pickles of
one dict: bytes keys -> a uint8 numpy array (`data`), lists of ints (labels), bytes
(`batch_label`) and lists of bytes (`filenames`). Unpickling them needs exactly four
callables: numpy's array reconstructor, `numpy.ndarray`, `numpy.dtype`, and
`_codecs.encode` (how protocol 2 writes bytes from Python 3, e.g. our test fixtures).
Anything else a file asks for (`os.system`, `builtins.eval`, ...) is refused, so a
planted file can fail to load but cannot execute.
"""

from __future__ import annotations

import pickle
from typing import IO, Any

__all__ = ["ALLOWED_GLOBALS", "load_cifar_pickle"]

ALLOWED_GLOBALS: frozenset[tuple[str, str]] = frozenset(
    {
        ("numpy.core.multiarray", "_reconstruct"),  # numpy 1.x and the Python 2 originals
        ("numpy._core.multiarray", "_reconstruct"),  # numpy >= 2
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("_codecs", "encode"),
    }
)


class _CifarUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in ALLOWED_GLOBALS:
            raise pickle.UnpicklingError(
                f"refusing {module}.{name}: a CIFAR batch holds only numpy arrays, "
                "bytes, lists and ints"
            )
        if module == "numpy.core.multiarray":  # numpy 2 keeps it under numpy._core
            import numpy as np

            core = getattr(np, "_core", None)
            if core is not None:
                return core.multiarray._reconstruct
        return super().find_class(module, name)


def load_cifar_pickle(fh: IO[bytes]) -> Any:
    """The unpickled object (a dict for real batches); UnpicklingError for foreign code."""
    return _CifarUnpickler(fh, encoding="bytes").load()
